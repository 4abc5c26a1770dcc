//! End-to-end tests of the agent: real `mend agent` processes on loopback,
//! driven through the `mend` CLI and raw gRPC.

use std::collections::BTreeMap;

use mend_rpc::{PROTOCOL_VERSION, pb};
use serde_json::Value;

use crate::harness::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Two agents with the same 3000 keys, then divergence of every category
/// injected between them; returns (a, b, expected key → (category, behind)).
async fn diverged(
    dir: &std::path::Path,
) -> (
    AgentProc,
    AgentProc,
    BTreeMap<String, (String, Option<String>)>,
) {
    // node-a stores a version stamped beyond the allowed skew (a clock
    // running ahead at the origin) instead of refusing it, so the diff
    // can show `future_version`.
    let cfg = dir.join("a.toml");
    std::fs::write(&cfg, "future_writes = \"accept\"\n").unwrap();
    let a = AgentProc::start(
        "node-a",
        &dir.join("a"),
        &["--config", cfg.to_str().unwrap()],
    );
    let b = AgentProc::start("node-b", &dir.join("b"), &[]);
    let t = now_ms();
    let base = t - 3_600_000;
    write(&a, base_data(3000, base)).await;
    write(&b, base_data(3000, base)).await;
    let old = t - 60_000;
    let mut exp = BTreeMap::new();
    let mut e = |k: &str, c: &str, behind: Option<&str>| {
        exp.insert(k.to_string(), (c.to_string(), behind.map(String::from)));
    };
    write(
        &a,
        vec![
            put("lost-1", "x", ver(old, "node-c", 10)),
            put("lost-2", "x", ver(old + 1, "node-c", 11)),
            put("key-000010", "newer", ver(old + 2, "node-a", 1)),
            del("key-000020", ver(old + 3, "node-a", 2)),
            del("never-existed", ver(old + 4, "node-a", 3)),
            put("conflict", "one", ver(old + 5, "node-c", 12)),
            // Ahead by more than the allowed skew (clock_skew_ms, 1 s);
            // node-a accepts it (future_writes = "accept").
            put("future", "ahead", ver(t + 45_000, "node-a", 4)),
            put("fresh", "just now", ver(t, "node-a", 5)),
        ],
    )
    .await;
    write(
        &b,
        vec![
            put("conflict", "two", ver(old + 5, "node-c", 12)),
            put("only-b", "y", ver(old + 6, "node-b", 1)),
            put("key-000030", "newer on b", ver(old + 7, "node-b", 2)),
        ],
    )
    .await;
    e("lost-1", "missing", Some("peer"));
    e("lost-2", "missing", Some("peer"));
    e("key-000010", "stale", Some("peer"));
    e("key-000020", "unpropagated_delete", Some("peer"));
    e("never-existed", "unpropagated_delete", Some("peer"));
    e("conflict", "conflict", None);
    e("future", "future_version", Some("peer"));
    e("fresh", "in_flight", Some("peer"));
    e("only-b", "missing", Some("local"));
    e("key-000030", "stale", Some("local"));
    (a, b, exp)
}

