//! The agent's exchange driver, between two agents over in-memory stores
//! (`link::mem`: every message encoded and answered by the peer's real Peer
//! service), finds exactly the keys on which they differ, with both sides'
//! versions, in a bounded number of rounds, including when one side is
//! empty.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use std::sync::Arc;

use mend_agent::link::mem::{Counting, pair};
use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::{MemBackend, RangeView, Store, StoreConfig, Write};

fn store(node: &str, shape: TreeShape) -> Arc<Store<MemBackend>> {
    let cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"exchange test"),
        Some(vec![RangeSpec::whole("all", shape)]),
    );
    Arc::new(Store::open(MemBackend::new(), cfg).unwrap())
}

fn v(ms: u64, seq: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new("origin").unwrap(),
        seq,
    }
}

fn load(s: &Store<MemBackend>, n: u64) {
    let writes: Vec<Write> = (0..n)
        .map(|i| Write::put(format!("key-{i:07}"), format!("value-{i}")).at(v(1_000 + i, i)))
        .collect();
    for c in writes.chunks(1000) {
        s.write(c.to_vec()).unwrap();
    }
}

/// Round trips of the handshake: challenge, then handshake.
const HANDSHAKE_ROUNDS: u32 = 2;

/// `a`'s agent diffs against `b`'s (the agent's own exchange driver over
/// `link::mem`).
fn exchange(
    a: &Arc<Store<MemBackend>>,
    b: &Arc<Store<MemBackend>>,
) -> Result<mend_agent::outcome::DiffOutcome, mend_agent::error::AgentError> {
    let agent = pair(a.clone(), b.clone(), Arc::new(Counting::default()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let peer = b.node_id().to_string();
    rt.block_on(mend_agent::exchange::diff(&agent, &peer, None))
}

fn diff(
    a: &Arc<Store<MemBackend>>,
    b: &Arc<Store<MemBackend>>,
) -> (BTreeSet<Vec<u8>>, u32, Vec<mend_core::exchange::Divergence>) {
    let out = exchange(a, b).unwrap();
    let divs: Vec<_> = out.keys.into_iter().map(|k| k.div).collect();
    (
        divs.iter().map(|d| d.key.clone()).collect(),
        out.cost.rounds,
        divs,
    )
}

#[test]
fn finds_exactly_the_injected_keys_with_both_versions() {
    let shape = TreeShape::new(16, 3).unwrap();
    let (a, b) = (store("a", shape), store("b", shape));
    load(&a, 5000);
    load(&b, 5000);
    let mut expected = BTreeSet::new();
    // Missing on b: written only to a.
    a.write(vec![Write::put("only-a", "x").at(v(9_000, 1))])
        .unwrap();
    expected.insert(b"only-a".to_vec());
    // Missing on a.
    b.write(vec![Write::put("only-b", "y").at(v(9_001, 2))])
        .unwrap();
    expected.insert(b"only-b".to_vec());
    // Stale on b: a newer update reached only a.
    a.write(vec![Write::put("key-0000010", "newer").at(v(9_002, 3))])
        .unwrap();
    expected.insert(b"key-0000010".to_vec());
    // A delete that reached only b.
    b.write(vec![Write::delete("key-0000020").at(v(9_003, 4))])
        .unwrap();
    expected.insert(b"key-0000020".to_vec());
    // Conflict: same version, different value.
    a.write(vec![Write::put("conflict", "one").at(v(9_004, 5))])
        .unwrap();
    b.write(vec![Write::put("conflict", "two").at(v(9_004, 5))])
        .unwrap();
    expected.insert(b"conflict".to_vec());
    let (found, rounds, divs) = diff(&a, &b);
    assert_eq!(found, expected);
    assert!(
        rounds <= 3 + 2,
        "rounds {rounds} exceed ceil(log16 4096) + 2"
    );
    let stale = divs.iter().find(|d| d.key == b"key-0000010").unwrap();
    assert_eq!(stale.local.as_ref().unwrap().version.ms, 9_002);
    assert_eq!(stale.peer.as_ref().unwrap().version.ms, 1_010);
    let only_a = divs.iter().find(|d| d.key == b"only-a").unwrap();
    assert!(only_a.local.is_some() && only_a.peer.is_none());
    let del = divs.iter().find(|d| d.key == b"key-0000020").unwrap();
    assert!(del.peer.as_ref().unwrap().tombstone && !del.local.as_ref().unwrap().tombstone);
    // Symmetric from the other side.
    let (found_rev, _, _) = diff(&b, &a);
    assert_eq!(found_rev, expected);
}

#[test]
fn in_sync_replicas_take_only_the_handshake() {
    let shape = TreeShape::new(16, 3).unwrap();
    let (a, b) = (store("a", shape), store("b", shape));
    load(&a, 2000);
    load(&b, 2000);
    let (found, rounds, _) = diff(&a, &b);
    assert!(found.is_empty());
    assert_eq!(rounds, HANDSHAKE_ROUNDS);
}

#[test]
fn a_single_difference_takes_at_most_three_rounds_after_the_handshake_at_depth_four() {
    let shape = TreeShape::new(16, 4).unwrap();
    let (a, b) = (store("a", shape), store("b", shape));
    load(&a, 3000);
    load(&b, 3000);
    b.write(vec![Write::put("key-0000007", "changed").at(v(50_000, 9))])
        .unwrap();
    let (found, rounds, _) = diff(&a, &b);
    assert_eq!(found.len(), 1);
    assert!(rounds <= HANDSHAKE_ROUNDS + 3, "rounds {rounds}");
}

#[test]
fn wiped_or_empty_replicas_yield_every_key() {
    for depth in [2, 3, 4] {
        let shape = TreeShape::new(16, depth).unwrap();
        let (a, b) = (store("a", shape), store("b", shape));
        load(&a, 1500);
        let (found, _, divs) = diff(&a, &b);
        assert_eq!(found.len(), 1500, "peer empty, depth {depth}");
        assert!(divs.iter().all(|d| d.local.is_some() && d.peer.is_none()));
        let (found, _, divs) = diff(&b, &a);
        assert_eq!(found.len(), 1500, "local empty, depth {depth}");
        assert!(divs.iter().all(|d| d.local.is_none() && d.peer.is_some()));
    }
}

#[test]
fn random_divergence_is_found_exactly() {
    // A fixed-seed sweep: a cheap xorshift picks which keys differ how.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..6 {
        let shape = TreeShape::new(if round % 2 == 0 { 16 } else { 4 }, 3).unwrap();
        let (a, b) = (store("a", shape), store("b", shape));
        load(&a, 2000);
        load(&b, 2000);
        let mut expected = BTreeSet::new();
        let d = 1 + rnd() % 200;
        for j in 0..d {
            let k = format!("key-{:07}", rnd() % 2500);
            let side = if rnd() % 2 == 0 { &a } else { &b };
            let w = match rnd() % 3 {
                0 => Write::put(k.clone(), format!("changed-{j}")).at(v(100_000 + j, j)),
                1 => Write::delete(k.clone()).at(v(100_000 + j, j)),
                _ => Write::put(k.clone(), "same-version-other-value").at(v(1_000, 0)),
            };
            side.write(vec![w]).unwrap();
        }
        // Expected = keys whose entries differ, computed by brute force.
        for i in 0..2500u64 {
            let k = format!("key-{i:07}");
            let (ea, eb) = (a.get(k.as_bytes()).unwrap(), b.get(k.as_bytes()).unwrap());
            if ea != eb {
                expected.insert(k.into_bytes());
            }
        }
        let (found, _, _) = diff(&a, &b);
        assert_eq!(found, expected, "round {round}");
    }
}

#[test]
fn a_wiped_initiator_gets_the_listing_in_replies_under_the_size_limit() {
    // Proves a span answer larger than LEAF_REPLY_BYTES_MAX is split, and
    // the initiator still finds every key.
    use mend_core::exchange::{BucketQuery, LEAF_REPLY_BYTES_MAX, LeafProbe, respond_leaves};
    let shape = TreeShape::new(16, 2).unwrap();
    let (full, empty) = (store("a", shape), store("b", shape));
    let big: Vec<Write> = (0..1500u64)
        .map(|i| Write::put(format!("{i:04}-{}", "k".repeat(1000)), "v").at(v(10 + i, i)))
        .collect();
    full.write(big).unwrap();
    let view = RangeView::new(&full, 0).unwrap();
    let lp = LeafProbe {
        queries: vec![BucketQuery {
            first: 0,
            count: 256,
            hashes: vec![],
        }],
    };
    let replies = respond_leaves(&view, &lp).unwrap();
    assert!(replies.len() >= 2, "split into {} replies", replies.len());
    for r in &replies {
        let bytes: usize = r.extra.iter().map(|e| e.key.len() + 96).sum();
        assert!(bytes <= LEAF_REPLY_BYTES_MAX, "{bytes}");
    }
    let (found, _, divs) = diff(&empty, &full);
    assert_eq!(found.len(), 1500);
    assert!(divs.iter().all(|d| d.local.is_none() && d.peer.is_some()));
}

#[tokio::test]
async fn the_dashboards_cluster_view_handshakes_at_most_once_per_cache_window() {
    // The HTTP port is unauthenticated: however often /api/cluster is
    // asked, the agent handshakes with its peers once per CLUSTER_CACHE_MS.
    let wire = Arc::new(Counting::default());
    let a = pair(
        store("node-a", TreeShape::default()),
        store("node-b", TreeShape::default()),
        wire.clone(),
    );
    let first = mend_agent::dashboard::cluster_cached(&a).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].reachable, "{first:?}");
    assert!(
        first[0].ranges.iter().all(|r| r.in_sync),
        "two empty stores agree"
    );
    let asked = wire.get(mend_agent::link::mem::Rpc::Handshake, false).0;
    assert_eq!(asked, 1);
    for _ in 0..10 {
        let again = mend_agent::dashboard::cluster_cached(&a).await.unwrap();
        assert_eq!(again.len(), 1);
    }
    assert_eq!(
        wire.get(mend_agent::link::mem::Rpc::Handshake, false).0,
        asked,
        "answered from the cache"
    );
}

