//! A repair run as it goes ([`Run`]): progress to the caller's stream and to
//! the dashboard's board, and the steps of its timeline.

use std::sync::Arc;

use crate::pace::Pacer;
use crate::runs::RunState;
use crate::state::{AgentBackend, AgentState};

use super::{Progress, RepairSummary, report};

/// Where a segment's keys fall in the whole run, for progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Position {
    /// Keys of the segments finished before it.
    pub(super) done: u64,
    /// Keys of the whole run.
    pub(super) total: u64,
}

/// A repair run as it goes: progress to the caller's stream and to the
/// dashboard's board, and the steps of its timeline.
pub(super) struct Run<'a, B: AgentBackend> {
    state: &'a AgentState<B>,
    pub(super) id: String,
    progress: Option<Progress>,
    finished: std::sync::atomic::AtomicBool,
}

impl<B: AgentBackend> Drop for Run<'_, B> {
    /// A run dropped before it finished (its call was cancelled) does not
    /// stay "running" on the board.
    fn drop(&mut self) {
        if !self.finished.load(std::sync::atomic::Ordering::Relaxed) {
            self.finish(Err(
                "stopped before it finished: the call was cancelled".into()
            ));
        }
    }
}

impl<'a, B: AgentBackend> Run<'a, B> {
    /// Run `id` of this agent, reporting to `progress`.
    pub(super) fn new(state: &'a AgentState<B>, id: String, progress: Option<Progress>) -> Self {
        Run {
            state,
            id,
            progress,
            finished: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(super) async fn progress(&self, done: u64, total: u64, bytes: u64) {
        self.state.runs.progress(&self.id, done, bytes);
        report(&self.progress, done, total, bytes).await;
    }

    pub(super) fn event(&self, what: String) {
        self.state
            .runs
            .event(&self.id, self.state.store.now_ms(), what);
    }

    pub(super) fn finish(&self, outcome: Result<String, String>) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.state
            .runs
            .finish(&self.id, self.state.store.now_ms(), outcome);
    }

    pub(super) fn stop(&self, end: RunState, what: String) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.state
            .runs
            .stop(&self.id, self.state.store.now_ms(), end, what);
    }
}

/// What moving one segment's keys in one direction works with: the peer,
/// the run to report progress to, the pacer both directions share, and
/// where the run's count of keys done stands.
pub(super) struct Mover<'a, 'r, B: AgentBackend> {
    /// This agent.
    pub(super) state: &'a Arc<AgentState<B>>,
    /// The peer's address.
    pub(super) addr: &'a str,
    /// The link to it.
    pub(super) peer: &'a crate::exchange::Peer,
    /// The run.
    pub(super) run: &'a Run<'r, B>,
    /// Rates of the run.
    pub(super) pacer: &'a mut Pacer,
    /// Keys of the run done so far.
    pub(super) done: u64,
    /// Keys of the whole run.
    pub(super) total: u64,
}

impl<B: AgentBackend> Mover<'_, '_, B> {
    /// Waits until `bytes` of `keys` entries are within the run's rates,
    /// and counts them streamed.
    pub(super) async fn pace(&mut self, bytes: u64, keys: u64, sum: &mut RepairSummary) {
        self.pacer.take(bytes, keys).await;
        sum.bytes_streamed += bytes;
    }

    /// Counts `keys` more done and reports the run's progress.
    pub(super) async fn advance(&mut self, keys: u64, sum: &RepairSummary) {
        self.done += keys;
        self.run
            .progress(self.done, self.total, sum.bytes_streamed)
            .await;
    }
}
