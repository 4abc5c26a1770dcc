//! `mend demo --postgres`: two throwaway PostgreSQL servers holding the
//! same `orders` table, an agent beside each following its table through
//! the `mend-pg` adapter (snapshot, then the logical replication slot),
//! divergence injected by SQL (a lost update, a missed delete, rows on one
//! side only, a writer with a fast clock), mend's diff and diagnosis, the
//! version-checked repair in SQL, mend seeing the repairs through the
//! slots, and the databases compared by SQL at the end. Needs Debian's
//! `postgresql` package (the server binaries); no other setup.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend_core::{NodeId, RangeMode, RangeSpec, Secret, TreeShape, Version};
use mend_pg::adapter::{Progress, wait_caught_up};
use mend_pg::instance::LocalPostgres;
use mend_pg::repair::{self, Outcome};
use mend_pg::{Adapter, AdapterConfig, PgMetrics};
use mend_rpc::pb;
use mend_rpc::pb::ingest_client::IngestClient;
use serde_json::json;
use tokio::sync::watch;

use super::demo::{agent_config, dev_certs, say};
use super::diff::Received;
use crate::cli::DemoArgs;
use crate::output::print_json;

/// How long the demo waits for an adapter to catch up before giving up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "CREATE TABLE orders (id int PRIMARY KEY, customer text, total numeric(10,2) NOT NULL, \
     updated_at timestamptz NOT NULL); ALTER TABLE orders REPLICA IDENTITY FULL;";

/// The divergence, as SQL run on one server only: (server, what, SQL).
const INJECTED: [(usize, &str, &str); 5] = [
    (
        0,
        "a lost update (pg-b never got it)",
        "UPDATE orders SET total = total + 10, updated_at = updated_at + interval '1 hour' WHERE id IN (10, 11)",
    ),
    (
        0,
        "a missed delete (pg-b still has the row)",
        "DELETE FROM orders WHERE id = 20",
    ),
    (
        0,
        "a row only on pg-a",
        "INSERT INTO orders VALUES (900001, 'new customer', 5.00, now() - interval '10 minutes')",
    ),
    (
        1,
        "a row only on pg-b",
        "INSERT INTO orders VALUES (900100, 'walk-in', 7.50, now() - interval '10 minutes')",
    ),
    (
        1,
        "a writer on pg-b with its clock 45 s fast",
        "UPDATE orders SET customer = 'fast clock', updated_at = now() + interval '45 seconds' WHERE id = 5",
    ),
];

/// One side: its server, a connection, its agent and its adapter.
struct Side {
    name: &'static str,
    pg: LocalPostgres,
    db: tokio_postgres::Client,
    agent: mend_agent::RunningAgent,
    progress: watch::Receiver<Progress>,
    stop: tokio::sync::oneshot::Sender<()>,
    adapter: tokio::task::JoinHandle<Result<(), mend_pg::PgError>>,
}

/// Keys the repair may move: the rest need a human or settle on their own.
fn repairable(category: &str) -> bool {
    matches!(category, "missing" | "stale" | "unpropagated_delete")
}

/// Compares the databases themselves: every row but the fast clock's (left
/// for a human).
const DIGEST_SQL: &str =
    "SELECT count(*), md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o WHERE id <> 5";

