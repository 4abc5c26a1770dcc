//! The dashboard: one page embedded in the binary (`dashboard.html`: HTML,
//! CSS and JS, no build step, no CDN), served at `/` on the agent's HTTP
//! port, and the two JSON documents it polls:
//!
//! - `/api/dashboard` ([`Dashboard`]): this agent's view, failures first;
//! - `/api/cluster` ([`ClusterPeer`]): each configured peer as it answers a
//!   handshake now (node id, clock, each range's root against ours).
//!
//! Read-only: the HTTP port has no caller identity, so the page shows the
//! CLI command for a mutating action (undo) instead of running it; the CLI
//! runs it over mutual TLS under the operator role.
//!
//! Bounded: the history per (peer, range) is `history_max`; each peer's
//! last report has at most `report::SOURCES_MAX` sources and
//! [`REPORT_KEYS_MAX`] keys; runs at most `runs::RUNS_MAX`; recent repairs
//! at most [`RECENT_REPAIRS_MAX`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use mend_core::report::DiffReport;

use crate::cluster::{CLUSTER_CACHE_MS, ClusterPeer, ClusterRange};
use crate::error::AgentError;
use crate::monitor::{ExchangeRecord, LinkState};
use crate::runs::RunView;
use crate::state::{AgentBackend, AgentState};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Divergent keys shown per report on the dashboard and `/status` (the
/// rest are counted in the report's `keys_omitted`; `mend diff --json`
/// lists them all).
pub const REPORT_KEYS_MAX: usize = 50;

/// Finished repairs listed, newest first.
pub const RECENT_REPAIRS_MAX: usize = 20;

/// A peer with a schedule whose last good exchange is older than this many
/// intervals (or none since the agent started that long ago) is stalled.
pub const STALLED_INTERVALS: u64 = 3;

/// Everything the page shows of this agent.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    /// This node.
    pub node_id: String,
    /// The agent's version.
    pub version: String,
    /// Now, ms since the epoch (ages on the page are relative to it).
    pub now_ms: u64,
    /// Since when the agent runs, ms.
    pub uptime_ms: u64,
    /// Configured peers, failing and stalled first.
    pub peers: Vec<PeerView>,
    /// Per (peer, range): the last exchange and the drift history.
    pub exchanges: Vec<ExchangeView>,
    /// The report of each peer's last exchange (its cause, sources and
    /// first [`REPORT_KEYS_MAX`] keys).
    pub reports: Vec<PeerReport>,
    /// Repair runs, in flight first.
    pub runs: Vec<RunView>,
    /// Runs the journal says have segments left (running, paused, failed,
    /// or interrupted by a restart), newest first, with the commands that
    /// control them.
    pub unfinished: Vec<UnfinishedRun>,
    /// Finished repairs from the journal, newest first.
    pub recent_repairs: Vec<RecentRepair>,
    /// What operators did from this page, oldest first (`actions`).
    pub actions: Vec<crate::action_log::ActionView>,
    /// The command that opens an operator session of this page.
    pub session_command: String,
}

/// A configured peer and how its exchanges go.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// Node id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Scheduled exchange interval, ms (0 = on demand only).
    pub interval_ms: u64,
    /// The last exchange failed.
    pub failing: bool,
    /// Scheduled, and no good exchange for [`STALLED_INTERVALS`] intervals.
    pub stalled: bool,
    /// What the exchanges did lately.
    #[serde(flatten)]
    pub link: LinkState,
}

/// One (peer, range).
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeView {
    /// Peer.
    pub peer: String,
    /// Range.
    pub range: String,
    /// The last exchange.
    pub last: Option<ExchangeRecord>,
    /// Divergent keys over time, oldest first (one point per exchange).
    pub history: Vec<Point>,
    /// The drift budget, if one is configured.
    pub budget: Option<BudgetView>,
}

/// A point of the drift chart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// When.
    pub at_ms: u64,
    /// Divergent keys.
    pub divergent_keys: u64,
    /// Oldest divergence, ms.
    pub oldest_divergence_ms: u64,
}

/// A budget and its state.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BudgetView {
    /// Exceeded now.
    pub exceeded: bool,
    /// Since when.
    pub since_ms: u64,
    /// Most divergent keys.
    pub divergent_keys_max: u64,
    /// Oldest divergence tolerated, ms.
    pub oldest_divergence_ms_max: u64,
}

/// The report of a peer's last exchange.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// The peer.
    pub peer: String,
    /// When the exchange was recorded, ms since the epoch.
    pub at_ms: u64,
    /// What it found ([`DiffReport`], as `mend diff --json` prints it).
    pub report: DiffReport,
}

