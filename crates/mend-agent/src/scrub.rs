//! The background scrub: verifies `scrub.buckets_per_s` buckets a second
//! against their data rows, cycling through every bucket of every range,
//! and rebuilds any leaf found out of step, online (the store holds its
//! writer lock only while the buckets of one step are recomputed). A tree
//! corrupted on disk or by a bug is found without stopping the agent and
//! without waiting for an exchange to trip over it.
//!
//! The persisted leaves are read [`SNAPSHOT_STEPS`] steps' worth at a time
//! (`Store::snapshot_leaves`): every read of the `leaves` column family
//! sorts a copy of its memtable, and one read per step cost the write path
//! up to a fifth of its throughput under churn (BENCHMARKS.md, "Running for
//! months"). A leaf written since its snapshot had its row rewritten since,
//! so it is checked against its data only.
//!
//! The position persists in the meta row `agent/scrub` (range u16, bucket
//! u32, big-endian), so a restarted agent continues where it stopped
//! instead of re-verifying the first buckets forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use mend_store::{Cf, LeafSnapshot, Op};

use crate::error::AgentError;
use crate::state::{AgentBackend, AgentState};

const CURSOR_KEY: &[u8] = b"agent/scrub";

/// Scrub steps one read of the persisted leaves serves.
pub const SNAPSHOT_STEPS: u32 = 16;

/// Where the scrub is: the next (range, bucket) to verify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Range id.
    pub range: u16,
    /// First bucket of the next step.
    pub bucket: u32,
}

fn load_cursor<B: AgentBackend>(state: &AgentState<B>) -> Cursor {
    match state.store.backend().get(Cf::Meta, CURSOR_KEY) {
        Ok(Some(v)) if v.len() == 6 => Cursor {
            range: u16::from_be_bytes([v[0], v[1]]),
            bucket: u32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        },
        _ => Cursor::default(),
    }
}

/// What one scrub step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Range name verified.
    pub range: String,
    /// Buckets verified.
    pub verified: u32,
    /// Buckets found out of step and rebuilt.
    pub fixed: Vec<u32>,
    /// Where the next step starts.
    pub next: Cursor,
}

/// Verifies up to `count` buckets from `at` (within one range) and fixes
/// any out of step; returns what it did and the next position.
pub async fn step<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    at: Cursor,
    count: u32,
) -> Result<Step, AgentError> {
    step_with(state, at, count, &mut None).await
}

/// [`step`] against the persisted leaves of `snap`, first replaced by a
/// read of the next [`SNAPSHOT_STEPS`] steps' buckets when it does not
/// cover this step's.
pub async fn step_with<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    at: Cursor,
    count: u32,
    snap: &mut Option<LeafSnapshot>,
) -> Result<Step, AgentError> {
    let specs = state.store.ranges().specs();
    let at = if usize::from(at.range) < specs.len() {
        at
    } else {
        Cursor::default()
    };
    let spec = &specs[usize::from(at.range)];
    // The tree's depth now: a deepened tree has more buckets (a cursor
    // from before goes on from the same number, over the finer buckets).
    let depth = state.store.shape(at.range)?.depth;
    let buckets = state.store.shape(at.range)?.buckets();
    let first = u64::from(at.bucket).min(buckets);
    let n = (buckets - first).min(u64::from(count.max(1)));
    let (id, b0, n32) = (at.range, first as u32, n as u32);
    let held = snap
        .take()
        .filter(|s| s.depth() == depth && s.covers(id, b0, n32));
    let (fixed, kept) = state
        .blocking(move |s| {
            let snap = match held {
                Some(h) => h,
                None => s.snapshot_leaves(id, b0, n32.saturating_mul(SNAPSHOT_STEPS))?,
            };
            Ok((s.repair_buckets_with(id, b0, n32, &snap)?, snap))
        })
        .await?;
    *snap = Some(kept);
    let end = first + n;
    let next = if end >= buckets {
        Cursor {
            range: if usize::from(at.range) + 1 < specs.len() {
                at.range + 1
            } else {
                0
            },
            bucket: 0,
        }
    } else {
        Cursor {
            range: at.range,
            bucket: end as u32,
        }
    };
    state.metrics.scrub_buckets.inc_by(n);
    if !fixed.is_empty() {
        state
            .metrics
            .tree_mismatch(&spec.name, "scrub", fixed.len() as u64);
        tracing::warn!(range = %spec.name, buckets = ?fixed, "scrub: buckets out of step with the data, rebuilt");
    }
    let mut row = next.range.to_be_bytes().to_vec();
    row.extend_from_slice(&next.bucket.to_be_bytes());
    state
        .blocking(move |s| {
            s.backend()
                .write(vec![Op::Put(Cf::Meta, CURSOR_KEY.to_vec(), row)], false)
        })
        .await?;
    Ok(Step {
        range: spec.name.clone(),
        verified: n32,
        fixed,
        next,
    })
}

/// Runs the scrub at `scrub.buckets_per_s` (one step a second) until
/// `shutdown`; off at 0.
pub fn spawn<B: AgentBackend>(state: Arc<AgentState<B>>, mut shutdown: watch::Receiver<bool>) {
    let rate = state.config.scrub.buckets_per_s;
    if rate == 0 {
        return;
    }
    let per_step = u32::try_from(rate).unwrap_or(u32::MAX);
    tokio::spawn(async move {
        let mut at = load_cursor(&state);
        let mut snap = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            match step_with(&state, at, per_step, &mut snap).await {
                Ok(s) => at = s.next,
                Err(e) => {
                    tracing::warn!(error = %e.message(), "scrub step failed; retried next second")
                }
            }
        }
    });
}
