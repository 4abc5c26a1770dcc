//! What an operator does to a repair run once it started: pause, resume,
//! cancel (`mend repair pause|resume|cancel ID`), and the runs that have
//! segments left (`mend status`, the dashboard). A run in flight hears a
//! pause or cancel through its `runs::Claim` and stops after its current
//! segment; a run that is not in flight (paused, failed, or interrupted by
//! a crash) is changed in its journal header directly. At start, the
//! agent resumes every run the journal says was running
//! ([`resume_interrupted`]).

use std::sync::Arc;

use serde::Serialize;

use super::{RepairSummary, run_segments, segment};
use crate::error::AgentError;
use crate::journal::{self, RepairHeader};
use crate::runs::{RunState, RunView, Want};
use crate::state::{AgentBackend, AgentState};

/// A run as `mend status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// The repair id.
    pub id: String,
    /// The peer's node id.
    pub peer: String,
    /// Where the run is, as its journal header says (a paused or cancelled
    /// run in flight reads `running` until its current segment ends).
    pub state: RunState,
    /// A task of this agent runs it now.
    pub live: bool,
    /// Segments finished.
    pub segments_done: u32,
    /// Segments of the run.
    pub segments_total: u32,
    /// Keys of the finished segments.
    pub keys_done: u64,
    /// Keys planned.
    pub keys_total: u64,
    /// Why it last failed (empty unless failed).
    pub error: String,
}

/// What an operator asks of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop after the current segment; resumable.
    Pause,
    /// Go on from the first unfinished segment.
    Resume,
    /// Stop after the current segment and drop the segments left; what
    /// was done stays and can be undone.
    Cancel,
}

fn info(h: &RepairHeader, live: bool) -> RunInfo {
    RunInfo {
        id: h.id.clone(),
        peer: h.peer_node.clone(),
        state: h.run,
        live,
        segments_done: h.segments_done,
        segments_total: h.segments_total,
        keys_done: h.keys_done,
        keys_total: h.keys_total,
        error: h.error.clone(),
    }
}

/// The journal header of repair `id`, which this agent must have run
/// (`verb` names what the caller wants to do, for the error).
pub(super) async fn initiated<B: AgentBackend>(
    state: &AgentState<B>,
    id: &str,
    verb: &str,
) -> Result<RepairHeader, AgentError> {
    if !journal::valid_id(id) {
        return Err(AgentError::invalid(
            "repair id must be 1..=128 printable ASCII bytes (journal::REPAIR_ID_BYTES_MAX)",
        ));
    }
    let id2 = id.to_string();
    let h = state
        .blocking(move |s| match journal::get_header(s, &id2)? {
            Some(h) => Ok(Ok(h)),
            None => Ok(Err(journal::missing(s, &id2)?)),
        })
        .await?
        .map_err(AgentError::NotFound)?;
    if !h.initiator {
        return Err(AgentError::precondition(format!(
            "repair {id} was run by another agent; {verb} it there"
        )));
    }
    Ok(h)
}

/// Does `action` to run `id`; returns the run as it is afterwards (a
/// pause or cancel of a run in flight takes effect after its current
/// segment: poll `mend status`).
pub async fn control<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    id: &str,
    action: Action,
) -> Result<RunInfo, AgentError> {
    let h = initiated(state, id, "control").await?;
    let want = match action {
        Action::Resume => return resume(state, h).await,
        Action::Pause => Want::Pause,
        Action::Cancel => Want::Cancel,
    };
    if state.controls.request(id, want) {
        return Ok(info(&h, true));
    }
    // Not in flight: change the header, holding the id so that no resume
    // starts meanwhile.
    let Some(_claim) = state.controls.claim(id) else {
        // A task took it between the two calls: ask it instead.
        state.controls.request(id, want);
        return Ok(info(&h, true));
    };
    let end = match (h.run, want) {
        (RunState::Done, _) => {
            return Err(AgentError::precondition(format!(
                "repair {id} finished; there is nothing to {}",
                if want == Want::Pause {
                    "pause"
                } else {
                    "cancel"
                }
            )));
        }
        (RunState::Cancelled, Want::Pause) => {
            return Err(AgentError::precondition(format!(
                "repair {id} was cancelled; there is nothing to pause"
            )));
        }
        (_, Want::Pause) => RunState::Paused,
        _ => RunState::Cancelled,
    };
    let mut h = h;
    h.run = end;
    let h2 = h.clone();
    state
        .blocking(move |s| {
            if end == RunState::Cancelled {
                segment::clear(s, &h2.id)?;
            }
            journal::put_header(s, &h2)
        })
        .await?;
    state.runs.stop(
        id,
        state.store.now_ms(),
        end,
        format!("{} while stopped", end.as_str()),
    );
    Ok(info(&h, false))
}