/// A journaled repair and how to take it back.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRepair {
    /// Repair id.
    pub id: String,
    /// The peer's address.
    pub peer: String,
    /// When it started.
    pub created_ms: u64,
    /// Keys written here.
    pub keys_here: u64,
    /// Keys pushed to the peer.
    pub keys_pushed: u64,
    /// Undone already.
    pub undone: bool,
    /// The command that undoes it (operator role).
    pub undo: String,
}

/// Builds this agent's view.
pub async fn build<B: AgentBackend>(state: &Arc<AgentState<B>>) -> Result<Dashboard, AgentError> {
    let now = state.store.now_ms();
    let uptime_ms = state.started.elapsed().as_millis() as u64;
    let peers = peer_views(state, now, uptime_ms);
    let exchanges = exchange_views(state);
    let reports = latest_reports(state, REPORT_KEYS_MAX);
    let mut runs = state.runs.list();
    runs.sort_by_key(|r| r.state != crate::runs::RunState::Running);
    let agent = state
        .grpc_addr
        .get()
        .map(|a| a.to_string())
        .unwrap_or_else(|| state.config.listen.to_string());
    let journal = state.blocking(crate::journal::list).await?;
    let unfinished = crate::repair::control::unfinished(state, &journal);
    let recent_repairs = recent_repairs(journal, &agent);
    let unfinished = unfinished_runs(unfinished, &agent);
    Ok(Dashboard {
        node_id: state.node_id.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        now_ms: now,
        uptime_ms,
        peers,
        exchanges,
        reports,
        runs,
        unfinished,
        recent_repairs,
        actions: state.actions.list(),
        session_command: format!("mend dashboard --agent {agent}"),
    })
}

/// The configured peers and how their exchanges go: failures first, then
/// stalls, then by id.
fn peer_views<B: AgentBackend>(state: &AgentState<B>, now: u64, uptime_ms: u64) -> Vec<PeerView> {
    let links = state.monitor.links();
    let mut peers: Vec<PeerView> = state
        .peers()
        .iter()
        .map(|p| {
            let link = links.get(&p.id).cloned().unwrap_or_default();
            let failing = link.failures > 0;
            let window = p.interval_ms.saturating_mul(STALLED_INTERVALS);
            let since_ok = if link.last_ok_ms == 0 {
                uptime_ms
            } else {
                now.saturating_sub(link.last_ok_ms)
            };
            PeerView {
                id: p.id.clone(),
                address: p.address.clone(),
                interval_ms: p.interval_ms,
                failing,
                stalled: p.interval_ms > 0 && since_ok > window,
                link,
            }
        })
        .collect();
    // Failures first, then stalls, then by id.
    peers.sort_by(|a, b| (!a.failing, !a.stalled, &a.id).cmp(&(!b.failing, !b.stalled, &b.id)));
    peers
}

/// Each (peer, range): its last exchange, drift history and budget.
fn exchange_views<B: AgentBackend>(state: &AgentState<B>) -> Vec<ExchangeView> {
    state
        .monitor
        .view(None)
        .into_iter()
        .map(|v| {
            let budget = state
                .config
                .peer(&v.peer)
                .and_then(|p| p.budget)
                .map(|b| BudgetView {
                    exceeded: v.budget_exceeded,
                    since_ms: v.budget_since_ms,
                    divergent_keys_max: b.divergent_keys_max,
                    oldest_divergence_ms_max: b.oldest_divergence_ms_max,
                });
            ExchangeView {
                history: v
                    .records
                    .iter()
                    .map(|r| Point {
                        at_ms: r.at_ms,
                        divergent_keys: r.divergent_keys,
                        oldest_divergence_ms: r.oldest_divergence_ms,
                    })
                    .collect(),
                last: v.records.last().cloned(),
                peer: v.peer,
                range: v.range,
                budget,
            }
        })
        .collect()
}

/// The report of each peer's last exchange, with at most `keys_max` keys,
/// by peer.
pub fn latest_reports<B: AgentBackend>(state: &AgentState<B>, keys_max: usize) -> Vec<PeerReport> {
    let mut out: Vec<PeerReport> = state
        .monitor
        .latest()
        .into_iter()
        .map(|(peer, latest)| {
            // Attributed once per exchange, not once per poll.
            let a = latest.attribution(crate::report::SOURCE_WINDOW_GAP_MS);
            PeerReport {
                peer,
                at_ms: latest.at_ms,
                report: crate::report::build(&latest.outcome, a, keys_max),
            }
        })
        .collect();
    out.sort_by(|a, b| a.peer.cmp(&b.peer));
    out
}

