//! Fault campaign on real processes: three `mend agent` processes (RocksDB,
//! gRPC over mutual TLS), a seeded fault proxy on every directed agent link,
//! a writer keeping a ledger of acknowledged writes, operator repairs and
//! undos through the proxies, SIGKILL + restart and SIGSTOP/SIGCONT of
//! agents in the middle of it all. After healing: every journaled repair
//! undoes (refusals only for another agent's repair or one already undone;
//! an undo a kill left half-done is counted: undo is not resumable yet),
//! repairs converge all three stores, every
//! acknowledged write is present at its version, and `mend store verify`
//! passes on every data directory. A flipped byte on the wire never yields
//! a wrong diff: with TLS the transport refuses the record.
//!
//! `MEND_CAMPAIGN_KILLS` (default 12) and `MEND_CAMPAIGN_SEED` size and
//! seed a run; BENCHMARKS.md has a longer one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use mend_rpc::pb;
use mend_rpc::pb::operator_client::OperatorClient;

use crate::harness::{AgentProc, CLIENT, Signal, mend, now_ms, try_channel_as};

const AGENTS: usize = 3;
const KEYS: u64 = 300;

/// A cheap seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// What a proxy does to the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Clean,
    /// Each chunk waits `ms` plus up to `jitter` ms.
    Delay {
        ms: u64,
        jitter: u64,
    },
    /// At most this many bytes per second each way.
    Bandwidth(u64),
    /// Both directions closed after this many bytes.
    ResetAfter(u64),
    /// Accepted, never answered.
    Blackhole,
    /// Closed at once.
    Refuse,
    /// The reply direction shut down after this many bytes.
    HalfClose(u64),
    /// One byte of every reply chunk flipped (at this offset modulo the
    /// chunk's length).
    Flip(u64),
}

/// A TCP proxy in front of one agent, for one initiator.
struct Proxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    fault: Arc<Mutex<Fault>>,
    faulted: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let upstream = Arc::new(Mutex::new(upstream));
        let fault = Arc::new(Mutex::new(Fault::Clean));
        let faulted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up, f, n) = (upstream.clone(), fault.clone(), faulted.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = l.accept().await {
                let target = up.lock().unwrap().clone();
                if *f.lock().unwrap() != Fault::Clean {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::spawn(serve(conn, target, f.clone()));
            }
        });
        Proxy {
            addr,
            upstream,
            fault,
            faulted,
        }
    }

    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    fn point_to(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_string();
    }
}

/// Forwards one connection, applying whatever fault the proxy has now to
/// every chunk (a link can go bad in the middle of a connection).
async fn serve(mut conn: TcpStream, target: String, fault: Arc<Mutex<Fault>>) {
    let now = *fault.lock().unwrap();
    match now {
        Fault::Refuse => return,
        Fault::Blackhole => {
            let mut sink = [0u8; 4096];
            while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        _ => {}
    }
    let Ok(up) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = conn.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (cr, cw) = conn.into_split();
    let (ur, uw) = up.into_split();
    let ask = tokio::spawn(pump(cr, uw, fault.clone(), false));
    let reply = tokio::spawn(pump(ur, cw, fault, true));
    let _ = ask.await;
    let _ = reply.await;
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Arc<Mutex<Fault>>,
    reply: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    let mut jitter = Rng(total ^ 0x9e37_79b9 ^ u64::from(reply));
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let now = *fault.lock().unwrap();
        match now {
            Fault::Delay { ms, jitter: j } => {
                tokio::time::sleep(Duration::from_millis(ms + jitter.below(j + 1))).await;
            }
            Fault::Bandwidth(bps) => {
                tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / bps.max(1))).await;
            }
            Fault::ResetAfter(at) if total + n as u64 > at => return,
            Fault::Refuse => return,
            Fault::Blackhole => continue,
            Fault::HalfClose(at) if reply && total + n as u64 > at => {
                let _ = to.shutdown().await;
                return;
            }
            Fault::Flip(at) if reply => {
                // One byte of every reply chunk while the fault lasts.
                chunk[(at % n as u64) as usize] ^= 0x40;
            }
            _ => {}
        }
        total += n as u64;
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn random_fault(r: &mut Rng) -> Fault {
    match r.below(8) {
        0 => Fault::Clean,
        1 => Fault::Delay {
            ms: r.below(40),
            jitter: r.below(40),
        },
        2 => Fault::Bandwidth(50_000 + r.below(500_000)),
        3 => Fault::ResetAfter(r.below(20_000)),
        4 => Fault::Blackhole,
        5 => Fault::Refuse,
        6 => Fault::HalfClose(r.below(20_000)),
        _ => Fault::Flip(r.below(20_000)),
    }
}

