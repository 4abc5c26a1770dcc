//! The domain types of a change feed's batch (see the `Ingest` service and
//! `mend_store`'s ingest path) and the checks of their named limits, shared
//! by the gRPC edge and the store.

use crate::digest::Digest;
use crate::error::CoreError;
use crate::limits::{INGEST_BATCH_ENTRIES_MAX, POSITION_BYTES_MAX, SOURCE_NAME_BYTES_MAX};
use crate::version::Version;

/// One entry of a change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestEntry {
    /// The key (1..=`KEY_BYTES_MAX` bytes, inside the batch's range).
    pub key: Vec<u8>,
    /// The version the source gave the change (its timestamp and origin).
    pub version: Version,
    /// The value's 32-byte hash, or `None` for a delete. For a digest-only
    /// range to compare equal with a value-holding replica, the hash is
    /// [`crate::digest::value_hash`] (BLAKE3) of the value.
    pub value_hash: Option<Digest>,
}

/// One batch of a change feed, committed atomically with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestBatch {
    /// The range's id; its mode must be `digests`.
    pub range: u16,
    /// The feed's name (1..=[`SOURCE_NAME_BYTES_MAX`] bytes).
    pub source: String,
    /// The position the feed reaches with this batch
    /// (1..=[`POSITION_BYTES_MAX`] bytes, byte order = feed order).
    pub position_to: Vec<u8>,
    /// The entries (at most [`INGEST_BATCH_ENTRIES_MAX`]).
    pub entries: Vec<IngestEntry>,
}

/// Checks a source name against [`SOURCE_NAME_BYTES_MAX`].
pub fn check_source(source: &str) -> Result<(), CoreError> {
    if source.is_empty() || source.len() > SOURCE_NAME_BYTES_MAX {
        return Err(CoreError::Ingest(format!(
            "source name of {} bytes is outside 1..={SOURCE_NAME_BYTES_MAX}",
            source.len()
        )));
    }
    Ok(())
}

/// Checks a position against [`POSITION_BYTES_MAX`].
pub fn check_position(position: &[u8]) -> Result<(), CoreError> {
    if position.is_empty() || position.len() > POSITION_BYTES_MAX {
        return Err(CoreError::Ingest(format!(
            "position of {} bytes is outside 1..={POSITION_BYTES_MAX}",
            position.len()
        )));
    }
    Ok(())
}

/// Checks an entry count against [`INGEST_BATCH_ENTRIES_MAX`] (before the
/// entries are converted, so an oversized batch allocates nothing more).
pub fn check_entries(n: usize) -> Result<(), CoreError> {
    if n > INGEST_BATCH_ENTRIES_MAX {
        return Err(CoreError::Ingest(format!(
            "{n} entries exceed INGEST_BATCH_ENTRIES_MAX = {INGEST_BATCH_ENTRIES_MAX}"
        )));
    }
    Ok(())
}
