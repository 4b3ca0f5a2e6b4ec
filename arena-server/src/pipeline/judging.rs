//! The judge stage: the Space's verifiers and AI judge rank the outputs of a
//! match. The verdict is unique per match, so a redelivered message stores
//! nothing twice. Judging runs on the judge crate's worker thread.

use super::{Pipeline, Stage, StageWork};
use crate::events::{Event, Events};
use judge::worker::{JudgeWorker, SubmitError};
use judge::{Candidate, JudgeConfig, JudgeError, MatchInput};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

pub struct JudgeStage {
    pub worker: JudgeWorker,
    /// Each Space version's judge config, shared by its matches.
    configs: Mutex<HashMap<(Uuid, i32), Arc<JudgeConfig>>>,
}

impl JudgeStage {
    pub fn new(worker: JudgeWorker) -> JudgeStage {
        JudgeStage { worker, configs: Mutex::default() }
    }

    async fn config(&self, p: &Pipeline, space: Uuid, version: i32) -> anyhow::Result<Arc<JudgeConfig>> {
        if let Some(c) = self.configs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(&(space, version)) {
            return Ok(c.clone());
        }
        let loaded = p.spaces.get(&p.db, space, version).await?;
        let config = Arc::new(loaded.judge.clone());
        self.configs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert((space, version), config.clone());
        Ok(config)
    }
}

#[derive(sqlx::FromRow)]
struct Open {
    id: Uuid,
    slug: String,
    space_id: Uuid,
    space_version: i32,
    prompt: String,
    reference: Option<String>,
}

impl StageWork for JudgeStage {
    fn stage(&self) -> Stage {
        Stage::Judge
    }

    fn run<'a>(
        &'a self,
        p: &'a Pipeline,
        matches: &'a [Uuid],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Uuid>>> + Send + 'a>> {
        Box::pin(async move {
            let open: Vec<Open> = sqlx::query_as(
                "select m.id, s.slug, m.space_id, m.space_version, m.prompt, m.reference
                 from matches m join spaces s on s.id = m.space_id
                 where m.id = any($1) and m.status = 'generated'",
            )
            .bind(matches)
            .fetch_all(&p.db)
            .await?;
            let mut done: Vec<Uuid> = matches.iter().filter(|m| !open.iter().any(|o| o.id == **m)).copied().collect();
            if open.is_empty() {
                return Ok(done);
            }
            let ids: Vec<Uuid> = open.iter().map(|o| o.id).collect();
            let outputs: Vec<(Uuid, i16, String)> = sqlx::query_as(
                "select match_id, slot, text from outputs where match_id = any($1) order by match_id, slot",
            )
            .bind(&ids)
            .fetch_all(&p.db)
            .await?;
            let mut pending = Vec::new();
            for m in &open {
                let config = self.config(p, m.space_id, m.space_version).await?;
                let candidates: Vec<Candidate> = outputs
                    .iter()
                    .filter(|(id, _, _)| *id == m.id)
                    .map(|(_, slot, text)| Candidate { id: slot.to_string(), text: text.clone() })
                    .collect();
                let input = MatchInput { prompt: m.prompt.clone(), reference: m.reference.clone(), candidates };
                let rx = loop {
                    match self.worker.submit(config.clone(), input.clone()) {
                        Ok(rx) => break rx,
                        Err(SubmitError::OverCapacity) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Err(err) => anyhow::bail!("judge worker: {err}"),
                    }
                };
                pending.push((m, rx));
            }
            let mut verdicts: Vec<(Uuid, String)> = Vec::new();
            let mut failed: Vec<(Uuid, String)> = Vec::new();
            for (m, rx) in pending {
                match rx.await {
                    // Straight to JSON text: PostgreSQL parses it once.
                    Ok(Ok(verdict)) => verdicts.push((m.id, serde_json::to_string(&verdict)?)),
                    // The match itself cannot be judged (e.g. an agent gave
                    // no output): fail it and refund, retrying is pointless.
                    Ok(Err(JudgeError::Input(why))) => failed.push((m.id, format!("judge refused the match: {why}"))),
                    Ok(Err(err)) => tracing::warn!(match_id = %m.id, error = %err, "judging failed; will retry"),
                    Err(_) => tracing::warn!(match_id = %m.id, "judge worker dropped the match; will retry"),
                }
            }
            let mut tx = p.db.begin().await?;
            let (vid, vjson): (Vec<Uuid>, Vec<String>) = verdicts.into_iter().unzip();
            sqlx::query(
                "insert into verdicts (match_id, verdict) select id, v::jsonb from unnest($1::uuid[], $2::text[]) as x(id, v)
                 on conflict (match_id) do nothing",
            )
            .bind(&vid)
            .bind(&vjson)
            .execute(&mut *tx)
            .await?;
            let moved = super::advance(&mut tx, Stage::Judge, &vid).await?;
            let mut failed_slugs = Vec::new();
            for (id, why) in &failed {
                if let Some(slug) = super::fail_match(&mut tx, *id, why).await? {
                    failed_slugs.push((*id, slug));
                }
            }
            tx.commit().await?;
            let events: Vec<Event> = moved
                .iter()
                .map(|id| {
                    let space = open.iter().find(|o| o.id == *id).map(|o| o.slug.clone()).unwrap_or_default();
                    Event { match_id: *id, space, status: "judged".into(), detail: None }
                })
                .collect();
            Events::publish_many(&p.redis, &events).await;
            for (id, space) in failed_slugs {
                Events::publish(&p.redis, &Event { match_id: id, space, status: "failed".into(), detail: None }).await;
            }
            done.extend(vid);
            done.extend(failed.iter().map(|(id, _)| *id));
            Ok(done)
        })
    }
}