/// The keys of a report's `skipped` list whose reason contains `why`.
fn skipped_for(v: &Value, why: &str) -> Vec<String> {
    v["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter(|s| s["reason"].as_str().unwrap_or("").contains(why))
        .map(|s| s["key"].as_str().unwrap_or("").to_string())
        .collect()
}

fn found(v: &Value) -> BTreeMap<String, (String, Option<String>)> {
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap_or_default().to_string(),
                (
                    k["category"].as_str().unwrap_or_default().to_string(),
                    k["behind"].as_str().map(String::from),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_finds_exactly_the_injected_keys_repair_converges_and_undo_restores() {
    // Proves the diff names exactly the injected keys with the right category
    // and side, within the round bound; repair converges and is idempotent;
    // undo restores both sides.
    let d = tmp();
    let (a, b, exp) = diverged(d.path()).await;
    let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 1, "divergence exits 1");
    assert_eq!(found(&v), exp);
    assert_eq!(v["in_sync"], false);
    assert_eq!(v["divergent_keys"], exp.len() as u64);
    assert_eq!(v["by_category"]["missing"], 3);
    let rounds = v["rounds"].as_u64().unwrap_or(99);
    assert!(rounds <= 4 + 2, "rounds {rounds} > ceil(log16(65536)) + 2");
    let lost = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "lost-1")
        .unwrap();
    assert_eq!(lost["local"]["origin"], "node-c");
    assert_eq!(lost["local"]["seq"], 10);
    assert_eq!(lost["peer"], Value::Null);
    assert_eq!(lost["key_hex"], hex::encode("lost-1"));

    // Dry run writes nothing.
    let (code, plan) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr, "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(plan["plan"].as_array().unwrap().len(), 7);
    assert_eq!(plan["repair_id"], Value::Null);
    let (_, again) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(found(&again), exp, "a dry run changes nothing");

    // Repair: the 7 repairable keys move; conflict, future and in-flight are skipped with reasons.
    let (code, rep) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(rep["keys_repaired"], 7, "{rep}");
    assert_eq!(rep["keys_to_local"], 2);
    assert_eq!(rep["keys_to_peer"], 5);
    let skipped: Vec<&str> = rep["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(skipped.len(), 3, "{rep}");
    for k in ["conflict", "future", "fresh"] {
        assert!(skipped.contains(&k), "{k} skipped: {rep}");
    }
    let id = rep["repair_id"].as_str().unwrap().to_string();
    let (_, after) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    let left: Vec<String> = found(&after).into_keys().collect();
    assert_eq!(
        left,
        vec!["conflict", "fresh", "future"],
        "only what needs a human or time is left"
    );

    // A second repair moves nothing.
    let (_, rep2) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(rep2["keys_repaired"], 0, "{rep2}");
    assert_eq!(rep2["bytes_streamed"], 0);

    // Undo restores the pre-repair state on both sides, but for the
    // repaired delete: with tombstones purged (the default), peers may
    // already have purged theirs, so the delete stays, said so.
    let (code, u) = mend_json(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(code, 0, "{u}");
    assert_eq!(u["restored"], 6, "{u}");
    let kept = skipped_for(&u, "repaired delete");
    // key-000020 was deleted over a live value (`never-existed`, deleted
    // over nothing, is undone: removing its tombstone resurrects nothing).
    assert_eq!(kept, ["key-000020"], "{u}");
    let (_, restored) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    let mut back = exp.clone();
    back.remove("key-000020");
    assert_eq!(
        found(&restored),
        back,
        "undo brings back exactly the original divergence but the delete"
    );
    let out = mend(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(out.status.code(), Some(2), "a second undo is refused");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_write_racing_a_throttled_repair_survives() {
    // Proves the repair never overwrites a write that is newer than what it
    // streams: the newer writes land after the diff (the push has begun)
    // and before the push reaches their keys, and the peer keeps them,
    // reported as "peer kept its entry".
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let old = now_ms() - 600_000;
    let n = 600u64;
    let keys: Vec<_> = (0..n)
        .map(|i| {
            put(
                &format!("race-{i:03}"),
                "from a",
                ver(old + i, "node-a", i + 1),
            )
        })
        .collect();
    write(&a, keys).await;
    let (aa, ba) = (a.addr.clone(), b.addr.clone());
    // 100 keys/s in batches of REPAIR_BATCH_KEYS = 256: the third batch
    // (keys 512..600) goes out about 5 s after the first.
    let repair = tokio::task::spawn_blocking(move || {
        mend_json(&[
            "repair",
            "--agent",
            &aa,
            "--peer",
            &ba,
            "--rate-keys",
            "100",
        ])
    });
    // The first batch has reached b: the diff is over, the push under way.
    let mut c = b.replica().await;
    until(
        std::time::Duration::from_secs(30),
        "the push to begin",
        async || {
            let r = c
                .get(pb::GetRequest {
                    key: b"race-000".to_vec(),
                })
                .await
                .unwrap()
                .into_inner();
            r.found.then_some(())
        },
    )
    .await;
    let late = 512..n;
    let newer: Vec<_> = late
        .clone()
        .map(|i| {
            put(
                &format!("race-{i:03}"),
                "newer at b",
                ver(old + 500_000, "node-b", i),
            )
        })
        .collect();
    write(&b, newer).await;
    let (code, rep) = repair.await.unwrap();
    assert_eq!(code, 0, "{rep}");
    let kept = skipped_for(&rep, "peer kept its entry");
    let want: Vec<_> = late.clone().map(|i| format!("race-{i:03}")).collect();
    assert_eq!(kept, want, "the push met exactly the newer writes");
    assert_eq!(rep["keys_to_peer"], 512, "{}", rep["keys_to_peer"]);
    for i in 0..n {
        let r = get(&mut c, format!("race-{i:03}")).await;
        let want: &[u8] = if late.contains(&i) {
            b"newer at b"
        } else {
            b"from a"
        };
        assert_eq!(r.value, want, "race-{i:03}");
    }
    a.stop();
    b.stop();
}

/// Starts `mend ARGS` against agents of this test's cluster, output piped.
fn spawn_mend(args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .env("MEND_CLUSTER_SECRET", SECRET)
        .env("MEND_TLS_DIR", cert_set(CLIENT))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and checks it failed the CLI way: exit 2, one
/// `mend: ...` line on stderr, which it returns.
async fn one_line_failure(child: std::process::Child) -> String {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("mend: "), "{err}");
    err
}

/// `mend store verify` passes on every directory.
fn all_verify(dirs: &[std::path::PathBuf]) {
    for dir in dirs {
        let v = mend(&["store", "verify", "--data-dir", dir.to_str().unwrap()]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "verify {}: {}",
            dir.display(),
            String::from_utf8_lossy(&v.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_repair_gives_a_clear_error_and_both_stores_verify() {
    // Proves a peer dying mid-repair yields one clear error line and leaves
    // both stores consistent.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let old = now_ms() - 600_000;
    write(
        &a,
        (0..400)
            .map(|i| {
                put(
                    &format!("k-{i:04}"),
                    &"v".repeat(200),
                    ver(old + i, "node-a", i + 1),
                )
            })
            .collect(),
    )
    .await;
    let (aa, ba) = (a.addr.clone(), b.addr.clone());
    let child = spawn_mend(&[
        "repair",
        "--agent",
        &aa,
        "--peer",
        &ba,
        "--rate-keys",
        "100",
    ]);
    // Wait until b has received some of the repair, then kill it.
    let mut c = b.replica().await;
    loop {
        let r = c
            .get(pb::GetRequest {
                key: b"k-0000".to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.found {
            break;
        }
        tokio::task::yield_now().await;
    }
    let bdir = b.dir.clone();
    b.kill();
    one_line_failure(child).await;
    let adir = a.dir.clone();
    a.stop();
    all_verify(&[adir, bdir]);
}

/// Forwards connections from a local port to `target`; once `cut_after`
/// bytes have come back from `target`, reports it on `crossed` (once) and
/// closes the connection towards the client, as a dead peer's would.
async fn byte_counting_proxy(
    target: String,
    cut_after: u64,
    crossed: tokio::sync::oneshot::Sender<()>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let crossed = std::sync::Arc::new(std::sync::Mutex::new(Some(crossed)));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
            });
            let (crossed, seen) = (crossed.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = ur.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let total =
                        seen.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst) + n as u64;
                    if total >= cut_after {
                        // What the initiator sees of a dead peer: the
                        // stream stops mid-message and the connection ends.
                        if let Some(tx) = crossed.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_exchange_gives_a_clear_error_and_both_stores_verify() {
    // Proves a peer dying while it streams its leaf replies (the initiator
    // is empty, so the peer lists all 20 000 entries, ~500 KB) yields one
    // clear error line, exit 2, and leaves both stores consistent. A proxy
    // counts the peer's bytes and the peer is SIGKILLed once 64 KiB came
    // back: after the handshake, in the middle of the listing.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    write(&b, base_data(20_000, now_ms() - 3_600_000)).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let proxy = byte_counting_proxy(b.addr.clone(), 64 * 1024, tx).await;
    let aa = a.addr.clone();
    let child = spawn_mend(&["diff", "--agent", &aa, "--peer", &proxy]);
    rx.await.expect("the peer streamed 64 KiB");
    let bdir = b.dir.clone();
    b.kill();
    let err = one_line_failure(child).await;
    assert!(err.contains("connection lost"), "{err}");
    // The initiator is still serving and answers the next request.
    let mut c = a.replica().await;
    let r = c
        .get(pb::GetRequest {
            key: b"key-000001".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.found, "a diff writes nothing");
    let adir = a.dir.clone();
    a.stop();
    all_verify(&[adir, bdir]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_enum_value_on_the_wire_is_refused_naming_the_field() {
    // Proves a wire enum value outside its enum (protocol 4's categories)
    // is refused over real gRPC with INVALID_ARGUMENT naming the field,
    // before the request does anything.
    use mend_rpc::pb::operator_client::OperatorClient;
    use tonic::Code;
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let mut op = OperatorClient::new(channel(&a.addr).await);
    for (value, why) in [(99, "unknown value 99"), (0, "required")] {
        let e = op
            .repair(pb::RepairRequest {
                peer: "node-b".into(),
                categories: vec![pb::Category::Missing as i32, value],
                dry_run: true,
                ..Default::default()
            })
            .await
            .map(drop)
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(e.message(), format!("categories: {why}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_over_limit_requests_get_statuses_and_write_nothing() {
    // Proves bad input from the network yields a gRPC error status, no crash
    // and no write.
    use mend_rpc::pb::peer_client::PeerClient;
    use tonic::Code;
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let mut r = a.replica().await.max_encoding_message_size(64 << 20);
    let long_key = vec![b'k'; 4097];
    let big = vec![0u8; 4 * 1024 * 1024 + 1];
    let cases: Vec<(pb::PutRequest, Code)> = vec![
        (
            pb::PutRequest {
                key: vec![],
                value: b"v".to_vec(),
                version: None,
            },
            Code::InvalidArgument,
        ),
        (
            pb::PutRequest {
                key: long_key,
                value: b"v".to_vec(),
                version: None,
            },
            Code::InvalidArgument,
        ),
        (
            pb::PutRequest {
                key: b"k".to_vec(),
                value: big,
                version: None,
            },
            Code::InvalidArgument,
        ),
        (
            pb::PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                version: ver(1, "bad origin", 1),
            },
            Code::InvalidArgument,
        ),
    ];
    for (req, code) in cases {
        let e = r.put(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }
    let too_many: Vec<_> = (0..10_001)
        .map(|i| put(&format!("b{i}"), "v", None))
        .collect();
    let e = r
        .write_batch(pb::WriteBatchRequest { writes: too_many })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mixed = vec![put("good", "v", None), put("", "v", None)];
    assert!(
        r.write_batch(pb::WriteBatchRequest { writes: mixed })
            .await
            .is_err()
    );
    let got = r
        .get(pb::GetRequest {
            key: b"good".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.found, "a rejected batch writes nothing");

    // The Peer service is called as a peer would: with a node certificate.
    let mut p = PeerClient::new(channel_as(&a.addr, "node-t").await);
    let secret = mend_core::Secret::from_bytes(SECRET.as_bytes());
    let nonce = [7u8; 16];
    let mut hs =
        async |version: u32, secret: &mend_core::Secret, node: &str, fanout: u32, name: &str| {
            let ch = p
                .challenge(pb::ChallengeRequest {})
                .await
                .unwrap()
                .into_inner();
            let req = pb::HandshakeRequest {
                protocol_version: version,
                node_id: node.into(),
                ranges: vec![pb::RangeShape {
                    name: name.into(),
                    fanout,
                    depth: 4,
                    ..Default::default()
                }],
                only_shared: false,
                proof: secret
                    .handshake_proof("initiator", &[&ch.challenge, &nonce, node.as_bytes()])
                    .to_vec(),
                challenge: ch.challenge,
                nonce: nonce.to_vec(),
            };
            p.handshake(req).await
        };
    let other = mend_core::Secret::from_bytes(b"another secret");
    for (version, sec, node, fanout, name, code) in [
        (
            9,
            &secret,
            "node-t",
            16,
            "default",
            Code::FailedPrecondition,
        ),
        (
            PROTOCOL_VERSION,
            &other,
            "node-t",
            16,
            "default",
            Code::PermissionDenied,
        ),
        (
            PROTOCOL_VERSION,
            &secret,
            "node-u",
            16,
            "default",
            Code::PermissionDenied,
        ),
        (
            PROTOCOL_VERSION,
            &secret,
            "node-t",
            4,
            "default",
            Code::FailedPrecondition,
        ),
        (
            PROTOCOL_VERSION,
            &secret,
            "node-t",
            16,
            "nope",
            Code::NotFound,
        ),
    ] {
        let e = hs(version, sec, node, fanout, name).await.unwrap_err();
        assert_eq!(e.code(), code, "{version} {node} {fanout} {name}: {e:?}");
        assert!(
            !e.message().contains(&secret.fingerprint_hex()),
            "no secret fingerprint in errors: {e:?}"
        );
    }
    let ok = hs(PROTOCOL_VERSION, &secret, "node-t", 16, "default")
        .await
        .unwrap()
        .into_inner();
    // The responder proves the secret too, over our nonce, and names its
    // tree's depth (protocol 5).
    assert_eq!(ok.proof.len(), 32);
    assert_eq!(ok.ranges[0].depth, 4);
    // (level, parents, hash count): a level below the tree, a parent
    // outside level 0, and too few hashes for one parent.
    // The leaves of the tree (level 4) below the compared depth (3), and
    // compared depths the tree does not have (0: an older initiator; 5:
    // deeper than the tree).
    for (depth, level, parents, hashes) in [
        (4, 9, vec![0], 16),
        (4, 1, vec![7], 16),
        (4, 2, vec![1], 3),
        (3, 4, vec![0], 16),
        (0, 0, vec![0], 16),
        (5, 0, vec![0], 16),
    ] {
        let bad = pb::ProbeRequest {
            range: "default".into(),
            probes: vec![pb::Probe {
                level,
                parents: parents.clone(),
                hashes: vec![0; hashes],
            }],
            depth,
        };
        assert_eq!(
            p.probe(bad).await.unwrap_err().code(),
            Code::InvalidArgument,
            "depth {depth} level {level} parents {parents:?} hashes {hashes}"
        );
    }
    // A bucket past the tree, and one past the compared depth's buckets.
    for (depth, first) in [(4, 70_000), (2, 256), (0, 0), (7, 0)] {
        let bad_leaves = pb::LeavesRequest {
            range: "default".into(),
            queries: vec![pb::BucketQuery {
                first,
                count: 1,
                hashes: vec![],
            }],
            depth,
        };
        assert_eq!(
            p.leaves(bad_leaves).await.unwrap_err().code(),
            Code::InvalidArgument,
            "depth {depth} first {first}"
        );
    }
    let bad_push = tokio_stream::iter(vec![pb::PushRequest {
        repair_id: "".into(),
        entries: vec![],
    }]);
    assert_eq!(
        p.push(bad_push).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Still serving, still empty.
    let (code, st) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(code, 0);
    assert_eq!(st["ranges"][0]["entries"], 0, "{st}");
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health_are_served() {
    // Proves stock gRPC tooling can discover and health-check the agent.
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let ch = channel(&a.addr).await;
    let mut h = HealthClient::new(ch.clone());
    for service in ["mend.v1.Peer", "mend.v1.Ingest"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service} SERVING");
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
    };
    let mut c = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut s = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = s.message().await.unwrap().unwrap();
    let text = format!("{msg:?}");
    for svc in [
        "mend.v1.Replica",
        "mend.v1.Ingest",
        "mend.v1.Peer",
        "mend.v1.Operator",
        "grpc.health.v1.Health",
    ] {
        assert!(text.contains(svc), "{svc} listed: {text}");
    }
    a.stop();
}
