//! Ingest into digest-only ranges on real agents: two agents fed the same
//! change feed (with a few injected differences), one killed with SIGKILL
//! mid-stream, restarted and resumed from its acknowledged position; the
//! diff then finds exactly the injected keys with the right categories,
//! and redelivering an acknowledged batch changes nothing.

use std::collections::BTreeMap;

use mend_core::digest::value_hash;
use mend_rpc::pb;
use mend_rpc::pb::ingest_client::IngestClient;
use tokio_stream::StreamExt;

use crate::harness::*;

/// Changes per batch, and batches in the feed.
const PER_BATCH: u64 = 40;
const BATCHES: u64 = 8;

/// The agents' ranges: `orders` (keys before "p") holds digests only,
/// `plain` holds values.
const CONFIG: &str = r#"
[[ranges]]
name = "orders"
end = [112]
mode = "digests"
shape = { fanout = 16, depth = 2 }

[[ranges]]
name = "plain"
start = [112]
shape = { fanout = 16, depth = 2 }
"#;

/// Which side a feed is for; the feeds differ only in the injected keys.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    A,
    B,
}

fn entry(key: &str, ms: u64, seq: u64, value: Option<&str>) -> pb::IngestEntry {
    pb::IngestEntry {
        key: key.as_bytes().to_vec(),
        version: ver(ms, "pg-primary", seq),
        value_digest: value
            .map(|v| value_hash(v.as_bytes()).to_vec())
            .unwrap_or_default(),
        tombstone: value.is_none(),
    }
}

