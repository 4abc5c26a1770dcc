//! Prometheus metrics (the `prometheus-client` crate). Names follow the
//! Prometheus conventions: a `mend_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters (added by the encoder).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: peer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Peer id or address.
    pub peer: String,
}

impl PeerLabel {
    /// The label of `peer`.
    pub fn of(peer: &str) -> PeerLabel {
        PeerLabel {
            peer: peer.to_string(),
        }
    }
}

/// Labels: peer and range.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerRange {
    /// Peer id or address.
    pub peer: String,
    /// Range name.
    pub range: String,
}

/// Labels: peer, range and category.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerRangeCategory {
    /// Peer id or address.
    pub peer: String,
    /// Range name.
    pub range: String,
    /// Divergence category.
    pub category: String,
}

/// Labels: service and reason of a refused call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Denied {
    /// gRPC service (`Replica`, `Peer`, `Operator`).
    pub service: String,
    /// Why (`role`, `no_identity`, `not_owner`, `identity_mismatch`,
    /// `secret_mismatch`, `peer_not_allowed`).
    pub reason: String,
}

/// Labels: reason a connection was closed before serving.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// See `mend_tls::accept::Refusal::as_str`.
    pub reason: String,
}

/// Labels: range and what found a tree mismatch.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeSource {
    /// Range name.
    pub range: String,
    /// `exchange` (roots differed where entries agreed) or `scrub`.
    pub source: String,
}

/// Labels: peer and why a scheduled exchange was skipped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerReason {
    /// Peer id.
    pub peer: String,
    /// `busy` (this node's slots taken), `peer_busy` (the peer's), or
    /// `peer_unreachable` (the reservation failed).
    pub reason: String,
}

/// Labels: range and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeReason {
    /// Range name.
    pub range: String,
    /// Outcome.
    pub outcome: String,
}

/// Labels: range.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeLabel {
    /// Range name.
    pub range: String,
}

impl RangeLabel {
    /// The label of `range`.
    pub fn of(range: &str) -> RangeLabel {
        RangeLabel {
            range: range.to_string(),
        }
    }
}

