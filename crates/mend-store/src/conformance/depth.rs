//! Conformance checks of trees that deepen (issue 14): a deepened tree is
//! the tree a store created at the new depth builds from the same writes,
//! it survives a reopen with no rows of the old depth left, a tree answers
//! at every smaller depth as a shallower tree would, and a store of the
//! format before adaptive depth (rows laid out by its created depth) still
//! works and says why it cannot deepen.

use mend_core::{Agg, RangeSpec, TreeShape};

use super::{Harness, config, v};
use crate::backend::{Backend, Cf, Op};
use crate::keys;
use crate::store::{Store, Write};

/// Runs every depth check.
pub fn run_depth<H: Harness>(h: &mut H) {
    deepened_tree_equals_a_store_created_deeper(h);
    a_tree_answers_at_smaller_depths(h);
    format_2_store_keeps_working(h);
}

fn writes(n: usize) -> Vec<Write> {
    (0..n)
        .map(|i| {
            Write::put(format!("k{i:04}"), format!("v{i}")).at(v(100 + i as u64, "x", i as u64))
        })
        .collect()
}

/// Every node of range `r` at every level, as (level, aggregates).
fn all_nodes<B: Backend>(s: &Store<B>, r: u16) -> Vec<Vec<Agg>> {
    let shape = s.shape(r).unwrap();
    (0..=shape.depth)
        .map(|l| {
            let idx: Vec<u32> = (0..shape.nodes_at(l) as u32).collect();
            s.node_aggs(r, l, &idx).unwrap()
        })
        .collect()
}

/// Leaf rows of range `r` in the backend: (key, value).
fn leaf_rows<B: Backend>(b: &B, r: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    b.scan(
        Cf::Leaves,
        &keys::range_start(r),
        Some(&keys::range_end(r)),
        &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        },
    )
    .unwrap();
    out
}

fn deepened_tree_equals_a_store_created_deeper<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(writes(600)).unwrap();
    assert!(s.deepen_due(0, 2).unwrap(), "about 9 entries per bucket");
    assert!(!s.deepen_due(0, 1000).unwrap());
    let root = s.root(0).unwrap();
    let d = s.deepen(0).unwrap();
    assert_eq!((d.from.depth, d.to.depth), (3, 4));
    assert_eq!(d.entries, root.count);
    assert_eq!(s.shape(0).unwrap().depth, 4);
    assert_eq!(s.shape(1).unwrap().depth, 3, "the other range stays");
    assert_eq!(
        s.root(0).unwrap(),
        root,
        "a root is the same at every depth"
    );
    // The store created at depth 4 from the same writes has the same tree.
    let mut c = config("n1", 1000);
    c.ranges = Some({
        let mut r = super::ranges();
        r[0].shape = TreeShape::new(4, 4).unwrap();
        r
    });
    let fresh = Store::open(h.fresh(), c).unwrap();
    fresh.write(writes(600)).unwrap();
    assert_eq!(all_nodes(&s, 0), all_nodes(&fresh, 0));
    assert_eq!(s.rebuild_leaves(0).unwrap(), all_nodes(&fresh, 0)[4]);
    assert!(s.verify().unwrap().ok());
    // Writes after the switch update the deeper tree.
    s.write(vec![Write::put("k0001", "newer").at(v(5000, "x", 1))])
        .unwrap();
    fresh
        .write(vec![Write::put("k0001", "newer").at(v(5000, "x", 1))])
        .unwrap();
    assert_eq!(all_nodes(&s, 0), all_nodes(&fresh, 0));
    // Reopened: the depth is kept, and only its leaf rows are left.
    let b = h.reopen(s.into_backend());
    let s = Store::open(b, config("n1", 1000)).unwrap();
    assert_eq!(s.shape(0).unwrap().depth, 4);
    assert_eq!(all_nodes(&s, 0), all_nodes(&fresh, 0));
    assert!(s.verify().unwrap().ok());
    let layout = s.layout(0, 4).unwrap();
    let rows = leaf_rows(s.backend(), 0);
    assert_eq!(
        rows.len(),
        all_nodes(&fresh, 0)[4]
            .iter()
            .filter(|a| !a.is_empty())
            .count()
    );
    assert!(rows.iter().all(|(k, _)| layout.leaf_bucket(k).is_some()));
    // On to the deepest depth the rows allow (fan-out 4: depth 8, 65 536
    // buckets), then a clear refusal.
    for want in 5..=s.row_depth(0).unwrap() {
        assert_eq!(s.deepen(0).unwrap().to.depth, want);
    }
    let e = s.deepen(0).unwrap_err();
    assert!(e.to_string().contains("deepest"), "{e}");
    // The configured shapes are the created ones: the store still opens
    // with them, at its deepened depth.
    let s = Store::open(h.reopen(s.into_backend()), config("n1", 1000)).unwrap();
    assert_eq!(s.shape(0).unwrap().depth, 8);
    assert!(s.verify().unwrap().ok());
}

