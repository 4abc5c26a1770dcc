//! Slot lag under a sustained write load (issue 13: "slot lag under a
//! 5 000 writes/s load stays below 1 s").
//!
//! One throwaway local PostgreSQL 15 server, one table of
//! `MEND_PG_LAG_ROWS` rows (default 100 000; `bigint` key and version,
//! `REPLICA IDENTITY FULL`), one agent (in-process, mutual TLS) and one
//! `mend_pg::Adapter` following the table into it. After the snapshot,
//! writers on `MEND_PG_LAG_CONNS` connections (default 4) commit
//! `MEND_PG_LAG_RATE` (default 5 000) single-row transactions per second
//! (90% `UPDATE` of a random row, 10% `INSERT` of a new one), paced
//! against the clock (a writer that falls behind catches up back to back,
//! so the achieved rate printed is the honest one), for
//! `MEND_PG_LAG_SECS` seconds (default 30).
//!
//! Measured while it runs:
//! - **freshness** (end to end): every 100 ms a marker row (key 0, outside
//!   the load's keys) is updated to the next version `m`; the time from
//!   just before that `UPDATE` is sent until the agent's store holds
//!   version `m` for key 0 (polled every 5 ms with `Peer.Lookup` over TLS,
//!   as a peer would see it). Markers written during the load and seen
//!   after it ended still count.
//! - every 100 ms: the adapter's own gauges (`mend_pg_slot_lag_bytes`,
//!   `mend_pg_slot_lag_seconds`) and, from `pg_replication_slots`,
//!   `pg_current_wal_lsn() - confirmed_flush_lsn` (bytes) and
//!   `- restart_lsn` (what every peek decodes from).
//!
//! Diagnostics (defaults are the adapter's): `MEND_PG_LAG_BATCH_ROWS`
//! (`batch_rows`), `MEND_PG_LAG_POLL_MS` (`poll_interval`), and
//! `MEND_PG_LAG_CHECKPOINT_MS` (a `CHECKPOINT` every N ms, 0 = never:
//! it logs a running-transactions record, which lets the slot's
//! `restart_lsn` move, so every peek decodes less WAL). The result
//! also breaks freshness down by how far `restart_lsn` was behind when
//! the marker was written.
//!
//! Run: `cargo bench --bench pg_lag`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mend_agent::AgentConfig;
use mend_core::{RangeMode, RangeSpec, Secret, TreeShape};
use mend_pg::adapter::wait_caught_up;
use mend_pg::instance::LocalPostgres;
use mend_pg::{Adapter, AdapterConfig, PgMetrics};
use mend_rpc::pb;
use mend_rpc::pb::ingest_client::IngestClient;
use mend_rpc::pb::peer_client::PeerClient;
use tokio::time::MissedTickBehavior;

