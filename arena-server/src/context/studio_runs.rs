//! The studio's runs — dry runs and red teams — while they run and a while
//! after: their progress and, once finished, their report. A studio run
//! stores nothing by design (no database row: nothing is published, paid
//! or kept), so its registry is this process's memory, bounded to
//! `KEPT` runs; a restart forgets them, and the designer starts again.
//! `work::studio` starts the runs; the studio's pages read them here.

use crate::domain::UserId;
use crate::domain::dry_run::Report;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Runs the registry keeps (finished ones are dropped oldest first).
pub const KEPT: usize = 32;

/// Studio runs (dry runs and red teams, all designers together) that run
/// at once; the next designer is told to try again.
pub const AT_ONCE: usize = 1;

/// What a finished studio run produced.
#[derive(Clone)]
pub enum Outcome {
    DryRun(Arc<Report>),
    RedTeam(Arc<judge::calibrate::Report>),
}

/// A run as its page shows it.
#[derive(Clone)]
pub struct RunView {
    pub owner: UserId,
    pub name: String,
    /// The draft's base ("space:SLUG" or "example:NAME").
    pub base: String,
    pub done: usize,
    pub total: usize,
    /// The last progress line (the red team's per-configuration results).
    pub note: String,
    /// None while running; the report, or what went wrong.
    pub result: Option<Result<Outcome, String>>,
}

struct Run {
    view: RunView,
    started: Instant,
}

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub enum RunRefused {
    #[error("one dry run or red team at a time: wait for yours to finish")]
    OwnRunning,
    #[error("busy: another designer's dry run or red team is running; try again in about {0} s")]
    Busy(u64),
    #[error("too many runs are in progress: try again shortly")]
    Full,
}

/// The registry, held in `Context`.
pub struct StudioRuns {
    runs: Mutex<HashMap<Uuid, Run>>,
    slots: Arc<Semaphore>,
}

impl Default for StudioRuns {
    fn default() -> StudioRuns {
        StudioRuns { runs: Mutex::new(HashMap::new()), slots: Arc::new(Semaphore::new(AT_ONCE)) }
    }
}

/// A started run's id and its slot (held until the run ends).
pub struct Started {
    pub id: Uuid,
    pub slot: OwnedSemaphorePermit,
}

impl StudioRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Run>> {
        // A panic while holding the lock leaves plain counters behind:
        // still worth reading.
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a run of `total` steps for `owner` (one running each) and
    /// takes a slot: the process runs `AT_ONCE` at once, and the next
    /// designer is told how long to wait, not queued behind it.
    pub fn register(&self, owner: UserId, name: &str, base: &str, total: usize) -> Result<Started, RunRefused> {
        let mut runs = self.lock();
        if runs.values().any(|r| r.view.owner == owner && r.view.result.is_none()) {
            return Err(RunRefused::OwnRunning);
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // The running runs' own pace says how long they have left.
            let left = runs
                .values()
                .filter(|r| r.view.result.is_none())
                .map(|r| {
                    let per = r.started.elapsed().as_secs_f64() / r.view.done.max(1) as f64;
                    (per * (r.view.total.saturating_sub(r.view.done)) as f64).ceil() as u64
                })
                .min()
                .unwrap_or(30)
                .clamp(5, 600);
            return Err(RunRefused::Busy(left));
        };
        while runs.len() >= KEPT {
            let Some(oldest) =
                runs.iter().filter(|(_, r)| r.view.result.is_some()).min_by_key(|(_, r)| r.started).map(|(k, _)| *k)
            else {
                return Err(RunRefused::Full);
            };
            runs.remove(&oldest);
        }
        let id = Uuid::new_v4();
        let view = RunView {
            owner,
            name: name.to_owned(),
            base: base.to_owned(),
            done: 0,
            total,
            note: String::new(),
            result: None,
        };
        runs.insert(id, Run { view, started: Instant::now() });
        Ok(Started { id, slot })
    }

    /// Records progress: `done` steps, and the last line to show (if any).
    pub fn progress(&self, id: Uuid, done: usize, note: Option<&str>) {
        if let Some(run) = self.lock().get_mut(&id) {
            run.view.done = done;
            if let Some(note) = note {
                run.view.note = note.to_owned();
            }
        }
    }

    /// Counts one more step done, with its line.
    pub fn step(&self, id: Uuid, note: &str) {
        if let Some(run) = self.lock().get_mut(&id) {
            run.view.done += 1;
            run.view.note = note.to_owned();
        }
    }

    pub fn finish(&self, id: Uuid, result: Result<Outcome, String>) {
        if let Some(run) = self.lock().get_mut(&id) {
            run.view.result = Some(result);
        }
    }

    /// The run `id` as it stands, if `owner` started it (anyone else's is
    /// not there).
    pub fn get(&self, id: Uuid, owner: UserId) -> Option<RunView> {
        self.lock().get(&id).filter(|r| r.view.owner == owner).map(|r| r.view.clone())
    }
}
