//! Trees that deepen (issue 14), as properties and under concurrent
//! writes:
//! * a tree deepened online equals a rebuild at the new depth, and a store
//!   created at that depth from the same writes, whatever was written while
//!   the deepening ran;
//! * two stores with the same data and different depths compare equal at
//!   the depth they share;
//! * a divergent key set is found exactly across depths.
//!
//! The concurrent writes land while the deepening's data scan is paused
//! (the backend holds the scan until the writes have completed), so they
//! are certainly missing from the scan and must come back through the
//! catch-up; a deepening that held writers back would fail the test by
//! timing out the pause (no hang, no sleep).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use mend_core::exchange::{Descent, Step, TreeView, respond_leaves, respond_probe};
use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::backend::{Call, Wrapper};
use mend_store::{Backend, Cf, MemBackend, RangeView, Store, StoreConfig, StoreError, Write};

const WAIT: Duration = Duration::from_secs(10);

fn config(node: &str, depth: u32) -> StoreConfig {
    StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"depth test"),
        Some(vec![RangeSpec::whole(
            "all",
            TreeShape::new(4, depth).unwrap(),
        )]),
    )
}

fn key(i: u16) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn v(ms: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new("o").unwrap(),
        seq: ms,
    }
}

/// Every node of range 0, level by level.
fn nodes<B: Backend>(s: &Store<B>) -> Vec<Vec<mend_core::Agg>> {
    let shape = s.shape(0).unwrap();
    (0..=shape.depth)
        .map(|l| {
            let idx: Vec<u32> = (0..shape.nodes_at(l) as u32).collect();
            s.node_aggs(0, l, &idx).unwrap()
        })
        .collect()
}

