//! Scheduled exchanges: one task per peer with an interval. Each run diffs,
//! records drift and metrics, applies the playbook, then alerts on budget
//! flips with what the playbook did (warn log and an
//! optional webhook POST of the report), and applies the playbook:
//! automatic repair of the categories it names, only when the blast radius
//! and the peer's health allow, verified afterwards by a re-diff.

use mend_core::playbook::PlaybookAction;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use mend_core::classify::Category;

use mend_rpc::pb;

use crate::config::{Initiate, PeerConfig};
use crate::error::AgentError;
use crate::exchange::diff;
use crate::monitor::{BudgetFlip, Observation, observe_exchange, publish_drift};
use crate::outcome::DiffOutcome;
use crate::repair::{RepairOptions, repair_outcome};
use crate::state::{AgentBackend, AgentState};

/// Spawns the scheduled-exchange tasks, one per peer this node initiates
/// with (`schedule.initiate`); they stop when `shutdown` changes.
pub fn spawn<B: AgentBackend>(state: Arc<AgentState<B>>, shutdown: watch::Receiver<bool>) {
    for p in state.peers() {
        spawn_peer(&state, p, &shutdown);
    }
}

/// Spawns the scheduled-exchange task of one peer (a listed one at start,
/// a discovered one when found), if it has a schedule and this node
/// initiates. Each tick reads the peer's current address, so a discovered
/// peer that moved is reached where it is now.
pub fn spawn_peer<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    p: crate::config::PeerConfig,
    shutdown: &watch::Receiver<bool>,
) {
    let sc = state.config.schedule.clone();
    if p.interval_ms == 0 {
        return;
    }
    if !initiates(state.node_id.as_str(), &p.id, sc.initiate) {
        tracing::info!(peer = %p.id, "scheduled exchanges with this peer are initiated by the peer (the lower node id)");
        return;
    }
    let state = state.clone();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut p = p;
        // The first exchange comes within the jitter window, so agents
        // started together do not all start at once.
        let jitter = p.interval_ms * sc.jitter_percent as u64 / 100;
        let mut wait = Duration::from_millis(rand::random_range(0..=jitter));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            if let Some(now) = state.peer(&p.id) {
                p = now;
            }
            let started = tokio::time::Instant::now();
            let ran = run_scheduled(&state, &p).await;
            let busy = started.elapsed();
            let u = rand::random::<f64>();
            wait = match ran {
                // A skip (counted in its metric) retries at a random
                // point of the next interval: tasks that lost a slot
                // to each other fall out of step instead of meeting
                // again at every tick.
                Err(_) => retry_wait(p.interval_ms, u),
                Ok(_) => {
                    jittered(p.interval_ms, sc.jitter_percent, u)
                        + intensity_wait(busy, sc.intensity_percent)
                }
            };
        }
    });
}

/// Whether `me` initiates the scheduled exchanges with `peer`.
pub fn initiates(me: &str, peer: &str, mode: Initiate) -> bool {
    match mode {
        Initiate::Both => true,
        Initiate::LowerId => me.as_bytes() < peer.as_bytes(),
    }
}

/// The wait before the next exchange: `interval_ms` ± `jitter_percent`,
/// placed by `u` in [0, 1).
pub fn jittered(interval_ms: u64, jitter_percent: u32, u: f64) -> Duration {
    let span = interval_ms as f64 * jitter_percent as f64 / 100.0;
    let ms = interval_ms as f64 - span + 2.0 * span * u.clamp(0.0, 1.0);
    Duration::from_millis(ms.max(0.0) as u64)
}

/// The wait after a skipped exchange: a point of the next interval placed
/// by `u` in [0, 1), no sooner than a tenth of it.
pub fn retry_wait(interval_ms: u64, u: f64) -> Duration {
    let share = 0.1 + 0.9 * u.clamp(0.0, 1.0);
    Duration::from_millis((interval_ms as f64 * share) as u64)
}

/// The extra wait after an exchange that was busy for `busy`, so exchanges
/// keep the node busy at most `intensity_percent` of the time.
pub fn intensity_wait(busy: Duration, intensity_percent: u32) -> Duration {
    let p = intensity_percent.clamp(1, 100);
    busy * (100 - p) / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_side_of_a_pair_initiates() {
        for (a, b) in [("node-a", "node-b"), ("n1", "n10"), ("B", "a")] {
            assert!(initiates(a, b, Initiate::LowerId) != initiates(b, a, Initiate::LowerId));
            assert!(initiates(a, b, Initiate::Both) && initiates(b, a, Initiate::Both));
        }
        assert!(!initiates("x", "x", Initiate::LowerId), "never with itself");
    }

    #[test]
    fn waits_stay_in_their_windows() {
        assert_eq!(jittered(1000, 10, 0.0), Duration::from_millis(900));
        assert_eq!(jittered(1000, 10, 0.5), Duration::from_millis(1000));
        assert_eq!(jittered(1000, 0, 0.9), Duration::from_millis(1000));
        assert_eq!(
            intensity_wait(Duration::from_millis(40), 100),
            Duration::ZERO
        );
        assert_eq!(
            intensity_wait(Duration::from_millis(40), 50),
            Duration::from_millis(40)
        );
        assert_eq!(
            intensity_wait(Duration::from_millis(40), 20),
            Duration::from_millis(160)
        );
        assert_eq!(retry_wait(1000, 0.0), Duration::from_millis(100));
        assert!(retry_wait(1000, 0.999) <= Duration::from_millis(1000));
    }
}

