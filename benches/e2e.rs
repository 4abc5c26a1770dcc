//! End to end over gRPC on loopback between two in-process agents with
//! RocksDB in temporary directories:
//! * a diff with its full diagnosis (classification and attribution) at
//!   N = 100k and 1M keys with d = 100 divergent keys;
//! * repair: unthrottled throughput (MB/s of entry bytes streamed, 1 KiB
//!   values), throttled accuracy (achieved / set rate), and overstreaming
//!   (bytes streamed / bytes of the divergent entries).
//!
//! `MEND_BENCH_REPAIR_KEYS` sets the number of divergent keys of the repair
//! benches (default 50 000); `MEND_BENCH_MAX_KEYS` caps N of the diff bench.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mend_agent::repair::{RepairOptions, repair};
use mend_agent::{AgentConfig, RunningAgent};
use mend_core::Secret;
use mend_core::{NodeId, Version};
use mend_store::Write;

/// Bytes per value.
const VALUE_BYTES: usize = 1024;

/// The benches' runtime: two workers, like the agent on this machine.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Largest N of the diff benches (`MEND_BENCH_MAX_KEYS`, default 1M).
fn max_keys() -> u64 {
    std::env::var("MEND_BENCH_MAX_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn keys() -> u64 {
    std::env::var("MEND_BENCH_REPAIR_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// The benches' development CA (`mend cert` layout), made once.
fn certs() -> &'static std::path::Path {
    static CERTS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CERTS
        .get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
            mend_tls::dev::make(d.path(), &names, &[], 2).unwrap();
            d
        })
        .path()
}

/// An in-process agent over mutual TLS (the default deployment).
async fn agent(dir: &std::path::Path, name: &str) -> RunningAgent {
    agent_on(dir, name, true).await
}

/// An in-process agent, over mutual TLS or (`tls` false) plaintext.
async fn agent_on(dir: &std::path::Path, name: &str, tls: bool) -> RunningAgent {
    agent_with(
        dir,
        name,
        tls,
        AgentConfig::default().limits.repair_segment_keys_min,
    )
    .await
}

/// [`agent_on`] with `limits.repair_segment_keys_min` = `segment_min`.
async fn agent_with(
    dir: &std::path::Path,
    name: &str,
    tls: bool,
    segment_min: usize,
) -> RunningAgent {
    let mut cfg = AgentConfig {
        node_id: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join(name),
        ..AgentConfig::default()
    };
    if tls {
        cfg.tls.dir = Some(certs().join(name));
        cfg.roles.peer = vec!["*".into()];
    } else {
        cfg.insecure_plaintext = true;
    }
    cfg.limits.repair_segment_keys_min = segment_min;
    mend_agent::start(cfg, Secret::development()).await.unwrap()
}

/// Two agents; `a` holds `n` keys with 1 KiB values that `b` lacks.
/// Returns them and the bytes of the divergent entries (key + value + version).
async fn setup(
    dir: &std::path::Path,
    n: u64,
    segment_min: usize,
) -> (RunningAgent, RunningAgent, u64) {
    let a = agent_with(dir, "a", true, segment_min).await;
    let b = agent(dir, "b").await;
    let origin = NodeId::new("bench").unwrap();
    let mut entry_bytes = 0u64;
    let mut i = 0;
    while i < n {
        let writes: Vec<Write> = (i..(i + 2000).min(n))
            .map(|k| {
                let key = format!("repair-{k:09}").into_bytes();
                let value = vec![(k % 251) as u8; VALUE_BYTES];
                entry_bytes += (key.len() + value.len() + 8 + 4 + 8 + origin.as_str().len()) as u64;
                Write::put(key, value).at(Version {
                    ms: 1_700_000_000_000 + k,
                    logical: 0,
                    origin: origin.clone(),
                    seq: k,
                })
            })
            .collect();
        let s = a.state.store.clone();
        tokio::task::spawn_blocking(move || s.write(writes).unwrap())
            .await
            .unwrap();
        i += 2000;
    }
    (a, b, entry_bytes)
}

