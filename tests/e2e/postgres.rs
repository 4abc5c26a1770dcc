//! mend beside real PostgreSQL servers (Debian's `postgresql`, started by
//! each test in a temp dir on a Unix socket): the `mend-pg` adapter's
//! snapshot and slot stream into real agents over mutual TLS, crashes of
//! the adapter and of the agent mid-stream, divergence injected by SQL and
//! found with the right categories, version-checked repairs in SQL, and
//! bad configurations refused with clear errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mend_pg::adapter::Progress;
use mend_pg::instance::LocalPostgres;
use mend_pg::repair::{self, Outcome};
use mend_pg::{Adapter, AdapterConfig, PgError, PgMetrics};
use mend_rpc::pb::ingest_client::IngestClient;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::harness::*;

/// Digest-only agents for the `orders` table; the database is the truth
/// about the versions it holds, so future versions are recorded (and
/// classified), not refused.
const CONFIG: &str = r#"
future_writes = "accept"

[[ranges]]
name = "orders"
mode = "digests"
shape = { fanout = 16, depth = 2 }
"#;

/// The table every test uses: an integer key, a nullable note, a quantity
/// and `updated_at` as the version column.
const SCHEMA: &str = "CREATE TABLE orders (id int PRIMARY KEY, note text, qty int NOT NULL, \
                      updated_at timestamptz NOT NULL); \
                      ALTER TABLE orders REPLICA IDENTITY FULL;";

/// `n` rows with fixed timestamps, identical on every server.
fn load(n: u32) -> String {
    format!(
        "INSERT INTO orders SELECT i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'order ' || i END, \
         i % 17, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 ms' \
         FROM generate_series(1, {n}) i"
    )
}

/// A local server with the `orders` table loaded with `rows` rows.
async fn server(dir: &Path, rows: u32) -> (LocalPostgres, tokio_postgres::Client) {
    let pg = LocalPostgres::start(dir).expect("start postgres");
    let db = connect(&pg).await;
    db.batch_execute(SCHEMA).await.expect("schema");
    db.batch_execute(&load(rows)).await.expect("load");
    (pg, db)
}