fn position(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// The feed as side `side` sees it, and the injected differences (key →
/// category `mend diff` must report). Batch `n` reaches position `n + 1`.
fn feed(side: Side, t0: u64) -> (Vec<pb::IngestBatch>, BTreeMap<String, &'static str>) {
    let mut injected = BTreeMap::new();
    let mut batches = Vec::new();
    for n in 0..BATCHES {
        let mut entries = Vec::new();
        for i in n * PER_BATCH..(n + 1) * PER_BATCH {
            let key = format!("order-{i:05}");
            let (ms, seq) = (t0 + i, i + 1);
            let value = format!("row {i}");
            let e = match i {
                // A change that never reached A's replica.
                3 | 170 | 301 => {
                    injected.insert(key.clone(), "missing");
                    if side == Side::A {
                        continue;
                    }
                    entry(&key, ms, seq, Some(&value))
                }
                // Same version, other content on A (a non-deterministic
                // apply on that replica).
                12 | 250 => {
                    injected.insert(key.clone(), "conflict");
                    let v = if side == Side::A { "corrupt" } else { &value };
                    entry(&key, ms, seq, Some(v))
                }
                // A delete that reached B only; A keeps the older row.
                45 | 290 => {
                    injected.insert(key.clone(), "unpropagated_delete");
                    if side == Side::A {
                        entry(&key, ms, seq, Some(&value))
                    } else {
                        entries.push(entry(&key, ms, seq, Some(&value)));
                        entry(&key, ms + 1, seq + 100_000, None)
                    }
                }
                // An update that reached B only.
                77 => {
                    injected.insert(key.clone(), "stale");
                    if side == Side::A {
                        entry(&key, ms, seq, Some(&value))
                    } else {
                        entries.push(entry(&key, ms, seq, Some(&value)));
                        entry(&key, ms + 1, seq + 100_000, Some("updated"))
                    }
                }
                _ => entry(&key, ms, seq, Some(&value)),
            };
            entries.push(e);
        }
        batches.push(pb::IngestBatch {
            source: "pg-orders".into(),
            range: "orders".into(),
            position_to: position(n + 1),
            entries,
        });
    }
    (batches, injected)
}

/// Sends `batches` on one Ingest stream and returns the acknowledgements
/// (all of them: the stream ends when every batch is acknowledged).
async fn send(addr: &str, batches: Vec<pb::IngestBatch>) -> Vec<pb::IngestAck> {
    let n = batches.len();
    let mut client = IngestClient::new(channel(addr).await);
    let mut acks = client
        .ingest(tokio_stream::iter(batches))
        .await
        .expect("open ingest stream")
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = acks.next().await {
        out.push(a.expect("ack"));
    }
    assert_eq!(out.len(), n, "one ack per batch");
    out
}

/// The durable position of the feed at `addr`, as a batch count.
async fn resume_from(addr: &str) -> u64 {
    let r = IngestClient::new(channel(addr).await)
        .position(pb::IngestPositionRequest {
            source: "pg-orders".into(),
            range: "orders".into(),
        })
        .await
        .expect("position")
        .into_inner();
    if !r.found {
        return 0;
    }
    u64::from_be_bytes(r.position.as_slice().try_into().expect("8-byte position"))
}

/// The divergent keys of a diff from `a` to `b`, with their categories.
fn diff(a: &str, b: &str) -> (serde_json::Value, BTreeMap<String, String>) {
    let (code, v) = mend_json(&["diff", "--agent", a, "--peer", b]);
    assert_eq!(code, 1, "diverged: {}", v["summary"]);
    let keys = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            assert_eq!(k["range"], "orders");
            (
                k["key"].as_str().unwrap().to_string(),
                k["category"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (v, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_survives_sigkill_and_diff_finds_exactly_the_injected_keys() {
    // Proves an adapter that resumes from the acknowledged position after
    // SIGKILL loses and doubles nothing (the position commits with the
    // entries), and that digest-only ranges diff like value-holding ones.
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("ingest.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let c = cfg.to_str().unwrap();
    let (a_dir, b_dir) = (d.path().join("a"), d.path().join("b"));
    let mut a = AgentProc::start("node-a", &a_dir, &["--config", c]);
    let b = AgentProc::start("node-b", &b_dir, &["--config", c]);
    let t0 = now_ms() - 3_600_000;
    let (feed_a, injected) = feed(Side::A, t0);
    let (feed_b, _) = feed(Side::B, t0);

    let acks = send(&b.addr, feed_b).await;
    assert!(acks.iter().all(|k| k.advanced && k.conflicts == 0));
    assert_eq!(resume_from(&b.addr).await, BATCHES);

    // A: three batches acknowledged, then more sent and the agent killed
    // with SIGKILL before their acknowledgements are read.
    let acks = send(&a.addr, feed_a[..3].to_vec()).await;
    assert_eq!(acks[2].position, position(3));
    let mut client = IngestClient::new(channel(&a.addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(BATCHES as usize);
    let mut stream = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for b in &feed_a[3..6] {
        tx.send(b.clone()).await.unwrap();
    }
    // The first of them acknowledged: the kill lands mid-stream, with
    // batches after it in flight or durable but not acknowledged.
    let first = stream.next().await.expect("an ack").expect("ack");
    assert_eq!(first.position, position(4));
    a.kill();
    drop((tx, stream, client));

    a = AgentProc::start("node-a", &a_dir, &["--config", c]);
    let from = resume_from(&a.addr).await;
    assert!(
        (4..=6).contains(&from),
        "resumes at or after the last acknowledged batch, not past the last sent: {from}"
    );
    let rest = send(&a.addr, feed_a[from as usize..].to_vec()).await;
    assert!(
        rest.iter()
            .all(|k| k.advanced && k.duplicates == 0 && k.conflicts == 0)
    );
    assert_eq!(resume_from(&a.addr).await, BATCHES);

    let (v, found) = diff(&a.addr, &b.addr);
    let want: BTreeMap<String, String> = injected
        .iter()
        .map(|(k, c)| (k.clone(), c.to_string()))
        .collect();
    assert_eq!(found, want, "exactly the injected keys: {}", v["summary"]);
    assert_eq!(v["by_category"]["missing"], 3);
    assert_eq!(v["by_category"]["conflict"], 2);

    // Redelivering acknowledged batches (an adapter that resumed from an
    // older position) changes nothing: duplicates (or stale, for keys
    // changed since), the position stays, the diff is the same.
    let again = send(&a.addr, feed_a[1..3].to_vec()).await;
    for (k, sent) in again.iter().zip(&feed_a[1..3]) {
        assert!(!k.advanced);
        assert_eq!(k.position, position(BATCHES));
        assert_eq!(k.applied + k.conflicts, 0, "{k:?}");
        assert_eq!((k.duplicates + k.stale) as usize, sent.entries.len());
    }
    assert_eq!(diff(&a.addr, &b.addr).1, want);

    // The modes refuse the other path, with clear statuses.
    let mut replica = a.replica().await;
    let e = replica
        .put(pb::PutRequest {
            key: b"order-00001".to_vec(),
            value: b"v".to_vec(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let mut into_values = feed_a[0].clone();
    into_values.range = "plain".into();
    into_values.entries = vec![entry("plain-1", t0, 1, Some("x"))];
    let mut client = IngestClient::new(channel(&a.addr).await);
    let e = refused(&mut client, into_values).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let mut bad = feed_a[0].clone();
    bad.position_to = vec![0; mend_core::limits::POSITION_BYTES_MAX + 1];
    let e = refused(&mut client, bad).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("position_to"), "{e}");

    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_needs_the_replica_role() {
    // Proves the Ingest service is behind the replica role: a peer's or an
    // operator's certificate is refused before anything is written, naming
    // roles.replica; a writer's certificate is served.
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("ingest.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap()],
    );
    let (batches, _) = feed(Side::A, now_ms() - 3_600_000);
    for name in ["node-x", "operator"] {
        let mut c = IngestClient::new(channel_as(&a.addr, name).await);
        let e = c
            .ingest(tokio_stream::iter(vec![batches[0].clone()]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{name}: {e}");
        assert!(e.message().contains("roles.replica"), "{e}");
        let e = c
            .position(pb::IngestPositionRequest {
                source: "pg-orders".into(),
                range: "orders".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{name}: {e}");
    }
    assert_eq!(resume_from(&a.addr).await, 0, "nothing was written");
    let mut w = IngestClient::new(channel_as(&a.addr, "replica").await);
    let acks: Vec<_> = w
        .ingest(tokio_stream::iter(vec![batches[0].clone()]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].as_ref().unwrap().position, position(1));
    a.stop();
}

/// The error that ends an Ingest stream whose first batch is `batch`.
async fn refused(
    client: &mut IngestClient<tonic::transport::Channel>,
    batch: pb::IngestBatch,
) -> tonic::Status {
    client
        .ingest(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .expect("a reply")
        .unwrap_err()
}
