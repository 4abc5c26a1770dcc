//! Repair runs as the dashboard shows them: every repair this agent drives,
//! in flight or recently finished, with its progress, its rate against the
//! configured limit, and a timeline of what it did.
//!
//! In memory only: the journal (`journal`) is the durable record of what a
//! repair changed and of where each run is; this board is what an operator
//! watches while it runs, and [`Controls`] is how `mend repair
//! pause|resume|cancel` reaches a run in flight.
//! Bounded: at most [`RUNS_MAX`] runs (the oldest finished ones leave first)
//! of at most [`RUN_EVENTS_MAX`] events each.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Runs kept, in flight and finished.
pub const RUNS_MAX: usize = 32;

/// Events kept per run; beyond it the middle of the timeline is dropped
/// (the first event, how the run started, stays).
pub const RUN_EVENTS_MAX: usize = 64;

/// Where a run is. Also persisted in the run's journal header
/// (`journal::RepairHeader::run`), so a restart knows which runs to resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Moving entries (in the journal after a crash: interrupted, resumed
    /// at the next start).
    Running,
    /// Stopped between segments by `mend repair pause`; `resume` goes on
    /// from the next segment.
    Paused,
    /// Stopped between segments by `mend repair cancel`: what was done stays
    /// (and can be undone), the rest is dropped.
    Cancelled,
    /// Finished without an error.
    #[default]
    Done,
    /// Stopped by an error; `resume` retries from the segment that failed.
    Failed,
}

impl RunState {
    /// The state's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Cancelled => "cancelled",
            RunState::Done => "done",
            RunState::Failed => "failed",
        }
    }
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
    /// Segments of the run (subtrees; 1 for a small repair).
    pub segments_total: u32,
    /// Segments finished.
    pub segments_done: u32,
    /// The segment being repaired (empty between segments).
    pub segment: String,
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
            make_room(runs);
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
                segments_total: 0,
                segments_done: 0,
                segment: String::new(),
                events: vec![RunEvent {
                    at_ms: now_ms,
                    what: format!("started: {keys_total} keys planned"),
                }],
            });
        })
    }

    /// A paused, failed or interrupted run goes on: the run already on the
    /// board is running again, or (after a restart) a new entry starts.
    pub fn resume(&self, view: RunView, now_ms: u64, what: String) {
        self.with(|runs| {
            if let Some(r) = runs.iter_mut().find(|r| r.id == view.id) {
                r.state = RunState::Running;
                r.finished_ms = 0;
                push_event(r, now_ms, what);
                return;
            }
            make_room(runs);
            let mut view = view;
            push_event(&mut view, now_ms, what);
            runs.push_back(view);
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

    /// Segment progress of a run: `done` of `total` finished, `current`
    /// under way (empty between segments).
    pub fn segment(&self, id: &str, done: u32, total: u32, current: &str) {
        self.with_run(id, |r| {
            r.segments_done = done;
            r.segments_total = total;
            r.segment = current.to_string();
        })
    }

    /// A run ends: `Ok(summary)` or `Err(why)` ([`RunState::Done`] or
    /// [`RunState::Failed`]).
    pub fn finish(&self, id: &str, now_ms: u64, outcome: Result<String, String>) {
        match outcome {
            Ok(s) => self.stop(id, now_ms, RunState::Done, format!("done: {s}")),
            Err(e) => self.stop(id, now_ms, RunState::Failed, format!("failed: {e}")),
        }
    }

    /// A run stops in `state` (paused, cancelled, done or failed), with
    /// the last step of its timeline.
    pub fn stop(&self, id: &str, now_ms: u64, state: RunState, what: String) {
        self.with_run(id, |r| {
            r.finished_ms = now_ms;
            r.state = state;
            r.segment.clear();
            push_event(r, now_ms, what)
        })
    }

    /// Every run kept, newest first.
    pub fn list(&self) -> Vec<RunView> {
        self.with(|runs| runs.iter().rev().cloned().collect())
    }
}

/// Drops runs until one more fits: the oldest stopped first; if all run,
/// the oldest.
fn make_room(runs: &mut VecDeque<RunView>) {
    while runs.len() >= RUNS_MAX {
        let i = runs
            .iter()
            .position(|r| r.state != RunState::Running)
            .unwrap_or(0);
        runs.remove(i);
    }
}

fn push_event(r: &mut RunView, at_ms: u64, what: String) {
    if r.events.len() >= RUN_EVENTS_MAX {
        r.events.remove(1);
    }
    r.events.push(RunEvent { at_ms, what });
}

/// What an operator wants of a run in flight; the run looks between
/// segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Go on.
    Run,
    /// Stop after the current segment, resumable.
    Pause,
    /// Stop after the current segment and drop the rest.
    Cancel,
}

impl Want {
    fn from_u8(v: u8) -> Want {
        match v {
            1 => Want::Pause,
            2 => Want::Cancel,
            _ => Want::Run,
        }
    }
}

/// The runs in flight in this process, by repair id: at most one task runs
/// a given repair (a second resume finds it claimed).
#[derive(Debug, Default)]
pub struct Controls {
    live: Arc<Mutex<HashMap<String, Arc<AtomicU8>>>>,
}

/// A run's claim on its id while its task runs; released when dropped.
#[derive(Debug)]
pub struct Claim {
    live: Arc<Mutex<HashMap<String, Arc<AtomicU8>>>>,
    id: String,
    want: Arc<AtomicU8>,
}

impl Controls {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Arc<AtomicU8>>) -> R) -> R {
        let mut g = self.live.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Claims `id` for a task about to run it; `None` if one already does.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        self.with(|live| {
            if live.contains_key(id) {
                return None;
            }
            let want = Arc::new(AtomicU8::new(Want::Run as u8));
            live.insert(id.to_string(), want.clone());
            Some(Claim {
                live: self.live.clone(),
                id: id.to_string(),
                want,
            })
        })
    }

    /// Asks the task running `id` for `want`; false when no task runs it.
    pub fn request(&self, id: &str, want: Want) -> bool {
        self.with(|live| match live.get(id) {
            Some(w) => {
                w.store(want as u8, Ordering::SeqCst);
                true
            }
            None => false,
        })
    }

    /// What is asked of the task running `id`, if one does.
    pub fn wanted(&self, id: &str) -> Option<Want> {
        self.with(|live| {
            live.get(id)
                .map(|w| Want::from_u8(w.load(Ordering::SeqCst)))
        })
    }
}

impl Claim {
    /// What the operator wants now.
    pub fn want(&self) -> Want {
        Want::from_u8(self.want.load(Ordering::SeqCst))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut g = self.live.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_is_claimed_once_and_hears_what_is_wanted() {
        let c = Controls::default();
        assert!(!c.request("r", Want::Pause), "nothing runs r yet");
        let claim = c.claim("r").expect("first claim");
        assert!(c.claim("r").is_none(), "a second task may not run r");
        assert_eq!(claim.want(), Want::Run);
        assert!(c.request("r", Want::Pause));
        assert_eq!(claim.want(), Want::Pause);
        assert_eq!(c.wanted("r"), Some(Want::Pause));
        drop(claim);
        assert_eq!(c.wanted("r"), None);
        assert!(c.claim("r").is_some(), "released when the task ends");
    }

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
