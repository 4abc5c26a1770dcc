//! Repair runs as the dashboard shows them: every repair this agent drives,
//! in flight or recently finished, with its progress, its rate against the
//! configured limit, and a timeline of what it did.
//!
//! In memory only: the journal (`journal`) is the durable record of what a
//! repair changed; this board is what an operator watches while it runs.
//! Bounded: at most [`RUNS_MAX`] runs (the oldest finished ones leave first)
//! of at most [`RUN_EVENTS_MAX`] events each.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Runs kept, in flight and finished.
pub const RUNS_MAX: usize = 32;

/// Events kept per run; beyond it the middle of the timeline is dropped
/// (the first event, how the run started, stays).
pub const RUN_EVENTS_MAX: usize = 64;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Moving entries.
    Running,
    /// Finished without an error.
    Done,
    /// Stopped by an error.
    Failed,
}

/// One step of a run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvent {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// What happened, for a person.
    pub what: String,
}

/// A repair run as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// The repair id (`mend undo ID`).
    pub id: String,
    /// The peer's node id.
    pub peer: String,
    /// Where it is.
    pub state: RunState,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// When it finished (0 while running).
    pub finished_ms: u64,
    /// Keys planned.
    pub keys_total: u64,
    /// Keys sent or applied so far.
    pub keys_done: u64,
    /// Bytes streamed so far.
    pub bytes: u64,
    /// The rate limit it runs under, bytes/s (0 = unlimited).
    pub rate_limit_bytes_per_s: u64,
    /// The timeline, oldest first.
    pub events: Vec<RunEvent>,
}

/// The runs of this agent.
#[derive(Debug, Default)]
pub struct RunBoard {
    runs: Mutex<VecDeque<RunView>>,
}

impl RunBoard {
    fn with<R>(&self, f: impl FnOnce(&mut VecDeque<RunView>) -> R) -> R {
        // Plain data: a panic elsewhere leaves nothing half-updated that matters.
        let mut g = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn with_run(&self, id: &str, f: impl FnOnce(&mut RunView)) {
        self.with(|runs| {
            if let Some(r) = runs.iter_mut().find(|r| r.id == id) {
                f(r)
            }
        })
    }

    /// A run starts.
    pub fn start(&self, id: &str, peer: &str, keys_total: u64, rate_limit: u64, now_ms: u64) {
        self.with(|runs| {
            while runs.len() >= RUNS_MAX {
                // Oldest finished first; if all run, the oldest.
                let i = runs
                    .iter()
                    .position(|r| r.state != RunState::Running)
                    .unwrap_or(0);
                runs.remove(i);
            }
            runs.push_back(RunView {
                id: id.to_string(),
                peer: peer.to_string(),
                state: RunState::Running,
                started_ms: now_ms,
                finished_ms: 0,
                keys_total,
                keys_done: 0,
                bytes: 0,
                rate_limit_bytes_per_s: rate_limit,
                events: vec![RunEvent {
                    at_ms: now_ms,
                    what: format!("started: {keys_total} keys planned"),
                }],
            });
        })
    }

    /// Progress of a run.
    pub fn progress(&self, id: &str, keys_done: u64, bytes: u64) {
        self.with_run(id, |r| {
            r.keys_done = keys_done;
            r.bytes = bytes;
        })
    }

    /// A step of a run.
    pub fn event(&self, id: &str, now_ms: u64, what: impl Into<String>) {
        let what = what.into();
        self.with_run(id, |r| push_event(r, now_ms, what))
    }

    /// A run ends: `Ok(summary)` or `Err(why)`.
    pub fn finish(&self, id: &str, now_ms: u64, outcome: Result<String, String>) {
        self.with_run(id, |r| {
            r.finished_ms = now_ms;
            let what = match outcome {
                Ok(s) => {
                    r.state = RunState::Done;
                    format!("done: {s}")
                }
                Err(e) => {
                    r.state = RunState::Failed;
                    format!("failed: {e}")
                }
            };
            push_event(r, now_ms, what)
        })
    }

    /// Every run kept, newest first.
    pub fn list(&self) -> Vec<RunView> {
        self.with(|runs| runs.iter().rev().cloned().collect())
    }
}

fn push_event(r: &mut RunView, at_ms: u64, what: String) {
    if r.events.len() >= RUN_EVENTS_MAX {
        r.events.remove(1);
    }
    r.events.push(RunEvent { at_ms, what });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_is_bounded_and_keeps_running_runs() {
        let b = RunBoard::default();
        b.start("running", "p", 10, 0, 1);
        for i in 0..RUNS_MAX as u64 + 5 {
            let id = format!("r{i}");
            b.start(&id, "p", 1, 0, 2 + i);
            b.finish(&id, 3 + i, Ok("1 key".into()));
        }
        let l = b.list();
        assert_eq!(l.len(), RUNS_MAX);
        assert!(
            l.iter().any(|r| r.id == "running"),
            "a run in flight is never dropped while finished ones remain"
        );
        assert_eq!(l[0].id, format!("r{}", RUNS_MAX as u64 + 4), "newest first");
        for i in 0..RUN_EVENTS_MAX + 10 {
            b.event("running", 100 + i as u64, format!("step {i}"));
        }
        let r = b.list().into_iter().find(|r| r.id == "running").unwrap();
        assert_eq!(r.events.len(), RUN_EVENTS_MAX);
        assert_eq!(r.events[0].what, "started: 10 keys planned");
        assert_eq!(
            r.events.last().unwrap().what,
            format!("step {}", RUN_EVENTS_MAX + 9)
        );
    }
}
