//! The adapter's errors: each names what to fix.

use crate::pgoutput::DecodeError;

/// Why the adapter stopped or refused to start.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A configuration value is invalid.
    #[error("invalid adapter config: {0}")]
    Config(String),
    /// The database refused a statement or the connection failed.
    #[error("postgres: {context}: {source}")]
    Sql {
        /// What the adapter was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The table does not exist.
    #[error("table {table} does not exist (or is not a plain or partitioned table)")]
    UnknownTable {
        /// `schema.table`.
        table: String,
    },
    /// The table has no primary key.
    #[error(
        "table {table} has no primary key: mend keys rows by it (add one, e.g. ALTER TABLE {table} ADD PRIMARY KEY (id))"
    )]
    NoPrimaryKey {
        /// `schema.table`.
        table: String,
    },
    /// The configured version column is not a column of the table.
    #[error("table {table} has no column {column:?} to use as the version (columns: {columns})")]
    MissingVersionColumn {
        /// `schema.table`.
        table: String,
        /// The configured column.
        column: String,
        /// The table's columns.
        columns: String,
    },
    /// The version column's type cannot order versions.
    #[error(
        "version column {column:?} has type {found}: use smallint, integer, bigint, timestamp or timestamptz"
    )]
    VersionColumnType {
        /// The column.
        column: String,
        /// Its type.
        found: String,
    },
    /// Deletes would not carry the deleted row's version.
    #[error(
        "table {table} has replica identity {found:?}: a delete must carry the deleted row's version, so mend needs ALTER TABLE {table} REPLICA IDENTITY FULL"
    )]
    ReplicaIdentity {
        /// `schema.table`.
        table: String,
        /// The identity found.
        found: String,
    },
    /// The server does not write logical WAL.
    #[error(
        "wal_level is {found:?}: logical decoding needs wal_level = logical (postgresql.conf, then restart)"
    )]
    WalLevel {
        /// The setting found.
        found: String,
    },
    /// Another consumer holds the slot.
    #[error("replication slot {slot:?} is already in use ({by}): give each adapter its own slot")]
    SlotInUse {
        /// The slot.
        slot: String,
        /// Who holds it.
        by: String,
    },
    /// The slot exists with another output plugin.
    #[error(
        "replication slot {slot:?} uses plugin {plugin:?}, mend-pg needs pgoutput: drop it or choose another slot name"
    )]
    SlotPlugin {
        /// The slot.
        slot: String,
        /// Its plugin.
        plugin: String,
    },
    /// The store followed a slot that no longer exists: changes were lost.
    #[error(
        "the agent holds a stream position for source {source_name:?}, but replication slot {slot:?} did not exist (it was dropped, so changes since that position are lost): start the agent with an empty data directory to take a new snapshot"
    )]
    SlotLost {
        /// The source name.
        source_name: String,
        /// The slot.
        slot: String,
    },
    /// A row cannot be turned into an entry.
    #[error("row: {0}")]
    Row(String),
    /// A replication message did not decode.
    #[error("decoding the slot's changes: {0}")]
    Decode(#[from] DecodeError),
    /// The table's layout changed under the adapter.
    #[error(
        "table layout changed: {0}; restart the adapter (and, if columns changed, every replica's adapter)"
    )]
    Layout(String),
    /// The agent refused a batch or the stream broke.
    #[error("agent ingest: {0}")]
    Ingest(#[from] tonic::Status),
    /// A local PostgreSQL server (tests, demo) did not start or stop.
    #[error("local postgres: {0}")]
    Instance(String),
    /// The stored position is not one this adapter writes.
    #[error("stored position {0} is not a mend-pg position")]
    Position(String),
}

impl PgError {
    /// Wraps a driver error with what the adapter was doing.
    pub fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let context = context.into();
        move |source| PgError::Sql { context, source }
    }
}
