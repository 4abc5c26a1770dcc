//! The adapter: a table's initial snapshot, then its changes from a
//! logical replication slot, into an agent's `Ingest` service.
//!
//! **Positions.** The agent stores the last acknowledged position of the
//! source (in the same RocksDB batch as the entries), and the adapter
//! encodes positions so byte order is feed order:
//! - `[0x00][n: u64 BE]`: the snapshot's `n`th batch (a restarted snapshot
//!   starts again at 0: its batches are redeliveries, their entries still go
//!   through the apply rule);
//! - `[0x01][end_lsn: u64 BE]`: every change of every transaction that
//!   ended at or before `end_lsn` is durable at the agent. The snapshot ends
//!   with an empty batch at `[0x01][the slot's confirmed LSN]`.
//!
//! **Why the snapshot needs no exported snapshot.** The slot exists before
//! the snapshot reads a row, so every change committed after the snapshot
//! is in the slot, and a change both in the snapshot and in the slot is the
//! same row version (a duplicate) or an older one (stale): the apply rule
//! keeps the newest version of each row whatever the order. That is why a
//! version column is required.
//!
//! **Resuming.** On start the adapter asks the agent for the stored
//! position: none or a snapshot position redoes the snapshot; `[1][L]`
//! skips transactions that committed before `L` and advances the slot to
//! `L`. The slot is advanced only to positions the agent has acknowledged,
//! so a crash anywhere (adapter or agent) loses nothing: the slot still
//! holds what the agent has not made durable, and what it did make durable
//! comes again as duplicates at most.
//!
//! **Reading the slot.** Each round peeks at most `batch_rows` changes (whole
//! transactions) with `pg_logical_slot_peek_binary_changes`, sends them in
//! batches of at most `batch_rows` entries, and after the acknowledgement
//! advances the slot with `pg_replication_slot_advance`, which releases WAL.
//! The retained WAL is bounded by how far the agent is behind; if the agent
//! is down for long, the slot holds WAL until it is back (bound it with
//! PostgreSQL's `max_slot_wal_keep_size`; a slot invalidated by it makes the
//! adapter fail with `SlotLost`-like errors from the server, and the range
//! must be rebuilt with a new snapshot).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, pin_mut};
use mend_core::limits::INGEST_BATCH_ENTRIES_MAX;
use mend_rpc::pb;
use mend_rpc::pb::ingest_client::IngestClient;
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls};
use tonic::transport::Channel;

use crate::catalog::{self, SESSION_SETTINGS};
use crate::error::PgError;
use crate::metrics::PgMetrics;
use crate::pgoutput::{self, Datum, Message};
use crate::table::{RowEntry, TableSpec};
use crate::{AdapterConfig, PgLimits};

/// Position tag of a snapshot batch.
const SNAPSHOT: u8 = 0;
/// Position tag of a stream position.
const STREAM: u8 = 1;
/// Unix time of PostgreSQL's epoch (2000-01-01 00:00:00 UTC), in microseconds.
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// A connected, checked adapter for one table.
pub struct Adapter {
    config: AdapterConfig,
    db: Client,
    spec: TableSpec,
    slot: catalog::Slot,
    metrics: Arc<PgMetrics>,
    progress: watch::Sender<Progress>,
}

/// How far an adapter has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The end LSN of the last transaction the agent acknowledged (the
    /// slot's confirmed position once the snapshot is done; 0 before).
    pub acked: u64,
    /// Rounds that found the slot empty. A caller that saw `n` and then
    /// sees `n + 2` knows a whole round started after it looked, so every
    /// transaction committed before it looked is acknowledged.
    pub idle_rounds: u64,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("table", &self.spec.qualified())
            .field("slot", &self.config.slot)
            .finish()
    }
}