#[test]
fn a_digest_only_replica_diffs_like_a_value_holding_one_and_is_not_repaired() {
    // Proves a range fed with value hashes (ingest) has the same tree as a
    // replica holding the values, the exchange finds exactly the keys that
    // differ with the usual categories, and the repair plan leaves the
    // digest-only range's keys to the source's adapter.
    use mend_core::digest::value_hash;
    use mend_core::{Category, RangeMode};
    use mend_store::{IngestBatch, IngestEntry};
    let shape = TreeShape::new(16, 3).unwrap();
    let mut spec = RangeSpec::whole("all", shape);
    spec.mode = RangeMode::Digests;
    let cfg = StoreConfig::new(
        NodeId::new("a").unwrap(),
        Secret::from_bytes(b"exchange test"),
        Some(vec![spec]),
    );
    let a = Arc::new(Store::open(MemBackend::new(), cfg).unwrap());
    let b = store("b", shape);
    load(&b, 3000);
    let entry = |key: String, version: Version, value: &str| IngestEntry {
        key: key.into_bytes(),
        version,
        value_hash: Some(value_hash(value.as_bytes())),
    };
    let all: Vec<IngestEntry> = (0..3000u64)
        .map(|i| {
            entry(
                format!("key-{i:07}"),
                v(1_000 + i, i),
                &format!("value-{i}"),
            )
        })
        .collect();
    for (n, c) in all.chunks(1000).enumerate() {
        a.ingest(IngestBatch {
            range: 0,
            source: "feed".into(),
            position_to: (n as u64 + 1).to_be_bytes().to_vec(),
            entries: c.to_vec(),
        })
        .unwrap();
    }
    assert_eq!(a.root(0).unwrap(), b.root(0).unwrap());
    let (keys, rounds, _) = diff(&a, &b);
    assert!(keys.is_empty());
    assert_eq!(rounds, HANDSHAKE_ROUNDS, "in sync after the handshake");

    a.ingest(IngestBatch {
        range: 0,
        source: "feed".into(),
        position_to: 4u64.to_be_bytes().to_vec(),
        entries: vec![entry("only-a".into(), v(9_000, 1), "x")],
    })
    .unwrap();
    b.write(vec![Write::put("key-0000009", "newer").at(v(9_001, 2))])
        .unwrap();
    let agent = pair(a.clone(), b.clone(), Arc::new(Counting::default()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let out = rt
        .block_on(mend_agent::exchange::diff(&agent, "b", None))
        .unwrap();
    let found: Vec<(Vec<u8>, Category)> = out
        .keys
        .iter()
        .map(|k| (k.div.key.clone(), k.category))
        .collect();
    assert_eq!(
        found,
        vec![
            (b"key-0000009".to_vec(), Category::Stale),
            (b"only-a".to_vec(), Category::Missing),
        ]
    );
    let (planned, skipped) = mend_agent::repair::plan_for(&agent, &out, &[]);
    assert!(planned.is_empty(), "{planned:?}");
    assert_eq!(skipped.len(), 2);
    assert!(skipped.iter().all(|(_, why)| why.reason
        == mend_core::playbook::SkipReason::DigestOnly
        && why.text == mend_agent::repair::DIGEST_ONLY_SKIP));
}

/// Trees deepen as their ranges grow, each replica on its own: a replica
/// at 16^2 and one deepened to 16^4 compare at depth 2 (the handshake
/// names each side's depth, every probe and leaf request the compared
/// one), find exactly the keys that differ from either side, and take only
/// the handshake when in sync.
#[test]
fn trees_of_different_depths_compare_at_the_smaller() {
    let shape = TreeShape::new(16, 2).unwrap();
    let (a, b) = (store("a", shape), store("b", shape));
    load(&a, 5000);
    load(&b, 5000);
    b.deepen(0).unwrap();
    b.deepen(0).unwrap();
    assert_eq!(b.shape(0).unwrap().depth, 4);
    let (found, rounds, _) = diff(&a, &b);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(rounds, HANDSHAKE_ROUNDS);
    let mut expected = BTreeSet::new();
    a.write(vec![Write::put("only-a", "x").at(v(9_000, 1))])
        .unwrap();
    expected.insert(b"only-a".to_vec());
    b.write(vec![Write::put("key-0000010", "newer").at(v(9_002, 3))])
        .unwrap();
    expected.insert(b"key-0000010".to_vec());
    b.write(vec![Write::delete("key-0000020").at(v(9_003, 4))])
        .unwrap();
    expected.insert(b"key-0000020".to_vec());
    for (x, y) in [(&a, &b), (&b, &a)] {
        let (found, rounds, divs) = diff(x, y);
        assert_eq!(found, expected);
        assert!(
            rounds <= HANDSHAKE_ROUNDS + 2 + 1,
            "rounds {rounds}: the shared depth is 2"
        );
        let stale = divs.iter().find(|d| d.key == b"key-0000010").unwrap();
        let (mine, theirs) = if Arc::ptr_eq(x, &b) {
            (9_002, 1_010)
        } else {
            (1_010, 9_002)
        };
        assert_eq!(stale.local.as_ref().unwrap().version.ms, mine);
        assert_eq!(stale.peer.as_ref().unwrap().version.ms, theirs);
    }
}

/// Trees of different fan-outs cannot be compared at any depth: the
/// handshake refuses with the reason, from both sides.
#[test]
fn a_fanout_mismatch_is_a_clear_error() {
    let (a, b) = (
        store("a", TreeShape::new(16, 2).unwrap()),
        store("b", TreeShape::new(4, 4).unwrap()),
    );
    for (x, y) in [(&a, &b), (&b, &a)] {
        let e = exchange(x, y).unwrap_err();
        assert!(e.message().contains("fan-out mismatch"), "{}", e.message());
    }
}

/// The agent's deepening check deepens a range whose entries pass
/// `deepen.entries_per_bucket` per bucket (5000 over 16^2 = 256 buckets is
/// 19.5 each), one level per check, stops when the range is below the
/// threshold (5000 over 4096), publishes each range's depth, and does
/// nothing at `entries_per_bucket = 0`.
#[test]
fn the_agent_deepens_ranges_past_the_threshold() {
    let shape = TreeShape::new(16, 2).unwrap();
    let (a, b) = (store("a", shape), store("b", shape));
    load(&a, 5000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let off = mend_agent::link::mem::pair_with(
        a.clone(),
        b.clone(),
        Arc::new(Counting::default()),
        |c| {
            c.deepen.entries_per_bucket = 0;
        },
    );
    assert!(
        rt.block_on(mend_agent::deepen::check(&off))
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.shape(0).unwrap().depth, 2);
    let agent = pair(a.clone(), b.clone(), Arc::new(Counting::default()));
    let done = rt.block_on(mend_agent::deepen::check(&agent)).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].from.depth, done[0].to.depth, done[0].entries),
        (2, 3, 5000)
    );
    assert_eq!(a.shape(0).unwrap().depth, 3);
    assert!(
        rt.block_on(mend_agent::deepen::check(&agent))
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.shape(0).unwrap().depth, 3);
    let text = agent.metrics.encode().unwrap();
    assert!(text.contains("mend_tree_depth{range=\"all\"} 3"), "{text}");
    assert!(
        text.contains("mend_tree_deepenings_total{range=\"all\",outcome=\"done\"} 1"),
        "{text}"
    );
    assert!(a.verify().unwrap().ok());
    // Due (70 000 entries over 16^3 is 17 per bucket), but 16^4 would be a
    // 2.8 MiB tree, past a 1 MiB `deepen.tree_bytes_max`.
    let big = store("c", TreeShape::new(16, 3).unwrap());
    load(&big, 70_000);
    assert!(big.deepen_due(0, 16).unwrap());
    let capped = mend_agent::link::mem::pair_with(
        big.clone(),
        b.clone(),
        Arc::new(Counting::default()),
        |c| {
            c.deepen.tree_bytes_max = 1 << 20;
        },
    );
    assert!(
        rt.block_on(mend_agent::deepen::check(&capped))
            .unwrap()
            .is_empty()
    );
    assert_eq!(big.shape(0).unwrap().depth, 3);
}

