//! Repair: plan from a classified diff, then move exactly the divergent
//! entries to the side that is behind, through the store's apply rule on
//! both ends (so a newer write made meanwhile is never overwritten and a
//! second run changes nothing), paced by byte and key rate limits, and
//! journaled with before-images on both sides for undo. A large plan runs
//! segment by segment (`segment`), pausable, resumable and cancellable
//! between segments (`control`).

pub mod control;
mod fetch;
mod plan;
mod progress;
mod push;
mod restamp;
pub mod rows;
mod run;
pub mod segment;
mod shadow;
mod undo;

pub use plan::{DIGEST_ONLY_AUTHORITY_SKIP, DIGEST_ONLY_SKIP, VERSIONLESS_SKIP, plan, plan_for};
pub use undo::{UndoSummary, undo};

use run::run_segments;
use shadow::shadow_run;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use mend_core::classify::{Category, Side};

use crate::error::AgentError;
use crate::exchange::diff;
use crate::journal::{self, RepairHeader};
use crate::outcome::DiffOutcome;
use crate::runs::RunState;
use crate::state::{AgentBackend, AgentState};

/// Entries per push message and per local apply batch.
pub const REPAIR_BATCH_KEYS: usize = 256;

/// Value bytes per push message before it is sent early (1 MiB).
pub const REPAIR_BATCH_BYTES: usize = 1 << 20;

// A push batch must fit one `PushRequest`: at most REPAIR_BATCH_KEYS
// entries (the peer's PUSH_ENTRIES_MAX), and, since a batch is sent once its
// values pass REPAIR_BATCH_BYTES, just under that plus one largest value,
// with every key at its largest.
const _: () = {
    use mend_core::exchange::LEAF_ENTRY_OVERHEAD_BYTES;
    use mend_core::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
    assert!(REPAIR_BATCH_KEYS <= crate::wire::PUSH_ENTRIES_MAX);
    assert!(
        REPAIR_BATCH_BYTES
            + VALUE_BYTES_MAX
            + REPAIR_BATCH_KEYS * (KEY_BYTES_MAX + LEAF_ENTRY_OVERHEAD_BYTES)
            <= mend_rpc::MESSAGE_BYTES_MAX
    );
};

pub use mend_core::playbook::DEFAULT_CATEGORIES;
use mend_core::playbook::{Resolution, SkipNote};

/// What a repair should do.
#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Byte rate limit (0 = none).
    pub rate_bytes_per_s: u64,
    /// Key rate limit (0 = none).
    pub rate_keys_per_s: u64,
    /// Categories to repair; empty = [`DEFAULT_CATEGORIES`].
    pub categories: Vec<Category>,
    /// Apply to checkpoints of both stores, not the live ones.
    pub shadow: bool,
}

/// The predicted outcome of a shadow run.
#[derive(Debug, Clone, Default)]
pub struct ShadowOutcome {
    /// Planned keys that would be equal on both sides.
    pub converged: u64,
    /// Planned keys that would still differ, with why.
    pub remaining: Vec<(Vec<u8>, SkipNote)>,
}

/// A key planned for repair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    /// The key.
    pub key: Vec<u8>,
    /// Its category.
    pub category: Category,
    /// Who receives the winning entry.
    pub behind: Side,
    /// Newer-wins, or toward the range's authority.
    pub resolution: Resolution,
}

/// The outcome of a repair (or its plan, for a dry run).
#[derive(Debug, Clone, Default)]
pub struct RepairSummary {
    /// Journal id (empty for dry runs).
    pub repair_id: String,
    /// True for a dry run.
    pub dry_run: bool,
    /// Keys written on either side.
    pub keys_repaired: u64,
    /// Keys written locally.
    pub keys_to_local: u64,
    /// Keys written at the peer.
    pub keys_to_peer: u64,
    /// Keys resolved toward their range's authority: its content re-stamped
    /// here (newer than both sides' versions) and pushed.
    pub keys_toward_authority: u64,
    /// Entry bytes streamed (protobuf entries plus gRPC framing).
    pub bytes_streamed: u64,
    /// Keys not repaired, with why.
    pub skipped: Vec<(Vec<u8>, SkipNote)>,
    /// The plan.
    pub plan: Vec<Planned>,
    /// Wall time.
    pub elapsed: Duration,
    /// The prediction, for shadow runs.
    pub shadow: Option<ShadowOutcome>,
    /// Where the run stopped: done, or paused or cancelled between
    /// segments (done for dry and shadow runs).
    pub run: RunState,
    /// Segments finished.
    pub segments_done: u32,
    /// Segments of the run (`segment`).
    pub segments_total: u32,
}

