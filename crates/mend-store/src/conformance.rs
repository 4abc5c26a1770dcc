//! The conformance suite every [`Backend`] must pass. `mend-store`'s tests
//! run it on [`crate::MemBackend`], `mend-rocks`'s on RocksDB in a temporary
//! directory; a failure names the check and the backend.
#![allow(clippy::unwrap_used)]

pub mod depth;
pub mod ingest;

use mend_core::{Decision, NodeId, RangeSpec, Secret, TreeShape, Version};

use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::store::{Store, StoreConfig, Write};

/// Makes fresh backends and reopens existing ones.
pub trait Harness {
    /// The backend under test.
    type B: Backend;
    /// A new, empty backend.
    fn fresh(&mut self) -> Self::B;
    /// Closes `b` and opens the same storage again.
    fn reopen(&mut self, b: Self::B) -> Self::B;
}

/// Two ranges with a small tree each: `a` = [.., "m"), `b` = ["m", ..).
pub fn ranges() -> Vec<RangeSpec> {
    let shape = TreeShape::new(4, 3).unwrap();
    vec![
        RangeSpec {
            name: "a".into(),
            start: Vec::new(),
            end: Some(b"m".to_vec()),
            shape,
            mode: Default::default(),
            versionless: false,
        },
        RangeSpec {
            name: "b".into(),
            start: b"m".to_vec(),
            end: None,
            shape,
            mode: Default::default(),
            versionless: false,
        },
    ]
}

/// A config for node `node` with a fixed clock at `now`.
pub fn config(node: &str, now: u64) -> StoreConfig {
    let mut c = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"test"),
        Some(ranges()),
    );
    c.clock = std::sync::Arc::new(move || now);
    c
}

/// A version at `ms` from `origin`.
pub fn v(ms: u64, origin: &str, seq: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new(origin).unwrap(),
        seq,
    }
}

/// Runs every check.
pub fn run_all<H: Harness>(h: &mut H) {
    put_get_delete(h);
    apply_rule(h);
    tree_matches_rebuild_and_survives_reopen(h);
    order_independence(h);
    bad_input_writes_nothing(h);
    reopen_checks_parameters(h);
    purge_keeps_tree_right(h);
    repair_buckets_fixes_only_what_is_wrong(h);
    a_leaf_snapshot_serves_later_steps(h);
    format_1_tombstone_index_migrates(h);
    restore_is_compare_and_set(h);
    leaf_listing(h);
    listing_in_halves(h);
    batch_reads_current_entries(h);
    a_batch_applies_ops_on_one_row_in_order(h);
    ingest::run_ingest(h);
    depth::run_depth(h);
}

/// A backend may reorder a batch's rows (the RocksDB backend sorts them by
/// key for its memtable), but ops on one row apply in the order given: a
/// batch of 300 puts and deletes over three rows leaves each row as its
/// last op says.
fn a_batch_applies_ops_on_one_row_in_order<H: Harness>(h: &mut H) {
    let b = h.fresh();
    let rows: [&[u8]; 3] = [b"row-a", b"row-b", b"row-c"];
    let mut ops = Vec::new();
    for i in 0..300u32 {
        let row = rows[(i * 7 % 3) as usize].to_vec();
        ops.push(if i % 5 == 4 {
            Op::Delete(Cf::Journal, row)
        } else {
            Op::Put(Cf::Journal, row, i.to_be_bytes().to_vec())
        });
    }
    let mut last = std::collections::BTreeMap::new();
    for op in &ops {
        match op {
            Op::Put(_, k, v) => last.insert(k.clone(), Some(v.clone())),
            Op::Delete(_, k) => last.insert(k.clone(), None),
        };
    }
    b.write(ops, false).unwrap();
    for (k, want) in last {
        assert_eq!(b.get(Cf::Journal, &k).unwrap(), want, "row {k:?}");
    }
}