/// The newest [`RECENT_REPAIRS_MAX`] repairs this agent started, with the
/// command that undoes each through `agent`.
fn recent_repairs(journal: Vec<crate::journal::RepairHeader>, agent: &str) -> Vec<RecentRepair> {
    journal
        .into_iter()
        .rev()
        .filter(|h| h.initiator)
        .take(RECENT_REPAIRS_MAX)
        .map(|h| RecentRepair {
            undo: format!("mend undo --agent {agent} {}", h.id),
            id: h.id,
            peer: h.peer,
            created_ms: h.created_ms,
            keys_here: h.keys_here,
            keys_pushed: h.keys_pushed,
            undone: h.undone,
        })
        .collect()
}

/// The unfinished runs with the verbs that apply to each and their
/// commands through `agent`.
fn unfinished_runs(
    unfinished: Vec<crate::repair::control::RunInfo>,
    agent: &str,
) -> Vec<UnfinishedRun> {
    unfinished
        .into_iter()
        .map(|run| {
            let verbs: &[&'static str] = match (run.state, run.live) {
                (crate::runs::RunState::Running, true) => &["pause", "cancel"],
                _ => &["resume", "cancel"],
            };
            UnfinishedRun {
                verbs: verbs.to_vec(),
                commands: verbs
                    .iter()
                    .map(|v| format!("mend repair {v} --agent {agent} {}", run.id))
                    .collect(),
                run,
            }
        })
        .collect()
}

/// A run with segments left, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct UnfinishedRun {
    /// The run, from its journal header.
    #[serde(flatten)]
    pub run: crate::repair::control::RunInfo,
    /// `pause`, `resume`, `cancel`: whichever apply (also the page's
    /// actions, `action_log::Action`).
    pub verbs: Vec<&'static str>,
    /// `mend repair VERB` for each of `verbs`.
    pub commands: Vec<String>,
}

/// The cluster view, at most [`CLUSTER_CACHE_MS`] old; one refresh at a
/// time (concurrent callers wait for it and share it).
pub async fn cluster_cached<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
) -> Result<Vec<ClusterPeer>, AgentError> {
    let mut cache = state.cluster_view.lock().await;
    if let Some((at, view)) = cache.as_ref()
        && at.elapsed() < Duration::from_millis(CLUSTER_CACHE_MS)
    {
        return Ok(view.clone());
    }
    let view = cluster(state).await?;
    *cache = Some((std::time::Instant::now(), view.clone()));
    Ok(view)
}

/// Asks every configured peer for its roots (one handshake each, in
/// parallel, each bounded by `limits.rpc_timeout_ms`).
pub async fn cluster<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
) -> Result<Vec<ClusterPeer>, AgentError> {
    let ours = state
        .blocking(|s| {
            let specs = s.ranges().specs().to_vec();
            let mut roots = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                let r = s.root(i as u16)?;
                roots.push((
                    spec.name.clone(),
                    mend_core::exchange::node_hash(&r),
                    r.count,
                ));
            }
            Ok((specs, roots))
        })
        .await?;
    let (specs, roots) = ours;
    let timeout = Duration::from_millis(state.config.limits.rpc_timeout_ms);
    let asks = state.peers().into_iter().map(|p| {
        let specs = &specs;
        let roots = &roots;
        async move {
            let before = state.store.now_ms();
            let answer = tokio::time::timeout(
                timeout,
                crate::exchange::ask_handshake(state, &p.address, specs),
            )
            .await
            .unwrap_or_else(|_| Err(AgentError::timeout("no answer in time")));
            let mut c = ClusterPeer {
                id: p.id.clone(),
                address: p.address.clone(),
                reachable: answer.is_ok(),
                error: String::new(),
                clock_skew_ms: 0,
                ranges: Vec::new(),
            };
            match answer {
                Ok(r) => {
                    c.clock_skew_ms = r.now_ms as i64 - before as i64;
                    for rr in r.ranges {
                        if let Some((_, root, here)) = roots.iter().find(|(n, _, _)| *n == rr.name)
                        {
                            c.ranges.push(ClusterRange {
                                in_sync: rr.root == *root,
                                entries: rr.entries,
                                entries_here: *here,
                                name: rr.name,
                            });
                        }
                    }
                }
                Err(e) => c.error = e.message().to_string(),
            }
            c
        }
    });
    Ok(futures::future::join_all(asks).await)
}
