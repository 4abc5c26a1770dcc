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
    /// Same version, different content: `report`, or `repair` toward the
    /// range's `[[authority]]` node (allowed only when every served range
    /// has one; a range without one still only reports).
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
            (Category::Conflict, self.conflict),
        ]
        .into_iter()
        .filter(|(_, a)| *a == Action::Repair)
        .map(|(c, _)| c)
        .collect()
    }
}

/// A range's authority: the node (e.g. the primary) whose content wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityConfig {
    /// The range's name (one of `ranges`).
    pub range: String,
    /// The authority's node id: this node or one of `peers`.
    pub node: String,
    /// `conflicts` (default): only same-version conflicts resolve toward
    /// it; `all`: every repaired category does, even over a newer version
    /// elsewhere (for stores where only the authority accepts writes).
    #[serde(default)]
    pub scope: mend_core::playbook::AuthorityScope,
}

/// Where this node's TLS files are. Every connection is mutual TLS unless
/// the agent runs with `insecure_plaintext` (loopback only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// A directory in cert-manager's Secret layout (`tls.crt`, `tls.key`,
    /// `ca.crt`); the three file fields below override its parts.
    pub dir: Option<PathBuf>,
    /// This node's certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The cluster CA (PEM): peers' and clients' certificates must chain to it.
    pub ca_file: Option<PathBuf>,
    /// Poll interval of the files for hot reload, in ms (100..=3 600 000).
    pub reload_poll_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            dir: None,
            cert_file: None,
            key_file: None,
            ca_file: None,
            reload_poll_ms: mend_tls::reload::TLS_RELOAD_POLL_MS_DEFAULT,
        }
    }
}

impl TlsConfig {
    /// The three paths, if configured (a directory, or all three files).
    pub fn paths(&self) -> Option<mend_tls::TlsPaths> {
        mend_tls::TlsPaths::from_parts(
            self.dir.as_deref(),
            self.cert_file.as_deref(),
            self.key_file.as_deref(),
            self.ca_file.as_deref(),
        )
    }

    /// Whether any TLS setting was given.
    pub fn is_set(&self) -> bool {
        self.dir.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.ca_file.is_some()
    }
}

/// Who may call what. Each role is a list of identity patterns (exact
/// certificate names, or with `*` wildcards) matched against every DNS/URI
/// SAN of the caller's certificate. Health and reflection are open to any
/// caller with a certificate of the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Roles {
    /// May call the Replica service (the replica's writers and readers).
    pub replica: Vec<String>,
    /// May call the Peer service, besides every configured peer's id.
    pub peer: Vec<String>,
    /// May call the Operator service (diff, repair, undo, status, ...).
    pub operator: Vec<String>,
    /// Addresses (`host:port` patterns, e.g. `127.0.0.1:*`) that Operator
    /// diff, repair and sample may target besides the configured peers. An
    /// address from a request is never dialled unless it is listed here
    /// (no SSRF through the agent).
    pub peer_addresses: Vec<String>,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            replica: vec!["replica".into()],
            peer: Vec::new(),
            operator: vec!["operator".into()],
            peer_addresses: Vec::new(),
        }
    }
}

/// What to do with a replicated or pushed write stamped further in the
/// future than `clock_skew_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FutureWrites {
    /// Refuse the request (`INVALID_ARGUMENT`), nothing written: a version
    /// stamped far ahead would win every later comparison.
    Refuse,
    /// Store it anyway (diffs still classify it `future_version`).
    Accept,
}

/// The background tombstone purge (`[gc]`). A tombstone goes once it is
/// older than `tombstone_grace_ms` and arrived before the last exchange
/// that found the range in sync with every configured peer, so no replica
/// can still hold the value it deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gc {
    /// Run the purge (default on; off keeps every tombstone forever, and
    /// undo may then restore a value a repair deleted).
    pub enabled: bool,
    /// How often the purge runs, in ms (1 000..=86 400 000).
    pub purge_interval_ms: u64,
    /// Most tombstones examined per second while it runs (1..=1 000 000);
    /// bounds its share of the write path.
    pub purge_rate_per_s: u64,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            enabled: true,
            purge_interval_ms: 60_000,
            purge_rate_per_s: 1_000,
        }
    }
}

