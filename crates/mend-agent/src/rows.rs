//! Rows of a store mend does not own: how a repair of a digest-only range
//! moves data. The range's tree holds only (key, version, value digest),
//! fed by the store's change feed (`service::ingest`); the values live in
//! the store (a PostgreSQL table, ...). A repair therefore reads the newer
//! row through the ahead side's [`RowAdapter`] and writes it through the
//! behind side's, whose store checks the version itself, so a newer row
//! written meanwhile is never clobbered.
//!
//! Invariants:
//! * the tree of a digest-only range changes only through its feed, never
//!   by a repair write (so the tree never claims what the store does not
//!   hold), with one exception: undo puts an older version back, which the
//!   feed's apply rule would refuse, so undo restores the tree entry it
//!   checked is the repair's own ([`undo`]);
//! * a row's payload is the adapter's encoding of the row, and
//!   `value_hash(payload)` is the digest its feed reports: a record read
//!   through an adapter has the same entry digest as the tree's entry;
//! * the before-image of every applied row is in the journal before the
//!   store commits the write (the adapter calls [`JournalFn`] under the
//!   row's lock), so an undo always has it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use mend_core::{EntryMeta, Record, Version};

use crate::error::AgentError;

/// A boxed future of an adapter call.
pub type RowFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RowError>> + Send + 'a>>;

/// Why an adapter call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The store cannot be reached or is busy: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// This key or change cannot be applied (not a key of the table, a
    /// payload that does not decode, a row over a limit): retrying will not
    /// help.
    #[error("{0}")]
    Rejected(String),
}

impl RowError {
    /// The agent error of a failed call to `range`'s adapter: an
    /// unavailable store is retryable, a rejected change is not.
    pub fn in_range(&self, range: &str) -> AgentError {
        match self {
            RowError::Unavailable(m) => {
                AgentError::unavailable(format!("the adapter of range {range}: {m}"))
            }
            RowError::Rejected(m) => {
                AgentError::precondition(format!("the adapter of range {range}: {m}"))
            }
        }
    }
}

/// A change a repair writes into the store behind an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    /// The ahead side's row: written unless the store holds a version at
    /// least as new. `version` is the row's own version (the adapter
    /// checks that the payload carries it).
    Put {
        /// The row's version.
        version: Version,
        /// The row, in the adapter's encoding.
        payload: Vec<u8>,
    },
    /// The ahead side deleted the row at tombstone `version`: the held row
    /// is deleted unless it is newer than the deleted one.
    Delete {
        /// The tombstone's version.
        version: Version,
    },
}

/// What an undo of one row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// The store held the repair's row; it holds the before-image now.
    Restored,
    /// The store already held the before-image (an earlier undo that did
    /// not finish).
    AlreadyRestored,
    /// The row changed since the repair: left alone.
    Changed,
}

/// The journal write an adapter makes before it commits an applied change,
/// under the row's lock: (before-image, entry the feed will report after
/// the change). An error aborts the change.
pub type JournalFn<'a> =
    &'a (dyn Fn(Option<Record>, EntryMeta) -> RowFuture<'static, ()> + Send + Sync);

/// The repair interface of a store behind a digest-only range.
pub trait RowAdapter: Send + Sync {
    /// The current rows of `keys`, in order: records whose value is the
    /// row's payload and whose meta is what the feed reports for the row
    /// (`None` where the store holds no row).
    fn read<'a>(&'a self, keys: &'a [Vec<u8>]) -> RowFuture<'a, Vec<Option<Record>>>;

    /// Applies `change` to `key` if the store's own version check lets it
    /// (true), calling `journal` with the before-image first; false when
    /// the store kept a row at least as new.
    fn apply<'a>(
        &'a self,
        key: &'a [u8],
        change: &'a RowChange,
        journal: JournalFn<'a>,
    ) -> RowFuture<'a, bool>;

    /// Puts `before` back (or removes the row when `None`) if the store
    /// still holds the row a repair wrote, whose feed entry is `after`.
    fn restore<'a>(
        &'a self,
        key: &'a [u8],
        after: &'a EntryMeta,
        before: Option<&'a Record>,
    ) -> RowFuture<'a, Restore>;
}

/// The adapters serving repairs of this agent's digest-only ranges, by
/// range name (`mend attach` registers its table's).
#[derive(Default)]
pub struct RowAdapters {
    by_range: RwLock<HashMap<String, Arc<dyn RowAdapter>>>,
}

impl RowAdapters {
    /// Serves repairs of `range` through `adapter`.
    pub fn register(&self, range: &str, adapter: Arc<dyn RowAdapter>) {
        self.by_range
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(range.to_string(), adapter);
    }

    /// The adapter of `range`, if one is registered.
    pub fn get(&self, range: &str) -> Option<Arc<dyn RowAdapter>> {
        self.by_range
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(range)
            .cloned()
    }
}