/// One repair of `n` keys; returns (elapsed, bytes streamed, entry bytes).
fn one_repair(rt: &tokio::runtime::Runtime, n: u64, rate: u64) -> (Duration, u64, u64, u64) {
    one_repair_with(
        rt,
        n,
        rate,
        AgentConfig::default().limits.repair_segment_keys_min,
    )
}

/// [`one_repair`] with `limits.repair_segment_keys_min` = `segment_min` at
/// the repairing agent.
fn one_repair_with(
    rt: &tokio::runtime::Runtime,
    n: u64,
    rate: u64,
    segment_min: usize,
) -> (Duration, u64, u64, u64) {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, entry_bytes) = setup(dir.path(), n, segment_min).await;
        let peer = format!("http://{}", b.addr);
        let opts = RepairOptions {
            rate_bytes_per_s: rate,
            ..RepairOptions::default()
        };
        // A repair diffs first; time that diff alone on the same state and
        // subtract it, so the figure is the streaming and applying.
        let t = Instant::now();
        let d = mend_agent::exchange::diff(&a.state, &peer, None)
            .await
            .unwrap();
        let diff_time = t.elapsed();
        assert_eq!(d.keys.len() as u64, n);
        let t = Instant::now();
        let s = repair(&a.state, &peer, None, opts, None).await.unwrap();
        let all = t.elapsed();
        assert_eq!(s.keys_to_peer, n, "every divergent key repaired");
        let after = mend_agent::exchange::diff(&a.state, &peer, None)
            .await
            .unwrap();
        assert!(after.keys.is_empty(), "converged");
        a.stop().await.unwrap();
        b.stop().await.unwrap();
        (
            all.saturating_sub(diff_time),
            s.bytes_streamed,
            entry_bytes,
            s.keys_repaired,
        )
    })
}

/// Criterion group: unthrottled repair throughput.
pub fn bench_repair(c: &mut Criterion) {
    let rt = runtime();
    let n = keys();
    let mut g = c.benchmark_group("repair");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(n * VALUE_BYTES as u64));
    g.bench_function(format!("unthrottled/{n}x1KiB"), |bch| {
        bch.iter_custom(|iters| (0..iters).map(|_| one_repair(&rt, n, 0).0).sum())
    });
    g.finish();
}

/// Prints the repair figures of BENCHMARKS.md (run with `MEND_BENCH_REPAIR_REPORT=1`).
pub fn report(_: &mut Criterion) {
    if std::env::var("MEND_BENCH_REPAIR_REPORT").is_err() {
        return;
    }
    let rt = runtime();
    let n = keys();
    let (t, streamed, entry, repaired) = one_repair(&rt, n, 0);
    let mbps = streamed as f64 / t.as_secs_f64() / 1e6;
    println!(
        "| repair, unthrottled, {n} keys x 1 KiB (diff excluded) | {:.1} MB/s | {repaired} keys in {:.2} s |",
        mbps,
        t.as_secs_f64()
    );
    println!(
        "| overstreaming (bytes streamed / divergent entry bytes) | {:.3} | {streamed} / {entry} |",
        streamed as f64 / entry as f64
    );
    // Segmented (16 subtree segments at the default shape; each segment's
    // plan journaled first) against one segment, same run, alternating.
    let (mut seg, mut one) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        seg.push(one_repair_with(&rt, n, 0, 0).0.as_secs_f64());
        one.push(one_repair_with(&rt, n, 0, 10_000_000).0.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ts, to) = (median(&mut seg), median(&mut one));
    println!(
        "| repair of {n} keys in 16 segments / in one segment (median of 3, diff excluded) | {:.3} | {:.2} s / {:.2} s |",
        ts / to,
        ts,
        to
    );
    for rate in [2_000_000u64, 8_000_000] {
        let n2 = (rate * 3 / 1100).min(n);
        let (t, streamed, _, _) = one_repair(&rt, n2, rate);
        let achieved = streamed as f64 / t.as_secs_f64();
        println!(
            "| repair throttled at {:.0} MB/s, {n2} keys (diff excluded) | {:.2} MB/s | achieved/set = {:.3} |",
            rate as f64 / 1e6,
            achieved / 1e6,
            achieved / rate as f64
        );
    }
}

