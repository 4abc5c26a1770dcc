//! One report, every surface: the report the agent builds from a real
//! exchange ([`mend_agent::report::build`]) is the report a client rebuilds
//! from the wire (`DivergentKey`s plus the `DiffSummary`,
//! `mend_rpc::report::report_from_pb`), and the JSON of either is the same
//! value. `mend diff --json`, the webhook, `/status` and the dashboard all
//! serialize that one type, so a field that one surface drops or renames
//! fails here (the review found `seq_gaps` and `nodes_compared` missing from
//! the CLI JSON while a comment said the shapes were the same).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mend_agent::link::mem::{Counting, pair};
use mend_core::report::DiffReport;
use mend_core::{Category, NodeId, RangeSpec, Secret, Side, TreeShape, Version};
use mend_store::{MemBackend, Store, StoreConfig, Write};

fn store(node: &str) -> Arc<Store<MemBackend>> {
    let cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"report test"),
        Some(vec![RangeSpec::whole(
            "all",
            TreeShape::new(16, 2).unwrap(),
        )]),
    );
    Arc::new(Store::open(MemBackend::new(), cfg).unwrap())
}

fn v(origin: &str, ms: u64, seq: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new(origin).unwrap(),
        seq,
    }
}

/// Both sides share 500 keys; `b` lacks 20 writes of origin `node-c`
/// (seq 100–119), one of them under a key that is not UTF-8; the two
/// sides conflict on one key (the same version, different values).
fn diverged() -> (Arc<Store<MemBackend>>, Arc<Store<MemBackend>>) {
    let (a, b) = (store("a"), store("b"));
    let common: Vec<Write> = (0..500u64)
        .map(|i| Write::put(format!("k-{i:04}"), "v").at(v("origin", 1_000 + i, i)))
        .collect();
    a.write(common.clone()).unwrap();
    b.write(common).unwrap();
    let lost: Vec<Write> = (0..20u64)
        .map(|i| {
            let key = if i == 0 {
                vec![0xff, 0xfe, b'x']
            } else {
                format!("lost-{i:02}").into_bytes()
            };
            Write::put(key, "w").at(v("node-c", 50_000 + i, 100 + i))
        })
        .collect();
    a.write(lost).unwrap();
    a.write(vec![Write::put("both", "a").at(v("node-a", 60_000, 1))])
        .unwrap();
    b.write(vec![Write::put("both", "b").at(v("node-a", 60_000, 1))])
        .unwrap();
    (a, b)
}

/// `a`'s diff with `b` over the in-memory link (every message encoded and
/// answered by `b`'s real Peer service).
fn exchange() -> mend_agent::outcome::DiffOutcome {
    let (a, b) = diverged();
    let agent = pair(a, b, Arc::new(Counting::default()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(mend_agent::exchange::diff(&agent, "b", None))
        .unwrap()
}

#[test]
fn the_wire_report_is_the_report_the_agent_built() {
    let out = exchange();
    let now_ms = 10_000_000;
    let attribution =
        mend_agent::report::attribution(&out, now_ms, mend_agent::report::SOURCE_WINDOW_GAP_MS);
    let built = mend_agent::report::build(&out, &attribution, usize::MAX);

    // What the agent built is the diff that was set up.
    assert_eq!(built.divergent_keys, 21);
    assert_eq!(built.by_category[&Category::Missing], 20);
    assert_eq!(built.by_category[&Category::Conflict], 1);
    assert!(built.nodes_compared > 0 && built.rounds > 0);
    let gaps = built
        .sources
        .iter()
        .find_map(|s| s.seq_gaps.as_ref())
        .expect("the lost writes of node-c are a source with seq gaps");
    assert_eq!((gaps.missing_on, gaps.missing), (Side::Peer, 20));
    assert_eq!(gaps.ranges, vec![(100, 119)]);
    let odd = built
        .keys
        .iter()
        .find(|k| k.key_hex == "fffe78")
        .expect("the non-UTF-8 key is reported");
    assert_eq!(odd.behind, Some(Side::Peer));

    // The wire carries it whole: keys, then the summary.
    let keys: Vec<_> = out
        .keys
        .iter()
        .map(mend_agent::service::operator::key_pb)
        .collect();
    let summary = mend_rpc::report::summary_to_pb(&built);
    let rebuilt = mend_rpc::report::report_from_pb(&keys, &summary).unwrap();
    assert_eq!(rebuilt, built);

    // And its JSON (`mend diff --json`, the webhook, `/status`) reads back
    // as the same report.
    let json = serde_json::to_value(&rebuilt).unwrap();
    assert_eq!(json["sources"][0]["seq_gaps"]["missing"], 20);
    assert!(json["nodes_compared"].as_u64().unwrap() > 0);
    let back: DiffReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, built);
}

#[test]
fn a_report_cut_to_fewer_keys_counts_what_it_left_out() {
    let out = exchange();
    let attribution = mend_agent::report::attribution(&out, 10_000_000, 60_000);
    let cut = mend_agent::report::build(&out, &attribution, 5);
    assert_eq!(cut.keys.len(), 5);
    assert_eq!(cut.keys_omitted, 16);
    assert_eq!(cut.divergent_keys, 21);
    // The wire rebuilds the count from the keys it was sent.
    let keys: Vec<_> = out.keys[..5]
        .iter()
        .map(mend_agent::service::operator::key_pb)
        .collect();
    let rebuilt =
        mend_rpc::report::report_from_pb(&keys, &mend_rpc::report::summary_to_pb(&cut)).unwrap();
    assert_eq!(rebuilt, cut);
}