impl Adapter {
    /// Connects to the database, checks the table and the server, takes
    /// the slot (creating it and the publication if needed).
    pub async fn connect(
        config: AdapterConfig,
        metrics: Arc<PgMetrics>,
    ) -> Result<Adapter, PgError> {
        config.validate()?;
        let (db, conn) = tokio_postgres::connect(&config.conninfo, NoTls)
            .await
            .map_err(PgError::sql("connecting"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        db.batch_execute(SESSION_SETTINGS)
            .await
            .map_err(PgError::sql("setting the session's output formats"))?;
        catalog::check_wal_level(&db).await?;
        let spec = catalog::table_spec(
            &db,
            &config.schema,
            &config.table,
            &config.version_column,
            config.origin.clone(),
        )
        .await?;
        let slot = catalog::claim_slot(&db, &config.slot).await?;
        catalog::ensure_publication(&db, &config.slot, &spec).await?;
        let (progress, _) = watch::channel(Progress::default());
        Ok(Adapter {
            config,
            db,
            spec,
            slot,
            metrics,
            progress,
        })
    }

    /// The table's checked layout.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// The adapter's progress: tests and `mend attach` wait on it.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Snapshot (unless the agent already holds a stream position), then
    /// follow the slot until `shutdown` completes or an error.
    pub async fn run(
        &mut self,
        mut ingest: IngestClient<Channel>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PgError> {
        pin_mut!(shutdown);
        let stored = ingest
            .position(pb::IngestPositionRequest {
                source: self.config.source.clone(),
                range: self.config.range.clone(),
            })
            .await?
            .into_inner();
        let stored = stored.found.then_some(stored.position);
        let mut sink = Sink::open(&mut ingest, &self.config).await?;
        let mut resume = match decode_position(stored.as_deref())? {
            // The changes between the stored position and the new slot's
            // start are gone: only a new snapshot into an empty range
            // (which also drops rows deleted meanwhile) is exact.
            Some(_) if self.slot.created => {
                return Err(PgError::SlotLost {
                    source_name: self.config.source.clone(),
                    slot: self.config.slot.clone(),
                });
            }
            Some(lsn) => lsn,
            None => {
                tokio::select! {
                    r = self.snapshot(&mut sink) => r?,
                    () = &mut shutdown => return Ok(()),
                }
                self.slot.confirmed
            }
        };
        self.advance_slot(resume).await?;
        self.progress.send_modify(|p| p.acked = resume);
        loop {
            let round = tokio::select! {
                r = self.round(&mut sink, &mut resume) => r?,
                () = &mut shutdown => return Ok(()),
            };
            if round == 0 {
                self.progress.send_modify(|p| p.idle_rounds += 1);
                tokio::select! {
                    () = tokio::time::sleep(self.config.limits.poll_interval) => {}
                    () = &mut shutdown => return Ok(()),
                }
            }
        }
    }

    /// Reads every row in one repeatable-read transaction and sends them,
    /// then the end-of-snapshot position.
    async fn snapshot(&mut self, sink: &mut Sink) -> Result<(), PgError> {
        let columns: Vec<String> = self
            .spec
            .columns
            .iter()
            .map(|c| format!("{}::text", crate::table::quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}",
            columns.join(", "),
            self.spec.qualified()
        );
        self.db
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(PgError::sql("starting the snapshot"))?;
        let rows = self
            .db
            .query_raw(&sql, std::iter::empty::<i32>())
            .await
            .map_err(PgError::sql("reading the snapshot"))?;
        pin_mut!(rows);
        let mut batch = Vec::new();
        let mut n: u64 = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(PgError::sql("reading the snapshot"))?;
            let cells: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
            batch.push(entry_pb(self.spec.live(&cells)?));
            if batch.len() >= self.config.limits.batch_rows {
                sink.send(position(SNAPSHOT, n), std::mem::take(&mut batch))
                    .await?;
                self.metrics
                    .snapshot_rows
                    .inc_by(self.config.limits.batch_rows as u64);
                n += 1;
            }
        }
        self.db
            .batch_execute("COMMIT")
            .await
            .map_err(PgError::sql("ending the snapshot"))?;
        let last = batch.len() as u64;
        if !batch.is_empty() {
            sink.send(position(SNAPSHOT, n), batch).await?;
        }
        self.metrics.snapshot_rows.inc_by(last);
        sink.send(position(STREAM, self.slot.confirmed), Vec::new())
            .await?;
        Ok(())
    }

    /// One peek at the slot: sends what it holds past `resume`, advances
    /// the slot to what the agent acknowledged. Returns the rows peeked.
    async fn round(&mut self, sink: &mut Sink, resume: &mut u64) -> Result<usize, PgError> {
        let limit = i32::try_from(self.config.limits.batch_rows).unwrap_or(i32::MAX);
        let rows = self
            .db
            .query_raw(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                 'proto_version', '1', 'publication_names', $3)",
                [
                    &self.config.slot as &(dyn tokio_postgres::types::ToSql + Sync),
                    &limit,
                    &self.config.slot,
                ],
            )
            .await
            .map_err(PgError::sql("peeking at the slot"))?;
        pin_mut!(rows);
        let mut txn = TxnState::default();
        let mut pending = Vec::new();
        let mut peeked = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(PgError::sql("peeking at the slot"))?;
            peeked += 1;
            let data: &[u8] = row.get(0);
            match pgoutput::decode(data)? {
                Message::Begin {
                    final_lsn,
                    commit_time_us,
                } => {
                    txn.skip = final_lsn < *resume;
                    txn.commit_time_us = commit_time_us;
                }
                Message::Commit { end_lsn } if !txn.skip => {
                    txn.last_end = Some(end_lsn);
                    txn.oldest_commit_us.get_or_insert(txn.commit_time_us);
                }
                Message::Relation {
                    oid,
                    namespace,
                    name,
                    columns,
                } if oid == self.spec.oid && columns != self.spec.columns => {
                    return Err(PgError::Layout(format!(
                        "{namespace}.{name} now has columns {columns:?}, the adapter started \
                         with {:?}",
                        self.spec.columns
                    )));
                }
                change if !txn.skip => {
                    let entries = self.change_entries(change)?;
                    if pending.len() + entries.len() > self.config.limits.batch_rows {
                        // Durable up to the last whole transaction: a crash
                        // redoes the rest of this one.
                        let at = txn.last_end.unwrap_or(*resume);
                        sink.send(position(STREAM, at), std::mem::take(&mut pending))
                            .await?;
                    }
                    txn.changes += entries.len() as u64;
                    pending.extend(entries.into_iter().map(entry_pb));
                }
                _ => {}
            }
        }
        let Some(end) = txn.last_end else {
            debug_assert!(pending.is_empty(), "a peek returns whole transactions");
            return Ok(peeked);
        };
        sink.send(position(STREAM, end), pending).await?;
        self.metrics.changes.inc_by(txn.changes);
        if let Some(t) = txn.oldest_commit_us {
            self.metrics.lag_seconds.set(seconds_since_pg_time(t));
        }
        *resume = end;
        self.advance_slot(end).await?;
        self.progress.send_modify(|p| p.acked = end);
        Ok(peeked)
    }

