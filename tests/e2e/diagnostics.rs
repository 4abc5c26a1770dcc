//! End-to-end tests of the diagnostics: live agents with injected faults of
//! every kind, attribution to origin and window, drift budgets with webhook
//! alerts, playbooks with their blast-radius guard, shadow runs, sampling,
//! and /metrics read by a real Prometheus text parser.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::harness::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn sources(v: &Value) -> Vec<Value> {
    v["sources"].as_array().cloned().unwrap_or_default()
}

fn source<'a>(srcs: &'a [Value], category: &str, origin: &str) -> &'a Value {
    srcs.iter()
        .find(|s| s["category"] == category && s["origin"] == origin)
        .unwrap_or_else(|| panic!("no source {category} from {origin} in {srcs:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_faults_get_the_right_category_origin_and_window() {
    // Proves each injected fault kind is reported with the right category,
    // and attributed to the right origin node, time window and seq range.
    let d = tmp();
    // node-a keeps versions stamped beyond the allowed skew (its writer's
    // clock runs a minute fast) so the diff can show them.
    let accept = d.path().join("accept.toml");
    std::fs::write(&accept, "future_writes = \"accept\"\n").unwrap();
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", accept.to_str().unwrap()],
    );
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let c = AgentProc::start("node-c", &d.path().join("c"), &[]);
    let t = now_ms();
    let base = base_data(1000, t - 7_200_000);
    for x in [&a, &b, &c] {
        write(x, base.clone()).await;
    }
    // Propagation outage: 20 writes via node-c reach node-a and node-c, never node-b.
    let w0 = t - 600_000;
    let outage: Vec<_> = (0..20)
        .map(|i| {
            put(
                &format!("order-{i:03}"),
                "o",
                ver(w0 + i * 500, "node-c", 5000 + i),
            )
        })
        .collect();
    write(&a, outage.clone()).await;
    write(&c, outage).await;
    // Clock skew at node-a: stamped a minute ahead.
    write(
        &a,
        (0..3)
            .map(|i| {
                put(
                    &format!("skewed-{i}"),
                    "s",
                    ver(t + 60_000 + i, "node-a", 900 + i),
                )
            })
            .collect(),
    )
    .await;
    // Lost deletes from node-a.
    write(
        &a,
        (0..4)
            .map(|i| {
                del(
                    &format!("key-{:06}", 100 + i),
                    ver(t - 300_000 + i, "node-a", 700 + i),
                )
            })
            .collect(),
    )
    .await;
    // Same-version conflicts.
    write(
        &a,
        (0..2)
            .map(|i| {
                put(
                    &format!("cfl-{i}"),
                    "one",
                    ver(t - 200_000, "node-b", 50 + i),
                )
            })
            .collect(),
    )
    .await;
    write(
        &b,
        (0..2)
            .map(|i| {
                put(
                    &format!("cfl-{i}"),
                    "two",
                    ver(t - 200_000, "node-b", 50 + i),
                )
            })
            .collect(),
    )
    .await;
    // Replication lag: seconds-old writes still on their way.
    write(
        &a,
        (0..2)
            .map(|i| put(&format!("lag-{i}"), "l", ver(now_ms(), "node-a", 990 + i)))
            .collect(),
    )
    .await;

    let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 1);
    let cat = &v["by_category"];
    assert_eq!(
        (
            &cat["missing"],
            &cat["future_version"],
            &cat["unpropagated_delete"],
            &cat["conflict"],
            &cat["in_flight"],
            &cat["stale"]
        ),
        (
            &Value::from(20),
            &Value::from(3),
            &Value::from(4),
            &Value::from(2),
            &Value::from(2),
            &Value::from(0)
        ),
        "{cat}"
    );
    let srcs = sources(&v);
    let outage = source(&srcs, "missing", "node-c");
    assert_eq!(outage["count"], 20);
    assert_eq!(outage["first_ms"], w0);
    assert_eq!(outage["last_ms"], w0 + 19 * 500);
    assert_eq!(
        (outage["seq_min"].as_u64(), outage["seq_max"].as_u64()),
        (Some(5000), Some(5019))
    );
    assert_eq!(outage["seq_gaps"]["missing_on"], "peer", "{outage}");
    assert_eq!(outage["seq_gaps"]["missing"], 20, "{outage}");
    assert!(
        outage["hint"].as_str().unwrap().contains("node-c"),
        "{outage}"
    );
    let skew = source(&srcs, "future_version", "node-a");
    assert_eq!(skew["count"], 3);
    assert!(skew["hint"].as_str().unwrap().contains("clock"), "{skew}");
    assert_eq!(source(&srcs, "unpropagated_delete", "node-a")["count"], 4);
    assert_eq!(source(&srcs, "conflict", "node-b")["count"], 2);
    assert_eq!(source(&srcs, "in_flight", "node-a")["count"], 2);

    // The third agent holds the outage's writes too; node-b lacks them (and
    // node-c lacks node-b's two conflict keys).
    let (_, cv) = mend_json(&["diff", "--agent", &c.addr, "--peer", &b.addr]);
    assert_eq!(cv["by_category"]["missing"], 22);
    let csrcs = sources(&cv);
    let from_c = source(&csrcs, "missing", "node-c");
    assert_eq!(
        (from_c["count"].as_u64(), from_c["first_ms"].as_u64()),
        (Some(20), Some(w0))
    );
    let from_b = source(&csrcs, "missing", "node-b");
    assert_eq!(
        (from_b["count"].as_u64(), from_b["newer_side"].as_str()),
        (Some(2), Some("peer"))
    );

    // A wiped replica: every key missing on it, each attributed to its origin.
    let wiped = AgentProc::start("node-d", &d.path().join("d"), &[]);
    let (_, wv) = mend_json(&["diff", "--agent", &b.addr, "--peer", &wiped.addr]);
    assert_eq!(wv["by_category"]["missing"], 1002, "{}", wv["by_category"]);
    assert!(
        wv["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["behind"] == "peer")
    );
    for x in [a, b, c, wiped] {
        x.stop();
    }
}