/// A batch decides each write against the stored entry (read in one
/// batched read) or an earlier write of the same batch, whichever is newer.
fn batch_reads_current_entries<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(vec![
        Write::put("a", "a1").at(v(100, "x", 1)),
        Write::put("b", "b1").at(v(100, "x", 2)),
    ])
    .unwrap();
    let out = s
        .write(vec![
            Write::put("b", "old").at(v(50, "x", 3)),
            Write::put("c", "c1").at(v(100, "x", 4)),
            Write::put("a", "a2").at(v(200, "x", 5)),
            Write::put("c", "older").at(v(90, "x", 6)),
            Write::put("a", "a1").at(v(100, "x", 1)),
        ])
        .unwrap();
    let d: Vec<Decision> = out.iter().map(|a| a.decision).collect();
    assert_eq!(
        d,
        [
            Decision::Stale,
            Decision::Apply,
            Decision::Apply,
            Decision::Stale,
            Decision::Stale
        ]
    );
    assert_eq!(out[2].previous.as_ref().map(|m| m.version.ms), Some(100));
    assert_eq!(s.get(b"a").unwrap().unwrap().value, b"a2");
    assert_eq!(s.get(b"b").unwrap().unwrap().value, b"b1");
    assert_eq!(s.get(b"c").unwrap().unwrap().value, b"c1");
    let be = s.backend();
    let (ka, kz) = (s.locate(b"a").unwrap().2, s.locate(b"zz").unwrap().2);
    let got = be.multi_get(Cf::Data, &[&ka, &kz, &ka]).unwrap();
    assert_eq!(got.len(), 3);
    assert!(got[0].is_some() && got[1].is_none() && got[0] == got[2]);
    let keys = [b"c".to_vec(), b"zz".to_vec(), b"a".to_vec()];
    let many = s.get_many(&keys).unwrap();
    let one: Vec<_> = keys.iter().map(|k| s.get(k).unwrap()).collect();
    assert_eq!(many, one);
    assert!(many[0].is_some() && many[1].is_none());
    assert!(s.verify().unwrap().ok());
}

fn put_get_delete<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let a = s.write(vec![Write::put("k1", "v1")]).unwrap();
    assert_eq!(a[0].decision, Decision::Apply);
    assert_eq!(a[0].version.origin.as_str(), "n1");
    let r = s.get(b"k1").unwrap().unwrap();
    assert_eq!(r.value, b"v1");
    let d = s.write(vec![Write::delete("k1")]).unwrap();
    assert_eq!(d[0].decision, Decision::Apply);
    assert!(
        d[0].version.order(&a[0].version).is_gt(),
        "local stamps increase"
    );
    assert_eq!(d[0].version.seq, a[0].version.seq + 1);
    let t = s.get(b"k1").unwrap().unwrap();
    assert!(t.meta.tombstone);
    assert!(s.get(b"zz").unwrap().is_none());
    let st = s.stats().unwrap();
    assert_eq!((st.keys, st.tombstones), (0, 1));
}

fn apply_rule<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(vec![Write::put("k", "new").at(v(500, "x", 1))])
        .unwrap();
    let stale = s
        .write(vec![Write::put("k", "old").at(v(400, "x", 0))])
        .unwrap();
    assert_eq!(stale[0].decision, Decision::Stale);
    let dup = s
        .write(vec![Write::put("k", "new").at(v(500, "x", 1))])
        .unwrap();
    assert_eq!(dup[0].decision, Decision::Duplicate);
    let conflict = s
        .write(vec![Write::put("k", "other").at(v(500, "x", 1))])
        .unwrap();
    assert_eq!(conflict[0].decision, Decision::Conflict);
    assert_eq!(
        s.get(b"k").unwrap().unwrap().value,
        b"new",
        "conflict never overwrites"
    );
    let newer = s
        .write(vec![Write::delete("k").at(v(600, "y", 9))])
        .unwrap();
    assert_eq!(newer[0].decision, Decision::Apply);
    assert!(s.get(b"k").unwrap().unwrap().meta.tombstone);
    // Within one batch, later writes are decided against earlier ones.
    let b = s
        .write(vec![
            Write::put("q", "1").at(v(10, "x", 1)),
            Write::put("q", "0").at(v(5, "x", 0)),
        ])
        .unwrap();
    assert_eq!(
        (b[0].decision, b[1].decision),
        (Decision::Apply, Decision::Stale)
    );
    assert!(s.verify().unwrap().ok());
}