/// Why a scheduled exchange did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Every slot of this node is taken.
    Busy,
    /// Every slot of the peer is taken.
    PeerBusy,
    /// The peer did not answer the reservation.
    PeerUnreachable,
}

impl Skip {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Busy => "busy",
            Skip::PeerBusy => "peer_busy",
            Skip::PeerUnreachable => "peer_unreachable",
        }
    }
}

/// One scheduled exchange with `peer` when both sides have a free slot
/// (`schedule.exchanges_max`); the slots are held through the exchange and
/// its playbook repair. Returns the outcome, or why it did not run.
pub async fn run_scheduled<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    peer: &PeerConfig,
) -> Result<Option<Arc<DiffOutcome>>, Skip> {
    let lease = Duration::from_millis(state.config.schedule.lease_ms);
    let skip = |why: Skip| {
        state
            .metrics
            .scheduled_exchanges_skipped
            .get_or_create(&crate::metrics::PeerReason {
                peer: peer.id.clone(),
                reason: why.as_str().into(),
            })
            .inc();
        tracing::debug!(peer = %peer.id, reason = why.as_str(), "scheduled exchange skipped");
        Err(why)
    };
    let Some(mine) = state.slots.try_take(
        &format!("{} (as initiator)", peer.id),
        lease,
        &state.metrics,
    ) else {
        return skip(Skip::Busy);
    };
    let theirs = match reserve(state, peer, lease).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            state.slots.release(mine, &state.metrics);
            return skip(Skip::PeerBusy);
        }
        Err(e) => {
            state.slots.release(mine, &state.metrics);
            exchange_failed(state, &peer.id, &e);
            tracing::warn!(peer = %peer.id, error = %e.message(), "scheduled exchange: no slot reserved at the peer");
            return skip(Skip::PeerUnreachable);
        }
    };
    let out = run_once(state, peer).await;
    if !theirs.is_empty() {
        let released = async {
            let link = crate::exchange::connect(state, &peer.address).await?;
            link.release(pb::ReleaseRequest { token: theirs }).await
        }
        .await;
        if let Err(e) = released {
            // The peer's lease frees it.
            tracing::info!(peer = %peer.id, error = %e.message(), "slot at the peer not released; its lease will free it");
        }
    }
    state.slots.release(mine, &state.metrics);
    Ok(out)
}

/// Reserves a slot at `peer`: its token, `None` when the peer is busy. A
/// peer too old to know `Reserve` (UNIMPLEMENTED) does not coordinate: the
/// exchange runs with an empty token.
async fn reserve<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &PeerConfig,
    lease: Duration,
) -> Result<Option<String>, AgentError> {
    let link = crate::exchange::connect(state, &peer.address).await?;
    let req = pb::ReserveRequest {
        lease_ms: lease.as_millis() as u64,
    };
    match link.reserve(req).await {
        Ok(r) if r.granted && r.token.is_empty() => {
            Err(AgentError::internal("peer granted a slot without a token"))
        }
        Ok(r) if r.granted => Ok(Some(r.token)),
        Ok(_) => Ok(None),
        Err(e) if e.code() == tonic::Code::Unimplemented => Ok(Some(String::new())),
        Err(e) => {
            let e = crate::link::peer_err(&peer.address, e);
            crate::exchange::forget(state, &peer.address);
            Err(e)
        }
    }
}

