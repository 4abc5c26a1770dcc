//! Scale area (issue 5): what mend costs at 100k, 1M and 10M keys. Prints
//! the "Scale" tables of BENCHMARKS.md; runs only with `MEND_BENCH_SCALE=1`
//! (`MEND_BENCH_SCALE_MAX` caps N, default 10 000 000; data goes under
//! `MEND_BENCH_DIR`, default the system temporary directory;
//! `MEND_BENCH_SCALE_FANOUT` sets every tree's fan-out, default 16, depth 4;
//! `MEND_BENCH_SCALE_DEEPEN` the agents' `deepen.entries_per_bucket`,
//! default theirs (16; 0 keeps the created depth);
//! `MEND_BENCH_SCALE_ONLY=N` runs one N).
//!
//! Per N: one replica is loaded in process (13-byte keys, 100-byte values,
//! explicit versions, batches of 5 000 through `Store::write`; its agent
//! deepens the tree as a running agent would, by its check during the load
//! and once more after it), compacted and copied with a RocksDB checkpoint; 100 divergent keys are written to the copy;
//! both are then served by real `mend agent` processes and diffed with
//! `mend diff` (median of 5). Reported:
//! * diff time (the agent's own elapsed time), bytes and rounds, d = 100;
//! * agent resident memory (VmRSS after the diffs, VmHWM peak) of the
//!   initiating agent;
//! * disk bytes per key of the mend store against a plain RocksDB database
//!   holding the same key → value pairs with the same options, both fully
//!   compacted;
//! * tree rebuild (`mend store rebuild`, its own `rebuild_ms`: open and the
//!   verify that follows excluded) against a raw single-threaded scan of
//!   the same data column family.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use mend_agent::AgentConfig;
use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_rpc::pb;
use mend_store::{Cf, Write};
use rocksdb::{Cache, ColumnFamilyDescriptor, DB, IteratorMode, Options};

use crate::store::open_plain;

const VALUE_BYTES: usize = 100;
const D: u64 = 100;
const BATCH: u64 = 5_000;

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:09}").into_bytes()
}

fn value(k: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_BYTES];
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

/// A real `mend agent` process; killed on drop.
struct Agent {
    child: Child,
    addr: String,
}

/// The tree shape every range gets.
fn shape() -> TreeShape {
    let fanout = std::env::var("MEND_BENCH_SCALE_FANOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    TreeShape::new(fanout, 4).unwrap()
}

/// The agents' `deepen.entries_per_bucket`.
fn deepen_per_bucket() -> u64 {
    std::env::var("MEND_BENCH_SCALE_DEEPEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(mend_store::DEEPEN_ENTRIES_PER_BUCKET_DEFAULT)
}

/// The scale benches' development CA: one set per node, and `operator`
/// (also named `replica`) for the CLI and the loader (`mend cert` layout).
fn certs() -> &'static Path {
    static CERTS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CERTS
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let names: Vec<String> = ["node-a", "node-b"].iter().map(|s| s.to_string()).collect();
            mend_tls::dev::make(d.path(), &names, &[], 2).unwrap();
            // The CLI's and the loader's client: roles operator and replica.
            mend_tls::dev::make(d.path(), &["operator".into()], &["replica".into()], 2).unwrap();
            d
        })
        .path()
}