fn tree_matches_rebuild_and_survives_reopen<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let mut writes = Vec::new();
    for i in 0..300u32 {
        let k = format!("{}{i:04}", if i % 2 == 0 { "a" } else { "z" });
        writes.push(Write::put(k, vec![i as u8; (i % 7) as usize]));
    }
    s.write(writes).unwrap();
    for i in (0..300u32).step_by(3) {
        let k = format!("{}{i:04}", if i % 2 == 0 { "a" } else { "z" });
        s.write(vec![Write::delete(k)]).unwrap();
    }
    let report = s.verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.ranges.iter().map(|r| r.entries).sum::<u64>(), 300);
    let roots: Vec<_> = (0..2).map(|r| s.root(r).unwrap()).collect();
    let seq_before = s.write(vec![Write::put("a-last", "x")]).unwrap()[0]
        .version
        .seq;
    let roots_after_last: Vec<_> = (0..2).map(|r| s.root(r).unwrap()).collect();
    assert_ne!(roots, roots_after_last);
    let b = h.reopen(into_backend(s));
    let s = Store::open(b, config("n1", 1000)).unwrap();
    let reopened: Vec<_> = (0..2).map(|r| s.root(r).unwrap()).collect();
    assert_eq!(
        roots_after_last, reopened,
        "persisted tree equals the live one"
    );
    let seq_after = s.write(vec![Write::put("a-more", "x")]).unwrap()[0]
        .version
        .seq;
    assert_eq!(seq_after, seq_before + 1, "sequence numbers survive reopen");
    for r in 0..2 {
        let rebuilt = s.rebuild_leaves(r).unwrap();
        let tree = crate::RangeTree::from_leaves(s.shape(r).unwrap(), rebuilt);
        assert_eq!(tree.root(), s.root(r).unwrap());
    }
}

fn order_independence<H: Harness>(h: &mut H) {
    let writes: Vec<Write> = (0..50u64)
        .map(|i| {
            let k = format!("k{}", i % 17);
            if i % 5 == 0 {
                Write::delete(k).at(v(100 + i, "o", i))
            } else {
                Write::put(k, format!("v{i}")).at(v(100 + i, "o", i))
            }
        })
        .collect();
    let s1 = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let s2 = Store::open(h.fresh(), config("n2", 1000)).unwrap();
    for w in writes.iter().cloned() {
        s1.write(vec![w]).unwrap();
    }
    for w in writes.iter().rev().cloned() {
        s2.write(vec![w]).unwrap();
    }
    for r in 0..2 {
        assert_eq!(s1.root(r).unwrap(), s2.root(r).unwrap());
    }
}

fn bad_input_writes_nothing<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let long = vec![b'a'; mend_core::limits::KEY_BYTES_MAX + 1];
    let big = vec![0u8; mend_core::limits::VALUE_BYTES_MAX + 1];
    for bad in [
        vec![Write::put("ok", "1"), Write::put(long.clone(), "x")],
        vec![Write::put("ok", "1"), Write::put(Vec::new(), "x")],
        vec![Write::put("ok", "1"), Write::put("k", big.clone())],
    ] {
        let e = s.write(bad).unwrap_err();
        assert!(matches!(e, StoreError::Input(_)), "{e}");
    }
    assert!(
        s.get(b"ok").unwrap().is_none(),
        "a rejected batch writes nothing"
    );
    assert!(s.root(0).unwrap().is_empty());
    // A store whose ranges leave a gap rejects keys in it.
    let mut c = config("n1", 1000);
    c.ranges = Some(vec![RangeSpec {
        name: "only".into(),
        start: b"b".to_vec(),
        end: Some(b"c".to_vec()),
        shape: TreeShape::default(),
        mode: Default::default(),
        versionless: false,
    }]);
    let s = Store::open(h.fresh(), c).unwrap();
    let e = s.write(vec![Write::put("a", "1")]).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Input(mend_core::CoreError::KeyOutsideRanges { .. })
        ),
        "{e}"
    );
}

fn reopen_checks_parameters<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(vec![Write::put("k", "v")]).unwrap();
    let b = h.reopen(into_backend(s));
    let mut other_secret = config("n1", 1000);
    other_secret.secret = Secret::from_bytes(b"another");
    let e = Store::open(b, other_secret).unwrap_err();
    assert!(matches!(e, StoreError::SecretMismatch { .. }), "{e}");
    let b = h.fresh();
    let s = Store::open(b, config("n1", 1000)).unwrap();
    let b = h.reopen(into_backend(s));
    let mut other_shape = config("n1", 1000);
    other_shape.ranges.as_mut().unwrap()[1].shape = TreeShape::new(16, 2).unwrap();
    let e = Store::open(b, other_shape).unwrap_err();
    assert!(matches!(e, StoreError::ParamsMismatch(_)), "{e}");
    let mut none = config("n1", 1000);
    none.ranges = None;
    let e = Store::open(h.fresh(), none).unwrap_err();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
}

