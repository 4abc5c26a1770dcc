//! Digest and tree-update area (issue 5): the per-write CPU cost mend adds
//! before touching storage.
//!
//! * `digest/value_hash/{100B,1KiB,64KiB}`: BLAKE3 of a value (stored with
//!   the record so listings never rehash values).
//! * `digest/entry`: the keyed entry digest over (key, version, tombstone,
//!   value hash) that the tree aggregates.
//! * `digest/placement`: the keyed placement hash that picks a key's bucket.
//! * `digest/tree_update`: one write's tree maintenance: subtract the old
//!   digest from its leaf, add the new one, and propagate to the root of a
//!   16^4 tree ([`RangeTree::set_leaf`]).
//! * `digest/tree_hash`: the node hash an exchange sends for a node.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mend_core::digest::value_hash;
use mend_core::exchange::node_hash;
use mend_core::{Agg, EntryMeta, NodeId, Secret, TreeShape, Version};
use mend_store::RangeTree;

fn meta(i: u64) -> EntryMeta {
    EntryMeta {
        version: Version {
            ms: 1_700_000_000_000 + i,
            logical: 0,
            origin: NodeId::new("node-a").unwrap(),
            seq: i,
        },
        tombstone: false,
        value_hash: value_hash(&i.to_le_bytes()),
    }
}

fn bench_digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("digest");
    for (name, len) in [("100B", 100usize), ("1KiB", 1024), ("64KiB", 65_536)] {
        let v = vec![7u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("value_hash", name), &v, |b, v| {
            b.iter(|| value_hash(black_box(v)))
        });
    }
    g.throughput(Throughput::Elements(1));
    let secret = Secret::development();
    let m = meta(42);
    let key = *b"0123456789abcdef";
    g.bench_function("entry", |b| {
        b.iter(|| black_box(&m).digest(&secret, black_box(&key)))
    });
    g.bench_function("placement", |b| {
        b.iter(|| secret.placement(black_box(&key)))
    });

    let shape = TreeShape::default();
    let mut tree = RangeTree::empty(shape);
    let old = m.digest(&secret, &key);
    let new = meta(43).digest(&secret, &key);
    // Every leaf holds one entry, so each update replaces one.
    for bucket in 0..shape.buckets() as u32 {
        let mut leaf = Agg::default();
        leaf.add_digest(&old);
        tree.set_leaf(bucket, leaf);
    }
    let mut i: u64 = 0;
    g.bench_function("tree_update", |b| {
        b.iter(|| {
            // A different bucket each time, as random keys would give.
            i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let bucket = (i >> 40) as u32 % shape.buckets() as u32;
            let mut leaf = tree.leaves()[bucket as usize];
            leaf.sub_digest(&old).expect("every leaf holds an entry");
            leaf.add_digest(&new);
            tree.set_leaf(bucket, leaf);
        })
    });
    let root = tree.root();
    g.bench_function("tree_hash", |b| b.iter(|| node_hash(black_box(&root))));
    g.finish();
}

criterion_group!(benches, bench_digest);
