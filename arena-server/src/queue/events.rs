//! Live events for pages and SSE clients. Producers PUBLISH on one Redis
//! channel, so an event raised by a worker on another machine reaches every
//! web instance; each instance relays the channel into a local broadcast
//! that its SSE streams subscribe to.

use super::redis::Redis;
use crate::domain::{MatchId, MatchStatus};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::broadcast;

/// One thing that happened to a match.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Event {
    pub match_id: MatchId,
    pub space: String,
    /// The match's new status.
    pub status: MatchStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// An event as every live stream sends it, rendered once for all of them
/// (a thousand streams must not mean a thousand serialisations per event).
#[derive(Debug)]
pub struct LiveEvent {
    pub event: Event,
    /// `event: STATUS` and `data: JSON` lines, as Server-Sent Events.
    pub sse: bytes::Bytes,
}

impl LiveEvent {
    fn new(event: Event, json: &str) -> LiveEvent {
        let sse = bytes::Bytes::from(format!("event: {}\ndata: {json}\n\n", event.status.as_str()));
        LiveEvent { event, sse }
    }
}

/// The local end of the fan-out; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<std::sync::Arc<LiveEvent>>,
}

impl Default for Events {
    fn default() -> Events {
        Events::new()
    }
}

impl Event {
    pub fn new(match_id: MatchId, space: String, status: MatchStatus) -> Event {
        Event { match_id, space, status, detail: None }
    }
}

impl Events {
    pub fn new() -> Events {
        Events { tx: broadcast::channel(1024).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<std::sync::Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Publishes to every instance. Losing an event loses nothing but a
    /// page update: the match's state is in PostgreSQL.
    pub async fn publish(redis: &Redis, event: &Event) {
        let Ok(payload) = serde_json::to_string(event) else { return };
        let mut conn = redis.conn();
        let sent: Result<i64, _> =
            redis::cmd("PUBLISH").arg(redis.key("events")).arg(payload).query_async(&mut conn).await;
        if let Err(err) = sent {
            tracing::debug!(error = %err, "event not published");
        }
    }

    /// Publishes many events in one round trip.
    pub async fn publish_many(redis: &Redis, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let channel = redis.key("events");
        for event in events {
            if let Ok(payload) = serde_json::to_string(event) {
                pipe.cmd("PUBLISH").arg(&channel).arg(payload).ignore();
            }
        }
        let mut conn = redis.conn();
        let sent: Result<(), _> = pipe.query_async(&mut conn).await;
        if let Err(err) = sent {
            tracing::debug!(error = %err, "events not published");
        }
    }

    /// Relays the Redis channel into the local broadcast until the process
    /// ends, resubscribing after a lost connection.
    pub fn relay(&self, redis: Redis) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                match redis.pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(redis.key("events")).await.is_ok() {
                            let mut stream = pubsub.on_message();
                            while let Some(message) = stream.next().await {
                                let Ok(payload) = message.get_payload::<String>() else { continue };
                                if let Ok(event) = serde_json::from_str::<Event>(&payload) {
                                    let _ = tx.send(std::sync::Arc::new(LiveEvent::new(event, &payload)));
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "event relay cannot subscribe; retrying"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}