/// A config whose clock reads `now` (shared, so the check can move it).
fn moving(node: &str, now: &std::sync::Arc<std::sync::atomic::AtomicU64>) -> StoreConfig {
    let mut c = config(node, 0);
    let now = now.clone();
    c.clock = std::sync::Arc::new(move || now.load(std::sync::atomic::Ordering::SeqCst));
    c
}

/// Purge removes exactly the tombstones past their grace that arrived
/// before the caller's horizon, a bounded number of index rows at a time,
/// keeping the tree equal to a rebuild.
fn purge_keeps_tree_right<H: Harness>(h: &mut H) {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let now = std::sync::Arc::new(AtomicU64::new(1_000));
    let mut c = moving("n1", &now);
    c.tombstone_grace_ms = 1000;
    let s = Store::open(h.fresh(), c).unwrap();
    s.write(vec![Write::put("a-old", "1").at(v(100, "x", 1))])
        .unwrap();
    s.write(vec![Write::delete("a-old").at(v(200, "x", 2))])
        .unwrap();
    s.write(vec![Write::delete("a-revived").at(v(300, "x", 4))])
        .unwrap();
    s.write(vec![Write::put("a-revived", "again").at(v(400, "x", 5))])
        .unwrap();
    now.store(5_000, SeqCst);
    // Arrived at 5 000, an old version: past its grace, but later than the
    // horizon below.
    s.write(vec![Write::delete("a-late").at(v(250, "x", 6))])
        .unwrap();
    s.write(vec![Write::delete("a-young").at(v(9_500, "x", 3))])
        .unwrap();
    // Range "b" holds a tombstone too; purging range "a" leaves it.
    s.write(vec![Write::delete("zz").at(v(150, "x", 7))])
        .unwrap();
    now.store(10_000, SeqCst);
    let a = 0;
    // Nothing arrived before 1 000.
    assert_eq!(s.purge_tombstones(a, 1_000, 100).unwrap().purged, 0);
    // One row at a time: "a-old", and the stale row of "a-revived" (in either
    // order: rows of one arrival ms are in bucket order).
    // The horizon 2 500 admits what arrived before it and was past its
    // grace (1 000) already then: versions before 1 500.
    let first = s.purge_tombstones(a, 2_500, 1).unwrap();
    assert_eq!((first.examined, first.more), (1, true));
    let second = s.purge_tombstones(a, 2_500, 100).unwrap();
    assert_eq!((second.examined, second.more), (1, false));
    assert_eq!(
        (first.purged + second.purged, first.stale + second.stale),
        (1, 1)
    );
    assert!(s.get(b"a-old").unwrap().is_none());
    assert_eq!(s.get(b"a-revived").unwrap().unwrap().value, b"again");
    assert!(s.get(b"a-late").unwrap().unwrap().meta.tombstone);
    assert!(s.verify().unwrap().ok());
    // A later horizon takes "a-late" but not "a-young" (within its grace).
    let third = s.purge_tombstones(a, u64::MAX, 100).unwrap();
    assert_eq!((third.purged, third.kept), (1, 1), "{third:?}");
    assert!(s.get(b"a-late").unwrap().is_none());
    assert!(s.get(b"a-young").unwrap().unwrap().meta.tombstone);
    assert!(s.get(b"zz").unwrap().unwrap().meta.tombstone);
    now.store(6_000 + 1_000, SeqCst);
    assert_eq!(s.purge_tombstones(1, u64::MAX, 100).unwrap().purged, 1);
    assert!(s.verify().unwrap().ok());
    assert!(s.purge_tombstones(9, u64::MAX, 1).is_err());
}

/// Overwrites the persisted leaf of `bucket` in range 0 with 40 bytes of
/// `fill` (the tree in memory keeps the right one).
fn corrupt_leaf<B: Backend>(s: &Store<B>, bucket: u32, fill: u8) {
    s.backend()
        .write(
            vec![crate::backend::Op::Put(
                Cf::Leaves,
                s.layout(0, s.shape(0).unwrap().depth)
                    .unwrap()
                    .leaf_key(bucket),
                vec![fill; 40],
            )],
            true,
        )
        .unwrap();
}

