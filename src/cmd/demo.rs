//! `mend demo`: three agents on loopback with temporary data directories
//! and mutual TLS (a development CA made on the spot), a loaded data set,
//! injected divergence of every category, one call refused for lack of a
//! role, the diff report, a repair, and the converged result. No setup, no
//! config; cleans up after itself.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mend_agent::AgentConfig;
use mend_core::Secret;
use mend_rpc::pb;
use serde_json::json;

use mend_rpc::pb::replica_client::ReplicaClient;
use tonic::transport::Channel;

use super::client::load_value;
use super::diff::Received;
use super::{replica, runtime, status_err};
use crate::cli::{DemoArgs, RepairArgs};
use crate::output::print_json;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn v(ms: u64, origin: &str, seq: u64) -> Option<pb::Version> {
    Some(pb::Version {
        ms,
        logical: 0,
        origin: origin.into(),
        seq,
    })
}

fn put(key: &str, value: &str, version: Option<pb::Version>) -> pb::BatchWrite {
    pb::BatchWrite {
        key: key.into(),
        value: value.into(),
        delete: false,
        version,
    }
}

fn del(key: &str, version: Option<pb::Version>) -> pb::BatchWrite {
    pb::BatchWrite {
        key: key.into(),
        value: Vec::new(),
        delete: true,
        version,
    }
}

/// Calls the Operator service with the `replica` certificate, which lacks
/// the operator role, and returns the refusal as shown to a user.
async fn refused_call(certs: &std::path::Path, addr: &str) -> anyhow::Result<String> {
    let m = mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(&certs.join("replica")))?;
    let ep = mend_tls::client::endpoint(
        addr,
        None,
        &mend_tls::client::ClientTls::Tls(std::sync::Arc::new(m)),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let mut c = pb::operator_client::OperatorClient::new(ep.connect().await?);
    match c.status(pb::StatusRequest::default()).await {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            Ok(format!("{:?}: {}", s.code(), s.message()))
        }
        Err(s) => anyhow::bail!(
            "expected PERMISSION_DENIED, got {:?}: {}",
            s.code(),
            s.message()
        ),
        Ok(_) => anyhow::bail!("the Operator service answered a caller without the operator role"),
    }
}