fn rounds_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 20.0])
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Every metric the agent exports.
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    /// Registries of components started beside the agent in its process
    /// (`mend attach`'s PostgreSQL adapter), served after the agent's own.
    extra: std::sync::Mutex<Vec<Registry>>,
    /// Writes applied through the Replica service.
    pub writes: Counter,
    /// Tree leaf updates (one per applied entry).
    pub tree_updates: Counter,
    /// Batches committed through the Ingest service.
    pub ingest_batches: Counter,
    /// Entries received through the Ingest service (applied or not).
    pub ingest_entries: Counter,
    /// Divergent keys found by the latest exchange.
    pub divergent_keys: Family<PeerRangeCategory, Gauge>,
    /// Age of the oldest divergence (now minus the newer write's timestamp).
    pub oldest_divergence_seconds: Family<PeerRange, Gauge<f64, AtomicU64>>,
    /// Exchanges run.
    pub exchanges: Family<PeerLabel, Counter>,
    /// Exchanges that failed.
    pub exchange_errors: Family<PeerLabel, Counter>,
    /// Round trips per exchange.
    pub exchange_rounds: Family<PeerLabel, Histogram>,
    /// Bytes sent by exchanges.
    pub exchange_sent_bytes: Family<PeerLabel, Counter>,
    /// Bytes received by exchanges.
    pub exchange_received_bytes: Family<PeerLabel, Counter>,
    /// Exchange wall time.
    pub exchange_duration_seconds: Family<PeerLabel, Histogram>,
    /// Keys written by repairs.
    pub repaired_keys: Family<PeerLabel, Counter>,
    /// Bytes streamed by repairs.
    pub repaired_bytes: Family<PeerLabel, Counter>,
    /// 1 while a drift budget is exceeded.
    pub budget_exceeded: Family<PeerRange, Gauge>,
    /// Time from first seeing a divergent key to seeing it converged.
    pub convergence_seconds: Histogram,
    /// Calls refused by the role check or an ownership check.
    pub auth_denied: Family<Denied, Counter>,
    /// DNS lookups of `[discovery]`, by result (`ok`, `failed`).
    pub discovery_lookups: Family<Reason, Counter>,
    /// Connections closed before serving (limits, TLS failures).
    pub connections_refused: Family<Reason, Counter>,
    /// TLS sets swapped in by hot reload.
    pub tls_reloads: Counter,
    /// Changed TLS sets refused (the previous set stays in use).
    pub tls_reload_failures: Counter,
    /// Expiry of the served certificate, seconds since the Unix epoch.
    pub tls_cert_expiry_timestamp_seconds: Gauge,
    /// Replicated or pushed writes refused for a version too far ahead.
    pub future_writes_refused: Counter,
    /// Tree mismatches found (roots differ where entries agree).
    pub tree_mismatches: Family<RangeSource, Counter>,
    /// Buckets found out of step with the data and rebuilt.
    pub tree_buckets_fixed: Family<RangeSource, Counter>,
    /// Buckets the scrub verified.
    pub scrub_buckets: Counter,
    /// Each range's tree depth now (it grows as the range does).
    pub tree_depth: Family<RangeLabel, Gauge>,
    /// Deepenings of each range's tree, by outcome (`done`, `failed`).
    pub tree_deepenings: Family<RangeReason, Counter>,
    /// Tombstones purged.
    pub tombstones_purged: Family<RangeLabel, Counter>,
    /// The purge horizon: tombstones that arrived before it (and are past
    /// their grace) may go; seconds since the Unix epoch (0 = none yet).
    pub purge_horizon_timestamp_seconds: Family<RangeLabel, Gauge>,
    /// The peer's clock minus this agent's, from the latest handshake.
    pub peer_clock_skew_seconds: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    /// Exchange slots taken now (`schedule.exchanges_max` at most).
    pub exchange_slots_in_use: Gauge,
    /// Most exchange slots ever taken at once since start.
    pub exchange_slots_in_use_max: Gauge,
    /// Scheduled exchanges that did not start, by reason.
    pub scheduled_exchanges_skipped: Family<PeerReason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("mend");
        let m = Metrics::unregistered();
        Metrics::register_writes(&mut r, &m);
        Metrics::register_exchanges(&mut r, &m);
        Metrics::register_repairs(&mut r, &m);
        Metrics::register_access(&mut r, &m);
        Metrics::register_integrity(&mut r, &m);
        Metrics { registry: r, ..m }
    }
}