/// Pauses the first call `pick` picks once armed: tells `started`, waits
/// for `resume`.
struct Pausing {
    inner: MemBackend,
    pick: fn(&Call<'_>) -> bool,
    armed: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

impl Wrapper for Pausing {
    type Inner = MemBackend;
    fn inner(&self) -> &MemBackend {
        &self.inner
    }
    fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        if !(self.pick)(&call) {
            return Ok(());
        }
        let Some((started, resume)) = self.armed.lock().unwrap().take() else {
            return Ok(());
        };
        started.send(()).unwrap();
        resume.recv_timeout(WAIT).map_err(|_| StoreError::Backend {
            message: "the writes did not complete while the deepening was paused".into(),
            retryable: false,
        })
    }
}

/// Deepens a store of `keys` keys at `depth` while `during` writes land
/// at the pause `pick` picks, and checks the deepened tree against a store
/// created at the new depth with the same writes, and a rebuild.
fn deepen_with_writes_at_a_pause(
    depth: u32,
    keys: u16,
    during: Vec<Write>,
    pick: fn(&Call<'_>) -> bool,
) -> mend_store::Deepened {
    let backend = Pausing {
        inner: MemBackend::new(),
        pick,
        armed: Mutex::new(None),
    };
    let store = Arc::new(Store::open(backend, config("n1", depth)).unwrap());
    let before: Vec<Write> = (0..keys)
        .map(|i| Write::put(key(i), "v").at(v(10)))
        .collect();
    store.write(before.clone()).unwrap();
    let (started_tx, started) = channel();
    let (resume, resume_rx) = channel();
    *store.backend().armed.lock().unwrap() = Some((started_tx, resume_rx));
    let deepening = {
        let store = store.clone();
        std::thread::spawn(move || store.deepen(0))
    };
    started.recv_timeout(WAIT).unwrap();
    // The deepening is paused; these must not wait for it.
    for w in during.chunks(10) {
        store.write(w.to_vec()).unwrap();
    }
    let _ = resume.send(());
    let d = deepening.join().unwrap().unwrap();
    assert_eq!(d.to.depth, depth + 1);

    let fresh = Store::open(MemBackend::new(), config("n2", depth + 1)).unwrap();
    fresh.write(before).unwrap();
    fresh.write(during).unwrap();
    assert_eq!(nodes(&store), nodes(&fresh));
    assert_eq!(
        store.rebuild_leaves(0).unwrap(),
        nodes(&fresh)[depth as usize + 1]
    );
    assert!(store.verify().unwrap().ok());
    d
}

/// Puts, overwrites and deletes of every `step`th key below `keys`, and
/// `new` new keys.
fn churn(keys: u16, step: usize, new: u16) -> Vec<Write> {
    (0..keys)
        .step_by(step)
        .map(|i| match i % 3 {
            0 => Write::delete(key(i)).at(v(20)),
            _ => Write::put(key(i), "newer").at(v(20)),
        })
        .chain((keys..keys + new).map(|i| Write::put(key(i), "new").at(v(20))))
        .collect()
}

/// Writes that land after the deepening has scanned the data (paused at
/// its first batch of new leaf rows) are missing from its leaves for
/// certain: the switch recomputes them under the writer lock.
#[test]
fn writes_after_the_scan_are_caught_up_at_the_switch() {
    let d = deepen_with_writes_at_a_pause(
        3,
        800,
        churn(800, 7, 100),
        |c| matches!(c, Call::Write(ops) if ops.iter().all(|o| o.row().0 == Cf::Leaves)),
    );
    assert!(d.caught_up_locked > 0, "{d:?}");
}

/// Writes that land while the new leaf rows are written (paused at their
/// first batch) and touch more buckets than the switch recomputes under
/// the lock are caught up in rounds after the rows are written, and those
/// rounds write their buckets' rows: `verify` compares the persisted
/// leaves with a rebuild.
#[test]
fn writes_while_the_rows_are_written_are_caught_up_in_rounds_and_persisted() {
    let d = deepen_with_writes_at_a_pause(
        6,
        8000,
        churn(8000, 2, 0),
        |c| matches!(c, Call::Write(ops) if ops.iter().all(|o| o.row().0 == Cf::Leaves)),
    );
    assert!(
        d.caught_up > d.caught_up_locked + mend_store::CATCH_UP_LOCKED_MAX as u64 / 2,
        "a round ran without the lock after the rows were written: {d:?}"
    );
}

/// Writes that land while the data scan runs (paused at its first span)
/// and touch more buckets than the switch recomputes under the lock are
/// caught up in rounds without it first.
#[test]
fn writes_during_the_scan_are_caught_up_in_rounds() {
    let d = deepen_with_writes_at_a_pause(6, 8000, churn(8000, 2, 0), |c| {
        matches!(c, Call::Scan(Cf::Data))
    });
    assert!(
        d.caught_up > d.caught_up_locked + mend_store::CATCH_UP_LOCKED_MAX as u64 / 2,
        "a round ran without the lock: {d:?}"
    );
}

/// Runs a descent of `local` against `peer` (both views at one depth),
/// sans I/O, and returns the divergent keys.
fn diff(local: &dyn TreeView, peer: &dyn TreeView, lroot: u64, proot: u64) -> BTreeSet<Vec<u8>> {
    let (mut d, mut step) = Descent::start(local, lroot, proot).unwrap();
    loop {
        step = match step {
            Step::Done => break,
            Step::Probe(ps) => {
                let replies = ps.iter().map(|p| respond_probe(peer, p).unwrap()).collect();
                d.on_probe_replies(local, replies).unwrap()
            }
            Step::Leaves(lps) => {
                let replies = lps
                    .iter()
                    .map(|lp| respond_leaves(peer, lp).unwrap())
                    .collect();
                d.on_leaf_replies(local, replies).unwrap()
            }
        };
    }
    d.finish().into_iter().map(|x| x.key).collect()
}

/// Compares two stores' range 0 at the smaller of their depths, as the
/// handshake negotiates.
fn compare<B: Backend, C: Backend>(a: &Store<B>, b: &Store<C>) -> BTreeSet<Vec<u8>> {
    let depth = a.shape(0).unwrap().depth.min(b.shape(0).unwrap().depth);
    let (va, vb) = (
        RangeView::at_depth(a, 0, depth).unwrap(),
        RangeView::at_depth(b, 0, depth).unwrap(),
    );
    diff(&va, &vb, va.root_hash().unwrap(), vb.root_hash().unwrap())
}

fn deepened(depth_from: u32, deepen_by: u32, writes: &[Write]) -> Store<MemBackend> {
    let s = Store::open(MemBackend::new(), config("n", depth_from)).unwrap();
    s.write(writes.to_vec()).unwrap();
    for _ in 0..deepen_by {
        s.deepen(0).unwrap();
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_deepened_tree_equals_a_rebuild_at_its_depth(
        keys in proptest::collection::btree_set(0u16..5000, 0..400),
        from in 1u32..4,
        by in 1u32..3,
    ) {
        let writes: Vec<Write> = keys.iter().map(|k| Write::put(key(*k), vec![*k as u8]).at(v(1))).collect();
        let s = deepened(from, by, &writes);
        prop_assert_eq!(s.shape(0).unwrap().depth, from + by);
        let fresh = Store::open(MemBackend::new(), config("m", from + by)).unwrap();
        fresh.write(writes).unwrap();
        prop_assert_eq!(nodes(&s), nodes(&fresh));
        prop_assert_eq!(s.rebuild_leaves(0).unwrap(), nodes(&fresh)[(from + by) as usize].clone());
    }

    #[test]
    fn stores_with_the_same_data_and_different_depths_compare_equal(
        keys in proptest::collection::btree_set(0u16..5000, 1..400),
        by in 1u32..4,
    ) {
        let writes: Vec<Write> = keys.iter().map(|k| Write::put(key(*k), vec![*k as u8]).at(v(1))).collect();
        let a = deepened(2, 0, &writes);
        let b = deepened(2, by, &writes);
        prop_assert!(compare(&a, &b).is_empty());
        prop_assert!(compare(&b, &a).is_empty());
    }

    #[test]
    fn a_divergent_key_set_is_found_exactly_across_depths(
        base in proptest::collection::btree_set(0u16..5000, 0..400),
        changed in proptest::collection::btree_set(0u16..5000, 1..30),
        by in 1u32..4,
    ) {
        let writes: Vec<Write> = base.iter().map(|k| Write::put(key(*k), vec![1]).at(v(1))).collect();
        let a = deepened(2, 0, &writes);
        let b = deepened(2, by, &writes);
        // Changed on the deeper side: new keys, overwrites and deletes.
        let change: Vec<Write> = changed
            .iter()
            .map(|k| if k % 2 == 0 { Write::delete(key(*k)).at(v(2)) } else { Write::put(key(*k), vec![2]).at(v(2)) })
            .collect();
        b.write(change).unwrap();
        // A delete of a key neither side held leaves a tombstone on one
        // side only: a difference too.
        let want: BTreeSet<Vec<u8>> = changed.iter().map(|k| key(*k)).collect();
        prop_assert_eq!(compare(&a, &b), want.clone());
        prop_assert_eq!(compare(&b, &a), want);
    }
}

/// A deepening told to stop (an agent shutting down) gives up at its next
/// step and leaves the tree as it was; the next deepening runs as usual.
#[test]
fn a_deepening_told_to_stop_leaves_the_tree_as_it_was() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let s = Store::open(MemBackend::new(), config("n", 3)).unwrap();
    s.write((0..800).map(|i| Write::put(key(i), "v").at(v(1))).collect())
        .unwrap();
    let before = nodes(&s);
    let asked = AtomicUsize::new(0);
    let e = s
        .deepen_until(0, &|| asked.fetch_add(1, Ordering::Relaxed) >= 3)
        .unwrap_err();
    assert!(e.to_string().contains("stopping"), "{e}");
    assert_eq!(s.shape(0).unwrap().depth, 3);
    assert_eq!(nodes(&s), before);
    assert!(s.verify().unwrap().ok());
    assert_eq!(s.deepen(0).unwrap().to.depth, 4);
    assert!(s.verify().unwrap().ok());
}