/// The repair journal (`[journal]`): what undo keeps, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Journal {
    /// Repairs older than this are pruned with their before-images, in ms
    /// (60 000..=31 536 000 000; default 7 days). Undo of a pruned repair
    /// is refused with a message that says so.
    pub retention_ms: u64,
    /// At most this many repairs are kept, the newest (1..=1 000 000).
    pub repairs_max: usize,
    /// After an undo, scheduled repairs leave the restored keys alone for
    /// this long, in ms (0..=31 536 000 000; default 1 day); the hold is
    /// shown in `mend status`.
    pub undo_hold_ms: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            retention_ms: 7 * 24 * 3600 * 1000,
            repairs_max: 1_000,
            undo_hold_ms: 24 * 3600 * 1000,
        }
    }
}

/// The background scrub (`[scrub]`): verifies a few buckets per second
/// against the data and fixes any that are out of step, so a corrupt tree
/// is found without stopping the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scrub {
    /// Buckets verified per second (0 = off; 0..=1 000 000). At the default
    /// 16, a 65 536-bucket range is covered every 68 minutes.
    pub buckets_per_s: u64,
}

impl Default for Scrub {
    fn default() -> Self {
        Scrub { buckets_per_s: 16 }
    }
}

/// Trees that deepen as their ranges grow (`[deepen]`): a range whose
/// entries pass `entries_per_bucket` per bucket on average gets one more
/// level (each bucket split into `fanout`), online, so a diff lists about
/// as many entries per differing bucket at 10M keys as at 100k. Peers
/// compare at the smaller of their depths, so deepening needs no
/// coordination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deepen {
    /// Average entries per bucket past which a range deepens (0 = never;
    /// 0..=1 000 000). At the default 16, a 16^4 range deepens past about
    /// 1M entries, to about one entry per bucket; each level of fan-out 16
    /// costs about 48 bytes per bucket of memory (16^5: about 50 MiB).
    pub entries_per_bucket: u64,
    /// How often each range is checked, in ms (1 000..=86 400 000).
    pub check_every_ms: u64,
    /// A range does not deepen past a tree of this many bytes in memory
    /// (1 MiB..=64 GiB; default 256 MiB): with fan-out 16, depth 5 takes
    /// 45 MiB and depth 6 720 MiB, so by default a range stops at depth 5
    /// (about 16.8M entries at 16 per bucket; more entries per bucket past
    /// that).
    pub tree_bytes_max: u64,
}

impl Default for Deepen {
    fn default() -> Self {
        Deepen {
            entries_per_bucket: mend_store::DEEPEN_ENTRIES_PER_BUCKET_DEFAULT,
            check_every_ms: 60_000,
            tree_bytes_max: 256 << 20,
        }
    }
}

/// Which side of a pair starts the scheduled exchanges of their ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiate {
    /// The side with the lower node id (byte order): exactly one side of
    /// each pair, with no coordinator, so a pair never runs the same
    /// exchange twice at once. The higher side answers.
    LowerId,
    /// Both sides, each on its own schedule (twice the exchanges).
    Both,
}

/// Coordinated schedules (`[schedule]`): who initiates, how many exchanges
/// a node takes part in at once, and how much background load they make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Who initiates the scheduled exchanges of a pair (`lower_id`).
    pub initiate: Initiate,
    /// Most scheduled exchanges (with their playbook repairs) this node
    /// takes part in at once, as initiator or as responder (1..=64;
    /// default 1, like Scylla Manager's one repair job per node). An
    /// exchange starts only when both sides have a free slot; else it is
    /// skipped until its next tick. On-demand diffs and repairs from an
    /// operator are not counted: an operator mid-incident is never queued.
    pub exchanges_max: u32,
    /// Share of time scheduled exchanges may keep busy (1..=100): after an
    /// exchange of duration d a peer's schedule also waits
    /// d × (100 − p) / p. At 100 (default) only the interval counts.
    pub intensity_percent: u32,
    /// Each wait is the interval ± this share of it, drawn at random
    /// (0..=50), so agents started together drift apart.
    pub jitter_percent: u32,
    /// Longest a slot reserved on a peer is held without a release, ms
    /// (1 000..=86 400 000): an initiator that dies mid-exchange frees its
    /// peer's slot after it.
    pub lease_ms: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            initiate: Initiate::LowerId,
            exchanges_max: 1,
            intensity_percent: 100,
            jitter_percent: 10,
            lease_ms: 600_000,
        }
    }
}