/// A version newer than every earlier one of the campaign.
struct Clock(u64);

impl Clock {
    fn tick(&mut self) -> u64 {
        self.0 = self.0.max(now_ms() - 1_000) + 1;
        self.0
    }
}

#[derive(Default, Debug)]
struct Tally {
    kills: u64,
    stops: u64,
    faults_set: u64,
    writes_acked: u64,
    repairs_ok: u64,
    repairs_failed: u64,
    undos: u64,
    undos_under_faults: u64,
    half_undone: u64,
}

struct Cluster {
    dir: tempfile::TempDir,
    agents: Vec<Option<AgentProc>>,
    /// proxies[i][j]: what agent i dials to reach agent j.
    proxies: Vec<Vec<Option<Proxy>>>,
}

fn config(dir: &std::path::Path) -> String {
    let p = dir.join("mend.toml");
    // Settle at once: the campaign repairs what it just wrote.
    std::fs::write(&p, "settle_ms = 0\n").unwrap();
    p.to_str().unwrap().to_string()
}

impl Cluster {
    fn node(i: usize) -> String {
        format!("node-{}", (b'a' + i as u8) as char)
    }

    fn start(&mut self, i: usize) {
        let data = self.dir.path().join(Self::node(i));
        let cfg = config(self.dir.path());
        let a = AgentProc::start(&Self::node(i), &data, &["--config", &cfg]);
        for (from, row) in self.proxies.iter().enumerate() {
            if from != i
                && let Some(p) = &row[i]
            {
                p.point_to(&a.addr);
            }
        }
        self.agents[i] = Some(a);
    }

    fn proxy(&self, from: usize, to: usize) -> &Proxy {
        self.proxies[from][to].as_ref().unwrap()
    }
}

fn signal(a: &AgentProc, sig: Signal) {
    crate::harness::signal(&a.child, sig);
}

/// A TLS channel to `addr` as the CLI's client; an agent that is down is
/// an error, not a panic (the campaign kills them).
async fn channel(addr: &str) -> Result<tonic::transport::Channel, tonic::Status> {
    try_channel_as(addr, CLIENT).await
}