/// Two agents sharing `n` keys (100-byte values) of which `d` differ: d/2
/// updated at `a`, d/2 missing at `b`.
async fn diverged(dir: &std::path::Path, n: u64, d: u64) -> (RunningAgent, RunningAgent) {
    diverged_on(dir, n, d, true).await
}

/// [`diverged`], over TLS or plaintext.
async fn diverged_on(
    dir: &std::path::Path,
    n: u64,
    d: u64,
    tls: bool,
) -> (RunningAgent, RunningAgent) {
    let a = agent_on(dir, "a", tls).await;
    let b = agent_on(dir, "b", tls).await;
    let origin = NodeId::new("loader").unwrap();
    for side in [&a, &b] {
        let mut i = 0;
        while i < n {
            let writes: Vec<Write> = (i..(i + 5000).min(n))
                .map(|k| {
                    Write::put(
                        format!("key-{k:09}").into_bytes(),
                        vec![(k % 251) as u8; 100],
                    )
                    .at(Version {
                        ms: 1_700_000_000_000 + k,
                        logical: 0,
                        origin: origin.clone(),
                        seq: k,
                    })
                })
                .collect();
            let s = side.state.store.clone();
            tokio::task::spawn_blocking(move || s.write(writes).unwrap())
                .await
                .unwrap();
            i += 5000;
        }
    }
    let step = n / d.max(1);
    let fault = NodeId::new("node-c").unwrap();
    let upd: Vec<Write> = (0..d / 2)
        .map(|j| {
            let k = j * step;
            Write::put(format!("key-{k:09}").into_bytes(), b"newer".to_vec()).at(Version {
                ms: 1_790_000_000_000 + j,
                logical: 0,
                origin: fault.clone(),
                seq: j,
            })
        })
        .collect();
    let miss: Vec<Write> = (d / 2..d)
        .map(|j| {
            Write::put(format!("extra-{j:09}").into_bytes(), b"lost".to_vec()).at(Version {
                ms: 1_790_000_000_000 + j,
                logical: 0,
                origin: fault.clone(),
                seq: j,
            })
        })
        .collect();
    let s = a.state.store.clone();
    tokio::task::spawn_blocking(move || {
        s.write(upd).unwrap();
        s.write(miss).unwrap();
    })
    .await
    .unwrap();
    (a, b)
}

/// Criterion group: a diff with its full diagnosis over gRPC.
pub fn bench_diff(c: &mut Criterion) {
    let rt = runtime();
    let max = max_keys();
    let mut g = c.benchmark_group("e2e_diff");
    g.sample_size(10);
    for n in [100_000u64, 1_000_000] {
        if n > max {
            continue;
        }
        // Set up lazily: a filter that skips this benchmark skips the load.
        let mut pair = None;
        g.bench_function(format!("diagnosed/N={n}/d=100"), |bch| {
            let (_dir, a, b) = pair.get_or_insert_with(|| {
                let dir = tempfile::tempdir().unwrap();
                let (a, b) = rt.block_on(diverged(dir.path(), n, 100));
                (dir, a, b)
            });
            let peer = format!("http://{}", b.addr);
            bch.iter(|| {
                rt.block_on(async {
                    let d = mend_agent::exchange::diff(&a.state, &peer, None)
                        .await
                        .unwrap();
                    assert_eq!(d.keys.len(), 100);
                    let srcs =
                        mend_agent::report::attribution(&d, a.state.store.now_ms(), 60_000).sources;
                    assert!(!srcs.is_empty());
                    (d.cost.bytes_sent + d.cost.bytes_received, srcs.len())
                })
            })
        });
        if let Some((_dir, a, b)) = pair {
            rt.block_on(async {
                a.stop().await.unwrap();
                b.stop().await.unwrap();
            });
        }
    }
    g.finish();
}

