//! Scheduled exchanges: one task per peer with an interval. Each run diffs,
//! records drift and metrics, applies the playbook, then alerts on budget
//! flips with what the playbook did (warn log and an
//! optional webhook POST of the report), and applies the playbook:
//! automatic repair of the categories it names, only when the blast radius
//! and the peer's health allow, verified afterwards by a re-diff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use mend_core::classify::Category;

use crate::config::PeerConfig;
use crate::exchange::{DiffOutcome, diff};
use crate::monitor::{BudgetFlip, observe_exchange};
use crate::repair::{RepairOptions, repair_outcome};
use crate::state::{AgentBackend, AgentState};

/// Window gap that splits attribution sources, ms.
pub const SOURCE_WINDOW_GAP_MS: u64 = 60_000;

/// Spawns the scheduled-exchange tasks; they stop when `shutdown` changes.
pub fn spawn<B: AgentBackend>(state: Arc<AgentState<B>>, shutdown: watch::Receiver<bool>) {
    for p in state.config.peers.clone() {
        if p.interval_ms == 0 {
            continue;
        }
        let state = state.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(p.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => break,
                }
                run_once(&state, &p).await;
            }
        });
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
            state
                .metrics
                .exchange_errors
                .get_or_create(&crate::metrics::PeerLabel {
                    peer: peer.id.clone(),
                })
                .inc();
            tracing::warn!(peer = %peer.id, error = %e.message(), "scheduled exchange failed");
            return None;
        }
    };
    observe_exchange(&state.metrics, &peer.id, &outcome, state.store.now_ms());
    let now = state.store.now_ms();
    let flips = state.monitor.record(
        &state.metrics,
        &peer.id,
        peer.budget,
        state.config.history_max,
        &outcome,
        now,
        "report",
    );
    // The playbook runs before alerts go out, so an alert says what was done.
    let action = playbook(state, peer, &addr, &outcome).await;
    state.monitor.set_action(&peer.id, &action);
    match state.monitor.persisted(&peer.id) {
        Ok(ops) => {
            if let Err(e) = state.blocking(move |s| s.backend().write(ops, false)).await {
                tracing::warn!(peer = %peer.id, error = %e.message(), "drift history not persisted");
            }
        }
        Err(e) => tracing::warn!(peer = %peer.id, error = %e, "drift history not persisted"),
    }
    for f in flips {
        alert(state, &f, &outcome, now, &action).await;
    }
    Some(outcome)
}

async fn alert<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    f: &BudgetFlip,
    outcome: &DiffOutcome,
    now: u64,
    action: &str,
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
    let srcs = crate::report::sources(outcome, now, SOURCE_WINDOW_GAP_MS);
    let body = serde_json::json!({ "budget": f, "action": action, "report": crate::report::to_json(outcome, &srcs) });
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

/// Applies the playbook to an outcome; returns what it did, for the history.
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
) -> String {
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
            return msg;
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
        Verdict::Report => return format!("report{held_note}"),
        refused => {
            let msg = refused.to_string();
            tracing::warn!(peer = %peer.id, "{msg}");
            return msg;
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
            return msg;
        }
    };
    state
        .metrics
        .repaired_keys
        .get_or_create(&crate::metrics::PeerLabel {
            peer: peer.id.clone(),
        })
        .inc_by(sum.keys_repaired);
    state
        .metrics
        .repaired_bytes
        .get_or_create(&crate::metrics::PeerLabel {
            peer: peer.id.clone(),
        })
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
                format!(
                    "repaired {} keys ({}){held_note}",
                    sum.keys_repaired, sum.repair_id
                )
            } else {
                let msg = format!(
                    "repair {} failed its postcondition: {left} repaired keys still differ",
                    sum.repair_id
                );
                tracing::warn!(peer = %peer.id, "{msg}");
                msg
            }
        }
        Err(e) => format!("repair {} not verified: {}", sum.repair_id, e.message()),
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
