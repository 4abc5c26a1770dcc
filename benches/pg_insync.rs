//! "Are these two PostgreSQL tables in sync, and where not?" (issue 13):
//! mend (trees already maintained by the `mend-pg` adapter) against a
//! full-scan digest comparison in the client and against `pg_comparator`
//! (Debian's `postgresql-comparator`, skipped with a note if absent), on
//! two tables of `MEND_PG_BENCH_ROWS` rows (default 1 000 000) with 100
//! divergent rows, in one throwaway local server (two databases, so
//! `pg_comparator` reaches both over the one Unix socket).
//!
//! Run: `cargo bench --bench pg_insync` (prints one line per method: the
//! median of its runs and the divergent rows it found).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend_agent::AgentConfig;
use mend_core::{RangeMode, RangeSpec, Secret, TreeShape};
use mend_pg::adapter::wait_caught_up;
use mend_pg::instance::LocalPostgres;
use mend_pg::{Adapter, AdapterConfig, PgMetrics};
use mend_rpc::pb;
use mend_rpc::pb::ingest_client::IngestClient;
use mend_rpc::pb::operator_client::OperatorClient;
use tokio_stream::StreamExt;

const DIVERGENT: u64 = 100;

fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("MEND_PG_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::Builder::new()
        .prefix("mend-pg-bench-")
        .tempdir()?;
    let pg = LocalPostgres::start(&tmp.path().join("pg"))?;
    let certs = tmp.path().join("certs");
    mend_tls::dev::make(&certs, &["node-a".into(), "node-b".into()], &[], 1)?;
    mend_tls::dev::make(&certs, &["operator".into()], &["replica".into()], 1)?;
    let client = Arc::new(mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(
        &certs.join("operator"),
    ))?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let admin = connect(&pg, "postgres").await?;
        // One statement each: CREATE DATABASE cannot run in a transaction.
        admin.batch_execute("CREATE DATABASE db_a").await?;
        admin.batch_execute("CREATE DATABASE db_b").await?;
        let t = Instant::now();
        let mut dbs = Vec::new();
        for name in ["db_a", "db_b"] {
            let db = connect(&pg, name).await?;
            db.batch_execute(&format!(
                "CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric(10,2) NOT NULL, \
                 updated_at timestamptz NOT NULL); ALTER TABLE orders REPLICA IDENTITY FULL; \
                 INSERT INTO orders SELECT i, 'customer ' || (i % 997), (i % 500) + 0.99, \
                 timestamptz '2026-01-01 00:00:00+00' + i * interval '1 ms' FROM generate_series(1, {rows}) i"
            ))
            .await?;
            dbs.push(db);
        }
        // The divergence: 100 rows updated on db_b only.
        dbs[1]
            .batch_execute(&format!(
                "UPDATE orders SET total = total + 1, updated_at = updated_at + interval '1 hour' \
                 WHERE id % {} = 0",
                rows / DIVERGENT
            ))
            .await?;
        println!("loaded 2 x {rows} rows in {:.1}s", t.elapsed().as_secs_f64());

        // mend: an agent per database, its adapter snapshots and follows.
        let t = Instant::now();
        let mut agents = Vec::new();
        let mut adapters = Vec::new();
        for (db, node) in [("db_a", "node-a"), ("db_b", "node-b")] {
            let mut range = RangeSpec::whole("orders", TreeShape::default());
            range.mode = RangeMode::Digests;
            let mut cfg = AgentConfig {
                node_id: node.into(),
                listen: "127.0.0.1:0".parse()?,
                data_dir: tmp.path().join(node),
                ranges: vec![range],
                future_writes: mend_agent::config::FutureWrites::Accept,
                ..AgentConfig::default()
            };
            cfg.tls.dir = Some(certs.join(node));
            cfg.roles.peer = vec!["node-*".into()];
            cfg.roles.peer_addresses = vec!["127.0.0.1:*".into()];
            let agent = mend_agent::start(cfg, Secret::development()).await?;
            let mut ac = AdapterConfig::new(&pg.conninfo(db), "orders", "updated_at", "orders");
            ac.slot = format!("mend_{db}");
            let mut adapter = Adapter::connect(ac, Arc::new(PgMetrics::default())).await?;
            let mut progress = adapter.progress();
            let ingest = IngestClient::new(channel(&agent.addr.to_string(), &client).await?);
            tokio::spawn(async move { adapter.run(ingest, std::future::pending()).await });
            adapters.push(async move { wait_caught_up(&mut progress, Duration::from_secs(3600)).await });
            agents.push(agent);
        }
        for a in adapters {
            anyhow::ensure!(a.await, "an adapter did not catch up");
        }
        println!("mend snapshots of both tables ingested in {:.1}s (once, then maintained)", t.elapsed().as_secs_f64());
        let addr: Vec<String> = agents.iter().map(|a| a.addr.to_string()).collect();
        let mut op = OperatorClient::new(channel(&addr[0], &client).await?);
        let (ms, found) = median(5, async || {
            let mut s = op
                .diff(pb::DiffRequest { peer: addr[1].clone(), ..Default::default() })
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(e) = s.next().await {
                if let Some(pb::diff_event::Event::Key(_)) = e?.event {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await?;
        println!("mend diff (trees maintained): {ms:.1} ms, {found} divergent rows");

        let (scan_ms, scan_found) = median(3, async || full_scan(&dbs[0], &dbs[1]).await).await?;
        println!("full-scan digest comparison: {scan_ms:.1} ms, {scan_found} divergent rows ({:.0}x mend)", scan_ms / ms);

        if Command::new("pg_comparator").arg("--version").output().is_ok() {
            // Its checksum functions (Debian's package ships the extension).
            for db in &dbs {
                db.batch_execute("CREATE EXTENSION IF NOT EXISTS pgcmp").await?;
            }
            let (cmp_ms, cmp_found) = median(3, async || {
                let out = Command::new("pg_comparator")
                    .env("PGHOST", pg.socket_dir())
                    .args(["pgsql://mend@/db_a/public.orders?id", "pgsql://mend@/db_b/public.orders?id"])
                    .output()?;
                anyhow::ensure!(
                    out.status.success() || out.status.code() == Some(1),
                    "pg_comparator: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(String::from_utf8_lossy(&out.stdout).lines()
                    .filter(|l| ["UPDATE", "INSERT", "DELETE"].iter().any(|w| l.starts_with(w)))
                    .count() as u64)
            })
            .await?;
            println!(
                "pg_comparator: {cmp_ms:.1} ms, {cmp_found} divergent rows ({:.0}x mend)",
                cmp_ms / ms
            );
        } else {
            println!("pg_comparator: not installed (apt-get install postgresql-comparator)");
        }
        for a in agents {
            a.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(())
    })
}

async fn connect(pg: &LocalPostgres, db: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(&pg.conninfo(db), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn channel(
    addr: &str,
    m: &Arc<mend_tls::Material>,
) -> anyhow::Result<tonic::transport::Channel> {
    Ok(
        mend_tls::client::endpoint(addr, None, &mend_tls::client::ClientTls::Tls(m.clone()))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .connect()
            .await?,
    )
}

/// The full-scan baseline: both tables read in key order with a per-row
/// md5 computed by the server, compared row by row in the client.
async fn full_scan(a: &tokio_postgres::Client, b: &tokio_postgres::Client) -> anyhow::Result<u64> {
    let q = "SELECT id, md5(o::text) FROM orders o ORDER BY id";
    let (ra, rb) = tokio::try_join!(a.query(q, &[]), b.query(q, &[]))?;
    let (mut i, mut j, mut diff) = (0, 0, 0u64);
    while i < ra.len() || j < rb.len() {
        let ka: Option<i32> = ra.get(i).map(|r| r.get(0));
        let kb: Option<i32> = rb.get(j).map(|r| r.get(0));
        match (ka, kb) {
            (Some(x), Some(y)) if x == y => {
                if ra[i].get::<_, String>(1) != rb[j].get::<_, String>(1) {
                    diff += 1;
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => (diff, i) = (diff + 1, i + 1),
            (Some(_), None) => (diff, i) = (diff + 1, i + 1),
            _ => (diff, j) = (diff + 1, j + 1),
        }
    }
    Ok(diff)
}

/// The median wall time (ms) of `n` runs, and the last run's result.
async fn median(
    n: usize,
    mut f: impl AsyncFnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<(f64, u64)> {
    let mut times = Vec::new();
    let mut last = 0;
    for _ in 0..n {
        let t = Instant::now();
        last = f().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[n / 2], last))
}
