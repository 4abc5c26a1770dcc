//! Rows read and written for an agent's repairs of the table's digest-only
//! range (`mend_agent::rows`): the ahead replica's row as a record whose
//! value is the row's canonical bytes ([`TableSpec::encode`], the bytes its
//! value digest hashes), written into the behind replica with the version
//! check in the statement; the before-image read under the row's lock in
//! the same transaction and handed to the agent's journal before the
//! commit; undo's conditional restore.
//!
//! Transactions are `REPEATABLE READ`: a row changed by another
//! transaction while a repair or an undo holds it fails with a
//! serialization error, reported as "kept" / "changed", never written over.
//!
//! Limits: one connection, one row at a time; a row whose canonical bytes
//! exceed `mend_core::limits::VALUE_BYTES_MAX` is refused by the agent.

use std::future::Future;

use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, IsolationLevel, NoTls, Transaction};

use mend_core::digest::value_hash;
use mend_core::{EntryMeta, Record, Version};

use crate::catalog::SESSION_SETTINGS;
use crate::error::PgError;
use crate::repair::{self, Outcome, TextRow};
use crate::table::TableSpec;

/// What an undo of one row found (`mend_agent::rows::Restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// The table held the repair's row; it holds the before-image now.
    Restored,
    /// The table already held the before-image.
    AlreadyRestored,
    /// The row changed since the repair.
    Changed,
}

/// Repair access to one table.
pub struct PgRows {
    db: Mutex<Client>,
    spec: TableSpec,
}

impl PgRows {
    /// Connects for repairs of the table `spec` describes (the adapter's
    /// spec, so rows encode as its feed reports them).
    pub async fn connect(conninfo: &str, spec: TableSpec) -> Result<PgRows, PgError> {
        let (db, conn) = tokio_postgres::connect(conninfo, NoTls)
            .await
            .map_err(PgError::sql("connecting for repairs"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "postgres repair connection ended");
            }
        });
        db.batch_execute(SESSION_SETTINGS)
            .await
            .map_err(PgError::sql("setting the session's output formats"))?;
        Ok(PgRows {
            db: Mutex::new(db),
            spec,
        })
    }

    /// The table.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// A row as a record: the meta its feed reports, the canonical bytes
    /// as the value.
    pub fn record(&self, row: &TextRow) -> Result<Record, PgError> {
        let cols: Vec<Option<&str>> = row.iter().map(|c| c.as_deref()).collect();
        let payload = self.spec.encode(&cols)?;
        Ok(Record {
            meta: EntryMeta {
                version: self.spec.version(&cols)?,
                tombstone: false,
                value_hash: value_hash(&payload),
            },
            value: payload,
        })
    }

    /// The rows of `keys`, in order (`None` where the table has none).
    pub async fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, PgError> {
        let db = self.db.lock().await;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(match repair::read_row(&*db, &self.spec, k).await? {
                Some(row) => Some(self.record(&row)?),
                None => None,
            });
        }
        Ok(out)
    }

    /// Writes the ahead replica's row (`payload`, its canonical bytes, at
    /// `version`) or, with `payload = None`, its delete at tombstone
    /// `version`, unless this table holds a row at least as new. `journal`
    /// gets the before-image and the entry the feed will report, after the
    /// write and before the commit; its error rolls the write back. True
    /// when written.
    pub async fn apply<J, F>(
        &self,
        key: &[u8],
        version: &Version,
        payload: Option<&[u8]>,
        journal: J,
    ) -> Result<bool, PgError>
    where
        J: FnOnce(Option<Record>, EntryMeta) -> F,
        F: Future<Output = Result<(), String>>,
    {
        let row = match payload {
            Some(p) => {
                let row = self.spec.decode(p)?;
                let rec = self.record(&row)?;
                if rec.meta.version != *version {
                    return Err(PgError::Row(format!(
                        "a repair row whose version column says {} where its entry says {version}",
                        rec.meta.version
                    )));
                }
                let cols: Vec<Option<&str>> = row.iter().map(|c| c.as_deref()).collect();
                if self.spec.key(&cols)? != key {
                    return Err(PgError::Row(
                        "a repair row whose primary key is not its entry's key".into(),
                    ));
                }
                Some((row, rec.meta))
            }
            None => None,
        };
        let mut db = self.db.lock().await;
        let tx = begin(&mut db).await?;
        let held = match repair::read_row_for_update(&tx, &self.spec, key).await {
            Err(e) if serialization(&e) => return Ok(false),
            r => r?,
        };
        let before = held.as_ref().map(|r| self.record(r)).transpose()?;
        let (outcome, after) = match &row {
            Some((row, meta)) => (
                repair::upsert_if_newer(&tx, &self.spec, row).await,
                meta.clone(),
            ),
            None => {
                let Some(held) = &held else {
                    return Ok(false);
                };
                let cols: Vec<Option<&str>> = held.iter().map(|c| c.as_deref()).collect();
                let t = self.spec.tombstone(&cols)?;
                let deleted = self.spec.deleted_version_text(version)?;
                (
                    repair::delete_if_not_newer(&tx, &self.spec, key, &deleted).await,
                    EntryMeta {
                        version: t.version,
                        tombstone: true,
                        value_hash: value_hash(b""),
                    },
                )
            }
        };
        match outcome {
            Err(e) if serialization(&e) => return Ok(false),
            Err(e) => return Err(e),
            Ok(Outcome::Kept) => return Ok(false),
            Ok(Outcome::Applied) => {}
        }
        journal(before, after).await.map_err(PgError::Row)?;
        match tx.commit().await {
            Err(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => Ok(false),
            r => r
                .map(|()| true)
                .map_err(PgError::sql("committing a repair")),
        }
    }

    /// Puts `before` back (or deletes the row when `None`) if the table
    /// still holds the row whose feed entry is `after`.
    pub async fn restore(
        &self,
        key: &[u8],
        after: &EntryMeta,
        before: Option<&Record>,
    ) -> Result<Restored, PgError> {
        let mut db = self.db.lock().await;
        let tx = begin(&mut db).await?;
        let now = match repair::read_row_for_update(&tx, &self.spec, key).await {
            Err(e) if serialization(&e) => return Ok(Restored::Changed),
            r => r?,
        };
        let now = now.map(|r| self.record(&r)).transpose()?.map(|r| r.meta);
        let is_after = if after.tombstone {
            now.is_none()
        } else {
            now.as_ref() == Some(after)
        };
        if !is_after {
            return Ok(if now == before.map(|b| b.meta.clone()) {
                Restored::AlreadyRestored
            } else {
                Restored::Changed
            });
        }
        let done = match before {
            Some(b) => {
                let row = self.spec.decode(&b.value)?;
                repair::overwrite(&tx, &self.spec, &row).await
            }
            None => repair::delete_row(&tx, &self.spec, key).await,
        };
        match done {
            Err(e) if serialization(&e) => return Ok(Restored::Changed),
            r => r?,
        };
        match tx.commit().await {
            Err(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => {
                Ok(Restored::Changed)
            }
            r => r
                .map(|()| Restored::Restored)
                .map_err(PgError::sql("committing an undo")),
        }
    }
}

async fn begin(db: &mut Client) -> Result<Transaction<'_>, PgError> {
    db.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(PgError::sql("starting a repair transaction"))
}

/// A write lost to a concurrent transaction on the same row.
fn serialization(e: &PgError) -> bool {
    matches!(e, PgError::Sql { source, .. } if source.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
}