/// One scheduled exchange with `peer`, including the playbook.
pub async fn run_once<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    peer: &PeerConfig,
) -> Option<Arc<DiffOutcome>> {
    let addr = match state.resolve_peer(&peer.id) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(peer = %peer.id, error = %e.message(), "scheduled exchange: peer not resolvable");
            return None;
        }
    };
    let outcome = match diff(state, &addr, None).await {
        Ok(o) => Arc::new(o),
        Err(e) => {
            exchange_failed(state, &peer.id, &e);
            tracing::warn!(peer = %peer.id, error = %e.message(), "scheduled exchange failed");
            return None;
        }
    };
    let now = state.store.now_ms();
    let flips = record_exchange(
        state,
        &peer.id,
        &outcome,
        (mend_core::playbook::PlaybookAction::Report, "report"),
    );
    // The playbook runs before alerts go out, so an alert says what was done.
    let (kind, action) = playbook(state, peer, &addr, &outcome).await;
    state.monitor.set_action(&peer.id, kind, &action);
    persist_drift(state, &peer.id).await;
    for f in flips {
        alert(state, &f, &outcome, now, (kind, &action)).await;
    }
    Some(outcome)
}

/// An exchange with the configured peer `peer` failed: counted, and shown
/// on the dashboard with its message.
pub fn exchange_failed<B: AgentBackend>(state: &AgentState<B>, peer: &str, e: &AgentError) {
    state
        .metrics
        .exchange_errors
        .get_or_create(&crate::metrics::PeerLabel::of(peer))
        .inc();
    state
        .monitor
        .exchange_failed(peer, state.store.now_ms(), e.message());
}

/// Records a completed exchange with `peer` (its proven node id): metrics,
/// the drift history and budgets (the peer's configured budget, if any).
/// Returns the budget flips.
pub fn record_exchange<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &str,
    outcome: &Arc<DiffOutcome>,
    action: (mend_core::playbook::PlaybookAction, &str),
) -> Vec<BudgetFlip> {
    let now = state.store.now_ms();
    observe_exchange(&state.metrics, peer, outcome, now);
    let budget = state.peer(peer).and_then(|p| p.budget);
    let changes = state.monitor.record(&Observation {
        peer,
        outcome,
        now_ms: now,
        action,
        budget,
        history_max: state.config.history_max,
    });
    publish_drift(&state.metrics, peer, &changes);
    changes.into_iter().filter_map(|c| c.flip).collect()
}

/// Writes `peer`'s drift history to the store (a failure is logged: the
/// history is diagnostics, never a reason to fail an exchange).
pub async fn persist_drift<B: AgentBackend>(state: &AgentState<B>, peer: &str) {
    match state.monitor.persisted(peer) {
        Ok(ops) => {
            if let Err(e) = state.blocking(move |s| s.backend().write(ops, false)).await {
                tracing::warn!(%peer, error = %e.message(), "drift history not persisted");
            }
        }
        Err(e) => tracing::warn!(%peer, error = %e, "drift history not persisted"),
    }
}

async fn alert<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    f: &BudgetFlip,
    outcome: &DiffOutcome,
    now: u64,
    action: (mend_core::playbook::PlaybookAction, &str),
) {
    if f.exceeded {
        tracing::warn!(
            peer = %f.peer, range = %f.range, divergent_keys = f.divergent_keys, oldest_divergence_ms = f.oldest_divergence_ms,
            divergent_keys_max = f.divergent_keys_max, oldest_divergence_ms_max = f.oldest_divergence_ms_max,
            "drift budget exceeded"
        );
    } else {
        tracing::warn!(peer = %f.peer, range = %f.range, "drift budget back within limits");
    }
    let Some(url) = state.config.webhook_url.clone() else {
        return;
    };
    let srcs = crate::report::attribution(outcome, now, crate::report::SOURCE_WINDOW_GAP_MS);
    let body = serde_json::json!({
        "budget": f,
        "action": action.1,
        "action_kind": action.0,
        "report": crate::report::build(outcome, &srcs, usize::MAX),
    });
    let client = match webhook_client(state).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%url, error = %e, "budget alert not delivered: no HTTP client");
            return;
        }
    };
    match client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map(|r| r.status())
    {
        Ok(s) if s.is_success() => tracing::info!(%url, "budget alert delivered"),
        Ok(s) => tracing::warn!(%url, status = %s, "budget alert rejected by webhook"),
        Err(e) => {
            tracing::warn!(%url, error = %crate::link::error_chain(&e), "budget alert not delivered")
        }
    }
}