/// A tree out of step with its data on the deeper side is found through
/// the shallower comparison and fixed where it is wrong: the quiet bucket
/// at the compared depth (16^2) covers 256 buckets of the deeper tree
/// (16^4), and the one corrupted among them is rebuilt.
#[test]
fn a_tree_mismatch_on_the_deeper_side_is_fixed_in_its_finer_bucket() {
    use mend_store::{Backend, Cf, Op};
    let shape = TreeShape::new(16, 2).unwrap();
    let (a, b) = (store("a", shape), store("b", shape));
    load(&a, 5000);
    load(&b, 5000);
    a.deepen(0).unwrap();
    a.deepen(0).unwrap();
    let (_, bucket, _) = a.locate(b"key-0000042").unwrap();
    let leaf_key = a.layout(0, 4).unwrap().leaf_key(bucket);
    let backend = Arc::try_unwrap(a).unwrap().into_backend();
    backend
        .write(vec![Op::Put(Cf::Leaves, leaf_key, vec![0x5a; 40])], true)
        .unwrap();
    let cfg = StoreConfig::new(
        NodeId::new("a").unwrap(),
        Secret::from_bytes(b"exchange test"),
        None,
    );
    let a = Arc::new(Store::open(backend, cfg).unwrap());
    assert_eq!(a.shape(0).unwrap().depth, 4);
    assert!(!a.verify().unwrap().ok());
    let out = exchange(&a, &b).unwrap();
    assert!(out.keys.is_empty());
    assert_eq!(out.tree_mismatches.len(), 1, "{:?}", out.tree_mismatches);
    assert_eq!(
        out.tree_mismatches[0].buckets,
        vec![bucket >> 8],
        "quiet at depth 2"
    );
    assert_eq!(
        out.tree_mismatches[0].fixed,
        vec![bucket],
        "fixed at depth 4"
    );
    assert!(a.verify().unwrap().ok());
}