async fn connect(pg: &LocalPostgres) -> tokio_postgres::Client {
    let (db, conn) = tokio_postgres::connect(&pg.conninfo("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(conn);
    db
}

fn agent_config(dir: &Path) -> String {
    let cfg = dir.join("orders.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    cfg.to_str().unwrap().to_string()
}

fn adapter_config(pg: &LocalPostgres, slot: &str) -> AdapterConfig {
    let mut c = AdapterConfig::new(&pg.conninfo("postgres"), "orders", "updated_at", "orders");
    c.slot = slot.to_string();
    c.source = format!("pg:{slot}");
    c.limits.batch_rows = 700;
    c
}

/// A running adapter task.
struct Running {
    task: JoinHandle<Result<(), PgError>>,
    progress: watch::Receiver<Progress>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Connects (retrying while the previous holder's session still holds
    /// the slot's lock) and runs the adapter against the agent at `addr`.
    async fn start(config: AdapterConfig, addr: &str) -> Running {
        let metrics = Arc::new(PgMetrics::default());
        let mut adapter =
            until(
                std::time::Duration::from_secs(20),
                "the slot",
                async || match Adapter::connect(config.clone(), metrics.clone()).await {
                    Ok(a) => Some(a),
                    Err(PgError::SlotInUse { .. }) => None,
                    Err(e) => panic!("adapter: {e}"),
                },
            )
            .await;
        let progress = adapter.progress();
        let ingest = IngestClient::new(channel(addr).await);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            adapter
                .run(ingest, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Running {
            task,
            progress,
            stop: Some(stop),
        }
    }

    /// Waits until every transaction committed before this call is
    /// acknowledged: a whole idle round has started since.
    async fn caught_up(&mut self) {
        let ok = mend_pg::adapter::wait_caught_up(
            &mut self.progress,
            std::time::Duration::from_secs(60),
        )
        .await;
        assert!(
            ok,
            "adapter did not catch up: {:?}",
            if self.task.is_finished() {
                Some(format!("{:?}", (&mut self.task).await))
            } else {
                None
            }
        );
    }

    /// Stops the adapter cleanly and checks it ended without error.
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.expect("join").expect("adapter ran cleanly");
    }

    /// Kills the adapter wherever it is (a crash: nothing is flushed).
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The divergent keys of `mend diff --json` from `a` to `b`.
fn diff_rows(a: &str, b: &str) -> Vec<serde_json::Value> {
    let (code, v) = mend_json(&["diff", "--agent", a, "--peer", b]);
    assert!(code == 0 || code == 1, "mend diff failed: {v}");
    v["keys"].as_array().cloned().unwrap_or_default()
}

/// Key → category of a diff's rows.
fn categories(rows: &[serde_json::Value]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_string(),
                k["category"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The divergent keys of a diff from `a` to `b` with their categories
/// (`{}` when in sync).
fn diff(a: &str, b: &str) -> BTreeMap<String, String> {
    categories(&diff_rows(a, b))
}

/// The changes the tests make while the adapter follows: updates (some of
/// them twice in one transaction), deletes, inserts and key updates, in
/// many small transactions and one large one.
async fn churn(db: &tokio_postgres::Client, round: u32) {
    let bump = "updated_at = updated_at + interval '1 second'";
    for i in 0..20u32 {
        let id = (round * 131 + i * 37) % 3000 + 1;
        db.execute(
            &format!("UPDATE orders SET qty = qty + 1, {bump} WHERE id = $1"),
            &[&(id as i32)],
        )
        .await
        .unwrap();
    }
    db.batch_execute(&format!(
        "BEGIN; \
         UPDATE orders SET note = 'bulk {round}', {bump} WHERE id % 9 = {m}; \
         UPDATE orders SET qty = qty * 2, {bump} WHERE id % 9 = {m} AND id % 2 = 0; \
         DELETE FROM orders WHERE id % 53 = {m}; \
         INSERT INTO orders SELECT i, 'new', 1, now() - interval '1 day' \
           FROM generate_series({lo}, {hi}) i; \
         UPDATE orders SET id = id + 100000, {bump} WHERE id % 97 = {m} AND id < 100000; \
         COMMIT;",
        m = round % 9,
        lo = 10_000 + round * 100,
        hi = 10_000 + round * 100 + 49,
    ))
    .await
    .unwrap();
}

/// Logs every key that stops existing (a delete, or a key update's old
/// key) into `gone`, so a test knows exactly which rows mend must hold a
/// tombstone for, even for rows that lived only inside one transaction.
const GONE_LOG: &str = "CREATE TABLE gone (id int); \
    CREATE FUNCTION log_gone() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
      IF TG_OP = 'DELETE' OR OLD.id <> NEW.id THEN INSERT INTO gone VALUES (OLD.id); END IF; \
      RETURN NULL; END $$; \
    CREATE TRIGGER gone AFTER DELETE OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION log_gone();";

/// The keys a diff against a snapshot-only twin must report: every key
/// that is gone from the table (a tombstone on the following side, nothing
/// on the twin), as `unpropagated_delete`.
async fn deleted_keys(db: &tokio_postgres::Client) -> BTreeMap<String, String> {
    db.query(
        "SELECT DISTINCT id FROM gone WHERE id NOT IN (SELECT id FROM orders)",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<_, i32>(0).to_string(),
            "unpropagated_delete".to_string(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_snapshot_and_stream_equal_a_full_scan_across_crashes() {
    // Proves the adapter's snapshot + slot stream holds exactly what a
    // full scan of the final table holds, with an adapter crash and an
    // agent SIGKILL mid-stream: the twin agent is fed only a snapshot of
    // the final table (a full scan), and the diff between them is exactly
    // the deleted rows (tombstones the twin never saw). The followed store
    // then verifies against its own data (tree = rebuild).
    let d = tempfile::tempdir().unwrap();
    let (pg, db) = server(d.path(), 3000).await;
    let cfg = agent_config(d.path());
    let (a_dir, twin_dir) = (d.path().join("a"), d.path().join("twin"));
    db.batch_execute(GONE_LOG).await.unwrap();
    let mut a = AgentProc::start("node-a", &a_dir, &["--config", &cfg]);

    let run = Running::start(adapter_config(&pg, "follow"), &a.addr).await;
    for round in 0..3 {
        churn(&db, round).await;
    }
    // The adapter crashes mid-stream (wherever it is), and a new one
    // resumes from the acknowledged position.
    churn(&db, 3).await;
    run.crash().await;
    churn(&db, 4).await;
    let mut run = Running::start(adapter_config(&pg, "follow"), &a.addr).await;
    churn(&db, 5).await;
    run.caught_up().await;

    // The agent is SIGKILLed with changes in flight; restarted, the
    // adapter (its stream broken) starts again against it.
    churn(&db, 6).await;
    a.kill();
    // More changes, so the adapter has something to send to the dead agent
    // even if it had caught up before the kill.
    churn(&db, 7).await;
    let ended = (&mut run.task).await.expect("join");
    assert!(
        matches!(ended, Err(PgError::Ingest(_))),
        "the adapter stops on a broken ingest stream: {ended:?}"
    );
    a = AgentProc::start("node-a", &a_dir, &["--config", &cfg]);
    let mut run = Running::start(adapter_config(&pg, "follow"), &a.addr).await;
    churn(&db, 8).await;
    run.caught_up().await;

    // The twin: a snapshot of the final table, nothing streamed.
    let twin = AgentProc::start("node-twin", &twin_dir, &["--config", &cfg]);
    let mut snap = Running::start(adapter_config(&pg, "twin"), &twin.addr).await;
    snap.caught_up().await;
    snap.stop().await;
    run.caught_up().await;

    let want = deleted_keys(&db).await;
    assert!(want.len() > 50, "the churn deleted rows: {}", want.len());
    assert_eq!(
        diff(&a.addr, &twin.addr),
        want,
        "the followed agent holds the final table plus exactly the deletes' tombstones"
    );
    run.stop().await;
    a.stop();
    let out = mend(&["store", "verify", "--data-dir", a_dir.to_str().unwrap()]);
    assert!(out.status.success(), "tree = rebuild: {out:?}");
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_divergence_is_found_by_category_and_repaired_in_sql() {
    // Proves divergence injected by SQL into one of two PostgreSQL
    // replicas is found exactly, with the right category, and that the
    // version-checked SQL repair converges them without clobbering a row
    // written newer during the repair.
    let d = tempfile::tempdir().unwrap();
    let (pg1, db1) = server(&d.path().join("pg1"), 2000).await;
    let (pg2, db2) = server(&d.path().join("pg2"), 2000).await;
    let cfg = agent_config(d.path());
    let a = AgentProc::start("node-a", &d.path().join("a"), &["--config", &cfg]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &["--config", &cfg]);
    let mut ra = Running::start(adapter_config(&pg1, "follow"), &a.addr).await;
    let mut rb = Running::start(adapter_config(&pg2, "follow"), &b.addr).await;
    ra.caught_up().await;
    rb.caught_up().await;
    assert_eq!(
        diff(&a.addr, &b.addr),
        BTreeMap::new(),
        "same load, in sync"
    );

    // The same update on both, then the injected differences.
    let both = "UPDATE orders SET qty = 99, updated_at = updated_at + interval '1 hour' \
                WHERE id BETWEEN 100 AND 120";
    db1.batch_execute(both).await.unwrap();
    db2.batch_execute(both).await.unwrap();
    let bump = "updated_at = updated_at + interval '2 hours'";
    // A lost update: pg2 never got it.
    db1.batch_execute(&format!(
        "UPDATE orders SET qty = 7, {bump} WHERE id IN (5, 6)"
    ))
    .await
    .unwrap();
    // A missed delete on pg2.
    db1.batch_execute("DELETE FROM orders WHERE id IN (50, 51)")
        .await
        .unwrap();
    // Rows only on pg1.
    db1.batch_execute(
        "INSERT INTO orders VALUES (5001, 'only here', 1, '2026-06-01 00:00:00+00'), \
         (5002, NULL, 2, '2026-06-01 00:00:01+00')",
    )
    .await
    .unwrap();
    // A writer with its clock a day ahead, on pg2.
    db2.batch_execute(
        "UPDATE orders SET note = 'from the future', updated_at = now() + interval '1 day' \
         WHERE id = 77",
    )
    .await
    .unwrap();
    ra.caught_up().await;
    rb.caught_up().await;

    let rows = diff_rows(&a.addr, &b.addr);
    let found = categories(&rows);
    let want = string_map(&[
        ("5", "stale"),
        ("6", "stale"),
        ("50", "unpropagated_delete"),
        ("51", "unpropagated_delete"),
        ("5001", "missing"),
        ("5002", "missing"),
        ("77", "future_version"),
    ]);
    assert_eq!(
        found, want,
        "exactly the injected rows, each with its category"
    );

    // Repair in SQL, the newer row into the replica that is behind. While
    // it runs, a writer updates row 6 on pg2 with a newer version: the
    // repair must keep it.
    db2.batch_execute(
        "UPDATE orders SET note = 'newer during repair', updated_at = '2026-11-01 00:00:00+00' \
         WHERE id = 6",
    )
    .await
    .unwrap();
    let spec = mend_pg::catalog::table_spec(
        &db1,
        "public",
        "orders",
        "updated_at",
        mend_core::NodeId::new("pg").unwrap(),
    )
    .await
    .unwrap();
    let mut outcomes = BTreeMap::new();
    for k in rows {
        let key = k["key"].as_str().unwrap().to_string();
        if k["category"] == "future_version" {
            // The playbook does not propagate a skewed writer's rows.
            continue;
        }
        // Everything injected is ahead on pg1 (node-a, the local side).
        assert_eq!(k["behind"], "peer", "{k}");
        let tombstone = (k["local"]["tombstone"] == true).then(|| mend_core::Version {
            ms: k["local"]["ms"].as_u64().unwrap(),
            logical: k["local"]["logical"].as_u64().unwrap() as u32,
            origin: mend_core::NodeId::new(k["local"]["origin"].as_str().unwrap()).unwrap(),
            seq: k["local"]["seq"].as_u64().unwrap(),
        });
        let outcome = repair::repair_key(&db1, &db2, &spec, key.as_bytes(), tombstone.as_ref())
            .await
            .unwrap();
        outcomes.insert(key, outcome);
    }
    assert_eq!(
        outcomes["6"],
        Outcome::Kept,
        "a newer row survives the repair"
    );
    for k in ["5", "50", "51", "5001", "5002"] {
        assert_eq!(outcomes[k], Outcome::Applied, "{k}");
    }
    // SQL sees the repairs.
    let row = db2
        .query_one("SELECT qty, note FROM orders WHERE id = 5", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let row = db2
        .query_one("SELECT note FROM orders WHERE id = 6", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("newer during repair")
    );
    let n: i64 = db2
        .query_one("SELECT count(*) FROM orders WHERE id IN (50, 51)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let row = db2
        .query_one("SELECT note FROM orders WHERE id = 5002", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0),
        None,
        "NULL repaired as NULL"
    );

    // mend follows the repairs through pg2's slot: what is left is the
    // skewed writer and row 6, now newer on pg2 (stale on pg1).
    ra.caught_up().await;
    rb.caught_up().await;
    let left = diff(&a.addr, &b.addr);
    let want = string_map(&[("6", "stale"), ("77", "future_version")]);
    assert_eq!(left, want);
    ra.stop().await;
    rb.stop().await;
    drop((pg1, pg2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bad_configurations_are_clear_errors() {
    // Proves each misconfiguration is refused before anything is read,
    // with an error that names what to fix.
    let d = tempfile::tempdir().unwrap();
    let (pg, db) = server(d.path(), 10).await;
    db.batch_execute(
        "CREATE TABLE nokey (id int, updated_at timestamptz); \
         CREATE TABLE textver (id int PRIMARY KEY, updated_at text); \
         CREATE TABLE plain (id int PRIMARY KEY, updated_at timestamptz);",
    )
    .await
    .unwrap();
    let metrics = Arc::new(PgMetrics::default());
    let try_connect = async |c: AdapterConfig| {
        Adapter::connect(c, metrics.clone())
            .await
            .map(|_| ())
            .unwrap_err()
    };
    let with = |table: &str, version: &str| {
        let mut c = adapter_config(&pg, "bad");
        c.table = table.to_string();
        c.version_column = version.to_string();
        c
    };

    let e = try_connect(with("nosuch", "updated_at")).await;
    assert!(matches!(e, PgError::UnknownTable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("\"public\".\"nosuch\" does not exist"),
        "{e}"
    );
    let e = try_connect(with("nokey", "updated_at")).await;
    assert!(matches!(e, PgError::NoPrimaryKey { .. }), "{e}");
    let e = try_connect(with("orders", "modified")).await;
    assert!(matches!(e, PgError::MissingVersionColumn { .. }), "{e}");
    assert!(
        e.to_string().contains("columns: id, note, qty, updated_at"),
        "{e}"
    );
    let e = try_connect(with("textver", "updated_at")).await;
    assert!(matches!(e, PgError::VersionColumnType { .. }), "{e}");
    let e = try_connect(with("plain", "updated_at")).await;
    assert!(matches!(e, PgError::ReplicaIdentity { .. }), "{e}");
    assert!(e.to_string().contains("REPLICA IDENTITY FULL"), "{e}");
    let mut c = with("orders", "updated_at");
    c.slot = "Bad-Slot".into();
    assert!(matches!(try_connect(c).await, PgError::Config(_)));

    // A slot already in use: by another adapter (its advisory lock) ...
    let _held = Adapter::connect(adapter_config(&pg, "taken"), metrics.clone())
        .await
        .expect("first adapter");
    let e = try_connect(adapter_config(&pg, "taken")).await;
    assert!(matches!(e, PgError::SlotInUse { .. }), "{e}");
    assert!(e.to_string().contains("already in use"), "{e}");
    // ... or made for another plugin.
    db.batch_execute("SELECT pg_create_logical_replication_slot('other', 'test_decoding')")
        .await
        .unwrap();
    let e = try_connect(adapter_config(&pg, "other")).await;
    assert!(matches!(e, PgError::SlotPlugin { .. }), "{e}");

    // And a server without logical WAL.
    drop(_held);
    let other = LocalPostgres::start_with(&d.path().join("replica-wal"), &["wal_level=replica"])
        .expect("start postgres");
    let e = try_connect(adapter_config(&other, "any")).await;
    assert!(matches!(e, PgError::WalLevel { .. }), "{e}");
    assert!(e.to_string().contains("wal_level = logical"), "{e}");
    drop((db, pg, other));
}

/// A `mend attach` process: the agent's banner line read, killed on drop.
struct Attached {
    child: std::process::Child,
    addr: String,
    http: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attach(node: &str, dir: &Path, pg: &LocalPostgres) -> Attached {
    attach_table(
        node,
        dir,
        pg,
        &["--table", "orders", "--version-column", "updated_at"],
    )
}

/// `mend attach` for the table `table_args` name (`--table ...`).
fn attach_table(node: &str, dir: &Path, pg: &LocalPostgres, table_args: &[&str]) -> Attached {
    use std::io::BufRead;
    let set = cert_set(node);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(["attach", "--node-id", node, "--listen", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0", "--allow", "peer=node-*"])
        .args(["--allow-peer-address", "127.0.0.1:*", "--tls-dir"])
        .arg(&set)
        .arg("--data-dir")
        .arg(dir)
        .args(["--postgres", &pg.conninfo("postgres")])
        .args(table_args)
        .env("MEND_CLUSTER_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mend attach");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in the banner {line:?}"))
            .to_string()
    };
    assert!(field("attached=").starts_with("\"public\"."), "{line}");
    Attached {
        addr: field("grpc="),
        http: field("http="),
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mend_attach_follows_a_table_in_one_command() {
    // Proves `mend attach` alone (no config file) serves an agent whose
    // range follows the table: two attached databases that differ by one
    // row diff to exactly that row, the adapter's slot lag is exported with
    // the agent's metrics, and a bad table is a one-line error, exit 1.
    let d = tempfile::tempdir().unwrap();
    let (pg1, db1) = server(&d.path().join("pg1"), 500).await;
    let (pg2, _db2) = server(&d.path().join("pg2"), 500).await;
    let a = attach("node-a", &d.path().join("a"), &pg1);
    let b = attach("node-b", &d.path().join("b"), &pg2);
    db1.batch_execute(
        "INSERT INTO orders VALUES (7001, 'only on pg1', 1, '2026-03-01 00:00:00+00')",
    )
    .await
    .unwrap();
    let want: BTreeMap<String, String> = [("7001".to_string(), "missing".to_string())].into();
    until(
        std::time::Duration::from_secs(30),
        "the row at node-a",
        async || (diff(&a.addr, &b.addr) == want).then_some(()),
    )
    .await;
    let m = scrape(&a.http).await;
    assert!(metric(&m, "mend_pg_slot_lag_bytes", &[]) >= 0.0);
    assert!(metric(&m, "mend_pg_snapshot_rows_total", &[]) == 500.0);
    assert!(metric(&m, "mend_ingest_batches_total", &[]) >= 1.0);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mend"))
        .args([
            "attach",
            "--node-id",
            "node-c",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
        ])
        .arg(cert_set("node-c"))
        .arg("--data-dir")
        .arg(d.path().join("c"))
        .args(["--postgres", &pg1.conninfo("postgres")])
        .args(["--table", "nosuch", "--version-column", "updated_at"])
        .env("MEND_CLUSTER_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("mend: ")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(
        errors[0].contains("\"public\".\"nosuch\" does not exist"),
        "{err}"
    );
    drop((a, b, pg1, pg2));
}

/// Every row of `orders`, in key order, as one line of text each.
async fn table_rows(db: &tokio_postgres::Client) -> Vec<String> {
    db.query(
        "SELECT id::text || '|' || coalesce(note, '<null>') || '|' || qty || '|' || \
         updated_at::text FROM orders ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mend_repair_moves_rows_between_attached_databases_and_undoes_them() {
    // Proves `mend repair` repairs a digest-only range through the
    // adapters of both `mend attach` agents: the plan of a dry run changes
    // no row; the repair moves each row toward the side that is behind in
    // SQL (both directions, a delete included) at the rate asked; the
    // tables then agree row for row and the trees follow; `mend undo`
    // puts the rows back (a repaired delete stays, as with values) and the
    // trees follow the restored, older rows.
    let d = tempfile::tempdir().unwrap();
    let (pg1, db1) = server(&d.path().join("pg1"), 300).await;
    let (pg2, db2) = server(&d.path().join("pg2"), 300).await;
    let a = attach("node-a", &d.path().join("a"), &pg1);
    let b = attach("node-b", &d.path().join("b"), &pg2);
    let newer = "updated_at = updated_at + interval '2 hours'";
    db1.batch_execute(&format!(
        "UPDATE orders SET note = 'newer at pg1', {newer} WHERE id = 5; \
         DELETE FROM orders WHERE id = 6; \
         INSERT INTO orders VALUES (7001, 'only at pg1', 1, '2026-03-01 00:00:00+00')"
    ))
    .await
    .unwrap();
    db2.batch_execute(&format!(
        "UPDATE orders SET note = 'newer at pg2', {newer} WHERE id = 8; \
         INSERT INTO orders VALUES (7002, NULL, 2, '2026-03-02 00:00:00+00')"
    ))
    .await
    .unwrap();
    let want = string_map(&[
        ("5", "stale"),
        ("6", "unpropagated_delete"),
        ("7001", "missing"),
        ("8", "stale"),
        ("7002", "missing"),
    ]);
    until(
        std::time::Duration::from_secs(30),
        "the divergence in both trees",
        async || (diff(&a.addr, &b.addr) == want).then_some(()),
    )
    .await;
    let (before1, before2) = (table_rows(&db1).await, table_rows(&db2).await);

    let (code, dry) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr, "--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    let plan: BTreeMap<String, String> = dry["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_string(),
                p["behind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let behind = string_map(&[
        ("5", "peer"),
        ("6", "peer"),
        ("7001", "peer"),
        ("8", "local"),
        ("7002", "local"),
    ]);
    assert_eq!(plan, behind, "{dry}");
    assert_eq!(table_rows(&db1).await, before1, "a dry run writes nothing");
    assert_eq!(table_rows(&db2).await, before2, "a dry run writes nothing");

    // Two keys a second: the last of five keys cannot leave before 2 s.
    let (code, rep) = mend_json(&[
        "repair",
        "--agent",
        &a.addr,
        "--peer",
        &b.addr,
        "--rate-keys",
        "2",
    ]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(rep["skipped"].as_array().unwrap().len(), 0, "{rep}");
    assert_eq!(
        (rep["keys_to_peer"].as_u64(), rep["keys_to_local"].as_u64()),
        (Some(3), Some(2)),
        "{rep}"
    );
    assert!(rep["elapsed_ms"].as_u64().unwrap() >= 2000, "paced: {rep}");
    let id = rep["repair_id"].as_str().unwrap().to_string();
    let (after1, after2) = (table_rows(&db1).await, table_rows(&db2).await);
    assert_eq!(after1, after2, "the tables agree row for row");
    assert!(
        after2.iter().any(|r| r.starts_with("5|newer at pg1|")),
        "{after2:?}"
    );
    assert!(
        after1.iter().any(|r| r.starts_with("8|newer at pg2|")),
        "{after1:?}"
    );
    assert!(
        after1.iter().any(|r| r.starts_with("7002|<null>|2|")),
        "{after1:?}"
    );
    assert!(!after2.iter().any(|r| r.starts_with("6|")), "{after2:?}");
    until(
        std::time::Duration::from_secs(30),
        "the trees to follow the repaired tables",
        async || diff(&a.addr, &b.addr).is_empty().then_some(()),
    )
    .await;

    let (code, u) = mend_json(&["undo", "--agent", &a.addr, &id]);
    assert_eq!(code, 0, "{u}");
    assert_eq!(u["restored"], 4, "{u}");
    let skipped: Vec<&str> = u["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["6"], "the repaired delete stays: {u}");
    assert_eq!(table_rows(&db1).await, before1, "pg1 restored");
    let mut back2 = before2.clone();
    back2.retain(|r| !r.starts_with("6|"));
    assert_eq!(
        table_rows(&db2).await,
        back2,
        "pg2 restored but for the delete"
    );
    let mut again = want.clone();
    again.remove("6");
    until(
        std::time::Duration::from_secs(30),
        "the trees to follow the restored tables",
        async || (diff(&a.addr, &b.addr) == again).then_some(()),
    )
    .await;
    drop((a, b, pg1, pg2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_row_never_overwrites_a_newer_row_and_journals_before_it_commits() {
    // Proves the adapter's repair write keeps a row written newer since
    // the diff, hands the agent's journal the before-image before the
    // commit, and rolls the write back when the journal fails.
    use mend_pg::rows::PgRows;
    let d = tempfile::tempdir().unwrap();
    let (pg1, db1) = server(&d.path().join("pg1"), 50).await;
    let (pg2, db2) = server(&d.path().join("pg2"), 50).await;
    let spec = mend_pg::catalog::table_spec(
        &db1,
        "public",
        "orders",
        "updated_at",
        mend_core::NodeId::new("pg").unwrap(),
    )
    .await
    .unwrap();
    let ahead = PgRows::connect(&pg1.conninfo("postgres"), spec.clone())
        .await
        .unwrap();
    let behind = PgRows::connect(&pg2.conninfo("postgres"), spec)
        .await
        .unwrap();
    db1.batch_execute("UPDATE orders SET note = 'ahead', updated_at = updated_at + interval '1 hour' WHERE id IN (3, 4)")
        .await
        .unwrap();
    let rows = ahead.read(&[b"3".to_vec(), b"4".to_vec()]).await.unwrap();
    let (r3, r4) = (rows[0].clone().unwrap(), rows[1].clone().unwrap());
    // Newer still, at the behind side, after the "diff".
    db2.batch_execute("UPDATE orders SET note = 'newest', updated_at = updated_at + interval '2 hours' WHERE id = 3")
        .await
        .unwrap();
    let journaled = std::sync::Mutex::new(Vec::new());
    let applied = behind
        .apply(b"3", &r3.meta.version, Some(&r3.value), |b, a| {
            journaled.lock().unwrap().push((b, a));
            async { Ok(()) }
        })
        .await
        .unwrap();
    assert!(!applied, "the newer row is kept");
    assert!(
        journaled.lock().unwrap().is_empty(),
        "nothing journaled for a kept row"
    );
    assert_eq!(note_of(&db2, 3).await.as_deref(), Some("newest"));

    // A journal that fails rolls the write back.
    let applied = behind
        .apply(b"4", &r4.meta.version, Some(&r4.value), |_, _| async {
            Err("journal unavailable".to_string())
        })
        .await;
    assert!(applied.is_err());
    assert_eq!(note_of(&db2, 4).await.as_deref(), Some("order 4"));
    // With a journal that works: applied, journaled with the before-image.
    let applied = behind
        .apply(b"4", &r4.meta.version, Some(&r4.value), |b, a| {
            journaled.lock().unwrap().push((b, a));
            async { Ok(()) }
        })
        .await
        .unwrap();
    assert!(applied);
    assert_eq!(note_of(&db2, 4).await.as_deref(), Some("ahead"));
    let j = journaled.lock().unwrap();
    assert_eq!(j.len(), 1);
    let (before, after) = &j[0];
    assert!(String::from_utf8_lossy(&before.as_ref().unwrap().value).contains("order 4"));
    assert_eq!(after, &r4.meta);
    drop((pg1, pg2));
}

async fn note_of(db: &tokio_postgres::Client, id: i32) -> Option<String> {
    db.query_one("SELECT note FROM orders WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_versions_is_followed_versionless() {
    // Proves `mend attach` without --version-column follows a table that
    // has no version column: the feed applies in feed order, so the same
    // change made independently on both databases agrees; divergence is
    // classified only as missing / differs / deleted, the report names the
    // range versionless, and repair plans nothing.
    let d = tempfile::tempdir().unwrap();
    let kv = "CREATE TABLE kv (k text PRIMARY KEY, v text); \
              ALTER TABLE kv REPLICA IDENTITY FULL; \
              INSERT INTO kv SELECT 'k' || i, 'value ' || i FROM generate_series(1, 200) i";
    let (pg1, db1) = server(&d.path().join("pg1"), 1).await;
    let (pg2, db2) = server(&d.path().join("pg2"), 1).await;
    db1.batch_execute(kv).await.unwrap();
    db2.batch_execute(kv).await.unwrap();
    let a = attach_table("node-a", &d.path().join("a"), &pg1, &["--table", "kv"]);
    let b = attach_table("node-b", &d.path().join("b"), &pg2, &["--table", "kv"]);
    // Changed twice in one transaction, then once more: the last wins.
    db1.batch_execute(
        "BEGIN; UPDATE kv SET v = 'first' WHERE k = 'k5'; \
         UPDATE kv SET v = 'changed' WHERE k = 'k5'; COMMIT; \
         DELETE FROM kv WHERE k = 'k6'; INSERT INTO kv VALUES ('only-1', 'x'); \
         UPDATE kv SET v = 'same on both' WHERE k = 'k7'",
    )
    .await
    .unwrap();
    db2.batch_execute(
        "INSERT INTO kv VALUES ('only-2', NULL); \
         UPDATE kv SET v = 'same on both' WHERE k = 'k7'",
    )
    .await
    .unwrap();
    let want = string_map(&[
        ("k5", "differs"),
        ("k6", "deleted"),
        ("only-1", "missing"),
        ("only-2", "missing"),
    ]);
    until(
        std::time::Duration::from_secs(30),
        "the versionless divergence",
        async || (diff(&a.addr, &b.addr) == want).then_some(()),
    )
    .await;
    let (_, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(v["versionless_ranges"], serde_json::json!(["kv"]), "{v}");
    assert!(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["behind"].is_null()),
        "{v}"
    );
    let text = mend(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("VERSIONLESS range kv"), "{text}");

    let (code, dry) = mend_json(&["repair", "--agent", &a.addr, "--peer", &b.addr, "--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(dry["plan"].as_array().unwrap().len(), 0, "{dry}");
    let skipped = dry["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 4, "{dry}");
    assert!(
        skipped.iter().all(|s| s["reason"]
            .as_str()
            .unwrap()
            .starts_with("versionless range")),
        "{dry}"
    );
    // Put right by hand on one side, the key agrees again.
    db2.batch_execute("UPDATE kv SET v = 'changed' WHERE k = 'k5'")
        .await
        .unwrap();
    let mut fixed = want.clone();
    fixed.remove("k5");
    until(
        std::time::Duration::from_secs(30),
        "k5 to agree",
        async || (diff(&a.addr, &b.addr) == fixed).then_some(()),
    )
    .await;
    drop((a, b, pg1, pg2));
}

/// A map of owned strings from `(key, value)` pairs.
fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