/// A leaf out of step with the data is found and fixed by
/// `repair_buckets` without reopening the store; correct buckets are left
/// alone.
fn repair_buckets_fixes_only_what_is_wrong<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let writes: Vec<Write> = (0..64)
        .map(|i| Write::put(format!("k{i:02}"), "v").at(v(100, "x", i)))
        .collect();
    s.write(writes).unwrap();
    let buckets = s.shape(0).unwrap().buckets() as u32;
    assert!(s.repair_buckets(0, 0, buckets).unwrap().is_empty());
    let (_, bucket, _) = s.locate(b"k07").unwrap();
    corrupt_leaf(&s, bucket, 7);
    let b = h.reopen(s.into_backend());
    let s = Store::open(b, config("n1", 1000)).unwrap();
    assert!(!s.verify().unwrap().ok());
    assert_eq!(s.repair_buckets(0, 0, buckets).unwrap(), vec![bucket]);
    assert!(s.verify().unwrap().ok());
    // Only the persisted row wrong, the tree in memory right (no reopen):
    // still found (the persisted leaves are read apart from the tree).
    let (_, other, _) = s.locate(b"k21").unwrap();
    corrupt_leaf(&s, other, 9);
    assert_eq!(s.repair_buckets(0, 0, buckets).unwrap(), vec![other]);
    assert!(s.repair_buckets(0, 0, buckets).unwrap().is_empty());
    // Out of range spans are empty, not errors; a bad range is.
    assert!(s.repair_buckets(0, buckets, 5).unwrap().is_empty());
    assert!(s.repair_buckets(7, 0, 1).is_err());
}

/// One snapshot of the persisted leaves serves later calls: a corrupt row
/// of a leaf unchanged since is still found; a leaf written since (its row
/// rewritten from the tree, the corruption gone with it) is checked
/// against its data only, and nothing is reported for it.
fn a_leaf_snapshot_serves_later_steps<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let writes: Vec<Write> = (0..64)
        .map(|i| Write::put(format!("k{i:02}"), "v").at(v(100, "x", i)))
        .collect();
    s.write(writes).unwrap();
    let buckets = s.shape(0).unwrap().buckets() as u32;
    let (_, quiet, _) = s.locate(b"k07").unwrap();
    let (_, busy, _) = s.locate(b"k21").unwrap();
    assert_ne!(quiet, busy);
    let corrupt = |b: u32| corrupt_leaf(&s, b, 7);
    corrupt(quiet);
    corrupt(busy);
    let snap = s.snapshot_leaves(0, 0, buckets).unwrap();
    assert!(snap.covers(0, 0, buckets) && !snap.covers(0, 1, buckets) && !snap.covers(1, 0, 1));
    // `busy` is written after the snapshot: its row comes from the tree.
    s.write(vec![Write::put("k21", "newer").at(v(200, "x", 99))])
        .unwrap();
    assert_eq!(
        s.repair_buckets_with(0, 0, buckets, &snap).unwrap(),
        vec![quiet]
    );
    assert!(s.verify().unwrap().ok(), "{:?}", s.verify().unwrap());
    // An empty snapshot (a span it does not cover) checks the data only.
    let none = s.snapshot_leaves(0, buckets, 1).unwrap();
    corrupt(quiet);
    assert!(
        s.repair_buckets_with(0, 0, buckets, &none)
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.repair_buckets(0, 0, buckets).unwrap(), vec![quiet]);
}

/// A format-1 store (tombstone index keyed by version ms) opens as
/// format 2 with its tombstones indexed by range, and they purge.
fn format_1_tombstone_index_migrates<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(vec![Write::delete("gone").at(v(100, "x", 1))])
        .unwrap();
    let b = s.into_backend();
    // Rewrite the store as format 1 left it: format-2 rows, and the
    // tombstone index by version ms.
    depth::downgrade_to_format_2(&b);
    let mut ops = Vec::new();
    b.scan(Cf::Tombstones, &[], None, &mut |k, _| {
        ops.push(crate::backend::Op::Delete(Cf::Tombstones, k.to_vec()));
        true
    })
    .unwrap();
    let mut dkey = None;
    b.scan(Cf::Data, &[], None, &mut |k, _| {
        dkey = Some(k.to_vec());
        false
    })
    .unwrap();
    let mut old = 100u64.to_be_bytes().to_vec();
    old.extend_from_slice(&dkey.unwrap());
    ops.push(crate::backend::Op::Put(Cf::Tombstones, old, Vec::new()));
    let raw = b.get(Cf::Meta, crate::keys::META_PARAMS).unwrap().unwrap();
    let mut p: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    p["format"] = 1.into();
    ops.push(crate::backend::Op::Put(
        Cf::Meta,
        crate::keys::META_PARAMS.to_vec(),
        serde_json::to_vec(&p).unwrap(),
    ));
    b.write(ops, true).unwrap();
    let b = h.reopen(b);
    let mut c = config("n1", 100_000);
    c.tombstone_grace_ms = 1000;
    let s = Store::open(b, c.clone()).unwrap();
    assert_eq!(s.purge_tombstones(0, u64::MAX, 10).unwrap().purged, 1);
    assert!(s.get(b"gone").unwrap().is_none());
    assert!(s.verify().unwrap().ok());
    let s = Store::open(h.reopen(s.into_backend()), c).unwrap();
    let raw = s
        .backend()
        .get(Cf::Meta, crate::keys::META_PARAMS)
        .unwrap()
        .unwrap();
    let p: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(p["format"], 2);
}