/// Injects divergent keys `from..to` at `a` (even j: a newer version of an
/// existing key; odd j: a key only `a` holds), spread over the key space.
async fn inject(a: &RunningAgent, n: u64, from: u64, to: u64) {
    let fault = NodeId::new("node-c").unwrap();
    let step = (n / 20_000).max(1);
    let writes: Vec<Write> = (from..to)
        .map(|j| {
            let key = if j % 2 == 0 {
                format!("key-{:09}", (j / 2) * 2 * step)
            } else {
                format!("extra-{j:09}")
            };
            Write::put(key.into_bytes(), b"newer".to_vec()).at(Version {
                ms: 1_790_000_000_000 + j,
                logical: 0,
                origin: fault.clone(),
                seq: j + 1,
            })
        })
        .collect();
    let s = a.state.store.clone();
    tokio::task::spawn_blocking(move || s.write(writes).unwrap())
        .await
        .unwrap();
}

/// The model's prediction for a diff measured here (16-byte keys, 100-byte
/// values, RTT 0 on loopback).
fn model(n: u64, d: u64) -> mend_core::plan::Plan {
    mend_core::plan::plan(
        &mend_core::plan::PlanInput {
            keys: n,
            divergent: d,
            value_bytes: 100,
            key_bytes: 13,
            origin_bytes: 6,
            bandwidth: 1_250_000_000,
            rtt_ms: 0.0,
            ranges: 1,
            shape: mend_core::TreeShape::default(),
            // The grid's stores are freshly loaded and not deepened.
            deepen_entries_per_bucket: 0,
            deepen_tree_bytes_max: 0,
        },
        &mend_core::plan::Calibration::REFERENCE,
    )
}

/// Prints the end-to-end grid of BENCHMARKS.md (run with
/// `MEND_BENCH_E2E_GRID=1`): for N in {10k, 100k, 1M} (capped by
/// `MEND_BENCH_MAX_KEYS`) and d in {1, 100, 10 000} (d <= N/2), the diff over
/// gRPC between two in-process agents with its full diagnosis: median time
/// of 9 runs, bytes each way and round trips, next to the cost model's
/// prediction (`mend plan`).
pub fn grid(_: &mut Criterion) {
    if std::env::var("MEND_BENCH_E2E_GRID").is_err() {
        return;
    }
    let rt = runtime();
    let max = max_keys();
    println!(
        "| N | d | median time | bytes sent | bytes received | rounds | leaves compared | model time | model bytes (sent + received) | model rounds | time model/measured | bytes model/measured |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in [10_000u64, 100_000, 1_000_000] {
        if n > max {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = rt.block_on(diverged(dir.path(), n, 0));
        let peer = format!("http://{}", b.addr);
        let mut done = 0;
        for d in [1u64, 100, 10_000] {
            if d > n / 2 {
                continue;
            }
            rt.block_on(inject(&a, n, done, d));
            done = d;
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..9 {
                let start = Instant::now();
                let out = rt.block_on(async {
                    let o = mend_agent::exchange::diff(&a.state, &peer, None)
                        .await
                        .unwrap();
                    let srcs = mend_agent::report::attribution(&o, a.state.store.now_ms(), 60_000);
                    std::hint::black_box(srcs);
                    o
                });
                times.push(start.elapsed());
                assert_eq!(out.keys.len() as u64, d, "every injected key found");
                last = Some(out);
            }
            times.sort();
            let t = times[times.len() / 2];
            let o = last.unwrap();
            let m = model(n, d);
            let bytes = o.cost.bytes_sent + o.cost.bytes_received;
            let mbytes = m.bytes_sent + m.bytes_received;
            println!(
                "| {n} | {d} | {:.2} ms | {} | {} | {} | {} | {:.2} ms | {:.0} | {} | {:.2} | {:.2} |",
                t.as_secs_f64() * 1e3,
                o.cost.bytes_sent,
                o.cost.bytes_received,
                o.cost.rounds,
                o.cost.leaves_compared,
                m.diff_s * 1e3,
                mbytes,
                m.rounds,
                m.diff_s / t.as_secs_f64(),
                mbytes / bytes as f64,
            );
        }
        rt.block_on(async {
            a.stop().await.unwrap();
            b.stop().await.unwrap();
        });
    }
}

/// A TCP proxy to `target` that counts the bytes crossing it both ways
/// (TLS records, HTTP/2 frames and all) as they pass. Returns its address
/// and the count.
async fn counting_proxy(
    target: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            for (mut r, mut w, c) in [
                (
                    Box::new(dr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    c.clone(),
                ),
                (Box::new(ur), Box::new(dw), c.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        c.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = w.shutdown().await;
                });
            }
        }
    });
    (addr, count)
}

