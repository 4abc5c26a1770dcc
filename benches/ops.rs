//! Where operators look (`ops/`): the dashboard with 100 peers × ranges of
//! history, `/metrics` scrapes, and six agents on coordinated schedules.
//!
//! - `ops/dashboard_api_100`: `/api/dashboard` over HTTP for an agent with
//!   100 configured peers, each with `history_max` = 100 persisted
//!   exchanges; then the page in headless Chromium, whose own clock
//!   (`performance.now()` at the first render with data, `data-loaded-ms`)
//!   gives the first paint with data, printed as `dashboard first render`.
//! - `ops/metrics_scrape`: `/metrics` of the same agent (100 peers × 6
//!   categories of divergence gauges and the per-peer families), at two
//!   store sizes: the scrape reads no store state, so its cost does not grow
//!   with the keys.
//! - `MEND_OPS_SCHEDULES_S=60 cargo bench --bench benches -- ops/schedules`:
//!   six `mend agent` processes, each scheduling the five others every
//!   second for that many seconds (default 60), then each agent's own
//!   metrics: most exchanges at once, exchanges initiated toward a lower id,
//!   exchanges run and skipped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use mend_agent::AgentConfig;
use mend_agent::config::PeerConfig;
use mend_agent::monitor::{ExchangeRecord, PersistedDrift};
use mend_core::{NodeId, Secret, Version};
use mend_store::{Cf, Op, Write};

const PEERS: usize = 100;
const HISTORY: usize = 100;

fn config(dir: &Path) -> AgentConfig {
    AgentConfig {
        node_id: "node-a".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.to_path_buf(),
        insecure_plaintext: true,
        history_max: HISTORY,
        // Unreachable peers: nothing listens on port 9 of loopback.
        peers: (0..PEERS)
            .map(|i| PeerConfig {
                id: format!("peer-{i:03}"),
                address: "127.0.0.1:9".into(),
                interval_ms: 0,
                budget: Some(mend_agent::config::Budget {
                    divergent_keys_max: 50,
                    oldest_divergence_ms_max: 600_000,
                }),
            })
            .collect(),
        ..AgentConfig::default()
    }
}

/// The persisted drift rows of 100 peers × 1 range × 100 exchanges.
fn history_rows(now: u64) -> Vec<Op> {
    (0..PEERS)
        .map(|p| {
            let history = (0..HISTORY as u64)
                .map(|i| ExchangeRecord {
                    at_ms: now - (HISTORY as u64 - i) * 60_000,
                    divergent_keys: (i * 7 + p as u64) % 90,
                    by_category: [
                        (mend_core::Category::Missing, i % 50),
                        (mend_core::Category::Stale, i % 40),
                    ]
                    .into_iter()
                    .collect(),
                    oldest_divergence_ms: i * 1000,
                    rounds: 5,
                    bytes_sent: 2000,
                    bytes_received: 3000,
                    elapsed_ms: 3,
                    action: "report".into(),
                    ..Default::default()
                })
                .collect();
            let row = PersistedDrift {
                history,
                ..Default::default()
            };
            let mut key = b"agent/drift/".to_vec();
            key.extend_from_slice(format!("peer-{p:03}").as_bytes());
            key.push(0);
            key.extend_from_slice(b"default");
            Op::Put(Cf::Meta, key, serde_json::to_vec(&row).unwrap())
        })
        .collect()
}

fn load_keys<B: mend_store::Backend>(store: &mend_store::Store<B>, n: u64) {
    let origin = NodeId::new("loader").unwrap();
    let mut i = 0;
    while i < n {
        let writes: Vec<Write> = (i..(i + 5000).min(n))
            .map(|k| {
                Write::put(format!("key-{k:010}").into_bytes(), vec![7u8; 100]).at(Version {
                    ms: 1_700_000_000_000 + k,
                    logical: 0,
                    origin: origin.clone(),
                    seq: k + 1,
                })
            })
            .collect();
        store.write(writes).unwrap();
        i += 5000;
    }
}