/// The demo's three nodes.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Runs the demo.
pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("mend-demo-").tempdir()?;
    // A certificate per node, and one for a writer (role replica only).
    let certs = dev_certs(tmp.path(), &["node-a", "node-b", "node-c", "replica"])?;
    runtime()?.block_on(async {
        let mut agents = Vec::new();
        for name in NODES {
            let cfg = agent_config(name, tmp.path(), &certs)?;
            agents.push(mend_agent::start(cfg, Secret::development()).await?);
        }
        let addr: Vec<String> = agents.iter().map(|a| a.addr.to_string()).collect();
        say(a.json, &format!("started node-a {}, node-b {}, node-c {} with mutual TLS (CA and certificates in {}; data in {})", addr[0], addr[1], addr[2], certs.display(), tmp.path().display()));
        let refused = refused_call(&certs, &addr[0]).await?;
        say(a.json, &format!("a writer's certificate (role replica) asking node-a for its status is refused: {refused}"));
        let converged = scenario(&a, &addr, started).await?;
        for ag in agents {
            ag.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(if converged { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// Prints `m` unless the output is JSON.
pub fn say(json: bool, m: &str) {
    if !json {
        println!("{m}");
    }
}

/// A development CA under `dir`, a certificate per name of `nodes`, and one
/// for this process's client (roles operator and replica), which it then
/// dials with. Returns their directory.
pub fn dev_certs(dir: &std::path::Path, nodes: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let certs = dir.join("certs");
    let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    mend_tls::dev::make(&certs, &nodes, &[], 1)?;
    mend_tls::dev::make(&certs, &["operator".into()], &["replica".into()], 1)?;
    let client = mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(&certs.join("operator")))?;
    super::set_client_tls(mend_tls::client::ClientTls::Tls(std::sync::Arc::new(
        client,
    )));
    Ok(certs)
}

/// The configuration of node `name`: loopback, data under `dir`, its
/// certificate from `certs`, the other nodes (`node-*` on loopback) as
/// peers, and versions from a fast clock accepted.
pub fn agent_config(
    name: &str,
    dir: &std::path::Path,
    certs: &std::path::Path,
) -> anyhow::Result<AgentConfig> {
    let mut cfg = AgentConfig {
        node_id: name.into(),
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.join(name),
        // The demo stores a version from a fast clock so the diff
        // can show `future_version`; agents refuse it by default.
        future_writes: mend_agent::config::FutureWrites::Accept,
        ..AgentConfig::default()
    };
    cfg.tls.dir = Some(certs.join(name));
    cfg.roles.peer = vec!["node-*".into()];
    cfg.roles.peer_addresses = vec!["127.0.0.1:*".into()];
    Ok(cfg)
}

/// The demo proper on running agents at `addr`: load, inject, diff,
/// repair, diff again, report. Returns whether every repairable key
/// converged.
async fn scenario(a: &DemoArgs, addr: &[String], started: Instant) -> anyhow::Result<bool> {
    let mut clients = Vec::new();
    for ad in addr {
        clients.push(replica(ad).await?);
    }
    load(&mut clients, addr, a.keys).await?;
    say(a.json, &format!("loaded {} keys into each replica", a.keys));
    inject(&mut clients, addr).await?;
    say(
        a.json,
        "injected divergence between node-a and node-b: lost writes from node-c, a missed update, a lost delete, a conflict, a clock-skewed write, and an in-flight write\n",
    );
    let before = super::diff::fetch(&addr[0], &addr[1], None).await?;
    if !a.json {
        println!("$ mend diff --agent {} --peer {}", addr[0], addr[1]);
        super::diff::print_human(&before, 20);
        println!();
    }
    let rep = repair(addr, a.json).await?;
    let after = super::diff::fetch(&addr[0], &addr[1], None).await?;
    let c_vs_b = super::diff::fetch(&addr[2], &addr[1], None).await?;
    let repairable_left: u64 = after
        .keys
        .iter()
        .filter(|k| {
            matches!(
                super::names::category_name(k.category),
                "missing" | "stale" | "unpropagated_delete"
            )
        })
        .count() as u64;
    if a.json {
        print_json(&json!({
            "before": super::diff::to_json(&before),
            "repair": {"repair_id": rep.repair_id, "keys_repaired": rep.keys_repaired, "bytes_streamed": rep.bytes_streamed,
                       "skipped": rep.skipped.iter().map(|s| json!({"key": String::from_utf8_lossy(&s.key), "reason": s.reason, "kind": super::names::skip_name(s.kind)})).collect::<Vec<_>>()},
            "after": super::diff::to_json(&after),
            "node_c_vs_node_b": super::diff::to_json(&c_vs_b),
            "converged": repairable_left == 0,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }))?;
    } else {
        print_outcome(addr, &after, repairable_left, started);
    }
    Ok(repairable_left == 0)
}

/// The same versioned data set on every replica, as replication would
/// leave it.
async fn load(
    clients: &mut [ReplicaClient<Channel>],
    addr: &[String],
    keys: u64,
) -> anyhow::Result<()> {
    let base = now_ms() - 600_000;
    let mut i = 0;
    while i < keys {
        let n = 1000.min(keys - i);
        let writes: Vec<pb::BatchWrite> = (i..i + n)
            .map(|k| pb::BatchWrite {
                key: format!("user:{k:07}").into_bytes(),
                value: load_value(7, k, 100),
                delete: false,
                version: v(base + k / 10, NODES[(k % 3) as usize], k),
            })
            .collect();
        for (c, ad) in clients.iter_mut().zip(addr) {
            c.write_batch(pb::WriteBatchRequest {
                writes: writes.clone(),
            })
            .await
            .map_err(|s| status_err(ad, s))?;
        }
        i += n;
    }
    Ok(())
}

/// Divergence of every category between node-a and node-b.
async fn inject(clients: &mut [ReplicaClient<Channel>], addr: &[String]) -> anyhow::Result<()> {
    let t = now_ms();
    let old = t - 120_000;
    let only_a = vec![
        // missing: writes via node-c that reached node-a but never node-b.
        put("order:9001", "new order", v(old, "node-c", 88_120)),
        put("order:9002", "new order", v(old + 900, "node-c", 88_121)),
        put("order:9003", "new order", v(old + 1_800, "node-c", 88_122)),
        // stale: an update node-b missed.
        put(
            "user:0000010",
            "updated email",
            v(old + 2_000, "node-a", 501),
        ),
        put(
            "user:0000011",
            "updated email",
            v(old + 2_100, "node-a", 502),
        ),
        // unpropagated_delete: deletes that never reached node-b.
        del("user:0000020", v(old + 3_000, "node-a", 503)),
        // conflict: same version, different content on the two sides.
        put("cart:77", "3 items", v(old + 4_000, "node-c", 88_200)),
        // future_version: node-a's clock runs 45 s ahead.
        put(
            "session:5",
            "stamped in the future",
            v(t + 45_000, "node-a", 504),
        ),
        // in_flight: a write seconds old, still replicating.
        put("user:0000030", "just written", v(t, "node-a", 505)),
    ];
    let only_b = vec![
        put("cart:77", "5 items", v(old + 4_000, "node-c", 88_200)),
        // missing on node-a: a write via node-b that never left it.
        put("order:9100", "other order", v(old + 5_000, "node-b", 7_001)),
    ];
    clients[0]
        .write_batch(pb::WriteBatchRequest { writes: only_a })
        .await
        .map_err(|s| status_err(&addr[0], s))?;
    clients[1]
        .write_batch(pb::WriteBatchRequest { writes: only_b })
        .await
        .map_err(|s| status_err(&addr[1], s))?;
    Ok(())
}

/// Repairs node-a against node-b and, unless the output is JSON, prints
/// what it did.
async fn repair(addr: &[String], json: bool) -> anyhow::Result<pb::RepairSummary> {
    let ra = RepairArgs {
        control: None,
        agent: Some(addr[0].clone()),
        peer: Some(addr[1].clone()),
        range: None,
        dry_run: false,
        rate: None,
        rate_keys: None,
        categories: Vec::new(),
        shadow: false,
        json,
    };
    let rep = super::repair::fetch(&ra, &indicatif::ProgressBar::hidden()).await?;
    if !json {
        println!("$ mend repair --agent {} --peer {}", addr[0], addr[1]);
        println!(
            "repair {}: {} keys repaired ({} to node-a, {} to node-b), {} bytes streamed",
            rep.repair_id,
            rep.keys_repaired,
            rep.keys_to_local,
            rep.keys_to_peer,
            rep.bytes_streamed
        );
        for s in &rep.skipped {
            println!(
                "  left for a human: {:<16} {}",
                String::from_utf8_lossy(&s.key),
                s.reason
            );
        }
        println!();
    }
    Ok(rep)
}

/// Prints the diff after the repair and the verdict.
fn print_outcome(addr: &[String], after: &Received, repairable_left: u64, started: Instant) {
    println!(
        "$ mend diff --agent {} --peer {}   (after the repair)",
        addr[0], addr[1]
    );
    super::diff::print_human(after, 20);
    println!();
    if repairable_left == 0 {
        println!(
            "CONVERGED: every missing, stale and unpropagated-delete key is repaired; {} key(s) remain by design (conflicts and clock-skewed versions need a human, in-flight writes settle on their own).",
            after.summary.divergent_keys
        );
    } else {
        println!("NOT CONVERGED: {repairable_left} repairable keys still differ");
    }
    println!(
        "demo finished in {:.1}s; temporary data removed",
        started.elapsed().as_secs_f64()
    );
}