    /// The entries of one change of the table (none for other tables).
    fn change_entries(&self, m: Message) -> Result<Vec<RowEntry>, PgError> {
        let spec = &self.spec;
        Ok(match m {
            Message::Insert { oid, new } if oid == spec.oid => vec![spec.live(&texts(&new)?)?],
            Message::Update { oid, old, new } if oid == spec.oid => {
                let new = fill_unchanged(new, old.as_ref())?;
                let live = spec.live(&texts(&new)?)?;
                match old {
                    // A key update: the old key is deleted.
                    Some(old) if old.len() == new.len() => {
                        let old = texts(&old)?;
                        if spec.key(&old)? != live.key {
                            vec![spec.tombstone(&old)?, live]
                        } else {
                            vec![live]
                        }
                    }
                    _ => vec![live],
                }
            }
            Message::Delete { oid, old } if oid == spec.oid => {
                if old.len() != spec.columns.len() {
                    return Err(PgError::ReplicaIdentity {
                        table: spec.qualified(),
                        found: "not full (a delete carried only the key)".into(),
                    });
                }
                vec![spec.tombstone(&texts(&old)?)?]
            }
            _ => Vec::new(),
        })
    }

    /// Moves the slot's confirmed position to `lsn` (never back), then
    /// publishes how much WAL it still retains.
    async fn advance_slot(&self, lsn: u64) -> Result<(), PgError> {
        if lsn > 0 {
            self.db
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2) \
                     FROM pg_replication_slots WHERE slot_name = $1 \
                     AND confirmed_flush_lsn < $2",
                    &[&self.config.slot, &PgLsn::from(lsn)],
                )
                .await
                .map_err(PgError::sql("advancing the slot"))?;
        }
        let lag: Option<i64> = self
            .db
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await
            .map_err(PgError::sql("reading the slot's lag"))?
            .and_then(|r| r.get(0));
        self.metrics.lag_bytes.set(lag.unwrap_or(0));
        Ok(())
    }
}

/// Waits until every transaction committed before the call is
/// acknowledged (a whole idle round started after it), for at most
/// `limit`; false if it did not happen in time or the adapter stopped.
pub async fn wait_caught_up(progress: &mut watch::Receiver<Progress>, limit: Duration) -> bool {
    let seen = progress.borrow().idle_rounds;
    matches!(
        tokio::time::timeout(limit, progress.wait_for(|p| p.idle_rounds >= seen + 2)).await,
        Ok(Ok(_))
    )
}

/// What a round knows of the transaction it is reading.
#[derive(Default)]
struct TxnState {
    /// The current transaction was acknowledged before (a resumed round).
    skip: bool,
    /// The current transaction's commit time.
    commit_time_us: i64,
    /// The end LSN of the last complete transaction read.
    last_end: Option<u64>,
    /// The commit time of the round's first transaction sent.
    oldest_commit_us: Option<i64>,
    /// Changes sent.
    changes: u64,
}

