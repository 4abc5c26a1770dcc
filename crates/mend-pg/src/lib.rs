//! `mend-pg`: mend beside a PostgreSQL table it does not own.
//!
//! The adapter ([`Adapter`]) checks the table and the server
//! ([`catalog`]), takes an initial snapshot, then follows a logical
//! replication slot (`pgoutput`, read with
//! `pg_logical_slot_peek_binary_changes` and decoded by [`pgoutput`]),
//! turning each row into a key, a version and a value digest ([`table`]:
//! the encoding both replicas' adapters must agree on) and feeding them to
//! an agent's `Ingest` service into a digest-only range. The agent stores
//! the feed's position with the entries, and the adapter advances the slot
//! only to acknowledged positions, so a crash of either side loses and
//! doubles nothing. [`repair`] holds the version-checked SQL that writes a
//! newer row into a replica that is behind without clobbering a newer one;
//! [`rows`] runs it for an agent's repairs, journaled and undoable. A table
//! without a version column is followed versionless (one version for every
//! row, applied in feed order).
//!
//! Limits: `batch_rows` (entries per Ingest batch and changes per peek,
//! 1..=`INGEST_BATCH_ENTRIES_MAX`), keys up to `KEY_BYTES_MAX` bytes (a
//! longer primary key is an error naming it). Not supported (each is a
//! clear error or documented): `TRUNCATE` (not published: re-snapshot after one),
//! TLS to PostgreSQL (connect over a Unix socket or a trusted network).

pub mod adapter;
pub mod catalog;
pub mod error;
pub mod instance;
pub mod metrics;
pub mod pgoutput;
pub mod repair;
pub mod rows;
pub mod table;

use std::time::Duration;

use mend_core::NodeId;

pub use adapter::Adapter;
pub use error::PgError;
pub use metrics::PgMetrics;
pub use table::TableSpec;

/// Default entries per Ingest batch and changes per peek.
pub const BATCH_ROWS_DEFAULT: usize = 5_000;
/// Default wait between two peeks at an idle slot.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);

/// How much an adapter moves at a time.
#[derive(Debug, Clone)]
pub struct PgLimits {
    /// Entries per Ingest batch and changes per peek at the slot
    /// (1..=`INGEST_BATCH_ENTRIES_MAX`).
    pub batch_rows: usize,
    /// Wait between two peeks at an idle slot (the floor of the slot lag).
    pub poll_interval: Duration,
}

impl Default for PgLimits {
    fn default() -> Self {
        PgLimits {
            batch_rows: BATCH_ROWS_DEFAULT,
            poll_interval: POLL_INTERVAL_DEFAULT,
        }
    }
}

/// One adapter: a table of a database into a range of an agent.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// libpq-style connection string (`host=/run/postgresql dbname=app user=mend`).
    pub conninfo: String,
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column whose value orders a row's versions (`updated_at`,
    /// a `bigint` version, ...); empty for a table without one: the
    /// versionless mode (every entry at one version, applied in feed order
    /// into a versionless range; diffs say only missing / differs /
    /// deleted, and nothing is repaired automatically).
    pub version_column: String,
    /// The origin every version carries: the same on every replica of the
    /// table, so equal rows have equal versions.
    pub origin: NodeId,
    /// The replication slot (and publication) name: lowercase letters,
    /// digits and `_`, one per adapter.
    pub slot: String,
    /// The feed's source name at the agent.
    pub source: String,
    /// The agent's digest-only range the rows go to.
    pub range: String,
    /// Batch sizes and polling.
    pub limits: PgLimits,
}

impl AdapterConfig {
    /// A config with defaults: schema `public`, origin `pg`, slot
    /// `mend_<table>`, source `pg:<schema>.<table>`.
    pub fn new(conninfo: &str, table: &str, version_column: &str, range: &str) -> AdapterConfig {
        let slot: String = format!("mend_{table}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        AdapterConfig {
            conninfo: conninfo.to_string(),
            schema: "public".into(),
            table: table.to_string(),
            version_column: version_column.to_string(),
            origin: NodeId::new("pg").unwrap_or_else(|_| unreachable!("a valid node id")),
            slot,
            source: format!("pg:public.{table}"),
            range: range.to_string(),
            limits: PgLimits::default(),
        }
    }

    /// Checks names and limits.
    pub fn validate(&self) -> Result<(), PgError> {
        let slot_ok = !self.slot.is_empty()
            && self.slot.len() <= 63
            && self
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !slot_ok {
            return Err(PgError::Config(format!(
                "slot name {:?}: 1..=63 of lowercase letters, digits and '_'",
                self.slot
            )));
        }
        for (what, v) in [("table", &self.table), ("schema", &self.schema)] {
            if v.is_empty() || v.len() > 63 {
                return Err(PgError::Config(format!("{what} {v:?}: 1..=63 bytes")));
            }
        }
        if self.version_column.len() > 63 {
            return Err(PgError::Config(format!(
                "version column {:?}: at most 63 bytes (empty: versionless)",
                self.version_column
            )));
        }
        mend_core::ingest::check_source(&self.source)
            .map_err(|e| PgError::Config(e.to_string()))?;
        self.limits.validate()
    }
}