/// An agent over a store seeded first (the history rows, which the agent
/// loads at start, and `keys` keys).
fn agent(rt: &tokio::runtime::Runtime, dir: &Path, keys: u64) -> mend_agent::RunningAgent {
    let cfg = config(dir);
    {
        let b = mend_rocks::RocksBackend::open_or_create(dir).unwrap();
        let sc = mend_store::StoreConfig::new(
            NodeId::new(cfg.node_id.clone()).unwrap(),
            Secret::development(),
            Some(cfg.ranges.clone()),
        );
        let store = mend_store::Store::open(b, sc).unwrap();
        let now = store.now_ms();
        mend_store::Backend::write(store.backend(), history_rows(now), false).unwrap();
        load_keys(&store, keys);
    }
    rt.block_on(async { mend_agent::start(cfg, Secret::development()).await.unwrap() })
}

/// The page's first render with data, by `scripts/bench-dashboard.cjs`
/// (playwright-core driving Debian's Chromium): its JSON line, or why not.
fn first_render(url: &str) -> String {
    let modules = Path::new("/var/tmp/mend-pw/node_modules");
    if !modules.join("playwright-core").exists() {
        let ok = Command::new("npm")
            .args([
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                "/var/tmp/mend-pw",
                "playwright-core@1",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return "skipped: npm could not install playwright-core".into();
        }
    }
    let script = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests and benches"),
    )
    .join("scripts/bench-dashboard.cjs");
    match Command::new("node")
        .arg(script)
        .args([url, "5"])
        .env("NODE_PATH", modules)
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("skipped: node: {e}"),
    }
}

