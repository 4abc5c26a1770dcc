//! Trees that deepen as their ranges grow (`[deepen]`): every
//! `deepen.check_every_ms`, each range whose entries pass
//! `deepen.entries_per_bucket` per bucket on average gets one more level
//! ([`mend_store::Store::deepen`], online: writes wait only for its
//! switch), unless its tree would pass `deepen.tree_bytes_max` in memory.
//! Peers compare at the smaller of their depths (protocol 5), so no
//! coordination is needed; a range is deepened one level per check, one
//! range at a time, on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::AgentError;
use crate::metrics::{RangeLabel, RangeReason};
use crate::state::{AgentBackend, AgentState};

/// Checks every range once and deepens those due; returns the deepenings
/// done. Publishes each range's depth.
pub async fn check<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
) -> Result<Vec<mend_store::Deepened>, AgentError> {
    let per_bucket = state.config.deepen.entries_per_bucket;
    let mut done = Vec::new();
    for (id, spec) in state.store.ranges().specs().iter().enumerate() {
        let id = id as u16;
        // One deepening at a time (this check, called by the background
        // task or a test; a stop waits on it too); due is decided under it.
        let _one = state.deepening.lock().await;
        let shape = state.store.shape(id)?;
        let fits = shape
            .at_depth(shape.depth + 1)
            .is_ok_and(|s| s.tree_bytes() <= state.config.deepen.tree_bytes_max);
        let due = per_bucket > 0 && fits && state.store.deepen_due(id, per_bucket)?;
        if due {
            let stopping = state.stopping.clone();
            let r = state
                .blocking(move |s| {
                    s.deepen_until(id, &|| stopping.load(std::sync::atomic::Ordering::Relaxed))
                })
                .await;
            let outcome = if r.is_ok() { "done" } else { "failed" };
            state
                .metrics
                .tree_deepenings
                .get_or_create(&RangeReason {
                    range: spec.name.clone(),
                    outcome: outcome.into(),
                })
                .inc();
            match r {
                Ok(d) => {
                    tracing::info!(
                        range = %spec.name, from = d.from.depth, to = d.to.depth,
                        entries = d.entries, took_ms = d.took_ms, writers_waited_ms = d.locked_ms,
                        caught_up = d.caught_up, "tree deepened"
                    );
                    done.push(d);
                }
                Err(e) => {
                    tracing::warn!(range = %spec.name, error = %e.message(), "deepening failed; retried at the next check");
                }
            }
        }
        drop(_one);
        let depth = state.store.shape(id)?.depth;
        state
            .metrics
            .tree_depth
            .get_or_create(&RangeLabel::of(&spec.name))
            .set(i64::from(depth));
    }
    Ok(done)
}

/// Runs [`check`] every `deepen.check_every_ms` until `shutdown`; the
/// first check runs at once.
pub fn spawn<B: AgentBackend>(state: Arc<AgentState<B>>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(state.config.deepen.check_every_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            if let Err(e) = check(&state).await {
                tracing::warn!(error = %e.message(), "deepening check failed; retried at the next");
            }
        }
    });
}
