//! Property tests of the incremental tree: for random sequences of local
//! puts and deletes and replicated writes, the tree kept up to date write by
//! write equals a rebuild from the data; stores that reach the same final
//! state have equal roots whatever the order of their writes; and two stores
//! that differ in exactly a known key set differ in exactly those keys'
//! buckets.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::{MemBackend, RangeTree, Store, StoreConfig, Write};

fn ranges() -> Vec<RangeSpec> {
    let shape = TreeShape::new(4, 3).unwrap();
    vec![
        RangeSpec {
            name: "low".into(),
            start: Vec::new(),
            end: Some(b"k5".to_vec()),
            shape,
            mode: Default::default(),
            versionless: false,
        },
        RangeSpec {
            name: "high".into(),
            start: b"k5".to_vec(),
            end: None,
            shape,
            mode: Default::default(),
            versionless: false,
        },
    ]
}

fn store(node: &str) -> Store<MemBackend> {
    let cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"prop"),
        Some(ranges()),
    );
    Store::open(MemBackend::new(), cfg).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Replicated {
        key: u8,
        ms: u64,
        origin: u8,
        value: Option<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        (0u8..40).prop_map(Op::Delete),
        (0u8..40, 0u64..50, 0u8..3, proptest::option::of(any::<u8>())).prop_map(
            |(key, ms, origin, value)| Op::Replicated {
                key,
                ms,
                origin,
                value
            }
        ),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("k{k:02}").into_bytes()
}

fn to_write(op: &Op) -> Write {
    match op {
        Op::Put(k, v) => Write::put(key(*k), vec![*v]),
        Op::Delete(k) => Write::delete(key(*k)),
        Op::Replicated {
            key: k,
            ms,
            origin,
            value,
        } => {
            let v = Version {
                ms: *ms,
                logical: 0,
                origin: NodeId::new(format!("o{origin}")).unwrap(),
                seq: *ms,
            };
            match value {
                Some(x) => Write::put(key(*k), vec![*x]).at(v),
                None => Write::delete(key(*k)).at(v),
            }
        }
    }
}

fn assert_tree_matches_rebuild(s: &Store<MemBackend>) {
    for r in 0..2u16 {
        let shape = s.shape(r).unwrap();
        let rebuilt = RangeTree::from_leaves(shape, s.rebuild_leaves(r).unwrap());
        assert_eq!(rebuilt.root(), s.root(r).unwrap(), "range {r}");
        let all: Vec<u32> = (0..shape.buckets() as u32).collect();
        assert_eq!(
            rebuilt.leaves(),
            s.node_aggs(r, shape.depth, &all).unwrap().as_slice()
        );
    }
    assert!(s.verify().unwrap().ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn incremental_tree_equals_rebuild(ops in proptest::collection::vec(op(), 1..120), batch in 1usize..8) {
        let s = store("n1");
        for chunk in ops.chunks(batch) {
            s.write(chunk.iter().map(to_write).collect()).unwrap();
        }
        assert_tree_matches_rebuild(&s);
    }

    #[test]
    fn same_final_state_same_roots_whatever_the_order(
        ops in proptest::collection::vec((0u8..30, 0u64..1000, 0u8..3, proptest::option::of(any::<u8>())), 1..80),
        seed in any::<u64>(),
    ) {
        // Replicated writes with distinct versions per key commute under the
        // apply rule, so any order reaches the same final state.
        let mut seen = BTreeSet::new();
        let writes: Vec<Op> = ops
            .into_iter()
            .filter(|(k, ms, o, _)| seen.insert((*k, *ms, *o)))
            .map(|(key, ms, origin, value)| Op::Replicated { key, ms, origin, value })
            .collect();
        let mut shuffled = writes.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (a, b) = (store("a"), store("b"));
        for w in &writes { a.write(vec![to_write(w)]).unwrap(); }
        for w in &shuffled { b.write(vec![to_write(w)]).unwrap(); }
        for r in 0..2u16 {
            prop_assert_eq!(a.root(r).unwrap(), b.root(r).unwrap());
        }
    }

    #[test]
    fn stores_differing_in_known_keys_differ_in_exactly_their_buckets(
        base in proptest::collection::btree_map(0u8..200, any::<u8>(), 0..150),
        changed in proptest::collection::btree_set(0u8..200, 1..10),
    ) {
        let (a, b) = (store("a"), store("b"));
        let v = |ms| Version { ms, logical: 0, origin: NodeId::new("o").unwrap(), seq: ms };
        let w: Vec<Write> = base.iter().map(|(k, x)| Write::put(key(*k), vec![*x]).at(v(1))).collect();
        a.write(w.clone()).unwrap();
        b.write(w).unwrap();
        b.write(changed.iter().map(|k| Write::put(key(*k), b"changed".to_vec()).at(v(2))).collect()).unwrap();
        let mut expected: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
        for k in &changed {
            let (r, bucket, _) = a.locate(&key(*k)).unwrap();
            expected.entry(r).or_default().insert(bucket);
        }
        for r in 0..2u16 {
            let shape = a.shape(r).unwrap();
            let all: Vec<u32> = (0..shape.buckets() as u32).collect();
            let (la, lb) = (a.node_aggs(r, shape.depth, &all).unwrap(), b.node_aggs(r, shape.depth, &all).unwrap());
            let differing: BTreeSet<u32> = (0..all.len()).filter(|i| la[*i] != lb[*i]).map(|i| i as u32).collect();
            let want = expected.get(&r).cloned().unwrap_or_default();
            prop_assert_eq!(differing, want);
        }
    }
}