/// Peers discovered from DNS (`[discovery]`), e.g. a Kubernetes headless
/// Service: re-resolved every `interval_ms`; each address found is asked
/// for a handshake, and the node id it proves (its certificate checked
/// against the name below, the cluster secret proven) becomes a peer,
/// scheduled like a listed one. A peer once found is kept (persisted in
/// the store's `meta`), so one missing from DNS for a while, or at a
/// restart, still holds back the tombstone purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Discovery {
    /// `dns:NAME:PORT`: the A/AAAA records of NAME, each at PORT, every
    /// peer's certificate naming NAME (a Service name SAN); or
    /// `dns:_SERVICE._PROTO.NAME`: its SRV records, each target at its port,
    /// the certificate naming the target. Empty: off.
    pub peers: String,
    /// The DNS server to ask, `IP:PORT` (default: the system's, from
    /// /etc/resolv.conf).
    pub nameserver: Option<SocketAddr>,
    /// Interval of scheduled exchanges with discovered peers and of the
    /// re-resolution, in ms (1 000..=86 400 000).
    pub interval_ms: u64,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            peers: String::new(),
            nameserver: None,
            interval_ms: 60_000,
        }
    }
}

/// A parsed `discovery.peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsPeers {
    /// A/AAAA records of `name`, at `port`.
    Addresses {
        /// The name resolved, also the TLS name every peer must present.
        name: String,
        /// The gRPC port of every address.
        port: u16,
    },
    /// SRV records of `name` (`_service._proto.domain`).
    Srv {
        /// The SRV name.
        name: String,
    },
}

