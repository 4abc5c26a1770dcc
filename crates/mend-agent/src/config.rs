//! Agent configuration: a TOML file (every field optional, with the defaults
//! documented here) overlaid by command-line flags. `validate` names the bad
//! value and the allowed range.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use mend_core::classify::Policy;
use mend_core::{NodeId, RangeMap, RangeSpec, TreeShape};

/// A peer agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id.
    pub id: String,
    /// Its gRPC address, `host:port`.
    pub address: String,
    /// Interval of scheduled exchanges with this peer, in ms (0 = none;
    /// else 1 000..=86 400 000).
    #[serde(default)]
    pub interval_ms: u64,
    /// Drift budget for every range shared with this peer.
    #[serde(default)]
    pub budget: Option<Budget>,
}

/// A drift budget: how much divergence is tolerated before alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most divergent keys (in flight excluded) before the budget is exceeded.
    pub divergent_keys_max: u64,
    /// Oldest tolerated divergence, in ms: now minus the timestamp of the
    /// newer write that has not reached the other side.
    pub oldest_divergence_ms_max: u64,
}

/// What a playbook does with a category of divergence found by a scheduled
/// exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Repair automatically (subject to the preconditions).
    Repair,
    /// Only report (metrics, history, alerts).
    Report,
}

/// Maps each category to an action, with the preconditions of automatic
/// repair. Automatic repair happens only through the playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Playbook {
    /// Lost or undelivered writes.
    pub missing: Action,
    /// Dropped or delayed updates.
    pub stale: Action,
    /// Deletes that did not propagate.
    pub unpropagated_delete: Action,
    /// Same version, different content: `report` only (no winner policy yet).
    pub conflict: Action,
    /// Clock drift at the origin: `report` only.
    pub future_version: Action,
    /// Replication lag: `report` only (it settles by itself).
    pub in_flight: Action,
    /// Refuse automatic repair when the divergent keys exceed this share of
    /// the range's entries (0.0..=1.0): that smells like the wrong peer or a
    /// wiped replica, and needs a human.
    pub blast_radius_share_max: f64,
    /// Refuse automatic repair unless the peer's health service says SERVING.
    pub require_healthy_peer: bool,
}

impl Default for Playbook {
    fn default() -> Self {
        Playbook {
            missing: Action::Repair,
            stale: Action::Repair,
            unpropagated_delete: Action::Repair,
            conflict: Action::Report,
            future_version: Action::Report,
            in_flight: Action::Report,
            blast_radius_share_max: 0.01,
            require_healthy_peer: true,
        }
    }
}

impl Playbook {
    /// The categories the playbook repairs.
    pub fn repair_categories(&self) -> Vec<mend_core::classify::Category> {
        use mend_core::classify::Category;
        [
            (Category::Missing, self.missing),
            (Category::Stale, self.stale),
            (Category::UnpropagatedDelete, self.unpropagated_delete),
        ]
        .into_iter()
        .filter(|(_, a)| *a == Action::Repair)
        .map(|(c, _)| c)
        .collect()
    }
}

/// Limits of the agent; each costs what its comment says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most writes per `WriteBatch` request (1..=100 000). Bounds the memory
    /// one request pins and the length of one RocksDB batch.
    pub batch_writes_max: usize,
    /// Timeout of each peer RPC, in ms (100..=600 000).
    pub rpc_timeout_ms: u64,
    /// Default repair rate limit in bytes per second (0 = unlimited).
    pub repair_rate_bytes_per_s: u64,
    /// Default repair rate limit in keys per second (0 = unlimited).
    pub repair_rate_keys_per_s: u64,
    /// Most keys one `Fetch` request may name (1..=100 000).
    pub fetch_keys_max: usize,
    /// Most divergent keys one diff reports before it stops listing and
    /// refuses to repair (1..=10 000 000); bounds the memory of a diff.
    pub diff_keys_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_writes_max: 10_000,
            rpc_timeout_ms: 30_000,
            repair_rate_bytes_per_s: 0,
            repair_rate_keys_per_s: 0,
            fetch_keys_max: 10_000,
            diff_keys_max: 2_000_000,
        }
    }
}

