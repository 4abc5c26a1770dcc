//! Errors keep their kind from the store to the initiator: a peer whose
//! store is busy (a retryable engine error while it lists a bucket's
//! entries) fails the diff as "retry later" (`AgentError::Unavailable`, on
//! the wire `UNAVAILABLE`), not as an internal error.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mend_agent::AgentError;
use mend_agent::backend::AgentBackend;
use mend_agent::link::mem::{Counting, pair};
use mend_agent::shadow::KeyEntry;
use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::backend::{Call, Wrapper};
use mend_store::{Cf, MemBackend, Store, StoreConfig, StoreError, Write};

/// An in-memory backend whose entry scans fail with a retryable error
/// (RocksDB's "busy, try again") while `busy` is set.
struct Busy {
    inner: MemBackend,
    busy: Arc<AtomicBool>,
}

impl Wrapper for Busy {
    type Inner = MemBackend;
    fn inner(&self) -> &MemBackend {
        &self.inner
    }
    fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        let scans_data = matches!(call, Call::Scan(Cf::Data) | Call::ScanSpans(Cf::Data));
        if scans_data && self.busy.load(Ordering::Relaxed) {
            return Err(StoreError::Backend {
                message: "busy: try again".into(),
                retryable: true,
            });
        }
        Ok(())
    }
}

impl AgentBackend for Busy {
    fn shadow_apply(
        _store: &Store<Self>,
        _data_dir: &Path,
        _tag: &str,
        _writes: Vec<Write>,
    ) -> Result<Vec<KeyEntry>, StoreError> {
        Err(StoreError::Corrupt("no shadow runs in this test".into()))
    }
}

fn store(node: &str, busy: Arc<AtomicBool>) -> Arc<Store<Busy>> {
    let cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"errors test"),
        Some(vec![RangeSpec::whole(
            "all",
            TreeShape::new(16, 2).unwrap(),
        )]),
    );
    let backend = Busy {
        inner: MemBackend::new(),
        busy,
    };
    Arc::new(Store::open(backend, cfg).unwrap())
}

fn v(ms: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new("origin").unwrap(),
        seq: ms,
    }
}

#[test]
fn a_busy_peer_store_fails_the_diff_as_retry_later_not_internal() {
    let (here_busy, peer_busy) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let a = store("a", here_busy);
    let b = store("b", peer_busy.clone());
    a.write(vec![Write::put("k1", "one").at(v(1_000))]).unwrap();
    b.write(vec![Write::put("k2", "two").at(v(2_000))]).unwrap();
    let agent = pair(a, b, Arc::new(Counting::default()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Healthy, the diff finds both keys (so the leaf step, where the busy
    // scan happens below, is reached).
    let out = rt
        .block_on(mend_agent::exchange::diff(&agent, "b", None))
        .unwrap();
    assert_eq!(out.keys.len(), 2);
    peer_busy.store(true, Ordering::Relaxed);
    let e = rt
        .block_on(mend_agent::exchange::diff(&agent, "b", None))
        .unwrap_err();
    assert!(matches!(e, AgentError::Unavailable(_)), "{e:?}");
    assert!(e.retryable());
    assert!(e.message().contains("busy"), "{e}");
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::Unavailable,
        "on the wire too"
    );
}