/// Construction and registration, one group of metric families per function,
/// registered in this order (the order of the text format).
impl Metrics {
    /// Every metric, none registered yet.
    fn unregistered() -> Metrics {
        Metrics {
            writes: Counter::default(),
            tree_updates: Counter::default(),
            ingest_batches: Counter::default(),
            ingest_entries: Counter::default(),
            divergent_keys: Family::default(),
            oldest_divergence_seconds: Family::default(),
            exchanges: Family::default(),
            exchange_errors: Family::default(),
            exchange_rounds: Family::new_with_constructor(rounds_histogram as fn() -> Histogram),
            exchange_sent_bytes: Family::default(),
            exchange_received_bytes: Family::default(),
            exchange_duration_seconds: Family::new_with_constructor(
                seconds_histogram as fn() -> Histogram,
            ),
            repaired_keys: Family::default(),
            repaired_bytes: Family::default(),
            budget_exceeded: Family::default(),
            convergence_seconds: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            auth_denied: Family::default(),
            discovery_lookups: Family::default(),
            connections_refused: Family::default(),
            tls_reloads: Counter::default(),
            tls_reload_failures: Counter::default(),
            tls_cert_expiry_timestamp_seconds: Gauge::default(),
            future_writes_refused: Counter::default(),
            tree_mismatches: Family::default(),
            tree_buckets_fixed: Family::default(),
            scrub_buckets: Counter::default(),
            tree_depth: Family::default(),
            tree_deepenings: Family::default(),
            tombstones_purged: Family::default(),
            purge_horizon_timestamp_seconds: Family::default(),
            peer_clock_skew_seconds: Family::default(),
            exchange_slots_in_use: Gauge::default(),
            exchange_slots_in_use_max: Gauge::default(),
            scheduled_exchanges_skipped: Family::default(),
            registry: Registry::default(),
            extra: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Writes and ingest.
    fn register_writes(r: &mut Registry, m: &Metrics) {
        r.register(
            "writes",
            "Writes applied through the Replica service",
            m.writes.clone(),
        );
        r.register(
            "tree_updates",
            "Tree leaf updates (one per applied entry)",
            m.tree_updates.clone(),
        );
        r.register(
            "ingest_batches",
            "Batches committed through the Ingest service",
            m.ingest_batches.clone(),
        );
        r.register(
            "ingest_entries",
            "Entries received through the Ingest service (applied or not)",
            m.ingest_entries.clone(),
        );
    }

    /// Exchanges: what they found, what they cost, their slots.
    fn register_exchanges(r: &mut Registry, m: &Metrics) {
        r.register(
            "divergent_keys",
            "Divergent keys found by the latest exchange",
            m.divergent_keys.clone(),
        );
        r.register(
            "oldest_divergence_seconds",
            "Age of the oldest divergence: now minus the newer write's timestamp",
            m.oldest_divergence_seconds.clone(),
        );
        r.register(
            "exchanges",
            "Exchanges run against a peer",
            m.exchanges.clone(),
        );
        r.register(
            "exchange_errors",
            "Exchanges that failed",
            m.exchange_errors.clone(),
        );
        r.register(
            "exchange_slots_in_use",
            "Exchange slots taken now, as initiator or responder (schedule.exchanges_max at most)",
            m.exchange_slots_in_use.clone(),
        );
        r.register(
            "exchange_slots_in_use_max",
            "Most exchange slots taken at once since the agent started",
            m.exchange_slots_in_use_max.clone(),
        );
        r.register(
            "scheduled_exchanges_skipped",
            "Scheduled exchanges that did not start: busy, peer_busy, peer_unreachable",
            m.scheduled_exchanges_skipped.clone(),
        );
        r.register(
            "exchange_rounds",
            "Round trips per exchange",
            m.exchange_rounds.clone(),
        );
        r.register(
            "exchange_sent_bytes",
            "Bytes sent by exchanges",
            m.exchange_sent_bytes.clone(),
        );
        r.register(
            "exchange_received_bytes",
            "Bytes received by exchanges",
            m.exchange_received_bytes.clone(),
        );
        r.register(
            "exchange_duration_seconds",
            "Exchange wall time",
            m.exchange_duration_seconds.clone(),
        );
    }

    /// Repairs and drift budgets.
    fn register_repairs(r: &mut Registry, m: &Metrics) {
        r.register(
            "repaired_keys",
            "Keys written by repairs",
            m.repaired_keys.clone(),
        );
        r.register(
            "repaired_bytes",
            "Entry bytes streamed by repairs",
            m.repaired_bytes.clone(),
        );
        r.register(
            "budget_exceeded",
            "1 while the drift budget of a peer and range is exceeded",
            m.budget_exceeded.clone(),
        );
        r.register(
            "convergence_seconds",
            "Time from first seeing a divergent key to seeing it converged",
            m.convergence_seconds.clone(),
        );
    }

    /// Who may connect and call: roles, discovery, connections, TLS.
    fn register_access(r: &mut Registry, m: &Metrics) {
        r.register(
            "auth_denied",
            "Calls refused by the role check or an ownership check",
            m.auth_denied.clone(),
        );
        r.register(
            "discovery_lookups",
            "DNS lookups of [discovery] peers, by result (reason = ok or failed)",
            m.discovery_lookups.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed before serving: connection limit, TLS handshake failure or timeout",
            m.connections_refused.clone(),
        );
        r.register(
            "tls_reloads",
            "TLS certificate sets swapped in by hot reload",
            m.tls_reloads.clone(),
        );
        r.register(
            "tls_reload_failures",
            "Changed TLS certificate sets refused; the previous set stays in use",
            m.tls_reload_failures.clone(),
        );
        r.register(
            "tls_cert_expiry_timestamp_seconds",
            "Expiry of the served certificate, seconds since the Unix epoch",
            m.tls_cert_expiry_timestamp_seconds.clone(),
        );
    }

    /// Data integrity: future writes, tree mismatches, scrub, purge, clock skew.
    fn register_integrity(r: &mut Registry, m: &Metrics) {
        r.register(
            "future_writes_refused",
            "Replicated or pushed writes refused for a version stamped beyond clock_skew_ms",
            m.future_writes_refused.clone(),
        );
        r.register(
            "tree_mismatches",
            "Tree mismatches found: roots differ where entries agree (source exchange or scrub)",
            m.tree_mismatches.clone(),
        );
        r.register(
            "tree_buckets_fixed",
            "Buckets found out of step with the data and rebuilt online",
            m.tree_buckets_fixed.clone(),
        );
        r.register(
            "scrub_buckets",
            "Buckets the background scrub verified against the data",
            m.scrub_buckets.clone(),
        );
        r.register(
            "tree_depth",
            "Each range's tree depth now (trees deepen as their ranges grow)",
            m.tree_depth.clone(),
        );
        r.register(
            "tree_deepenings",
            "Deepenings of a range's tree, by outcome (done, failed)",
            m.tree_deepenings.clone(),
        );
        r.register(
            "tombstones_purged",
            "Tombstones purged by the background purge",
            m.tombstones_purged.clone(),
        );
        r.register(
            "purge_horizon_timestamp_seconds",
            "Tombstones that arrived before this time and are past their grace may be purged: \
             the oldest last-in-sync time over the configured peers",
            m.purge_horizon_timestamp_seconds.clone(),
        );
        r.register(
            "peer_clock_skew_seconds",
            "The peer's clock minus this agent's, from the latest handshake",
            m.peer_clock_skew_seconds.clone(),
        );
    }
}

impl Metrics {
    /// The counters labelled by peer alone.
    pub fn peer_counters(&self) -> [&Family<PeerLabel, Counter>; 6] {
        [
            &self.exchanges,
            &self.exchange_errors,
            &self.exchange_sent_bytes,
            &self.exchange_received_bytes,
            &self.repaired_keys,
            &self.repaired_bytes,
        ]
    }

    /// Counts a discovery lookup.
    pub fn discovery(&self, ok: bool) {
        self.discovery_lookups
            .get_or_create(&Reason {
                reason: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    /// Counts a refused call.
    pub fn auth_denied(&self, service: &str, reason: &str) {
        self.auth_denied
            .get_or_create(&Denied {
                service: service.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a tree mismatch in `range` found by `source`, with the
    /// buckets it fixed.
    pub fn tree_mismatch(&self, range: &str, source: &str, fixed: u64) {
        let l = RangeSource {
            range: range.into(),
            source: source.into(),
        };
        self.tree_mismatches.get_or_create(&l).inc();
        self.tree_buckets_fixed.get_or_create(&l).inc_by(fixed);
    }

    /// Serves `registry` after the agent's own metrics.
    pub fn register_extra(&self, registry: Registry) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(registry);
    }

    /// Renders the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        prometheus_client::encoding::text::encode_registry(&mut s, &self.registry)?;
        for r in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            prometheus_client::encoding::text::encode_registry(&mut s, r)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut s)?;
        Ok(s)
    }
}
