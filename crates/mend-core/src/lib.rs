//! mend-core: the sans-I/O heart of mend.
//!
//! Everything here is plain synchronous code with no tokio, tonic or RocksDB:
//! the data model (keys, versions, hybrid logical clocks), keyed digests, tree
//! shape arithmetic and leaf aggregates, the stored-record format, the one
//! apply rule every write path uses, divergence classification, and the
//! key-range map. The store, the gRPC layer and the agent build on these; the
//! fuzz targets and the simulator exercise them directly.

pub mod agg;
pub mod apply;
pub mod attribution;
pub mod classify;
pub mod digest;
pub mod error;
pub mod exchange;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hlc;
pub mod ingest;
pub mod limits;
pub mod packed;
pub mod plan;
pub mod playbook;
pub mod range;
pub mod record;
pub mod report;
pub mod rng;
pub mod shape;
pub mod version;

pub use agg::{Agg, AggUnderflow};
pub use apply::{Decision, decide};
pub use classify::{Category, Classified, Policy, Side, classify};
pub use digest::{Digest, Secret};
pub use error::CoreError;
pub use hlc::Hlc;
pub use range::{RangeMap, RangeMode, RangeSpec};
pub use record::{EntryMeta, Record};
pub use shape::TreeShape;
pub use version::{NodeId, Version};