/// Prints the mTLS-vs-plaintext figures of BENCHMARKS.md (run with
/// `MEND_BENCH_TLS=1`): the same diff (N keys, d = 100) between two agents
/// over mutual TLS and over plaintext, interleaved, 15 runs each: median
/// time and the bytes on the wire per diff (counted by a TCP proxy: TLS
/// records and HTTP/2 framing included; the connection, and so the TLS
/// handshake, is reused across diffs as the agent does, and made by a
/// warm-up diff that is not counted).
pub fn tls(_: &mut Criterion) {
    if std::env::var("MEND_BENCH_TLS").is_err() {
        return;
    }
    use std::sync::atomic::Ordering;
    let rt = runtime();
    let n = max_keys();
    let dt = tempfile::tempdir().unwrap();
    let dp = tempfile::tempdir().unwrap();
    let (ta, tb) = rt.block_on(diverged_on(dt.path(), n, 100, true));
    let (pa, pb) = rt.block_on(diverged_on(dp.path(), n, 100, false));
    let (tproxy, tcount) = rt.block_on(counting_proxy(tb.addr));
    let (pproxy, pcount) = rt.block_on(counting_proxy(pb.addr));
    let (mut tt, mut pt) = (Vec::new(), Vec::new());
    let (mut tbytes, mut pbytes) = (0, 0);
    for (a, peer) in [(&ta, &tproxy), (&pa, &pproxy)] {
        rt.block_on(mend_agent::exchange::diff(&a.state, peer, None))
            .unwrap();
    }
    for _ in 0..15 {
        for (a, peer, count, times, bytes) in [
            (&ta, &tproxy, &tcount, &mut tt, &mut tbytes),
            (&pa, &pproxy, &pcount, &mut pt, &mut pbytes),
        ] {
            let before = count.load(Ordering::Relaxed);
            let start = Instant::now();
            let o = rt.block_on(async {
                let o = mend_agent::exchange::diff(&a.state, peer, None)
                    .await
                    .unwrap();
                // Connections are per diff: wait until the proxy saw it close.
                o
            });
            times.push(start.elapsed());
            assert_eq!(o.keys.len(), 100);
            let t = Instant::now();
            while count.load(Ordering::Relaxed) == before && t.elapsed() < Duration::from_secs(5) {
                std::thread::yield_now();
            }
            *bytes = count.load(Ordering::Relaxed) - before;
        }
    }
    tt.sort();
    pt.sort();
    let (t, p) = (tt[tt.len() / 2], pt[pt.len() / 2]);
    println!(
        "| transport, N = {n}, d = 100 | median time | bytes on the wire (one diff, connection reused) |"
    );
    println!("|---|---|---|");
    println!(
        "| mutual TLS | {:.2} ms | {tbytes} |",
        t.as_secs_f64() * 1e3
    );
    println!("| plaintext | {:.2} ms | {pbytes} |", p.as_secs_f64() * 1e3);
    println!(
        "| ratio TLS / plaintext | {:.3} | {:.3} |",
        t.as_secs_f64() / p.as_secs_f64(),
        tbytes as f64 / pbytes as f64
    );
    rt.block_on(async {
        for a in [ta, tb, pa, pb] {
            a.stop().await.unwrap();
        }
    });
}

criterion::criterion_group!(benches, bench_diff, bench_repair, report, grid, tls);