/// Progress callback: (keys done, keys total, bytes streamed).
pub type Progress = mpsc::Sender<(u64, u64, u64)>;

/// Diffs against `addr` and repairs what the plan selects.
pub async fn repair<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    range: Option<&str>,
    opts: RepairOptions,
    progress: Option<Progress>,
) -> Result<RepairSummary, AgentError> {
    let out = repair_once(state, addr, range, opts, progress).await;
    crate::exchange::forget_on_error(state, addr, out)
}

async fn repair_once<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    range: Option<&str>,
    opts: RepairOptions,
    progress: Option<Progress>,
) -> Result<RepairSummary, AgentError> {
    let started = Instant::now();
    let d = diff(state, addr, range).await?;
    repair_planned(state, addr, &d, opts, progress, started).await
}

/// Repairs exactly what `d` plans (no fresh diff): the scheduled playbook
/// repairs the key set that passed its blast-radius check, not whatever a
/// later diff finds. Entries are still read fresh and written through both
/// sides' apply rule, so a key changed since `d` is never set back.
pub async fn repair_outcome<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    d: &DiffOutcome,
    opts: RepairOptions,
) -> Result<RepairSummary, AgentError> {
    let out = repair_planned(state, addr, d, opts, None, Instant::now()).await;
    crate::exchange::forget_on_error(state, addr, out)
}

async fn repair_planned<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    d: &DiffOutcome,
    opts: RepairOptions,
    progress: Option<Progress>,
    started: Instant,
) -> Result<RepairSummary, AgentError> {
    let (planned, skipped) = plan_for(state, d, &opts.categories);
    let mut sum = RepairSummary {
        dry_run: opts.dry_run,
        skipped,
        plan: planned.clone(),
        ..Default::default()
    };
    if opts.dry_run || planned.is_empty() {
        sum.elapsed = started.elapsed();
        return Ok(sum);
    }
    if opts.shadow {
        sum.shadow = Some(shadow_run(state, addr, &planned).await?);
        sum.elapsed = started.elapsed();
        return Ok(sum);
    }
    let now = state.store.now_ms();
    let id = new_repair_id(&state.node_id, now);
    sum.repair_id = id.clone();
    let mut header = RepairHeader::new(id.clone(), addr.to_string(), true, now);
    header.peer_node = d.peer_node.clone();
    header.keys_total = planned.len() as u64;
    header.rate_bytes_per_s = opts.rate_bytes_per_s;
    header.rate_keys_per_s = opts.rate_keys_per_s;
    let min = state.config.limits.repair_segment_keys_min;
    // The header and every segment's plan in one batch: from here on the
    // run can be resumed from the journal alone.
    let (header, segments) = state
        .blocking(move |s| {
            let segs = segment::split(s, planned, min)?;
            header.segments_total = segs.len() as u32;
            let mut ops = segment::rows(&header.id, &segs);
            ops.push(journal::header_op(&header)?);
            s.backend().write(ops, false)?;
            Ok((header, segs))
        })
        .await?;
    let claim = state
        .controls
        .claim(&id)
        .ok_or_else(|| AgentError::internal(format!("repair {id} is already running")))?;
    state.runs.start(
        &id,
        &d.peer_node,
        header.keys_total,
        opts.rate_bytes_per_s,
        now,
    );
    let segments = (0..).zip(segments).collect();
    run_segments(state, Some(d), header, segments, &claim, progress, &mut sum).await?;
    sum.elapsed = started.elapsed();
    Ok(sum)
}

async fn report(p: &Option<Progress>, done: u64, total: u64, bytes: u64) {
    if let Some(tx) = p {
        let _ = tx.try_send((done, total, bytes));
    }
}

/// A repair id: node, start time, and 64 random bits, so ids of repairs
/// started in the same millisecond differ too. At most
/// `journal::REPAIR_ID_BYTES_MAX` bytes for any node id.
pub fn new_repair_id(node: &mend_core::NodeId, now_ms: u64) -> String {
    format!("{node}-{now_ms}-{:016x}", rand::random::<u64>())
}

fn rpc_timeout<B: AgentBackend>(state: &AgentState<B>) -> std::time::Duration {
    std::time::Duration::from_millis(state.config.limits.rpc_timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_ids_do_not_collide_even_within_one_millisecond() {
        // Ids of repairs started in the same millisecond by the same node
        // must still differ: a collision would mix two journals.
        let node = mend_core::NodeId::new("n".repeat(64)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let id = new_repair_id(&node, 1_796_000_000_000);
            assert!(crate::journal::valid_id(&id), "{id}");
            assert!(seen.insert(id), "repair id collision");
        }
    }
}