impl Agent {
    fn start(node: &str, dir: &Path) -> Agent {
        use std::io::BufRead;
        let s = shape();
        let config = dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "[deepen]\nentries_per_bucket = {}\n[[ranges]]\nname = \"default\"\nshape = {{ fanout = {}, depth = {} }}\n",
                deepen_per_bucket(),
                s.fanout,
                s.depth
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args(["agent", "--node-id", node, "--listen", "127.0.0.1:0"])
            .args([
                "--allow",
                "peer=node-*",
                "--allow-peer-address",
                "127.0.0.1:*",
            ])
            .arg("--tls-dir")
            .arg(certs().join(node))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir)
            .env_remove("MEND_CLUSTER_SECRET")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mend agent");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Agent { child, addr }
    }

    /// (VmRSS, VmHWM) in bytes.
    fn rss(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn stop(mut self) {
        // rustix's safe `kill` (the workspace forbids unsafe code).
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .expect("signal the agent");
        let st = self.child.wait().unwrap();
        assert!(st.success(), "agent exited with {st}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mend_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .arg("--json")
        .env_remove("MEND_CLUSTER_SECRET")
        .env("MEND_TLS_DIR", certs().join("operator"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mend {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Opens a mend data directory (or a plain one with the same column
/// families) with RocksDB directly and compacts every column family.
/// With `copy_to`, then checkpoints the compacted database there.
fn compact(path: &Path, copy_to: Option<&Path>) {
    let cache = Cache::new_lru_cache(mend_rocks::BLOCK_CACHE_BYTES);
    let cfs = Cf::ALL
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), mend_rocks::cf_options(*cf, &cache)));
    let db = DB::open_cf_descriptors(&mend_rocks::db_options(), path, cfs).unwrap();
    for cf in Cf::ALL {
        let h = db.cf_handle(cf.name()).unwrap();
        db.flush_cf(&h).unwrap();
        db.compact_range_cf(&h, None::<&[u8]>, None::<&[u8]>);
    }
    if let Some(to) = copy_to {
        rocksdb::checkpoint::Checkpoint::new(&db)
            .unwrap()
            .create_checkpoint(to)
            .unwrap();
    }
}

/// Reads every key and value of the data column family once.
fn raw_scan(path: &Path) -> (Duration, u64) {
    let cache = Cache::new_lru_cache(mend_rocks::BLOCK_CACHE_BYTES);
    let cfs = Cf::ALL
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), mend_rocks::cf_options(*cf, &cache)));
    let db = DB::open_cf_descriptors_read_only(&Options::default(), path, cfs, false).unwrap();
    let h = db.cf_handle(Cf::Data.name()).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    let mut sum = 0u64;
    for item in db.iterator_cf(&h, IteratorMode::Start) {
        let (k, v) = item.unwrap();
        sum = sum.wrapping_add(k.len() as u64 + u64::from(v.last().copied().unwrap_or(0)));
        n += 1;
    }
    std::hint::black_box(sum);
    (start.elapsed(), n)
}

/// What loading did: its time, the tree depth reached, and the last
/// deepening after the load (if one was due).
struct Loaded {
    took: Duration,
    depth: u32,
    deepened: Option<mend_store::Deepened>,
}

/// Loads `n` keys into a fresh agent store at `dir/a`, deepens its tree
/// while due, compacts it and checkpoints it to `dir/b`.
fn load(rt: &tokio::runtime::Runtime, dir: &Path, n: u64) -> Loaded {
    rt.block_on(async {
        let mut cfg = AgentConfig {
            node_id: "node-a".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("a"),
            ranges: vec![RangeSpec::whole("default", shape())],
            insecure_plaintext: true,
            ..AgentConfig::default()
        };
        cfg.deepen.entries_per_bucket = deepen_per_bucket();
        let a = mend_agent::start(cfg, Secret::development()).await.unwrap();
        let origin = NodeId::new("loader").unwrap();
        let start = Instant::now();
        let mut i = 0;
        while i < n {
            let writes: Vec<Write> = (i..(i + BATCH).min(n))
                .map(|k| {
                    Write::put(key(k), value(k)).at(Version {
                        ms: 1_700_000_000_000 + k,
                        logical: 0,
                        origin: origin.clone(),
                        seq: k + 1,
                    })
                })
                .collect();
            let s = a.state.store.clone();
            tokio::task::spawn_blocking(move || s.write(writes).unwrap())
                .await
                .unwrap();
            i += BATCH;
        }
        let took = start.elapsed();
        // What the agent's next checks would do (its check may have
        // deepened the tree during the load already).
        let mut deepened = None;
        loop {
            let done = mend_agent::deepen::check(&a.state).await.unwrap();
            match done.into_iter().last() {
                Some(d) => deepened = Some(d),
                None => break,
            }
        }
        let depth = a.state.store.shape(0).unwrap().depth;
        a.stop().await.unwrap();
        // Both replicas start from a compacted copy, as a store in steady
        // state would be: no compaction backlog competes with the diffs.
        compact(&dir.join("a"), Some(&dir.join("b")));
        Loaded {
            took,
            depth,
            deepened,
        }
    })
}

/// Writes `D` newer versions of existing keys to the agent at `addr`.
fn diverge(rt: &tokio::runtime::Runtime, addr: &str, n: u64) {
    rt.block_on(async {
        let m = mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(&certs().join("operator")))
            .unwrap();
        let ch = mend_tls::client::endpoint(
            addr,
            None,
            &mend_tls::client::ClientTls::Tls(std::sync::Arc::new(m)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
        let mut c = pb::replica_client::ReplicaClient::new(ch);
        let writes = (0..D)
            .map(|j| pb::BatchWrite {
                key: key(j * (n / D)),
                value: b"newer".to_vec(),
                delete: false,
                version: Some(pb::Version {
                    ms: 1_790_000_000_000 + j,
                    logical: 0,
                    origin: "node-c".into(),
                    seq: j + 1,
                }),
            })
            .collect();
        c.write_batch(pb::WriteBatchRequest { writes })
            .await
            .unwrap();
    });
}

fn plain_bytes(dir: &Path, n: u64) -> (u64, Duration) {
    let path = dir.join("plain");
    let start = Instant::now();
    {
        let db = open_plain(&path);
        let cf = db.cf_handle(Cf::Data.name()).unwrap();
        let mut i = 0;
        while i < n {
            let mut batch = rocksdb::WriteBatch::default();
            for k in i..(i + BATCH).min(n) {
                batch.put_cf(&cf, key(k), value(k));
            }
            db.write(batch).unwrap();
            i += BATCH;
        }
    }
    let took = start.elapsed();
    compact(&path, None);
    let bytes = dir_bytes(&path);
    std::fs::remove_dir_all(&path).unwrap();
    (bytes, took)
}

/// Prints the scale tables.
pub fn scale(_: &mut Criterion) {
    if std::env::var("MEND_BENCH_SCALE").is_err() {
        return;
    }
    let max: u64 = std::env::var("MEND_BENCH_SCALE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let base: PathBuf = std::env::var("MEND_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let only: Option<u64> = std::env::var("MEND_BENCH_SCALE_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    eprintln!("scale: tree shape {}^{}", shape().fanout, shape().depth);
    for n in [100_000u64, 1_000_000, 10_000_000] {
        if n > max || only.is_some_and(|o| o != n) {
            continue;
        }
        let tmp = tempfile::tempdir_in(&base).unwrap();
        let dir = tmp.path();
        let loaded = load(&rt, dir, n);
        let load_t = loaded.took;
        eprintln!(
            "scale: N = {n} loaded in {load_t:?}, tree depth {}, last deepening after the load: {:?}",
            loaded.depth, loaded.deepened
        );
        let a = Agent::start("node-a", &dir.join("a"));
        let b = Agent::start("node-b", &dir.join("b"));
        diverge(&rt, &b.addr, n);
        let mut times = Vec::new();
        let mut last = serde_json::Value::Null;
        for _ in 0..5 {
            let v = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
            assert_eq!(v["divergent_keys"].as_u64(), Some(D), "{v}");
            times.push(v["elapsed_ms"].as_f64().unwrap());
            last = v;
        }
        times.sort_by(f64::total_cmp);
        let (rss, hwm) = a.rss();
        a.stop();
        b.stop();
        compact(&dir.join("a"), None);
        let mend_disk = dir_bytes(&dir.join("a"));
        let (plain_disk, plain_t) = plain_bytes(dir, n);
        eprintln!("scale: N = {n} plain RocksDB loaded in {plain_t:?}");
        let r = mend_json(&[
            "store",
            "rebuild",
            "--data-dir",
            dir.join("a").to_str().unwrap(),
        ]);
        let rebuild = Duration::from_secs_f64(r["rebuild_ms"].as_f64().unwrap() / 1e3);
        let (scan, scanned) = raw_scan(&dir.join("a"));
        assert_eq!(scanned, n, "the scan saw every key");
        let deepen = loaded.deepened.as_ref().map_or("-".to_string(), |d| {
            format!("{:.1} s ({} ms)", d.took_ms as f64 / 1e3, d.locked_ms)
        });
        rows.push(format!(
            "| {n} | {}^{} | {deepen} | {:.1} ms | {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} | {:.1} | {:.1} | {:.2} s | {:.2} s | {:.2} | {:.1} s | {:.1} s | {:.2} |",
            shape().fanout,
            loaded.depth,
            times[times.len() / 2],
            last["bytes_sent"],
            last["bytes_received"],
            last["rounds"],
            rss as f64 / 1048576.0,
            hwm as f64 / 1048576.0,
            mend_disk as f64 / n as f64,
            plain_disk as f64 / n as f64,
            (mend_disk as f64 - plain_disk as f64) / n as f64,
            rebuild.as_secs_f64(),
            scan.as_secs_f64(),
            scan.as_secs_f64() / rebuild.as_secs_f64(),
            load_t.as_secs_f64(),
            plain_t.as_secs_f64(),
            plain_t.as_secs_f64() / load_t.as_secs_f64(),
        ));
        eprintln!("{}", rows.last().unwrap());
    }
    println!(
        "| N | tree | deepening after load (writers waited) | diff time d=100 (median of 5) | bytes sent | bytes received | rounds | agent RSS after diffs | agent peak RSS | mend disk B/key | plain RocksDB disk B/key | overhead B/key | rebuild | raw scan | scan / rebuild | load, mend | load, plain RocksDB | plain / mend |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

criterion_group!(benches, scale);