/// The webhook's HTTP client: HTTPS over rustls with the ring provider
/// (the one the agent's gRPC uses), trusting the public web roots and the
/// cluster CA of the agent's TLS set (`tls.ca_file`), so an alert receiver
/// inside the cluster can use a certificate from the same CA.
async fn webhook_client<B: AgentBackend>(state: &AgentState<B>) -> Result<reqwest::Client, String> {
    let timeout = Duration::from_millis(state.config.limits.rpc_timeout_ms);
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let Some(paths) = state.config.tls.paths() {
        let ca = tokio::fs::read(&paths.ca_file)
            .await
            .map_err(|e| format!("cluster CA {}: {e}", paths.ca_file.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| e.to_string())? {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| crate::link::error_chain(&e))
}

/// Applies the playbook to an outcome; returns what it did, for the
/// history: its kind and a sentence.
///
/// It repairs exactly the keys of `o` that its checks passed: keys held by
/// an undo are taken out first, the blast radius is the repairable share of
/// the larger of both sides' entry counts (from the handshake, so a wiped
/// replica cannot make everything look small), the peer is asked for its
/// own health, and the repair moves the planned keys of `o` (no fresh
/// diff), paced by the configured rate limits.
pub async fn playbook<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    peer: &PeerConfig,
    addr: &str,
    o: &DiffOutcome,
) -> (PlaybookAction, String) {
    use mend_core::playbook::{Verdict, verdict};
    let pb = &state.config.playbook;
    let cats = pb.repair_categories();
    let now = state.store.now_ms();
    let held = match state
        .blocking(move |s| crate::journal::held_keys(s, now))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            let msg = format!(
                "repair not attempted: undo holds unreadable: {}",
                e.message()
            );
            tracing::warn!(peer = %peer.id, "{msg}");
            return (PlaybookAction::NotAttempted, msg);
        }
    };
    let mut o = o.clone();
    let before = o.keys.len();
    o.keys.retain(|k| !held.contains(k.div.key.as_slice()));
    let held_n = before - o.keys.len();
    // What the repair would move: the plan, which skips what no rule
    // decides (a conflict without an authority, a purged tombstone).
    let todo = crate::repair::plan_for(state, &o, &cats).0.len() as u64;
    let (divergent, entries) = (o.keys.len() as u64, o.entries_local.max(o.entries_peer));
    let blast = pb.blast_radius_share_max;
    // The peer is asked for its health only when the decision hangs on it.
    let healthy = !pb.require_healthy_peer
        || verdict(todo, divergent, entries, blast, true) != Verdict::Repair
        || healthy(state, addr).await;
    let held_note = if held_n > 0 {
        format!(" ({held_n} keys held by an undo left alone)")
    } else {
        String::new()
    };
    match verdict(todo, divergent, entries, blast, healthy) {
        Verdict::Repair => {}
        Verdict::Report => return (PlaybookAction::Report, format!("report{held_note}")),
        refused => {
            let msg = refused.to_string();
            tracing::warn!(peer = %peer.id, "{msg}");
            return (refused.action(), msg);
        }
    }
    // Scheduled repairs are paced like any other: the configured rates.
    let opts = RepairOptions {
        categories: cats.clone(),
        rate_bytes_per_s: state.config.limits.repair_rate_bytes_per_s,
        rate_keys_per_s: state.config.limits.repair_rate_keys_per_s,
        ..RepairOptions::default()
    };
    let sum = match repair_outcome(state, addr, &o, opts).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("repair failed: {}", e.message());
            tracing::warn!(peer = %peer.id, "{msg}");
            return (PlaybookAction::RepairFailed, msg);
        }
    };
    state
        .metrics
        .repaired_keys
        .get_or_create(&crate::metrics::PeerLabel::of(&peer.id))
        .inc_by(sum.keys_repaired);
    state
        .metrics
        .repaired_bytes
        .get_or_create(&crate::metrics::PeerLabel::of(&peer.id))
        .inc_by(sum.bytes_streamed);
    // Postcondition: a re-diff shows none of the repaired keys still divergent.
    let repaired: std::collections::HashSet<&[u8]> =
        sum.plan.iter().map(|p| p.key.as_slice()).collect();
    match diff(state, addr, None).await {
        Ok(after) => {
            let left = after
                .keys
                .iter()
                .filter(|k| {
                    repaired.contains(k.div.key.as_slice()) && k.category != Category::InFlight
                })
                .count();
            if left == 0 {
                (
                    PlaybookAction::Repaired,
                    format!(
                        "repaired {} keys ({}){held_note}",
                        sum.keys_repaired, sum.repair_id
                    ),
                )
            } else {
                let msg = format!(
                    "repair {} failed its postcondition: {left} repaired keys still differ",
                    sum.repair_id
                );
                tracing::warn!(peer = %peer.id, "{msg}");
                (PlaybookAction::PostconditionFailed, msg)
            }
        }
        Err(e) => (
            PlaybookAction::NotVerified,
            format!("repair {} not verified: {}", sum.repair_id, e.message()),
        ),
    }
}

/// Asks the peer for its own health for exchanges (`mend.v1.Peer` on the
/// standard health service: store writable, a reply stream free); an
/// unreachable peer is unhealthy.
pub async fn healthy<B: AgentBackend>(state: &AgentState<B>, addr: &str) -> bool {
    match crate::exchange::connect(state, addr).await {
        Ok(link) => matches!(link.healthy().await, Ok(true)),
        Err(_) => false,
    }
}