/// The marker row's key (the load uses keys 1 and up).
const MARKER_ID: i64 = 0;
/// How often a marker is written and the slot sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the probe asks the agent for the marker's version.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// How long to wait, after the load, for the adapter to catch up.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let rate = env("MEND_PG_LAG_RATE", 5_000).max(1);
    let secs = env("MEND_PG_LAG_SECS", 30).max(1);
    let rows = env("MEND_PG_LAG_ROWS", 100_000).max(1);
    let conns = env("MEND_PG_LAG_CONNS", 4).clamp(1, 64);
    let checkpoint_ms = env("MEND_PG_LAG_CHECKPOINT_MS", 0);
    let tmp = tempfile::Builder::new().prefix("mend-pg-lag-").tempdir()?;
    let pg = LocalPostgres::start(&tmp.path().join("pg"))?;
    let certs = tmp.path().join("certs");
    mend_tls::dev::make(&certs, &["node-a".into()], &[], 1)?;
    mend_tls::dev::make(&certs, &["operator".into()], &["replica".into()], 1)?;
    let client = Arc::new(mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(
        &certs.join("operator"),
    ))?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let admin = connect(&pg, "postgres").await?;
        admin.batch_execute("CREATE DATABASE bench").await?;
        let db = connect(&pg, "bench").await?;
        let t = Instant::now();
        db.batch_execute(&format!(
            "CREATE TABLE events (id bigint PRIMARY KEY, v bigint NOT NULL, payload text NOT NULL); \
             ALTER TABLE events REPLICA IDENTITY FULL; \
             INSERT INTO events SELECT i, 1, md5(i::text) FROM generate_series(1, {rows}) i; \
             INSERT INTO events VALUES ({MARKER_ID}, 0, 'marker')"
        ))
        .await?;
        println!("loaded {rows} rows in {:.1}s", t.elapsed().as_secs_f64());

        let mut range = RangeSpec::whole("events", TreeShape::default());
        range.mode = RangeMode::Digests;
        let mut cfg = AgentConfig {
            node_id: "node-a".into(),
            listen: "127.0.0.1:0".parse()?,
            data_dir: tmp.path().join("node-a"),
            ranges: vec![range],
            ..AgentConfig::default()
        };
        cfg.tls.dir = Some(certs.join("node-a"));
        // The probe reads the store with Peer.Lookup under the operator's
        // certificate.
        cfg.roles.peer = vec!["operator".into()];
        let agent = mend_agent::start(cfg, Secret::development()).await?;
        let mut ac = AdapterConfig::new(&pg.conninfo("bench"), "events", "v", "events");
        if let Ok(n) = std::env::var("MEND_PG_LAG_BATCH_ROWS") {
            ac.limits.batch_rows = n.parse()?;
        }
        if let Ok(ms) = std::env::var("MEND_PG_LAG_POLL_MS") {
            ac.limits.poll_interval = Duration::from_millis(ms.parse()?);
        }
        let batch_rows = ac.limits.batch_rows;
        let poll = ac.limits.poll_interval;
        let metrics = Arc::new(PgMetrics::default());
        let mut adapter = Adapter::connect(ac, metrics.clone()).await?;
        let mut progress = adapter.progress();
        let ingest = IngestClient::new(channel(&agent.addr.to_string(), &client).await?);
        let t = Instant::now();
        let (stop_adapter, stopped) = tokio::sync::oneshot::channel::<()>();
        let adapter_task = tokio::spawn(async move {
            let r = adapter
                .run(ingest, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = &r {
                eprintln!("adapter: {e}");
            }
            r
        });
        anyhow::ensure!(
            wait_caught_up(&mut progress, Duration::from_secs(600)).await,
            "the adapter did not finish its snapshot: {}",
            adapter_outcome(&adapter_task)
        );
        println!(
            "snapshot ingested in {:.1}s; adapter batch_rows = {batch_rows}, poll_interval = {} ms{}",
            t.elapsed().as_secs_f64(),
            poll.as_millis(),
            if checkpoint_ms > 0 { format!("; CHECKPOINT every {checkpoint_ms} ms (diagnostic)") } else { String::new() }
        );

        let peer = PeerClient::new(channel(&agent.addr.to_string(), &client).await?);
        let load_done = Arc::new(AtomicBool::new(false));
        let markers_done = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);

        // The writers.
        let next_id = Arc::new(AtomicU64::new(rows + 1));
        let mut writers = Vec::new();
        for w in 0..conns {
            let share = rate / conns + u64::from(w < rate % conns);
            let c = connect(&pg, "bench").await?;
            let next_id = next_id.clone();
            writers.push(tokio::spawn(async move {
                write_load(c, w, share, rows, start, end, next_id).await
            }));
        }

        // Diagnostic only: periodic checkpoints.
        let checkpoints = if checkpoint_ms > 0 {
            let c = connect(&pg, "bench").await?;
            let load_done = load_done.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(checkpoint_ms));
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                while !load_done.load(Ordering::Relaxed) {
                    tick.tick().await;
                    c.batch_execute("CHECKPOINT").await?;
                }
                anyhow::Ok(())
            }))
        } else {
            None
        };

        // Markers: every 100 ms, the marker row's next version.
        let pending: Arc<Mutex<VecDeque<(i64, Instant)>>> = Arc::default();
        let markers = {
            let c = connect(&pg, "bench").await?;
            let pending = pending.clone();
            let load_done = load_done.clone();
            tokio::spawn(async move {
                let upd = c.prepare("UPDATE events SET v = $1 WHERE id = 0").await?;
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut m: i64 = 0;
                while !load_done.load(Ordering::Relaxed) {
                    tick.tick().await;
                    m += 1;
                    let t0 = Instant::now();
                    c.execute(&upd, &[&m]).await?;
                    lock(&pending).push_back((m, t0));
                }
                anyhow::Ok(m)
            })
        };

        // The probe: the marker's version at the agent, every 5 ms.
        let probe = {
            let pending = pending.clone();
            let markers_done = markers_done.clone();
            let mut peer = peer.clone();
            tokio::spawn(async move {
                let mut fresh: Vec<(f64, f64)> = Vec::new(); // (written at s, freshness ms)
                let mut tick = tokio::time::interval(PROBE_EVERY);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let seen = marker_version(&mut peer).await?;
                    let now = Instant::now();
                    let mut p = lock(&pending);
                    while p.front().is_some_and(|&(m, _)| m <= seen) {
                        if let Some((_, t0)) = p.pop_front() {
                            fresh.push((
                                (t0 - start).as_secs_f64(),
                                (now - t0).as_secs_f64() * 1e3,
                            ));
                        }
                    }
                    if p.is_empty() && markers_done.load(Ordering::Relaxed) {
                        return anyhow::Ok(fresh);
                    }
                }
            })
        };

        // The sampler: the adapter's gauges and the slot, every 100 ms.
        let sampler = {
            let c = connect(&pg, "bench").await?;
            let metrics = metrics.clone();
            let load_done = load_done.clone();
            tokio::spawn(async move {
                let q = c
                    .prepare(
                        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, \
                         (pg_current_wal_lsn() - restart_lsn)::int8, \
                         (pg_current_wal_lsn() - '0/0')::int8 \
                         FROM pg_replication_slots WHERE slot_name = 'mend_events'",
                    )
                    .await?;
                let mut s = Samples::default();
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut last_print = 0;
                while !load_done.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let r = c.query_one(&q, &[]).await?;
                    let (confirmed, restart, wal): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                    let t = start.elapsed().as_secs_f64();
                    s.slot_bytes.push(confirmed as f64);
                    s.restart_bytes.push(restart as f64);
                    s.restart_at.push((t, restart));
                    s.gauge_bytes.push(metrics.lag_bytes.get() as f64);
                    s.gauge_secs.push(metrics.lag_seconds.get());
                    s.wal.get_or_insert((t, wal));
                    s.wal_end = (t, wal);
                    if t as u64 / 5 > last_print {
                        last_print = t as u64 / 5;
                        println!(
                            "  t={t:>5.1}s  slot behind {:>10} B  restart_lsn behind {:>11} B  \
                             gauge {:>6.3} s, {:>10} B  changes acked {}",
                            confirmed,
                            restart,
                            metrics.lag_seconds.get(),
                            metrics.lag_bytes.get(),
                            metrics.changes.get()
                        );
                    }
                }
                anyhow::Ok(s)
            })
        };

        let mut written = 0u64;
        let mut behind = 0u64;
        for w in writers {
            let (n, late) = w.await??;
            written += n;
            behind += late;
        }
        let load_secs = start.elapsed().as_secs_f64();
        load_done.store(true, Ordering::Relaxed);
        let marks = markers.await??;
        if let Some(c) = checkpoints {
            c.await??;
        }
        markers_done.store(true, Ordering::Relaxed);
        let samples = sampler.await??;
        let drain_start = Instant::now();
        let fresh = tokio::select! {
            r = probe => r??,
            () = tokio::time::sleep(DRAIN_LIMIT) => anyhow::bail!(
                "the agent did not reach the last marker {DRAIN_LIMIT:?} after the load ended \
                 ({})", adapter_outcome(&adapter_task)
            ),
        };
        let drain_ms = drain_start.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            !adapter_task.is_finished(),
            "the adapter stopped: {}",
            adapter_outcome(&adapter_task)
        );

        let mut f: Vec<f64> = fresh.iter().map(|&(_, ms)| ms).collect();
        f.sort_by(|a, b| a.total_cmp(b));
        let over = fresh.iter().filter(|&&(_, ms)| ms >= 1000.0).count();
        let first_over = fresh.iter().find(|&&(_, ms)| ms >= 1000.0).map(|&(t, _)| t);
        let achieved = written as f64 / load_secs;
        let wal_rate = {
            let ((t0, w0), (t1, w1)) = (samples.wal.unwrap_or_default(), samples.wal_end);
            if t1 > t0 { (w1 - w0) as f64 / (t1 - t0) } else { 0.0 }
        };
        println!();
        println!(
            "writes: {written} single-row transactions in {load_secs:.1}s on {conns} connections: \
             {achieved:.0}/s achieved of {rate}/s asked ({behind} issued late, back to back); \
             WAL {:.2} MB/s",
            wal_rate / 1e6
        );
        println!(
            "freshness (marker commit -> agent holds it), {} markers: p50 {:.0} ms, p99 {:.0} ms, \
             max {:.0} ms; {over} at >= 1 s{}",
            f.len(),
            pct(&f, 0.50),
            pct(&f, 0.99),
            f.last().copied().unwrap_or(0.0),
            first_over.map(|t| format!(" (first written at t={t:.1}s)")).unwrap_or_default()
        );
        println!(
            "after the load: the last marker ({marks}) reached the agent {drain_ms:.0} ms after \
             the writers stopped"
        );
        // Freshness by how far restart_lsn was behind when the marker was
        // written (the sample nearest in time).
        let mut bins: [Vec<f64>; 4] = Default::default();
        for &(t, ms) in &fresh {
            let i = samples.restart_at.partition_point(|&(st, _)| st < t);
            let near = [i.checked_sub(1), Some(i)]
                .into_iter()
                .flatten()
                .filter_map(|j| samples.restart_at.get(j))
                .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()));
            if let Some(&(_, restart)) = near {
                let mb = restart as f64 / 1e6;
                let b = if mb < 5.0 { 0 } else if mb < 10.0 { 1 } else if mb < 20.0 { 2 } else { 3 };
                bins[b].push(ms);
            }
        }
        let labels = ["< 5 MB", "5-10 MB", "10-20 MB", ">= 20 MB"];
        let by_restart: Vec<String> = bins
            .iter_mut()
            .zip(labels)
            .filter(|(b, _)| !b.is_empty())
            .map(|(b, l)| {
                b.sort_by(|x, y| x.total_cmp(y));
                format!("{l}: {} markers, p50 {:.0} ms", b.len(), pct(b, 0.5))
            })
            .collect();
        println!(
            "freshness by restart_lsn distance when written: {}",
            by_restart.join("; ")
        );
        let sb = samples.slot_bytes.sorted();
        let rb = samples.restart_bytes.sorted();
        let gb = samples.gauge_bytes.sorted();
        let gs = samples.gauge_secs.sorted();
        println!(
            "pg_replication_slots, current - confirmed_flush_lsn ({} samples): p50 {:.0} B, \
             p99 {:.0} B, max {:.0} B",
            sb.len(),
            pct(&sb, 0.5),
            pct(&sb, 0.99),
            sb.last().copied().unwrap_or(0.0)
        );
        println!(
            "pg_replication_slots, current - restart_lsn (decoded by every peek): p50 {:.0} B, \
             max {:.0} B",
            pct(&rb, 0.5),
            rb.last().copied().unwrap_or(0.0)
        );
        println!(
            "adapter gauges: mend_pg_slot_lag_bytes p50 {:.0} max {:.0}; \
             mend_pg_slot_lag_seconds p50 {:.3} max {:.3}",
            pct(&gb, 0.5),
            gb.last().copied().unwrap_or(0.0),
            pct(&gs, 0.5),
            gs.last().copied().unwrap_or(0.0)
        );
        let max = f.last().copied().unwrap_or(f64::INFINITY);
        println!(
            "target (slot lag < 1 s at {rate} writes/s): {} (max freshness {max:.0} ms{})",
            if max < 1000.0 && achieved >= 0.95 * rate as f64 { "MET" } else { "MISSED" },
            if achieved < 0.95 * rate as f64 { ", but the writers fell short of the rate" } else { "" }
        );
        // The adapter first: the agent's shutdown waits for its stream.
        let _ = stop_adapter.send(());
        adapter_task.await??;
        agent.stop().await.map_err(|e| anyhow::anyhow!(e))?;
        Ok(())
    })
}

