//! An exchange's leaf listing does not hold writers back (issue 14: lock
//! hold times). A listing is one backend scan, which already reads one
//! state (an iterator's snapshot); it once also held the trees' read lock
//! for the whole scan, so a write waited for every listing in progress (a
//! leaf step of 10 000 buckets scans for tens of milliseconds).
//!
//! The backend here pauses a listing's scan until a write has completed:
//! a listing that held the lock would keep that write waiting, and the
//! scan gives up after `WAIT` with an error (no hang, no sleep).

#![allow(clippy::unwrap_used)]

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mend_core::{NodeId, RangeSpec, Secret, TreeShape};
use mend_store::backend::{Call, Wrapper};
use mend_store::{Cf, MemBackend, Store, StoreConfig, StoreError, Write};

/// How long a paused scan waits for the write before failing the test.
const WAIT: Duration = Duration::from_secs(10);

/// Pauses the next data scan: tells `started`, then waits for `resume`.
struct PausingScan {
    inner: MemBackend,
    armed: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

impl Wrapper for PausingScan {
    type Inner = MemBackend;
    fn inner(&self) -> &MemBackend {
        &self.inner
    }
    fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        let (Call::Scan(Cf::Data) | Call::ScanSpans(Cf::Data)) = call else {
            return Ok(());
        };
        let Some((started, resume)) = self.armed.lock().unwrap().take() else {
            return Ok(());
        };
        started.send(()).unwrap();
        resume.recv_timeout(WAIT).map_err(|_| StoreError::Backend {
            message: "the write did not complete while the listing was paused".into(),
            retryable: false,
        })
    }
}

fn paused_listing_lets_a_write_through(
    list: impl FnOnce(&Store<PausingScan>) -> Result<usize, StoreError> + Send + 'static,
) {
    let backend = PausingScan {
        inner: MemBackend::new(),
        armed: Mutex::new(None),
    };
    let cfg = StoreConfig::new(
        NodeId::new("n1").unwrap(),
        Secret::from_bytes(b"listing test"),
        Some(vec![RangeSpec::whole("all", TreeShape::new(4, 3).unwrap())]),
    );
    let store = Arc::new(Store::open(backend, cfg).unwrap());
    store
        .write((0..40).map(|i| Write::put(format!("k{i}"), "v")).collect())
        .unwrap();
    let (started_tx, started) = channel();
    let (resume, resume_rx) = channel();
    *store.backend().armed.lock().unwrap() = Some((started_tx, resume_rx));
    let lister = {
        let store = store.clone();
        std::thread::spawn(move || list(&store))
    };
    started.recv_timeout(WAIT).unwrap();
    // The listing is inside its scan now; this write must not wait for it.
    store.write(vec![Write::put("a", "new")]).unwrap();
    let _ = resume.send(());
    let listed = lister.join().unwrap();
    assert!(listed.is_ok(), "{listed:?}");
    assert!(listed.unwrap() > 0);
}

#[test]
fn a_write_completes_while_a_listing_of_chosen_buckets_scans() {
    paused_listing_lets_a_write_through(|s| {
        let all: Vec<u32> = (0..s.shape(0)?.buckets() as u32).step_by(2).collect();
        Ok(s.leaf_entries_of(0, &all)?.len())
    });
}

#[test]
fn a_write_completes_while_a_listing_of_a_span_scans() {
    paused_listing_lets_a_write_through(|s| Ok(s.leaf_entries_span(0, 0, 8)?.len()));
}