/// The agent's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's node id (origin of locally stamped writes).
    pub node_id: String,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address for /metrics, /healthz, /status; none = off.
    pub http: Option<SocketAddr>,
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// File holding the cluster secret (else MEND_CLUSTER_SECRET, else the
    /// development secret with a warning).
    pub secret_file: Option<PathBuf>,
    /// Peers.
    pub peers: Vec<PeerConfig>,
    /// Key ranges served, each with its tree shape. Default: one range
    /// `default` covering every key, fan-out 16, depth 4.
    pub ranges: Vec<RangeSpec>,
    /// Settle window in ms: a divergence whose newer version is younger is
    /// reported `in_flight` and not repaired (0..=86 400 000).
    pub settle_ms: u64,
    /// Allowed clock skew in ms: versions further ahead of the local clock
    /// are `future_version` (0..=86 400 000).
    pub clock_skew_ms: u64,
    /// Tombstone grace period in ms before purge.
    pub tombstone_grace_ms: u64,
    /// Force each write to disk before acknowledging (slower, survives
    /// power loss as well as process crashes).
    pub sync_writes: bool,
    /// Limits.
    pub limits: Limits,
    /// What scheduled exchanges do with each category.
    pub playbook: Playbook,
    /// Exchanges kept in the history of each peer and range (1..=10 000).
    pub history_max: usize,
    /// URL (http://) that receives a POST of the report JSON when a drift
    /// budget flips; none = log only.
    pub webhook_url: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_id: "node-1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            http: None,
            data_dir: PathBuf::from("mend-data"),
            secret_file: None,
            peers: Vec::new(),
            ranges: vec![RangeSpec::whole("default", TreeShape::default())],
            settle_ms: Policy::default().settle_ms,
            clock_skew_ms: Policy::default().clock_skew_ms,
            tombstone_grace_ms: mend_store::store::TOMBSTONE_GRACE_MS_DEFAULT,
            sync_writes: false,
            limits: Limits::default(),
            playbook: Playbook::default(),
            history_max: 100,
            webhook_url: None,
        }
    }
}

/// A configuration error: names the field, the bad value and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("config: {field} = {value}: {allowed}")]
pub struct ConfigError {
    /// The field.
    pub field: String,
    /// The offending value.
    pub value: String,
    /// What would be accepted.
    pub allowed: String,
}

fn bad(field: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

fn in_range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(bad(field, v, format!("must be in {lo}..={hi}")));
    }
    Ok(())
}

impl AgentConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        toml::from_str(text).map_err(|e| bad("file", "(toml)", e.to_string().replace('\n', " ")))
    }

    /// The classification policy.
    pub fn policy(&self) -> Policy {
        Policy {
            settle_ms: self.settle_ms,
            clock_skew_ms: self.clock_skew_ms,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        NodeId::new(self.node_id.clone())
            .map_err(|_| bad("node_id", &self.node_id, "1..=64 printable ASCII bytes"))?;
        RangeMap::new(self.ranges.clone())
            .map_err(|e| bad("ranges", "(see message)", e.to_string()))?;
        in_range("settle_ms", self.settle_ms, 0, 86_400_000)?;
        in_range("clock_skew_ms", self.clock_skew_ms, 0, 86_400_000)?;
        in_range(
            "limits.batch_writes_max",
            self.limits.batch_writes_max as u64,
            1,
            100_000,
        )?;
        in_range(
            "limits.rpc_timeout_ms",
            self.limits.rpc_timeout_ms,
            100,
            600_000,
        )?;
        in_range(
            "limits.fetch_keys_max",
            self.limits.fetch_keys_max as u64,
            1,
            100_000,
        )?;
        in_range(
            "limits.diff_keys_max",
            self.limits.diff_keys_max as u64,
            1,
            10_000_000,
        )?;
        let mut ids = std::collections::HashSet::new();
        for p in &self.peers {
            NodeId::new(p.id.clone())
                .map_err(|_| bad("peers.id", &p.id, "1..=64 printable ASCII bytes"))?;
            if !ids.insert(p.id.clone()) {
                return Err(bad("peers.id", &p.id, "peer ids must be unique"));
            }
            if p.address.is_empty() {
                return Err(bad(
                    "peers.address",
                    &p.id,
                    "an address host:port is required",
                ));
            }
            if p.interval_ms != 0 && !(1_000..=86_400_000).contains(&p.interval_ms) {
                return Err(bad(
                    "peers.interval_ms",
                    p.interval_ms,
                    "0 (off) or 1000..=86400000",
                ));
            }
        }
        let pb = &self.playbook;
        for (name, a) in [
            ("playbook.conflict", pb.conflict),
            ("playbook.future_version", pb.future_version),
            ("playbook.in_flight", pb.in_flight),
        ] {
            if a == Action::Repair {
                return Err(bad(
                    name,
                    "\"repair\"",
                    "only \"report\" is allowed for this category",
                ));
            }
        }
        if !(0.0..=1.0).contains(&pb.blast_radius_share_max) {
            return Err(bad(
                "playbook.blast_radius_share_max",
                pb.blast_radius_share_max,
                "must be in 0.0..=1.0",
            ));
        }
        in_range("history_max", self.history_max as u64, 1, 10_000)?;
        if let Some(u) = &self.webhook_url
            && !u.starts_with("http://")
            && !u.starts_with("https://")
        {
            return Err(bad("webhook_url", u, "an http:// or https:// URL"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_field() {
        assert!(AgentConfig::default().validate().is_ok());
        let c = AgentConfig::from_toml("settle_ms = 99999999999").unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.to_string().contains("settle_ms") && e.to_string().contains("99999999999"),
            "{e}"
        );
        let e = AgentConfig::from_toml("nonsense = 1").unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
        let c =
            AgentConfig::from_toml("[[ranges]]\nname = \"a\"\nshape = { fanout = 3, depth = 2 }\n")
                .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("fanout"));
    }
}