async fn repair(addr: String, peer: String, rate: u64) -> Result<pb::RepairSummary, tonic::Status> {
    let mut c = OperatorClient::new(channel(&addr).await?);
    let mut s = c
        .repair(pb::RepairRequest {
            peer,
            rate_keys_per_s: rate,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut summary = None;
    while let Some(ev) = s.message().await? {
        if let Some(pb::repair_event::Event::Summary(x)) = ev.event {
            summary = Some(x);
        }
    }
    summary.ok_or_else(|| tonic::Status::internal("no summary"))
}

/// Undoes one of the repairs `addr` lists (chosen by `pick`); true when
/// one was undone.
async fn undo_one(addr: String, pick: u64) -> Result<bool, tonic::Status> {
    let mut c = OperatorClient::new(channel(&addr).await?);
    let st = c
        .status(pb::StatusRequest {
            repairs_limit: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    if st.repairs.is_empty() {
        return Ok(false);
    }
    let id = st.repairs[(pick % st.repairs.len() as u64) as usize].clone();
    c.undo(pb::UndoRequest { repair_id: id }).await?;
    Ok(true)
}

async fn diff_keys(addr: &str, peer: &str) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut c = OperatorClient::new(channel(addr).await?);
    let mut s = c
        .diff(pb::DiffRequest {
            peer: peer.to_string(),
            range: String::new(),
        })
        .await?
        .into_inner();
    let mut keys = Vec::new();
    while let Some(ev) = s.message().await? {
        if let Some(pb::diff_event::Event::Key(k)) = ev.event {
            keys.push(k.key);
        }
    }
    Ok(keys)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_real_processes_lose_no_acknowledged_write() {
    let kills_target = env("MEND_CAMPAIGN_KILLS", 12);
    let seed = env("MEND_CAMPAIGN_SEED", 1);
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut cl = Cluster {
        dir: tempfile::Builder::new()
            .prefix("mend-campaign-")
            .tempdir()
            .unwrap(),
        agents: (0..AGENTS).map(|_| None).collect(),
        proxies: (0..AGENTS)
            .map(|_| (0..AGENTS).map(|_| None).collect())
            .collect(),
    };
    for i in 0..AGENTS {
        cl.start(i);
    }
    for from in 0..AGENTS {
        for to in 0..AGENTS {
            if from != to {
                let up = cl.agents[to].as_ref().unwrap().addr.clone();
                cl.proxies[from][to] = Some(Proxy::start(up).await);
            }
        }
    }
    let mut clock = Clock(0);
    let mut seq = 0u64;
    let mut ledger: BTreeMap<Vec<u8>, (u64, bool, Vec<u8>)> = BTreeMap::new();
    let mut t = Tally::default();
    let mut inflight = Vec::new();
    let mut inflight_undos = Vec::new();
    let mut writes = Vec::new();
    let mut stopped: Option<usize> = None;
    while t.kills < kills_target {
        let i = r.below(AGENTS as u64) as usize;
        let j = (i + 1 + r.below(AGENTS as u64 - 1) as usize) % AGENTS;
        match r.below(100) {
            0..40 => {
                let Some(a) = cl.agents[i].as_ref() else {
                    continue;
                };
                if stopped == Some(i) {
                    continue;
                }
                let batch: Vec<pb::BatchWrite> = (0..1 + r.below(20))
                    .map(|_| {
                        seq += 1;
                        let k = format!("key-{:04}", r.below(KEYS));
                        let v = crate::harness::ver(clock.tick(), "client", seq);
                        if r.percent(20) {
                            crate::harness::del(&k, v)
                        } else {
                            crate::harness::put(&k, &format!("value-{seq}"), v)
                        }
                    })
                    .collect();
                // In flight while the next actions run (a kill may land in
                // the middle of it); acknowledged when the reply arrives.
                let addr = a.addr.clone();
                writes.push(tokio::spawn(async move {
                    let mut c = pb::replica_client::ReplicaClient::new(channel(&addr).await?);
                    let resp = tokio::time::timeout(
                        Duration::from_secs(5),
                        c.write_batch(pb::WriteBatchRequest {
                            writes: batch.clone(),
                        }),
                    )
                    .await
                    .map_err(|_| tonic::Status::deadline_exceeded("write"))??;
                    Ok::<_, tonic::Status>((batch, resp.into_inner().results))
                }));
            }
            40..65 => {
                let (Some(a), Some(_)) = (cl.agents[i].as_ref(), cl.agents[j].as_ref()) else {
                    continue;
                };
                let rate = if r.percent(50) { 200 } else { 0 };
                let (addr, peer) = (a.addr.clone(), cl.proxy(i, j).addr.clone());
                inflight.push(tokio::spawn(tokio::time::timeout(
                    Duration::from_secs(20),
                    repair(addr, peer, rate),
                )));
            }
            65..75 => {
                if let Some(a) = cl.agents[i].take() {
                    if stopped == Some(i) {
                        stopped = None;
                    }
                    a.kill();
                    t.kills += 1;
                    cl.start(i);
                }
            }
            75..80 => {
                if stopped.is_none()
                    && let Some(a) = cl.agents[i].as_ref()
                {
                    signal(a, Signal::STOP);
                    stopped = Some(i);
                    t.stops += 1;
                }
            }
            80..85 => {
                if let Some(s) = stopped.take()
                    && let Some(a) = cl.agents[s].as_ref()
                {
                    signal(a, Signal::CONT);
                }
            }
            85..95 => {
                cl.proxy(i, j).set(random_fault(&mut r));
                t.faults_set += 1;
            }
            95..98 => {
                // Undo a journaled repair while the faults go on.
                let Some(a) = cl.agents[i].as_ref() else {
                    continue;
                };
                if stopped == Some(i) {
                    continue;
                }
                let addr = a.addr.clone();
                let pick = r.next();
                inflight_undos.push(tokio::spawn(tokio::time::timeout(
                    Duration::from_secs(20),
                    undo_one(addr, pick),
                )));
            }
            _ => {
                cl.proxy(i, j).set(Fault::Clean);
            }
        }
        // Let in-flight work run a little between actions.
        tokio::task::yield_now().await;
    }

    // Heal: clean wires, everyone running, in-flight repairs finished.
    if let Some(s) = stopped.take()
        && let Some(a) = cl.agents[s].as_ref()
    {
        signal(a, Signal::CONT);
    }
    for row in &cl.proxies {
        for p in row.iter().flatten() {
            p.set(Fault::Clean);
        }
    }
    for h in writes {
        let Ok((batch, results)) = h.await.unwrap() else {
            continue;
        };
        for (w, out) in batch.iter().zip(results) {
            if out.decision == pb::Decision::Apply as i32 {
                t.writes_acked += 1;
                let ms = w.version.as_ref().unwrap().ms;
                let newest = ledger.get(&w.key).is_none_or(|(old, _, _)| ms > *old);
                if newest {
                    ledger.insert(w.key.clone(), (ms, w.delete, w.value.clone()));
                }
            }
        }
    }
    for h in inflight {
        match h.await.unwrap() {
            Ok(Ok(_)) => t.repairs_ok += 1,
            _ => t.repairs_failed += 1,
        }
    }
    for h in inflight_undos {
        if let Ok(Ok(true)) = h.await.unwrap() {
            t.undos_under_faults += 1;
        }
    }
    // Every journaled repair undoes without error (or says why not: run by
    // the other agent, already undone).
    for a in cl.agents.iter().flatten() {
        let mut c = OperatorClient::new(channel(&a.addr).await.unwrap());
        let st = c
            .status(pb::StatusRequest {
                repairs_limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for id in st.repairs {
            match c
                .undo(pb::UndoRequest {
                    repair_id: id.clone(),
                })
                .await
            {
                Ok(_) => t.undos += 1,
                // Not this agent's repair, or undone already (here).
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        && (s.message().contains("run by another agent")
                            || s.message().starts_with("repair ")) => {}
                // The peer's side was undone, this side never was: an
                // undo cut by a kill after the peer restored (issue 12:
                // undo is not resumable yet). Counted, not hidden.
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        && s.message().contains("already undone") =>
                {
                    t.half_undone += 1
                }
                Err(s) => panic!("undo {id} on {}: {s}", a.node),
            }
        }
    }
    // Converge: repairs between every pair until every diff is empty.
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 4, "no convergence after 3 rounds of repairs");
        for i in 0..AGENTS {
            for j in i + 1..AGENTS {
                let (a, b) = (
                    cl.agents[i].as_ref().unwrap(),
                    cl.agents[j].as_ref().unwrap(),
                );
                repair(a.addr.clone(), b.addr.clone(), 0).await.unwrap();
            }
        }
        let mut divergent = 0;
        for i in 0..AGENTS {
            for j in i + 1..AGENTS {
                let (a, b) = (
                    cl.agents[i].as_ref().unwrap(),
                    cl.agents[j].as_ref().unwrap(),
                );
                divergent += diff_keys(&a.addr, &b.addr).await.unwrap().len();
            }
        }
        if divergent == 0 {
            break;
        }
    }
    // Every acknowledged write is present, at its version or a newer one.
    let mut lost = Vec::new();
    for a in cl.agents.iter().flatten() {
        let mut c = a.replica().await;
        for (k, (ms, deleted, value)) in &ledger {
            let g = crate::harness::get(&mut c, k.clone()).await;
            let v = g.version.as_ref().map(|v| v.ms).unwrap_or(0);
            let ok =
                v > *ms || (v == *ms && g.tombstone == *deleted && (*deleted || g.value == *value));
            if !ok {
                lost.push(format!("{}: {}", a.node, String::from_utf8_lossy(k)));
            }
        }
    }
    // A flipped byte never yields a wrong diff: the stores are equal now,
    // so a diff through a flipping link is empty or an error.
    let (a, b) = (
        cl.agents[0].as_ref().unwrap(),
        cl.agents[1].as_ref().unwrap(),
    );
    let mut flipped_refused = 0;
    for at in [7, 100, 1_000, 3_000] {
        // A fresh link (no cached connection), bad from its first byte.
        let p = Proxy::start(b.addr.clone()).await;
        p.set(Fault::Flip(at));
        match diff_keys(&a.addr, &p.addr).await {
            Ok(keys) => assert!(keys.is_empty(), "a flipped byte at {at} gave a wrong diff"),
            Err(_) => flipped_refused += 1,
        }
    }
    assert_eq!(flipped_refused, 4, "TLS refuses every corrupted link");
    let proxied: u64 = cl
        .proxies
        .iter()
        .flatten()
        .flatten()
        .map(|p| p.faulted.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    eprintln!(
        "campaign seed {seed}: {} SIGKILLs, {} SIGSTOPs, {} proxy faults set ({proxied} faulted connections), {} writes acknowledged ({} keys), {} repairs ok / {} failed under faults, {} undos under faults, {} after healing ({} left half-undone by a kill), {rounds} rounds to converge, {} lost, flipped byte refused by TLS {flipped_refused}/4",
        t.kills,
        t.stops,
        t.faults_set,
        t.writes_acked,
        ledger.len(),
        t.repairs_ok,
        t.repairs_failed,
        t.undos_under_faults,
        t.undos,
        t.half_undone,
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(t.writes_acked > 0 && t.repairs_ok > 0);
    // Every store verifies.
    let dirs: Vec<_> = cl.agents.iter().flatten().map(|a| a.dir.clone()).collect();
    for a in cl.agents.iter_mut() {
        if let Some(a) = a.take() {
            a.stop();
        }
    }
    for d in dirs {
        let v = mend(&["store", "verify", "--data-dir", d.to_str().unwrap()]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "verify {}: {}",
            d.display(),
            String::from_utf8_lossy(&v.stdout)
        );
    }
}