fn get(rt: &tokio::runtime::Runtime, client: &reqwest::Client, url: &str) -> Vec<u8> {
    rt.block_on(async {
        client
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

fn dashboard(c: &mut Criterion) {
    if !selected("ops/dashboard") && !selected("ops/metrics") {
        return;
    }
    mend_tls::install_default_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let mut g = c.benchmark_group("ops");
    g.sample_size(20);
    for keys in [0u64, 200_000] {
        let dir = tempfile::tempdir().unwrap();
        let a = agent(&rt, dir.path(), keys);
        let http = a.http_addr.unwrap();
        if keys == 0 {
            let url = format!("http://{http}/api/dashboard");
            let body = get(&rt, &client, &url);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let points: usize = v["exchanges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["history"].as_array().unwrap().len())
                .sum();
            assert_eq!(points, PEERS * HISTORY, "the seeded history is served");
            println!(
                "ops/dashboard_api_100: {} bytes, {points} chart points",
                body.len()
            );
            g.bench_function("dashboard_api_100", |b| b.iter(|| get(&rt, &client, &url)));
            println!(
                "ops/dashboard first render with data: {}",
                first_render(&format!("http://{http}/"))
            );
        }
        populate(&a.state.metrics);
        let murl = format!("http://{http}/metrics");
        let body = String::from_utf8(get(&rt, &client, &murl)).unwrap();
        println!(
            "ops/metrics_scrape/{keys}_keys: {} bytes, {} lines",
            body.len(),
            body.lines().count()
        );
        g.bench_function(format!("metrics_scrape/{keys}_keys"), |b| {
            b.iter(|| get(&rt, &client, &murl))
        });
        rt.block_on(a.stop()).unwrap();
    }
    g.finish();
}

/// Every labelled family with 100 peers' children, as an agent that has
/// exchanged with all of them has.
fn populate(m: &mend_agent::metrics::Metrics) {
    use mend_agent::metrics::*;
    for p in 0..PEERS {
        let peer = format!("peer-{p:03}");
        let pr = PeerRange {
            peer: peer.clone(),
            range: "default".into(),
        };
        for c in mend_core::classify::Category::ALL {
            m.divergent_keys
                .get_or_create(&PeerRangeCategory {
                    peer: peer.clone(),
                    range: "default".into(),
                    category: c.as_str().into(),
                })
                .set(3);
        }
        m.oldest_divergence_seconds.get_or_create(&pr).set(1.0);
        m.budget_exceeded.get_or_create(&pr).set(0);
        let pl = PeerLabel { peer: peer.clone() };
        for f in m.peer_counters() {
            f.get_or_create(&pl).inc();
        }
        m.exchange_rounds.get_or_create(&pl).observe(5.0);
        m.exchange_duration_seconds.get_or_create(&pl).observe(0.01);
        m.peer_clock_skew_seconds.get_or_create(&pl).set(0.001);
        for reason in ["busy", "peer_busy", "peer_unreachable"] {
            m.scheduled_exchanges_skipped
                .get_or_create(&PeerReason {
                    peer: peer.clone(),
                    reason: reason.into(),
                })
                .inc();
        }
    }
}

/// Six agent processes for `MEND_OPS_SCHEDULES_S` seconds (default 60).
fn schedules(c: &mut Criterion) {
    if !named("ops/schedules") {
        return;
    }
    let secs: u64 = std::env::var("MEND_OPS_SCHEDULES_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let nodes = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"];
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = nodes
        .iter()
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let mut kids: Vec<(Child, String)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut cfg = String::from("insecure_plaintext = true\n");
        for (j, m) in nodes.iter().enumerate() {
            if i != j {
                cfg.push_str(&format!(
                    "[[peers]]\nid = \"{m}\"\naddress = \"127.0.0.1:{}\"\ninterval_ms = 1000\n",
                    ports[j]
                ));
            }
        }
        let p = dir.path().join(format!("{n}.toml"));
        std::fs::write(&p, cfg).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend"))
            .args([
                "agent",
                "--node-id",
                n,
                "--listen",
                &format!("127.0.0.1:{}", ports[i]),
            ])
            .args(["--http", "127.0.0.1:0", "--config"])
            .arg(&p)
            .arg("--data-dir")
            .arg(dir.path().join(n))
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .unwrap()
            .to_string();
        kids.push((child, http));
    }
    mend_tls::install_default_provider();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "ops/schedules: 6 agents, every peer every 1 s, {secs} s ({:?})",
        start.elapsed()
    );
    println!("  node    most_at_once  initiated  toward_lower  skipped");
    for (i, (_, http)) in kids.iter().enumerate() {
        let text = rt.block_on(async {
            reqwest::get(format!("http://{http}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let sum = |name: &str, peer: Option<&str>| -> f64 {
            s.samples
                .iter()
                .filter(|x| {
                    x.metric == name && peer.is_none_or(|p| x.labels.get("peer") == Some(p))
                })
                .map(|x| match x.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => 0.0,
                })
                .sum()
        };
        let lower: f64 = nodes[..i]
            .iter()
            .map(|p| sum("mend_exchanges_total", Some(p)))
            .sum();
        println!(
            "  {}  {:>12}  {:>9}  {:>12}  {:>7}",
            nodes[i],
            sum("mend_exchange_slots_in_use_max", None) as u64,
            sum("mend_exchanges_total", None) as u64,
            lower as u64,
            sum("mend_scheduled_exchanges_skipped_total", None) as u64
        );
    }
    for (mut k, _) in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = c;
}

fn filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a != "--bench")
        .collect()
}

/// Whether the command line's filter selects `name` (no filter selects all).
fn selected(name: &str) -> bool {
    let f = filters();
    f.is_empty()
        || f.iter()
            .any(|x| name.starts_with(x.as_str()) || x.starts_with(name))
}

/// Whether the command line names `name` (this long run only when asked for).
fn named(name: &str) -> bool {
    filters()
        .iter()
        .any(|x| name.starts_with(x.as_str()) && x.len() > "ops/".len())
}

criterion_group!(benches, dashboard, schedules);
