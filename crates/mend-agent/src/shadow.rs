//! Shadow runs: a repair applied to RocksDB checkpoints instead of the live
//! stores. A checkpoint (hard-linked SST files, so cheap) is taken beside the
//! data directory, opened as a store of its own, written, read back, and
//! removed; the live store never sees the writes.

use std::path::{Path, PathBuf};

use mend_core::exchange::EntrySummary;
use mend_rocks::RocksBackend;
use mend_store::{Backend, Store, StoreConfig, StoreError, Write};

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

/// Applies `writes` to a checkpoint of `store` (whose data directory is
/// `data_dir`) and returns the resulting entry of each written key (`None`
/// if absent). Blocking.
pub fn apply_to_checkpoint(
    store: &Store<RocksBackend>,
    data_dir: &Path,
    tag: &str,
    writes: Vec<Write>,
) -> Result<Vec<KeyEntry>, StoreError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mend".into());
    let dir = data_dir.with_file_name(format!("{name}.shadow-{tag}-{nanos}"));
    store.backend().checkpoint(&dir)?;
    let _cleanup = Cleanup(dir.clone());
    let backend = RocksBackend::open_existing(&dir)?;
    apply_to_copy(store, backend, writes)
}

/// Opens `backend` (a copy of `store`) as a store of its own, with `store`'s
/// node id, secret, ranges and clock, applies `writes` and returns the
/// resulting entry of each written key. Blocking.
pub fn apply_to_copy<B: Backend>(
    store: &Store<B>,
    backend: B,
    writes: Vec<Write>,
) -> Result<Vec<KeyEntry>, StoreError> {
    let live = store.config();
    let mut cfg = StoreConfig::new(
        live.node_id.clone(),
        live.secret.clone(),
        live.ranges.clone(),
    );
    cfg.clock = live.clock.clone();
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