/// A tree at depth 5 answers at depths 1..=5: its nodes at level l are the
/// shallower tree's, and its listing of a bucket at depth d is every entry
/// of that bucket's span, in key order.
fn a_tree_answers_at_smaller_depths<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(writes(500)).unwrap();
    let shallow = all_nodes(&s, 1);
    let listed3 = s.leaf_entries_span(1, 0, 64).unwrap();
    s.deepen(1).unwrap();
    s.deepen(1).unwrap();
    assert_eq!(s.shape(1).unwrap().depth, 5);
    for (l, nodes) in shallow.iter().enumerate() {
        let idx: Vec<u32> = (0..nodes.len() as u32).collect();
        assert_eq!(&s.node_aggs(1, l as u32, &idx).unwrap(), nodes);
    }
    assert_eq!(s.leaf_entries_span_at(1, 3, 0, 64).unwrap(), listed3);
    let some: Vec<u32> = (0..64).filter(|b| b % 5 == 1).collect();
    let want: Vec<_> = listed3
        .iter()
        .filter(|(b, _)| some.contains(b))
        .cloned()
        .collect();
    assert_eq!(s.leaf_entries_of_at(1, 3, &some).unwrap(), want);
    for (_, es) in &listed3 {
        assert!(es.windows(2).all(|w| w[0].key < w[1].key), "key order");
    }
    assert!(
        s.leaf_entries_of_at(1, 6, &[0]).is_err(),
        "deeper than the tree"
    );
    assert!(s.leaf_entries_of_at(1, 0, &[0]).is_err());
}

/// Rewrites a fresh store's rows in the format-2 layout: data rows (and the
/// tombstone index's data keys) by the bucket at the created depth, leaf
/// rows untagged, `format: 2` in the parameters.
pub fn downgrade_to_format_2<B: Backend>(b: &B) {
    let raw = b.get(Cf::Meta, keys::META_PARAMS).unwrap().unwrap();
    let mut p: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let ranges: Vec<RangeSpec> = serde_json::from_value(p["ranges"].clone()).unwrap();
    assert!(p.get("depths").is_none(), "a fresh store");
    let shift = |range: u16| {
        let s = ranges[usize::from(range)].shape;
        s.fanout_bits() * (TreeShape::max_depth(s.fanout) - s.depth)
    };
    let rekey = |k: &[u8]| {
        let (range, row, key) = keys::split_data_key(k).unwrap();
        keys::data_key(range, row >> shift(range), key)
    };
    let mut ops = Vec::new();
    b.scan(Cf::Data, &[], None, &mut |k, v| {
        ops.push(Op::Delete(Cf::Data, k.to_vec()));
        ops.push(Op::Put(Cf::Data, rekey(k), v.to_vec()));
        true
    })
    .unwrap();
    b.scan(Cf::Tombstones, &[], None, &mut |k, v| {
        let (range, ms, dkey) = keys::split_tombstone_key(k).unwrap();
        ops.push(Op::Delete(Cf::Tombstones, k.to_vec()));
        ops.push(Op::Put(
            Cf::Tombstones,
            keys::tombstone_key(range, ms, &rekey(dkey)),
            v.to_vec(),
        ));
        true
    })
    .unwrap();
    b.scan(Cf::Leaves, &[], None, &mut |k, v| {
        let mut untagged = k.to_vec();
        untagged[2] = 0;
        ops.push(Op::Delete(Cf::Leaves, k.to_vec()));
        ops.push(Op::Put(Cf::Leaves, untagged, v.to_vec()));
        true
    })
    .unwrap();
    p["format"] = 2.into();
    ops.push(Op::Put(
        Cf::Meta,
        keys::META_PARAMS.to_vec(),
        serde_json::to_vec(&p).unwrap(),
    ));
    // Deletes of old keys before puts of new ones that may coincide.
    let (dels, puts): (Vec<Op>, Vec<Op>) =
        ops.into_iter().partition(|o| matches!(o, Op::Delete(..)));
    b.write(dels, true).unwrap();
    b.write(puts, true).unwrap();
}

/// A format-2 store (rows by the created depth's bucket) opens, reads,
/// writes, lists and verifies as before, its tree equal to a format-3
/// store's with the same data, and refuses to deepen with the reason.
fn format_2_store_keeps_working<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), config("n1", 1000)).unwrap();
    s.write(writes(300)).unwrap();
    s.write(vec![Write::delete("k0007").at(v(9000, "x", 1))])
        .unwrap();
    let nodes = all_nodes(&s, 0);
    let listed = s.leaf_entries_span(0, 0, 64).unwrap();
    let b = s.into_backend();
    downgrade_to_format_2(&b);
    let s = Store::open(h.reopen(b), config("n1", 1000)).unwrap();
    assert!(s.verify().unwrap().ok());
    assert_eq!(all_nodes(&s, 0), nodes);
    assert_eq!(s.leaf_entries_span(0, 0, 64).unwrap(), listed);
    assert_eq!(s.get(b"k0003").unwrap().unwrap().value, b"v3");
    s.write(vec![Write::put("k0003", "w").at(v(9001, "x", 2))])
        .unwrap();
    assert_eq!(s.get(b"k0003").unwrap().unwrap().value, b"w");
    assert!(s.verify().unwrap().ok());
    let e = s.deepen(0).unwrap_err();
    assert!(e.to_string().contains("format-2"), "{e}");
    assert_eq!(s.shape(0).unwrap().depth, 3);
}