impl Discovery {
    /// The parsed `peers`, `None` when off.
    pub fn parse(&self) -> Result<Option<DnsPeers>, ConfigError> {
        if self.peers.is_empty() {
            return Ok(None);
        }
        let allowed = "dns:NAME:PORT (A/AAAA) or dns:_SERVICE._PROTO.NAME (SRV)";
        let err = || bad("discovery.peers", &self.peers, allowed);
        let rest = self.peers.strip_prefix("dns:").ok_or_else(err)?;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if rest.starts_with('_') {
            if !name_ok(rest) || rest.contains(':') {
                return Err(err());
            }
            return Ok(Some(DnsPeers::Srv { name: rest.into() }));
        }
        let (name, port) = rest.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        if !name_ok(name) || port == 0 {
            return Err(err());
        }
        Ok(Some(DnsPeers::Addresses {
            name: name.into(),
            port,
        }))
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
    /// A repair planning more keys than this runs subtree by subtree
    /// (segments: one per range's top-level child), pausable and resumable
    /// between segments, and resumed from its first unfinished segment after
    /// a restart (0..=10 000 000; 0 = always). A smaller plan is one segment
    /// and keeps the whole plan's causal order; a segmented one keeps it
    /// within each segment. Each segment's plan is held in the journal until
    /// the segment finishes.
    pub repair_segment_keys_min: usize,
    /// Most divergent keys one diff reports before it stops listing and
    /// refuses to repair (1..=10 000 000); bounds the memory of a diff.
    /// Each range's descent stops at it, and so does the diff when its
    /// ranges are joined; while up to `mend_agent::exchange::RANGES_IN_FLIGHT`
    /// (4) ranges descend at once, a diff holds at most that many times it.
    pub diff_keys_max: usize,
    /// Most bytes of divergent keys one range's descent holds while it runs
    /// (1 MiB..=64 GiB), so a diff at most `RANGES_IN_FLIGHT` (4) times it;
    /// with `diff_keys_max`, bounds what a hostile or wiped peer can make
    /// the initiator allocate.
    pub diff_key_bytes_max: usize,
    /// Most connections open at once (1..=65 536); further ones are closed
    /// at accept. Each costs a task and buffers (tens of KiB).
    pub connections_max: usize,
    /// Deadline of a connection's TLS handshake, in ms (100..=60 000): a
    /// connection idle or speaking garbage is closed by then.
    pub tls_handshake_timeout_ms: u64,
    /// Most concurrent HTTP/2 streams (calls) per connection (1..=10 000).
    pub streams_per_connection_max: u32,
    /// Deadline of any one call served, in ms (1 000..=86 400 000); a
    /// streamed reply must be complete by then. Long repairs need room.
    pub request_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval, in ms (1 000..=3 600 000); a peer
    /// that does not answer a ping within the same time is disconnected.
    pub http2_keepalive_ms: u64,
    /// Most streamed replies (Leaves listings, Fetch values) produced at
    /// once over all callers (1..=4 096); more wait for a slot. A stream
    /// holds at most one chunk (256 buckets' listing, or 16 values plus 2
    /// queued), so this bounds the memory of slow or stalled readers.
    pub server_streams_max: usize,
    /// How long a server stream waits for a slow reader to take the next
    /// message before it gives up, in ms (100..=600 000). A client that stops
    /// reading holds nothing longer than this.
    pub stream_send_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_writes_max: 10_000,
            rpc_timeout_ms: 30_000,
            repair_rate_bytes_per_s: 0,
            repair_rate_keys_per_s: 0,
            fetch_keys_max: 10_000,
            repair_segment_keys_min: 4_096,
            diff_keys_max: 2_000_000,
            diff_key_bytes_max: 256 << 20,
            connections_max: mend_tls::accept::CONNECTIONS_MAX_DEFAULT,
            tls_handshake_timeout_ms: mend_tls::accept::TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
            streams_per_connection_max: 256,
            request_timeout_ms: 3_600_000,
            http2_keepalive_ms: 30_000,
            server_streams_max: 32,
            stream_send_timeout_ms: 30_000,
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
    /// Key ranges served, each with its tree shape and its `mode`:
    /// `"values"` (the default: written through the Replica service) or
    /// `"digests"` (fed by a change feed through the Ingest service, value
    /// hashes only; persisted, so a range's mode cannot change later).
    /// Default: one range `default` covering every key, fan-out 16, depth 4.
    pub ranges: Vec<RangeSpec>,
    /// Settle window in ms: a divergence whose newer version is younger is
    /// reported `in_flight` and not repaired (0..=86 400 000).
    pub settle_ms: u64,
    /// Allowed clock skew between any two nodes, in ms (0..=86 400 000):
    /// the one bound for the whole agent. Versions further ahead of the
    /// local clock are `future_version` in diffs, replicated or pushed
    /// writes stamped further ahead are refused (see `future_writes`), and
    /// the store's clock follows replicated versions only up to it; so one
    /// fast node cannot drag the others' clocks into their peers' future.
    pub clock_skew_ms: u64,
    /// Tombstone grace period in ms: a tombstone is purged only once it is
    /// this old *and* every configured peer was seen in sync after it
    /// arrived (see `gc`).
    pub tombstone_grace_ms: u64,
    /// Background tombstone purge.
    pub gc: Gc,
    /// Background verification of the tree against the data.
    pub scrub: Scrub,
    /// Trees that deepen as their ranges grow.
    pub deepen: Deepen,
    /// Coordinated schedules of the exchanges with peers.
    pub schedule: Schedule,
    /// Peers found in DNS, besides the `peers` listed.
    pub discovery: Discovery,
    /// Repair journal retention and undo holds.
    pub journal: Journal,
    /// Force each write to disk before acknowledging (slower, survives
    /// power loss as well as process crashes).
    pub sync_writes: bool,
    /// Limits.
    pub limits: Limits,
    /// What scheduled exchanges do with each category.
    pub playbook: Playbook,
    /// Per-range authorities (`[[authority]]` tables): at most one per
    /// range. Ranges without one resolve by version only.
    pub authority: Vec<AuthorityConfig>,
    /// Exchanges kept in the history of each peer and range (1..=10 000).
    pub history_max: usize,
    /// URL (http://) that receives a POST of the report JSON when a drift
    /// budget flips; none = log only.
    pub webhook_url: Option<String>,
    /// TLS files (required unless `insecure_plaintext`).
    pub tls: TlsConfig,
    /// Serve and dial plaintext: no encryption, no caller identity, every
    /// role granted. Refused on any listen address that is not loopback.
    pub insecure_plaintext: bool,
    /// Who may call what.
    pub roles: Roles,
    /// Replicated and pushed writes stamped beyond
    /// `clock_skew_ms`: `refuse` (default) or `accept`.
    pub future_writes: FutureWrites,
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
            gc: Gc::default(),
            scrub: Scrub::default(),
            deepen: Deepen::default(),
            schedule: Schedule::default(),
            discovery: Discovery::default(),
            journal: Journal::default(),
            sync_writes: false,
            limits: Limits::default(),
            playbook: Playbook::default(),
            authority: Vec::new(),
            history_max: 100,
            webhook_url: None,
            tls: TlsConfig::default(),
            insecure_plaintext: false,
            roles: Roles::default(),
            future_writes: FutureWrites::Refuse,
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

    /// The configured peer with node id `id`.
    pub fn peer(&self, id: &str) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Checks every field, in the order the file documents them: the first
    /// bad one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        NodeId::new(self.node_id.clone())
            .map_err(|_| bad("node_id", &self.node_id, "1..=64 printable ASCII bytes"))?;
        RangeMap::new(self.ranges.clone())
            .map_err(|e| bad("ranges", "(see message)", e.to_string()))?;
        in_ranges(&self.exchange_bounds())?;
        self.validate_peers()?;
        self.validate_authority()?;
        self.validate_playbook()?;
        in_ranges(&self.service_bounds())?;
        self.discovery.parse()?;
        in_ranges(&[
            (
                "discovery.interval_ms",
                self.discovery.interval_ms,
                (1_000, 86_400_000),
            ),
            (
                "tls.reload_poll_ms",
                self.tls.reload_poll_ms,
                RELOAD_POLL_MS_BOUNDS,
            ),
        ])?;
        self.validate_transport()?;
        if let Some(u) = &self.webhook_url
            && !u.starts_with("http://")
            && !u.starts_with("https://")
        {
            return Err(bad("webhook_url", u, "an http:// or https:// URL"));
        }
        Ok(())
    }
}

