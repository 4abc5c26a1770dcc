//! Shadow runs: a repair applied to RocksDB checkpoints instead of the live
//! stores. A checkpoint (hard-linked SST files, so cheap) is taken beside the
//! data directory, opened as a store of its own, written, read back, and
//! removed; the live store never sees the writes.

use std::path::PathBuf;

use mend_core::exchange::EntrySummary;
use mend_rocks::RocksBackend;
use mend_store::{Store, StoreConfig, StoreError, Write};

use crate::state::{AgentBackend, AgentState};

/// A key and its entry after a shadow write (`None`: absent).
pub type KeyEntry = (Vec<u8>, Option<EntrySummary>);

/// Removes a directory when dropped (the checkpoint, whatever happens).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove shadow checkpoint");
        }
    }
}

/// Applies `writes` to a checkpoint of the agent's store and returns the
/// resulting entry of each written key (`None` if absent). Blocking.
pub fn apply_to_checkpoint(
    state: &AgentState,
    tag: &str,
    writes: Vec<Write>,
) -> Result<Vec<KeyEntry>, StoreError> {
    let data_dir = &state.config.data_dir;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mend".into());
    let dir = data_dir.with_file_name(format!("{name}.shadow-{tag}-{nanos}"));
    state.store.backend().checkpoint(&dir)?;
    let _cleanup = Cleanup(dir.clone());
    let backend = RocksBackend::open_existing(&dir)?;
    apply_to_copy(state, backend, writes)
}

/// Opens `backend` (a copy of the agent's store) as a store of its own,
/// applies `writes` and returns the resulting entry of each written key.
/// Blocking.
pub fn apply_to_copy<B: AgentBackend>(
    state: &AgentState<B>,
    backend: B,
    writes: Vec<Write>,
) -> Result<Vec<KeyEntry>, StoreError> {
    let mut cfg = StoreConfig::new(
        state.node_id.clone(),
        state.secret.clone(),
        Some(state.config.ranges.clone()),
    );
    cfg.clock = state.store.config().clock.clone();
    let shadow = Store::open(backend, cfg)?;
    let keys: Vec<Vec<u8>> = writes.iter().map(|w| w.key.clone()).collect();
    shadow.write(writes)?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let e = shadow.summary(&k)?;
        out.push((k, e));
    }
    drop(shadow);
    Ok(out)
}
