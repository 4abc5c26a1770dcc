//! The backends an agent runs on: RocksDB in production, the in-memory
//! backend in tests and the simulator.

use std::path::Path;

use mend_rocks::RocksBackend;
use mend_store::{Backend, MemBackend, Store, StoreError, Write};

use crate::shadow::KeyEntry;

/// A backend an agent can run on: a store backend that can also take a
/// throwaway copy of itself for shadow runs.
pub trait AgentBackend: Backend + Sized {
    /// Applies `writes` to a copy of `store` (data directory `data_dir`) that the live store
    /// never sees, and returns each written key's entry afterwards.
    /// Blocking.
    fn shadow_apply(
        store: &Store<Self>,
        data_dir: &Path,
        tag: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<KeyEntry>, StoreError>;
}

impl AgentBackend for RocksBackend {
    fn shadow_apply(
        store: &Store<Self>,
        data_dir: &Path,
        tag: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<KeyEntry>, StoreError> {
        crate::shadow::apply_to_checkpoint(store, data_dir, tag, writes)
    }
}

impl AgentBackend for MemBackend {
    fn shadow_apply(
        store: &Store<Self>,
        _data_dir: &Path,
        _tag: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<KeyEntry>, StoreError> {
        let copy = store.backend().snapshot_copy()?;
        crate::shadow::apply_to_copy(store, copy, writes)
    }
}