/// Runs the PostgreSQL demo.
pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("mend-demo-pg-").tempdir()?;
    let certs = dev_certs(tmp.path(), &["node-a", "node-b"])?;
    let servers = [
        LocalPostgres::start(&tmp.path().join("pg-a"))?,
        LocalPostgres::start(&tmp.path().join("pg-b"))?,
    ];
    super::runtime()?.block_on(async {
        let mut sides = Vec::new();
        for (pg, name) in servers.into_iter().zip(["a", "b"]) {
            sides.push(side(pg, name, &certs, tmp.path(), a.keys).await?);
        }
        say(a.json, &format!(
            "started PostgreSQL pg-a and pg-b (sockets in {} and {}), each with the same {} orders; \
             node-a and node-b follow them over mutual TLS (snapshot, then the logical slot mend_orders)",
            sides[0].pg.socket_dir().display(),
            sides[1].pg.socket_dir().display(),
            a.keys
        ));
        caught_up(&mut sides).await?;
        let addr = [sides[0].agent.addr.to_string(), sides[1].agent.addr.to_string()];
        let in_sync = super::diff::fetch(&addr[0], &addr[1], None).await?;
        say(a.json, &format!("in sync after the snapshots: {}\n", in_sync.summary.in_sync));
        for (server, what, sql) in INJECTED {
            sides[server].db.batch_execute(sql).await?;
            say(a.json, &format!("pg-{}: {what}\n    {sql}", sides[server].name));
        }
        caught_up(&mut sides).await?;
        let before = super::diff::fetch(&addr[0], &addr[1], None).await?;
        if !a.json {
            println!("\n$ mend diff --agent {} --peer {}", addr[0], addr[1]);
            super::diff::print_human(&before, 20);
            println!();
        }
        let repairs = repair_in_sql(&sides, &before, a.json).await?;
        caught_up(&mut sides).await?;
        let after = super::diff::fetch(&addr[0], &addr[1], None).await?;
        let repairable_left = after.keys.iter().filter(|k| repairable(super::names::category_name(k.category))).count();
        let sql = sql_digests(&sides).await?;
        let sql_agree = sql[0] == sql[1];
        let converged = repairable_left == 0 && sql_agree;
        if a.json {
            print_json(&json!({
                "before": super::diff::to_json(&before),
                "repairs": repairs,
                "after": super::diff::to_json(&after),
                "sql": {"query": DIGEST_SQL, "pg_a": {"rows": sql[0].0, "md5": sql[0].1},
                        "pg_b": {"rows": sql[1].0, "md5": sql[1].1}, "agree": sql_agree},
                "converged": converged,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            }))?;
        } else {
            print_outcome(&addr, &after, &sql, repairable_left, started);
        }
        for s in sides {
            let _ = s.stop.send(());
            s.adapter.await??;
            s.agent.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(if converged { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// Repairs every repairable key of `before` in SQL, from the side ahead to
/// the side behind (version-checked), saying what each did; returns the
/// repairs as JSON.
async fn repair_in_sql(
    sides: &[Side],
    before: &Received,
    json: bool,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let spec = sides[0].agent_spec().await?;
    let mut repairs = Vec::new();
    for k in &before.keys {
        if !repairable(super::names::category_name(k.category)) {
            continue;
        }
        // `behind` is "peer" (pg-b) or "local" (pg-a).
        let (ahead, behind, ahead_entry) = if super::names::side_name(k.behind) == Some("peer") {
            (0, 1, &k.local)
        } else {
            (1, 0, &k.peer)
        };
        let tombstone = tombstone_of(ahead_entry)?;
        let outcome = repair::repair_key(
            &sides[ahead].db,
            &sides[behind].db,
            &spec,
            &k.key,
            tombstone.as_ref(),
        )
        .await?;
        let key = String::from_utf8_lossy(&k.key).to_string();
        say(
            json,
            &format!(
                "repair {key:>7} ({}) pg-{} -> pg-{}: {}",
                super::names::category_name(k.category),
                sides[ahead].name,
                sides[behind].name,
                match outcome {
                    Outcome::Applied => "written (version-checked)",
                    Outcome::Kept => "kept: the target holds a newer row",
                }
            ),
        );
        repairs.push(
            json!({"key": key, "category": super::names::category_name(k.category), "from": sides[ahead].name,
                            "to": sides[behind].name, "applied": outcome == Outcome::Applied}),
        );
    }
    Ok(repairs)
}

/// Each server's row count and digest by [`DIGEST_SQL`].
async fn sql_digests(sides: &[Side]) -> anyhow::Result<Vec<(i64, Option<String>)>> {
    let mut sql = Vec::new();
    for s in sides {
        let r = s.db.query_one(DIGEST_SQL, &[]).await?;
        sql.push((r.get::<_, i64>(0), r.get::<_, Option<String>>(1)));
    }
    Ok(sql)
}

/// Prints the diff after the repair, the databases' digests and the verdict.
fn print_outcome(
    addr: &[String],
    after: &Received,
    sql: &[(i64, Option<String>)],
    repairable_left: usize,
    started: Instant,
) {
    let sql_agree = sql[0] == sql[1];
    println!(
        "\n$ mend diff --agent {} --peer {}   (after the repair, seen through the slots)",
        addr[0], addr[1]
    );
    super::diff::print_human(after, 20);
    println!("\n$ psql -c \"{DIGEST_SQL}\"   (on each server)");
    println!(
        "pg-a: {} rows, md5 {}",
        sql[0].0,
        sql[0].1.as_deref().unwrap_or("-")
    );
    println!(
        "pg-b: {} rows, md5 {}",
        sql[1].0,
        sql[1].1.as_deref().unwrap_or("-")
    );
    if repairable_left == 0 && sql_agree {
        println!(
            "\nCONVERGED: the databases agree row for row; the fast clock's row is left for a human (future_version)."
        );
    } else {
        println!(
            "\nNOT CONVERGED: {repairable_left} repairable keys differ; SQL agrees: {sql_agree}"
        );
    }
    println!(
        "demo finished in {:.1}s; temporary servers and data removed",
        started.elapsed().as_secs_f64()
    );
}

/// Loads a server, starts its agent and its adapter.
async fn side(
    pg: LocalPostgres,
    name: &'static str,
    certs: &std::path::Path,
    tmp: &std::path::Path,
    rows: u64,
) -> anyhow::Result<Side> {
    let (db, conn) =
        tokio_postgres::connect(&pg.conninfo("postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(SCHEMA).await?;
    db.batch_execute(&format!(
        "INSERT INTO orders SELECT i, 'customer ' || (i % 997), (i % 500) + 0.99, \
         timestamptz '2026-01-01 00:00:00+00' + i * interval '1 ms' FROM generate_series(1, {rows}) i"
    ))
    .await?;
    let node = format!("node-{name}");
    let mut range = RangeSpec::whole("orders", TreeShape::default());
    range.mode = RangeMode::Digests;
    // The database holds whatever a writer stamped: the agent records it
    // (diffs call it future_version) rather than stall the feed, as the
    // other demo's agents do.
    let mut cfg = agent_config(&node, tmp, certs)?;
    cfg.ranges = vec![range];
    let agent = mend_agent::start(cfg, Secret::development()).await?;
    let metrics = Arc::new(PgMetrics::default());
    let mut adapter = Adapter::connect(
        AdapterConfig::new(&pg.conninfo("postgres"), "orders", "updated_at", "orders"),
        metrics,
    )
    .await?;
    let progress = adapter.progress();
    let ingest = IngestClient::new(super::channel(&agent.addr.to_string()).await?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let adapter = tokio::spawn(async move {
        adapter
            .run(ingest, async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Side {
        name,
        pg,
        db,
        agent,
        progress,
        stop,
        adapter,
    })
}

impl Side {
    /// The table's layout as the adapters see it.
    async fn agent_spec(&self) -> anyhow::Result<mend_pg::TableSpec> {
        Ok(mend_pg::catalog::table_spec(
            &self.db,
            "public",
            "orders",
            "updated_at",
            NodeId::new("pg")?,
        )
        .await?)
    }
}

/// Waits until both adapters have acknowledged everything committed so far.
async fn caught_up(sides: &mut [Side]) -> anyhow::Result<()> {
    for s in sides.iter_mut() {
        if !wait_caught_up(&mut s.progress, CATCH_UP_LIMIT).await {
            if s.adapter.is_finished() {
                (&mut s.adapter).await??;
            }
            anyhow::bail!(
                "the adapter of pg-{} did not catch up within {CATCH_UP_LIMIT:?}",
                s.name
            );
        }
    }
    Ok(())
}

/// The version of the ahead side's tombstone, if it holds one.
fn tombstone_of(e: &Option<pb::EntryVersion>) -> anyhow::Result<Option<Version>> {
    match e {
        Some(e) if e.present && e.tombstone => {
            let v = e
                .version
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("a tombstone without a version"))?;
            Ok(Some(Version {
                ms: v.ms,
                logical: v.logical,
                origin: NodeId::new(v.origin.clone())?,
                seq: v.seq,
            }))
        }
        _ => Ok(None),
    }
}