/// A tuple's columns as text; an unchanged TOAST value here is a bug of
/// [`fill_unchanged`]'s caller.
fn texts(t: &[Datum]) -> Result<Vec<Option<&str>>, PgError> {
    t.iter()
        .map(|d| match d {
            Datum::Null => Ok(None),
            Datum::Text(s) => Ok(Some(s.as_str())),
            Datum::Unchanged => Err(PgError::Row(
                "an unchanged TOAST value without the old row to take it from".into(),
            )),
        })
        .collect()
}

/// An update's new tuple with each unchanged TOAST value taken from the old
/// row (which `REPLICA IDENTITY FULL` carries whole).
fn fill_unchanged(mut new: Vec<Datum>, old: Option<&Vec<Datum>>) -> Result<Vec<Datum>, PgError> {
    for (i, d) in new.iter_mut().enumerate() {
        if *d == Datum::Unchanged {
            *d = old
                .and_then(|o| o.get(i))
                .filter(|o| **o != Datum::Unchanged)
                .cloned()
                .ok_or_else(|| {
                    PgError::Row(format!(
                        "column {i} is an unchanged TOAST value and the old row is missing"
                    ))
                })?;
        }
    }
    Ok(new)
}

fn entry_pb(e: RowEntry) -> pb::IngestEntry {
    pb::IngestEntry {
        key: e.key,
        version: Some(pb::Version {
            ms: e.version.ms,
            logical: e.version.logical,
            origin: e.version.origin.as_str().to_string(),
            seq: e.version.seq,
        }),
        tombstone: e.digest.is_none(),
        value_digest: e.digest.map(|d| d.to_vec()).unwrap_or_default(),
    }
}

fn position(tag: u8, n: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(9);
    p.push(tag);
    p.extend_from_slice(&n.to_be_bytes());
    p
}

/// The stream LSN of a stored position; `None` for none or a snapshot's.
pub fn decode_position(p: Option<&[u8]>) -> Result<Option<u64>, PgError> {
    let Some(p) = p else { return Ok(None) };
    let bad = || PgError::Position(p.iter().map(|b| format!("{b:02x}")).collect());
    let (&tag, rest) = p.split_first().ok_or_else(bad)?;
    let n = u64::from_be_bytes(rest.try_into().map_err(|_| bad())?);
    match tag {
        SNAPSHOT => Ok(None),
        STREAM => Ok(Some(n)),
        _ => Err(bad()),
    }
}

fn seconds_since_pg_time(us: i64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as i64;
    (now - (us + PG_EPOCH_UNIX_US)).max(0) as f64 / 1e6
}

/// One Ingest stream: batches out, acknowledgements back, one at a time.
struct Sink {
    source: String,
    range: String,
    tx: mpsc::Sender<pb::IngestBatch>,
    acks: tonic::Streaming<pb::IngestAck>,
}

impl Sink {
    async fn open(
        ingest: &mut IngestClient<Channel>,
        config: &AdapterConfig,
    ) -> Result<Sink, PgError> {
        let (tx, rx) = mpsc::channel(1);
        let acks = ingest
            .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Sink {
            source: config.source.clone(),
            range: config.range.clone(),
            tx,
            acks,
        })
    }

    /// Sends a batch and waits for its acknowledgement (the batch is then
    /// durable at the agent).
    async fn send(
        &mut self,
        position_to: Vec<u8>,
        entries: Vec<pb::IngestEntry>,
    ) -> Result<pb::IngestAck, PgError> {
        debug_assert!(entries.len() <= INGEST_BATCH_ENTRIES_MAX);
        let batch = pb::IngestBatch {
            source: self.source.clone(),
            range: self.range.clone(),
            position_to,
            entries,
        };
        if self.tx.send(batch).await.is_err() {
            return Err(self.closed().await);
        }
        match self.acks.message().await? {
            Some(ack) => Ok(ack),
            None => Err(PgError::Ingest(tonic::Status::unavailable(
                "the agent closed the ingest stream",
            ))),
        }
    }

    /// The status the stream ended with.
    async fn closed(&mut self) -> PgError {
        match self.acks.message().await {
            Err(s) => PgError::Ingest(s),
            Ok(_) => PgError::Ingest(tonic::Status::unavailable(
                "the agent closed the ingest stream",
            )),
        }
    }
}

/// Limits of one adapter (the `[postgres]` table of `mend attach`).
impl PgLimits {
    /// Checks the limits against the Ingest service's.
    pub fn validate(&self) -> Result<(), PgError> {
        if self.batch_rows == 0 || self.batch_rows > INGEST_BATCH_ENTRIES_MAX {
            return Err(PgError::Config(format!(
                "batch_rows = {} is outside 1..={INGEST_BATCH_ENTRIES_MAX}",
                self.batch_rows
            )));
        }
        Ok(())
    }
}