/// A webhook receiver over plain HTTP: forwards each POST body to a channel.
async fn webhook() -> (String, mpsc::Receiver<Value>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(receive(s, tx.clone()));
        }
    });
    (url, rx)
}

/// A webhook receiver over HTTPS with a certificate from the test cluster's
/// CA (name `localhost`): the agent must trust its cluster CA for alerts.
async fn webhook_tls() -> (String, mpsc::Receiver<Value>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let paths = mend_tls::TlsPaths::in_dir(&cert_set("localhost"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert_file)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&paths.key_file).unwrap();
    // An ordinary HTTPS receiver: no client certificate asked for.
    let mut cfg = rustls::ServerConfig::builder_with_provider(mend_tls::material::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}/hook", l.local_addr().unwrap().port());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(s).await {
                    receive(s, tx).await;
                }
            });
        }
    });
    (url, rx)
}

/// Reads one HTTP/1.1 request, answers 200 and forwards its JSON body.
async fn receive<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    tx: mpsc::Sender<Value>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            let body: Value =
                serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = s.shutdown().await;
            let _ = tx.send(body).await;
            return;
        }
    }
}

async fn next_alert(rx: &mut mpsc::Receiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("alert within 30 s")
        .expect("alert")
}

fn config(dir: &std::path::Path, peer: &AgentProc, hook: &str, blast: f64) -> std::path::PathBuf {
    let p = dir.join("a.toml");
    let text = format!(
        "webhook_url = \"{hook}\"\n\n[playbook]\nblast_radius_share_max = {blast}\n\n[[peers]]\nid = \"{}\"\naddress = \"{}\"\ninterval_ms = 1000\nbudget = {{ divergent_keys_max = 3, oldest_divergence_ms_max = 86400000 }}\n",
        peer.node, peer.addr
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_flip_alerts_and_the_playbook_repairs_then_metrics_show_it() {
    // Proves scheduled exchanges flip the drift budget with a webhook alert
    // (over HTTPS, to a receiver with a certificate from the cluster CA),
    // the playbook repairs within its blast radius and verifies it, the
    // budget flips back, and /metrics (parsed by a Prometheus parser) agrees.
    let d = tmp();
    let (hook, mut alerts) = webhook_tls().await;
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let t0 = now_ms() - 7_200_000;
    write(&b, base_data(1000, t0)).await;
    let cfg = config(d.path(), &b, &hook, 0.05);
    let a_dir = d.path().join("a");
    // Load node-a before it starts exchanging: 10 writes node-b never got.
    let loader = AgentProc::start("node-a", &a_dir, &[]);
    let mut base = base_data(1000, t0);
    base.extend((0..10).map(|i| {
        put(
            &format!("new-{i}"),
            "n",
            ver(now_ms() - 600_000 + i, "node-a", 10 + i),
        )
    }));
    write(&loader, base).await;
    loader.stop();
    let a = AgentProc::start(
        "node-a",
        &a_dir,
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );

    let first = next_alert(&mut alerts).await;
    assert_eq!(first["budget"]["exceeded"], true, "{first}");
    assert_eq!(first["budget"]["divergent_keys"], 10);
    assert_eq!(first["report"]["by_category"]["missing"], 10);
    assert_eq!(first["report"]["sources"][0]["origin"], "node-a");
    assert!(
        first["action"]
            .as_str()
            .unwrap_or_default()
            .starts_with("repaired 10 keys"),
        "{first}"
    );
    let back = next_alert(&mut alerts).await;
    assert_eq!(
        back["budget"]["exceeded"], false,
        "the playbook's repair brings the budget back: {back}"
    );

    let (code, h) = mend_json(&["history", "--agent", &a.addr]);
    assert_eq!(code, 0);
    let recs = h["peers"][0]["records"].as_array().unwrap();
    assert!(
        recs.iter().any(|r| r["action"]
            .as_str()
            .unwrap_or("")
            .starts_with("repaired 10 keys")),
        "{h}"
    );
    assert!(
        h["peers"][0]["converged_keys"].as_u64().unwrap() >= 10,
        "{h}"
    );
    let (_, st) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(st["repairs"].as_array().unwrap().len(), 1, "{st}");

    let http = a.http.clone().expect("http address");
    let body = reqwest_get(&format!("http://{http}/metrics")).await;
    let scrape = scrape(&http).await;
    let get = |name: &str, label: Option<(&str, &str)>| -> f64 {
        metric(&scrape, name, label.as_slice())
    };
    assert!(
        get("mend_exchanges_total", Some(("peer", "node-b"))) >= 2.0,
        "{body}"
    );
    assert_eq!(
        get("mend_repaired_keys_total", Some(("peer", "node-b"))),
        10.0,
        "{body}"
    );
    assert_eq!(get("mend_budget_exceeded", Some(("peer", "node-b"))), 0.0);
    assert_eq!(
        get("mend_divergent_keys", Some(("category", "missing"))),
        0.0
    );
    assert_eq!(
        get("mend_writes_total", None),
        0.0,
        "this agent process took no client writes"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "mend_exchange_duration_seconds"),
        "histogram exported"
    );
    assert_eq!(
        reqwest_get(&format!("http://{http}/healthz")).await.trim(),
        "ok"
    );
    let status: Value =
        serde_json::from_str(&reqwest_get(&format!("http://{http}/status")).await).unwrap();
    assert_eq!(status["node_id"], "node-a");
    assert_eq!(status["budgets"][0]["exceeded"], false, "{status}");
    a.stop();
    b.stop();
}

async fn reqwest_get(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playbook_refuses_automatic_repair_beyond_the_blast_radius() {
    // Proves a wiped peer (all keys divergent) triggers an alert but no
    // automatic repair: the playbook refuses and the peer stays empty.
    let d = tmp();
    let (hook, mut alerts) = webhook().await;
    let wiped = AgentProc::start("node-w", &d.path().join("w"), &[]);
    let cfg = config(d.path(), &wiped, &hook, 0.01);
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap()],
    );
    write(&a, base_data(300, now_ms() - 7_200_000)).await;
    let alert = next_alert(&mut alerts).await;
    assert_eq!(alert["budget"]["exceeded"], true);
    let action = alert["action"].as_str().unwrap_or_default();
    assert!(
        action.starts_with("refused") && action.contains("blast radius"),
        "{alert}"
    );
    let (_, h) = mend_json(&["history", "--agent", &a.addr]);
    let records = h["peers"][0]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        records.iter().any(|r| r["action"] == action),
        "the history records the refusal: {h}"
    );
    let (_, st) = mend_json(&["status", "--agent", &wiped.addr]);
    assert_eq!(
        st["ranges"][0]["entries"], 0,
        "nothing was pushed to the wiped peer"
    );
    let (_, ast) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(
        ast["repairs"].as_array().unwrap().len(),
        0,
        "no repair was journaled"
    );
    a.stop();
    wiped.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_run_predicts_the_outcome_and_leaves_both_stores_untouched() {
    // Proves `repair --shadow` predicts convergence from checkpoints while the
    // live stores and their directories stay exactly as they were.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let base = base_data(500, now_ms() - 7_200_000);
    write(&a, base.clone()).await;
    write(&b, base).await;
    let old = now_ms() - 600_000;
    write(
        &a,
        (0..5)
            .map(|i| put(&format!("only-a-{i}"), "x", ver(old + i, "node-a", i + 1)))
            .collect(),
    )
    .await;
    write(
        &b,
        (0..2)
            .map(|i| put(&format!("only-b-{i}"), "y", ver(old + i, "node-b", i + 1)))
            .collect(),
    )
    .await;
    let (_, before) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    let (code, s) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr, "--shadow"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["shadow"]["predicted_converged"], 7, "{s}");
    assert_eq!(
        s["shadow"]["predicted_remaining"].as_array().unwrap().len(),
        0
    );
    assert_eq!(s["repair_id"], Value::Null, "a shadow run journals nothing");
    let (_, after) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(before["keys"], after["keys"], "live stores untouched");
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("shadow"))
        .collect();
    assert!(leftovers.is_empty(), "checkpoints removed: {leftovers:?}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_estimates_the_divergent_share() {
    // Proves `mend sample` finds only truly divergent keys and brackets its
    // estimate with a confidence interval; in-sync replicas sample clean.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let base = base_data(2000, now_ms() - 7_200_000);
    write(&a, base.clone()).await;
    write(&b, base).await;
    let (code, clean) = mend_json(&[
        "sample", "--agent", &a.addr, "--peer", &b.addr, "--keys", "500",
    ]);
    assert_eq!((code, &clean["divergent"]), (0, &Value::from(0)), "{clean}");
    let old = now_ms() - 600_000;
    write(
        &b,
        (0..400)
            .map(|i| {
                put(
                    &format!("key-{:06}", i * 5),
                    "changed",
                    ver(old + i, "node-b", i + 1),
                )
            })
            .collect(),
    )
    .await;
    let (code, v) = mend_json(&[
        "sample", "--agent", &a.addr, "--peer", &b.addr, "--keys", "2000", "--seed", "3",
    ]);
    assert_eq!(code, 1);
    let share = v["share"].as_f64().unwrap();
    assert!(
        (0.1..0.3).contains(&share),
        "true share is 0.2, estimated {share}: {v}"
    );
    // The 95% interval must cover the true share (0.2) in about 95% of
    // draws: 60 seeds of 200 keys each. With a correct interval, fewer than
    // 51 covering draws has probability ~0.2%; a too-narrow interval (the
    // point estimate alone, or a normal interval at n = 200) fails it.
    let mut covered = 0;
    for seed in 0..60 {
        let (_, v) = mend_json(&[
            "sample",
            "--agent",
            &a.addr,
            "--peer",
            &b.addr,
            "--keys",
            "200",
            "--seed",
            &seed.to_string(),
        ]);
        let (lo, hi) = (
            v["ci_low"].as_f64().unwrap(),
            v["ci_high"].as_f64().unwrap(),
        );
        assert!(lo < hi, "a real interval: {v}");
        if (lo..=hi).contains(&0.2) {
            covered += 1;
        }
    }
    assert!(
        covered >= 51,
        "the interval covered the true share in {covered} of 60 draws"
    );
    for k in v["keys"].as_array().unwrap() {
        let n: u64 = k["key"].as_str().unwrap()[4..].parse().unwrap();
        assert!(n.is_multiple_of(5) && n < 2000, "{k}");
        assert_eq!(k["category"], "stale");
    }
    a.stop();
    b.stop();
}
