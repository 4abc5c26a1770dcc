//! The adapter's Prometheus metrics (`mend_pg_` prefix).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters and gauges of one adapter.
#[derive(Debug, Default)]
pub struct PgMetrics {
    /// WAL the slot retains: the server's current WAL position minus the
    /// slot's confirmed position, in bytes (after each round).
    pub lag_bytes: Gauge,
    /// How long the oldest transaction of the last round waited between its
    /// commit and the agent's acknowledgement, in seconds.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// Row changes sent from the slot.
    pub changes: Counter,
    /// Rows sent by snapshots.
    pub snapshot_rows: Counter,
}

impl PgMetrics {
    /// Registers the metrics in `registry` (prefix `mend_pg`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pg");
        r.register(
            "slot_lag_bytes",
            "WAL the replication slot retains behind the server's current position",
            self.lag_bytes.clone(),
        );
        r.register(
            "slot_lag_seconds",
            "Commit-to-acknowledgement delay of the oldest transaction of the last round",
            self.lag_seconds.clone(),
        );
        r.register(
            "changes",
            "Row changes read from the replication slot and acknowledged",
            self.changes.clone(),
        );
        r.register(
            "snapshot_rows",
            "Rows sent by initial snapshots",
            self.snapshot_rows.clone(),
        );
    }
}