/// One writer: `share` transactions per second until `end`, each due at
/// its own instant; returns (committed, issued late by more than 10 ms).
async fn write_load(
    c: tokio_postgres::Client,
    w: u64,
    share: u64,
    rows: u64,
    start: Instant,
    end: Instant,
    next_id: Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64)> {
    if share == 0 {
        return Ok((0, 0));
    }
    let upd = c
        .prepare("UPDATE events SET v = v + 1, payload = md5(random()::text) WHERE id = $1")
        .await?;
    let ins = c
        .prepare("INSERT INTO events VALUES ($1, 1, md5(random()::text))")
        .await?;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let (mut done, mut late) = (0u64, 0u64);
    loop {
        let due = start + Duration::from_secs_f64(done as f64 / share as f64);
        if due >= end {
            return Ok((done, late));
        }
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else if now - due > Duration::from_millis(10) {
            late += 1;
        }
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let r = rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if r.is_multiple_of(10) {
            let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
            c.execute(&ins, &[&id]).await?;
        } else {
            let id = (1 + (r >> 8) % rows) as i64;
            c.execute(&upd, &[&id]).await?;
        }
        done += 1;
    }
}

/// The marker row's version at the agent (-1 if absent).
async fn marker_version(peer: &mut PeerClient<tonic::transport::Channel>) -> anyhow::Result<i64> {
    let r = peer
        .lookup(pb::FetchRequest {
            keys: vec![MARKER_ID.to_string().into_bytes()],
        })
        .await?
        .into_inner();
    Ok(r.results
        .first()
        .and_then(|r| r.entry.as_ref())
        .and_then(|e| e.version.as_ref())
        .map(|v| v.ms as i64)
        .unwrap_or(-1))
}

#[derive(Default)]
struct Samples {
    slot_bytes: Series,
    restart_bytes: Series,
    /// (seconds since start, bytes behind restart_lsn), in time order.
    restart_at: Vec<(f64, i64)>,
    gauge_bytes: Series,
    gauge_secs: Series,
    /// (seconds since start, WAL position) of the first and last sample.
    wal: Option<(f64, i64)>,
    wal_end: (f64, i64),
}

/// Samples of one quantity (10 a second: bounded by the run's length).
#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn sorted(mut self) -> Vec<f64> {
        self.0.sort_by(|a, b| a.total_cmp(b));
        self.0
    }
}

/// The `q` quantile of sorted values (0 if none).
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the adapter's task ended with, if it ended.
fn adapter_outcome(t: &tokio::task::JoinHandle<Result<(), mend_pg::PgError>>) -> &'static str {
    if t.is_finished() {
        "the adapter's task ended (see its error above)"
    } else {
        "the adapter is still running"
    }
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