/// Resumes run `h` from its first unfinished segment in a background task.
async fn resume<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    mut h: RepairHeader,
) -> Result<RunInfo, AgentError> {
    let id = h.id.clone();
    if h.undone {
        return Err(AgentError::precondition(format!(
            "repair {id} was undone; run a new repair instead"
        )));
    }
    if matches!(h.run, RunState::Done | RunState::Cancelled) {
        return Err(AgentError::precondition(format!(
            "repair {id} is {}; there is nothing to resume",
            h.run.as_str()
        )));
    }
    let Some(claim) = state.controls.claim(&id) else {
        // In flight: a pause or cancel it has not acted on yet is withdrawn.
        state.controls.request(&id, Want::Run);
        return Ok(info(&h, true));
    };
    h.run = RunState::Running;
    h.error.clear();
    let h2 = h.clone();
    let segments = state
        .blocking(move |s| {
            let segs = segment::load(s, &h2.id)?;
            journal::put_header(s, &h2)?;
            Ok(segs)
        })
        .await?;
    let now = state.store.now_ms();
    state.runs.resume(
        RunView {
            id: id.clone(),
            peer: h.peer_node.clone(),
            state: RunState::Running,
            started_ms: h.created_ms,
            finished_ms: 0,
            keys_total: h.keys_total,
            keys_done: h.keys_done,
            bytes: 0,
            rate_limit_bytes_per_s: h.rate_bytes_per_s,
            segments_total: h.segments_total,
            segments_done: h.segments_done,
            segment: String::new(),
            events: Vec::new(),
        },
        now,
        format!(
            "resumed at segment {} of {}",
            h.segments_done + 1,
            h.segments_total
        ),
    );
    let out = info(&h, true);
    let st = state.clone();
    tokio::spawn(async move {
        let mut sum = RepairSummary {
            repair_id: h.id.clone(),
            ..Default::default()
        };
        match run_segments(&st, None, h, segments, &claim, None, &mut sum).await {
            Ok(end) => {
                tracing::info!(repair = %sum.repair_id, state = end.as_str(), "resumed repair stopped")
            }
            Err(e) => {
                tracing::warn!(repair = %sum.repair_id, error = %e.message(), "resumed repair failed")
            }
        }
    });
    Ok(out)
}

/// The runs with segments left (running, paused, failed or interrupted)
/// among `all` (the journal's headers, oldest first, as `journal::list`
/// gives them), newest first.
pub fn unfinished<B: AgentBackend>(state: &AgentState<B>, all: &[RepairHeader]) -> Vec<RunInfo> {
    all.iter()
        .rev()
        .filter(|h| h.unfinished())
        .map(|h| info(h, state.controls.wanted(&h.id).is_some()))
        .collect()
}

/// Resumes, in the background, every run the journal says was running
/// when the agent last stopped (killed or crashed mid-run). Called once at
/// start; paused and failed runs wait for `mend repair resume`.
pub fn resume_interrupted<B: AgentBackend>(state: &Arc<AgentState<B>>) {
    let st = state.clone();
    tokio::spawn(async move {
        let all = match st.blocking(|s| journal::list(s)).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e.message(), "could not list repairs to resume");
                return;
            }
        };
        for h in all {
            if h.initiator && h.run == RunState::Running {
                tracing::info!(repair = %h.id, done = h.segments_done, total = h.segments_total, "resuming an interrupted repair");
                if let Err(e) = resume(&st, h).await {
                    tracing::warn!(error = %e.message(), "could not resume a repair");
                }
            }
        }
    });
}
