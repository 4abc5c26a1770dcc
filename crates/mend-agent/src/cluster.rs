//! The cluster as this agent sees it now: each configured peer as it
//! answers a handshake (the dashboard's cluster panel, cached in
//! `AgentState::cluster_view` and refreshed by `dashboard::cluster_cached`).

use serde::Serialize;

/// A configured peer as it answers a handshake now.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPeer {
    /// The configured id.
    pub id: String,
    /// Address.
    pub address: String,
    /// It answered.
    pub reachable: bool,
    /// Why not, if it did not.
    pub error: String,
    /// Its clock minus ours, ms (positive = ahead).
    pub clock_skew_ms: i64,
    /// Each range both serve: its entries there and whether its root equals ours.
    pub ranges: Vec<ClusterRange>,
}

/// A range as a peer holds it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRange {
    /// Range.
    pub name: String,
    /// The peer's entries.
    pub entries: u64,
    /// Our entries.
    pub entries_here: u64,
    /// Same root hash: the replicas hold the same data.
    pub in_sync: bool,
}

/// How long one cluster view answers every `/api/cluster` request, ms: the
/// HTTP port has no caller identity, so however often it is asked, the
/// agent handshakes with its peers at most once per this interval.
pub const CLUSTER_CACHE_MS: u64 = 5_000;
