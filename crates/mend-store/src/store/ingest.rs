//! Ingest: entries of a change feed written into a digest-only range,
//! with the feed's position committed in the same backend batch.
//!
//! An adapter (for a PostgreSQL WAL, a Kafka topic, ...) reads its source's
//! change feed and sends batches: the range, the source's name, the position
//! the batch reaches (`position_to`, opaque bytes) and the entries, each a
//! key, a version, and the value's 32-byte hash or a tombstone. Every entry
//! goes through the one apply rule (a redelivered entry is `Duplicate`, a
//! no-op); the position row (`keys::ingest_position_key`) goes into the
//! same batch, so after any crash the stored position describes exactly
//! the entries the store holds: an adapter that resumes from it loses
//! nothing and doubles nothing.
//!
//! A versionless range (`RangeSpec::versionless`: a store without
//! versions, every entry at the same version) applies its feed in feed
//! order instead: an entry replaces what the key holds, and a redelivered
//! batch changes nothing (its position is not past the stored one).
//!
//! Positions are compared as bytes: an adapter encodes them so that byte
//! order is feed order (a u64 LSN or offset big-endian, fixed width). A
//! batch whose `position_to` is not past the stored one is a redelivery: its
//! entries still go through the apply rule (a no-op for entries already
//! held) and the position does not move back.

use mend_core::ingest::{check_entries, check_position, check_source};
use mend_core::{CoreError, RangeMode};

pub use mend_core::ingest::{IngestBatch, IngestEntry};

use super::{Applied, Commit, Content, Incoming, PositionUpdate, Store};
use crate::backend::{Backend, Cf};
use crate::error::StoreError;
use crate::keys;

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Each entry's outcome, in order.
    pub applied: Vec<Applied>,
    /// The source's durable position after the batch.
    pub position: Vec<u8>,
    /// False when the batch was a redelivery (its position not past the
    /// stored one).
    pub advanced: bool,
}

fn invalid(why: String) -> StoreError {
    StoreError::Input(CoreError::Ingest(why))
}

impl<B: Backend> Store<B> {
    /// Writes a batch of a change feed into a digest-only range and moves
    /// the source's position in the same atomic (and synced) backend batch.
    /// Every entry is validated first (limits, the range's mode, each key
    /// inside the batch's range): one bad entry refuses the batch and
    /// nothing is written.
    pub fn ingest(&self, batch: IngestBatch) -> Result<Ingested, StoreError> {
        check_source(&batch.source)?;
        check_position(&batch.position_to)?;
        check_entries(batch.entries.len())?;
        let spec = self
            .ranges()
            .get(batch.range)
            .ok_or_else(|| invalid(format!("no range with id {}", batch.range)))?;
        self.check_mode(batch.range, RangeMode::Digests)?;
        for e in &batch.entries {
            if !spec.contains(&e.key) {
                return Err(invalid(format!(
                    "key {} is outside range {:?}",
                    mend_core::record::hex(&e.key),
                    spec.name
                )));
            }
        }
        let incoming = batch
            .entries
            .into_iter()
            .map(|e| Incoming {
                key: e.key,
                content: match e.value_hash {
                    Some(h) => Content::Digest(h),
                    None => Content::Tombstone,
                },
                version: Some(e.version),
            })
            .collect();
        let commit = Commit {
            mode: RangeMode::Digests,
            capture: false,
            extra: None,
            position: Some(PositionUpdate {
                row: keys::ingest_position_key(batch.range, &batch.source),
                to: &batch.position_to,
            }),
            // The reply acknowledges a durable position: the batch is on
            // stable storage before it is acknowledged, whatever
            // `sync_writes` says for other writes.
            sync: true,
            feed_order: spec.versionless,
        };
        let (applied, position) = self.commit(incoming, commit)?;
        let (position, advanced) = position
            .ok_or_else(|| StoreError::Corrupt("ingest commit returned no position".into()))?;
        Ok(Ingested {
            applied,
            position,
            advanced,
        })
    }

    /// The durable position of `source` in range `range`: where its
    /// adapter resumes. `None` before its first batch.
    pub fn ingest_position(&self, range: u16, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_source(source)?;
        if self.ranges().get(range).is_none() {
            return Err(invalid(format!("no range with id {range}")));
        }
        self.check_mode(range, RangeMode::Digests)?;
        self.backend()
            .get(Cf::Meta, &keys::ingest_position_key(range, source))
    }
}