/// A numeric field's bounds: (field, value, (least, most)), both inclusive.
type Bound = (&'static str, u64, (u64, u64));

/// Bounds of `settle_ms` and `clock_skew_ms`.
const POLICY_MS_BOUNDS: (u64, u64) = (0, 86_400_000);
/// Bounds of `tls.reload_poll_ms`.
const RELOAD_POLL_MS_BOUNDS: (u64, u64) = (100, 3_600_000);
/// Bounds of `limits.connections_max`.
const CONNECTIONS_MAX_BOUNDS: (u64, u64) = (1, 65_536);
/// Bounds of `limits.tls_handshake_timeout_ms`.
const TLS_HANDSHAKE_TIMEOUT_MS_BOUNDS: (u64, u64) = (100, 60_000);

/// Whether `v` lies within `bounds` (inclusive).
const fn within(v: u64, bounds: (u64, u64)) -> bool {
    bounds.0 <= v && v <= bounds.1
}

// The defaults other crates own must pass `validate`, or the default
// configuration (and every file that leaves these fields out) is refused.
const _: () = assert!(within(
    mend_core::classify::CLOCK_SKEW_MS_DEFAULT,
    POLICY_MS_BOUNDS
));
const _: () = assert!(within(
    mend_tls::reload::TLS_RELOAD_POLL_MS_DEFAULT,
    RELOAD_POLL_MS_BOUNDS
));
const _: () = assert!(within(
    mend_tls::accept::CONNECTIONS_MAX_DEFAULT as u64,
    CONNECTIONS_MAX_BOUNDS
));
const _: () = assert!(within(
    mend_tls::accept::TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
    TLS_HANDSHAKE_TIMEOUT_MS_BOUNDS
));

/// Checks `bounds` in order; the first value outside its bounds is the error.
fn in_ranges(bounds: &[Bound]) -> Result<(), ConfigError> {
    for &(field, v, (lo, hi)) in bounds {
        in_range(field, v, lo, hi)?;
    }
    Ok(())
}

impl AgentConfig {
    /// The bounds of the clock, exchange and repair settings.
    fn exchange_bounds(&self) -> [Bound; 7] {
        let l = &self.limits;
        [
            ("settle_ms", self.settle_ms, POLICY_MS_BOUNDS),
            ("clock_skew_ms", self.clock_skew_ms, POLICY_MS_BOUNDS),
            (
                "limits.batch_writes_max",
                l.batch_writes_max as u64,
                (1, 100_000),
            ),
            ("limits.rpc_timeout_ms", l.rpc_timeout_ms, (100, 600_000)),
            (
                "limits.fetch_keys_max",
                l.fetch_keys_max as u64,
                (1, 100_000),
            ),
            (
                "limits.repair_segment_keys_min",
                l.repair_segment_keys_min as u64,
                (0, 10_000_000),
            ),
            (
                "limits.diff_keys_max",
                l.diff_keys_max as u64,
                (1, 10_000_000),
            ),
        ]
    }

    /// The bounds of the history, server, upkeep (purge, journal, scrub)
    /// and schedule settings.
    fn service_bounds(&self) -> [Bound; 21] {
        let (l, sc) = (&self.limits, &self.schedule);
        [
            ("history_max", self.history_max as u64, (1, 10_000)),
            (
                "limits.connections_max",
                l.connections_max as u64,
                CONNECTIONS_MAX_BOUNDS,
            ),
            (
                "limits.tls_handshake_timeout_ms",
                l.tls_handshake_timeout_ms,
                TLS_HANDSHAKE_TIMEOUT_MS_BOUNDS,
            ),
            (
                "limits.streams_per_connection_max",
                u64::from(l.streams_per_connection_max),
                (1, 10_000),
            ),
            (
                "limits.request_timeout_ms",
                l.request_timeout_ms,
                (1_000, 86_400_000),
            ),
            (
                "limits.http2_keepalive_ms",
                l.http2_keepalive_ms,
                (1_000, 3_600_000),
            ),
            (
                "limits.server_streams_max",
                l.server_streams_max as u64,
                (1, 4_096),
            ),
            (
                "limits.stream_send_timeout_ms",
                l.stream_send_timeout_ms,
                (100, 600_000),
            ),
            (
                "gc.purge_interval_ms",
                self.gc.purge_interval_ms,
                (1_000, 86_400_000),
            ),
            (
                "gc.purge_rate_per_s",
                self.gc.purge_rate_per_s,
                (1, 1_000_000),
            ),
            (
                "journal.retention_ms",
                self.journal.retention_ms,
                (60_000, 31_536_000_000),
            ),
            (
                "journal.repairs_max",
                self.journal.repairs_max as u64,
                (1, 1_000_000),
            ),
            (
                "journal.undo_hold_ms",
                self.journal.undo_hold_ms,
                (0, 31_536_000_000),
            ),
            (
                "scrub.buckets_per_s",
                self.scrub.buckets_per_s,
                (0, 1_000_000),
            ),
            (
                "deepen.entries_per_bucket",
                self.deepen.entries_per_bucket,
                (0, 1_000_000),
            ),
            (
                "deepen.check_every_ms",
                self.deepen.check_every_ms,
                (1_000, 86_400_000),
            ),
            (
                "deepen.tree_bytes_max",
                self.deepen.tree_bytes_max,
                (1 << 20, 64 << 30),
            ),
            ("schedule.exchanges_max", sc.exchanges_max as u64, (1, 64)),
            (
                "schedule.intensity_percent",
                sc.intensity_percent as u64,
                (1, 100),
            ),
            ("schedule.jitter_percent", sc.jitter_percent as u64, (0, 50)),
            ("schedule.lease_ms", sc.lease_ms, (1_000, 86_400_000)),
        ]
    }

    /// Each peer has a valid, unique id, an address, and an interval that
    /// is off or in bounds.
    fn validate_peers(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The playbook repairs only what may be repaired (conflicts only
    /// toward an authority; never future versions or writes in flight), and
    /// its blast-radius share is a fraction.
    fn validate_playbook(&self) -> Result<(), ConfigError> {
        let pb = &self.playbook;
        if pb.conflict == Action::Repair && self.authority.is_empty() {
            return Err(bad(
                "playbook.conflict",
                "\"repair\"",
                "conflicts are repaired only toward a range's authority: add an [[authority]] table",
            ));
        }
        for (name, a) in [
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
        Ok(())
    }
}

impl AgentConfig {
    /// The authority of the range named `range`, if it has one.
    pub fn authority_of(&self, range: &str) -> Option<&AuthorityConfig> {
        self.authority.iter().find(|a| a.range == range)
    }

    /// Each authority names a served range (once) and a known node.
    fn validate_authority(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for a in &self.authority {
            if !self.ranges.iter().any(|r| r.name == a.range) {
                return Err(bad(
                    "authority.range",
                    &a.range,
                    "the name of one of `ranges`",
                ));
            }
            if !seen.insert(a.range.as_str()) {
                return Err(bad(
                    "authority.range",
                    &a.range,
                    "at most one authority per range",
                ));
            }
            if a.node != self.node_id && !self.peers.iter().any(|p| p.id == a.node) {
                return Err(bad(
                    "authority.node",
                    &a.node,
                    "this node's node_id or the id of one of `peers`",
                ));
            }
        }
        Ok(())
    }

    /// TLS or explicit plaintext, and plaintext only on loopback.
    fn validate_transport(&self) -> Result<(), ConfigError> {
        if self.insecure_plaintext {
            if self.tls.is_set() {
                return Err(bad(
                    "insecure_plaintext",
                    true,
                    "either [tls] or insecure_plaintext, not both",
                ));
            }
            if !self.listen.ip().is_loopback() {
                return Err(bad(
                    "listen",
                    self.listen,
                    "plaintext (insecure_plaintext) is refused off loopback: configure [tls]",
                ));
            }
            if let Some(h) = self.http
                && !h.ip().is_loopback()
            {
                return Err(bad(
                    "http",
                    h,
                    "plaintext (insecure_plaintext) is refused off loopback: configure [tls]",
                ));
            }
            return Ok(());
        }
        if self.tls.paths().is_none() {
            return Err(bad(
                "tls",
                "(none)",
                "set tls.dir (tls.crt, tls.key, ca.crt) or tls.cert_file, key_file and ca_file \
                 (`mend cert` makes a development set), or run with --insecure-plaintext on loopback",
            ));
        }
        for (role, v) in [
            ("roles.replica", &self.roles.replica),
            ("roles.peer", &self.roles.peer),
            ("roles.operator", &self.roles.operator),
            ("roles.peer_addresses", &self.roles.peer_addresses),
        ] {
            if let Some(p) = v.iter().find(|p| p.is_empty() || p.len() > 253) {
                return Err(bad(role, format!("{p:?}"), "patterns of 1..=253 bytes"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_modes_parse_and_a_bad_one_names_the_allowed() {
        let c = AgentConfig::from_toml(
            "[[ranges]]\nname = \"a\"\nend = [109]\n\
             [[ranges]]\nname = \"d\"\nstart = [109]\nmode = \"digests\"\n",
        )
        .unwrap();
        RangeMap::new(c.ranges.clone()).unwrap();
        assert_eq!(c.ranges[0].mode, mend_core::RangeMode::Values);
        assert_eq!(c.ranges[1].mode, mend_core::RangeMode::Digests);
        let e = AgentConfig::from_toml("[[ranges]]\nname = \"a\"\nmode = \"hashes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hashes") && e.contains("digests"), "{e}");
    }

    #[test]
    fn dns_peers_parse_both_forms_and_refuse_the_rest() {
        let d = |p: &str| Discovery {
            peers: p.into(),
            ..Discovery::default()
        };
        assert_eq!(d("").parse().unwrap(), None);
        assert_eq!(
            d("dns:mend.default.svc.cluster.local:7400")
                .parse()
                .unwrap(),
            Some(DnsPeers::Addresses {
                name: "mend.default.svc.cluster.local".into(),
                port: 7400
            })
        );
        assert_eq!(
            d("dns:_grpc._tcp.mend.default.svc").parse().unwrap(),
            Some(DnsPeers::Srv {
                name: "_grpc._tcp.mend.default.svc".into()
            })
        );
        for bad in [
            "mend:7400",
            "dns:mend",
            "dns:mend:0",
            "dns:mend:70000",
            "dns::7400",
            "dns:me nd:7400",
            "dns:_grpc._tcp.mend:7400",
        ] {
            let e = d(bad).parse().unwrap_err().to_string();
            assert!(
                e.contains("discovery.peers") && e.contains("dns:NAME:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn defaults_validate_and_errors_name_the_field() {
        let e = AgentConfig::default().validate().unwrap_err();
        assert!(e.to_string().contains("tls"), "{e}");
        let plain = AgentConfig {
            insecure_plaintext: true,
            ..AgentConfig::default()
        };
        assert!(plain.validate().is_ok());
        let c =
            AgentConfig::from_toml("insecure_plaintext = true\nlisten = \"0.0.0.0:7400\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("loopback"), "{e}");
        let c = AgentConfig::from_toml("[tls]\ndir = \"/etc/mend/tls\"").unwrap();
        assert!(c.validate().is_ok());
        let c =
            AgentConfig::from_toml("settle_ms = 99999999999\ninsecure_plaintext = true").unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.to_string().contains("settle_ms") && e.to_string().contains("99999999999"),
            "{e}"
        );
        let e = AgentConfig::from_toml("nonsense = 1").unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
        let c =
            AgentConfig::from_toml("insecure_plaintext = true\n[[ranges]]\nname = \"a\"\nshape = { fanout = 3, depth = 2 }\n")
                .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("fanout"));
    }

    #[test]
    fn authorities_name_a_served_range_and_a_known_node() {
        let base = "insecure_plaintext = true\nnode_id = \"a\"\n\
                    [[peers]]\nid = \"b\"\naddress = \"127.0.0.1:1\"\n";
        let parse = |extra: &str| AgentConfig::from_toml(&format!("{base}{extra}")).unwrap();
        let ok = parse(
            "[playbook]\nconflict = \"repair\"\n[[authority]]\nrange = \"default\"\nnode = \"b\"\nscope = \"all\"\n",
        );
        ok.validate().unwrap();
        let a = ok.authority_of("default").unwrap();
        assert_eq!(
            (a.node.as_str(), a.scope),
            ("b", mend_core::playbook::AuthorityScope::All)
        );
        assert!(ok.authority_of("other").is_none());
        assert!(
            ok.playbook
                .repair_categories()
                .contains(&mend_core::Category::Conflict)
        );
        for (extra, field) in [
            (
                "[[authority]]\nrange = \"nope\"\nnode = \"a\"\n",
                "authority.range",
            ),
            (
                "[[authority]]\nrange = \"default\"\nnode = \"c\"\n",
                "authority.node",
            ),
            (
                "[[authority]]\nrange = \"default\"\nnode = \"a\"\n[[authority]]\nrange = \"default\"\nnode = \"b\"\n",
                "authority.range",
            ),
            ("[playbook]\nconflict = \"repair\"\n", "playbook.conflict"),
        ] {
            let e = parse(extra).validate().unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
        let e = AgentConfig::from_toml(&format!(
            "{base}[[authority]]\nrange = \"default\"\nnode = \"a\"\nscope = \"most\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("scope") || e.contains("most"), "{e}");
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing {
    //! What the `config_parse` fuzz target calls (and `cargo test` runs on
    //! fixed and structure-aware inputs): a config file from disk or a
    //! ConfigMap is untrusted input.

    use super::AgentConfig;

    /// Parses `data` as a config file and validates it. Never panics;
    /// what parses serializes back to TOML that parses to the same config.
    pub fn config_parse(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(c) = AgentConfig::from_toml(text) else {
            return;
        };
        let _ = c.validate();
        if let Ok(again) = toml::to_string(&c) {
            match AgentConfig::from_toml(&again) {
                Ok(c2) => assert!(
                    c2 == c || c.playbook.blast_radius_share_max.is_nan(),
                    "config changed through TOML: {again}"
                ),
                Err(e) => panic!("serialized config does not parse: {e}: {again}"),
            }
        }
    }

    /// A full, valid config file (the README's example).
    pub const EXAMPLE: &str = r#"
node_id = "node-a"
listen = "0.0.0.0:7400"
http = "0.0.0.0:9400"
data_dir = "/var/lib/mend"
settle_ms = 5000
clock_skew_ms = 1000
webhook_url = "http://alerts.example:8080/mend"
history_max = 100

[[peers]]
id = "node-b"
address = "10.0.0.2:7400"
interval_ms = 60000
budget = { divergent_keys_max = 100, oldest_divergence_ms_max = 600000 }

[playbook]
missing = "repair"
stale = "repair"
unpropagated_delete = "repair"
conflict = "report"
future_version = "report"
in_flight = "report"
blast_radius_share_max = 0.01
require_healthy_peer = true

[[ranges]]
name = "default"
shape = { fanout = 16, depth = 4 }

[tls]
dir = "/etc/mend/tls"
reload_poll_ms = 2000

[roles]
replica = ["replica"]
peer = []
operator = ["operator"]
peer_addresses = []

[limits]
rpc_timeout_ms = 10000
fetch_keys_max = 10000
"#;

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The fixed-seed input stream (`mend_core::rng`).
        fn stream(seed: u64) -> impl FnMut() -> u64 {
            let mut r = mend_core::rng::SplitMix64::new(seed);
            move || r.next_u64()
        }

        #[test]
        fn the_example_parses_validates_and_round_trips() {
            let c = AgentConfig::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
            c.validate().unwrap_or_else(|e| panic!("{e}"));
            config_parse(EXAMPLE.as_bytes());
        }

        #[test]
        fn random_bytes_never_panic() {
            let mut r = stream(1);
            for _ in 0..2_000 {
                let n = (r() % 200) as usize;
                let b: Vec<u8> = (0..n).map(|_| r() as u8).collect();
                config_parse(&b);
            }
        }

        #[test]
        fn mutated_examples_never_panic() {
            // Structure-aware: the example with one value replaced by a
            // hostile one, or one byte changed, so parsing gets deep.
            let values = [
                "-1",
                "0",
                "18446744073709551615",
                "18446744073709551616",
                "1e308",
                "nan",
                "inf",
                "\"\"",
                "\"x\"",
                "[]",
                "{}",
                "true",
                "\"999.999.999.999:99999\"",
                "\"\\u0000\"",
                "0.5",
                "-0.0",
            ];
            let lines: Vec<&str> = EXAMPLE.lines().collect();
            let mut r = stream(2);
            let mut parsed = 0;
            for i in 0..lines.len() {
                for v in values {
                    let Some((k, _)) = lines[i].split_once(" = ") else {
                        continue;
                    };
                    let mut l = lines.clone();
                    let line = format!("{k} = {v}");
                    l[i] = &line;
                    let text = l.join("\n");
                    if AgentConfig::from_toml(&text).is_ok() {
                        parsed += 1;
                    }
                    config_parse(text.as_bytes());
                }
            }
            for _ in 0..2_000 {
                let mut b = EXAMPLE.as_bytes().to_vec();
                let at = (r() as usize) % b.len();
                b[at] = r() as u8;
                config_parse(&b);
            }
            assert!(
                parsed > 20,
                "the mutations reach validation ({parsed} parsed)"
            );
        }
    }
}
