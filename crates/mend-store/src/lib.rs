//! mend-store: the versioned store with an incremental Merkle tree per range.
//!
//! [`Store`] holds all the logic (the apply rule, tree maintenance, listing,
//! rebuild, verify, purge) over a small [`Backend`] trait of ordered
//! key-value column families with atomic batches. Two backends implement it:
//! [`MemBackend`] here (tests, simulation) and RocksDB in `mend-rocks`; the
//! conformance suite (module `conformance`, behind the `conformance`
//! feature so it is not shipped) runs against both.
//!
//! Invariant: a data row, its tree leaf and its index rows change together in
//! one atomic backend batch; the in-memory tree is updated under the same lock
//! that covers the commit, so readers never see a tree describing data that
//! is not there. An ingest batch's entries and its source's position commit
//! in one backend batch too, so the position never describes entries the
//! store does not hold, nor misses ones it does.

pub mod backend;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod keys;
pub mod mem;
pub mod store;
pub mod tree;
pub mod view;

pub use backend::{Backend, Cf, Op};
pub use error::StoreError;
pub use mem::MemBackend;
pub use store::{
    Applied, CATCH_UP_LOCKED_MAX, DEEPEN_ENTRIES_PER_BUCKET_DEFAULT, Deepened, IngestBatch,
    IngestEntry, Ingested, LEAF_LIST_PARALLEL_BUCKETS_MIN, LeafEntry, LeafSnapshot, Purged,
    RangeStats, RangeVerify, Stats, Store, StoreConfig, VerifyReport, Write,
};
pub use tree::RangeTree;
pub use view::RangeView;