fn restore_is_compare_and_set<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(vec![Write::put("k", "before").at(v(100, "x", 1))])
        .unwrap();
    let a = s
        .write_capturing(vec![Write::put("k", "repaired").at(v(200, "y", 1))])
        .unwrap();
    let before = a[0].before.clone().unwrap();
    let now = s.get(b"k").unwrap().unwrap().meta;
    assert!(
        s.compare_and_restore(b"k", Some(&now), Some(&before))
            .unwrap()
    );
    assert_eq!(s.get(b"k").unwrap().unwrap().value, b"before");
    // Restoring again against a stale expectation does nothing.
    assert!(!s.compare_and_restore(b"k", Some(&now), None).unwrap());
    assert_eq!(s.get(b"k").unwrap().unwrap().value, b"before");
    assert!(s.verify().unwrap().ok());
}

fn leaf_listing<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("key{i}")).collect();
    s.write(keys.iter().map(|k| Write::put(k.as_str(), "v")).collect())
        .unwrap();
    let shape = s.shape(0).unwrap();
    let all: Vec<u32> = (0..shape.buckets() as u32).collect();
    let listed = s.leaf_entries(0, &all).unwrap();
    let total: usize = listed.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(total, 40);
    for (b, entries) in &listed {
        let mut agg = mend_core::Agg::default();
        for e in entries {
            agg.add_digest(&e.digest);
        }
        assert_eq!(agg, s.node_aggs(0, shape.depth, &[*b]).unwrap()[0]);
    }
    assert!(s.leaf_entries(0, &[shape.buckets() as u32]).is_err());
    // The one-pass listing of chosen buckets (every third bucket, so some
    // are empty) gives exactly the non-empty ones of the per-bucket listing.
    let some: Vec<u32> = all.iter().copied().filter(|b| b % 3 == 0).collect();
    let one_pass = s.leaf_entries_of(0, &some).unwrap();
    let expected: Vec<_> = s
        .leaf_entries(0, &some)
        .unwrap()
        .into_iter()
        .filter(|(_, es)| !es.is_empty())
        .collect();
    assert_eq!(one_pass, expected);
    assert!(!one_pass.is_empty());
    assert!(s.leaf_entries_of(0, &[3, 1]).is_err(), "not ascending");
    assert!(s.leaf_entries_of(0, &[shape.buckets() as u32]).is_err());
    assert!(s.node_aggs(0, 1, &[99]).is_err());
    let kids = s.child_aggs(0, 0, &[0]).unwrap();
    assert_eq!(kids.iter().map(|a| a.count).sum::<u64>(), 40);
}

/// Listings of enough buckets run as two halves side by side (one pass of
/// chosen buckets, and one span) and join in order: with every bucket
/// holding entries, a bucket lost or moved at the seam shows.
fn listing_in_halves<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(
        (0..2000)
            .map(|i| Write::put(format!("key{i}"), "v"))
            .collect(),
    )
    .unwrap();
    let all: Vec<u32> = (0..s.shape(0).unwrap().buckets() as u32).collect();
    assert!(all.len() >= crate::LEAF_LIST_PARALLEL_BUCKETS_MIN);
    let every = s.leaf_entries(0, &all).unwrap();
    assert!(
        every.iter().all(|(_, es)| !es.is_empty()),
        "every bucket holds entries"
    );
    assert_eq!(s.leaf_entries_of(0, &all).unwrap(), every);
    assert_eq!(s.leaf_entries_span(0, 0, all.len() as u32).unwrap(), every);
    assert_eq!(
        s.leaf_entries_span(0, 1, all.len() as u32 - 1).unwrap(),
        every[1..]
    );
}

fn into_backend<B: Backend>(s: Store<B>) -> B {
    s.into_backend()
}
