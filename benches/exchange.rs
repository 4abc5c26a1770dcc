//! Exchange area (issue 3 / issue 5): what one diff costs on the wire and in
//! time, against set-reconciliation baselines on the same two sets.
//!
//! Two in-memory stores ([`Store`] over [`MemBackend`], one range `all` of the
//! default 16^4 tree shape, the same [`Secret`]) get the same N versioned keys
//! (16 random bytes each, explicit versions from three origins). Then `d`
//! divergent keys are injected, in a fixed rotation: a newer version on one
//! side (stale update), a key only on the initiator, a key only on the peer,
//! a newer tombstone on one side (delete). Updated and deleted keys are
//! picked at random among the N; every injected version is newer than all
//! base writes (divergence is recent), so negentropy, which orders items by
//! timestamp, sees the new items clustered at the end. The first `d`
//! injections are the same for every `d`, so one fixture grows from d = 1 to
//! d = 10 000.
//!
//! [`Pair::diff`] runs the agent's own exchange driver
//! (`mend_agent::exchange::diff`: challenge, handshake, the sans-I/O descent)
//! against the peer agent's real Peer service over `mend_agent::link::mem`:
//! every message is encoded to protobuf bytes and decoded on the other side,
//! and counted by the wire as the driver counts it (protobuf encoded length
//! plus 5 bytes of gRPC framing per message; leaf replies are streamed, one
//! frame each); the two counts are asserted equal. The divergent key set it finds is checked against a brute-force
//! comparison of both stores' full listings before anything is reported.
//!
//! * `exchange/diff`: criterion timings of [`mend_exchange`] for N in
//!   {10k, 100k, 1M} and d in {1, 100, 10 000} (d <= N/2). Setup is outside
//!   the timed part. `MEND_BENCH_MAX_KEYS` caps N for quick runs.
//! * `exchange/compare` (only with `MEND_BENCH_COMPARE=1`): prints markdown
//!   tables comparing mend's bytes and rounds with negentropy 0.5.3 on the same
//!   sets (items = (version ms, 32-byte keyed entry digest); also with every
//!   timestamp 0, i.e. without time locality), a naive listing
//!   of every (key, 8-byte digest), and a Cassandra-style fixed tree of depth
//!   15, plus wiped-replica rows and mend's time at N = 100k vs 1M.
//!
//! Encoded lengths are prost's `encoded_len()` of the very messages the
//! agent would send.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use mend_agent::link::mem::{self, Counting, Rpc};
use mend_agent::state::AgentState;
use mend_core::exchange::Divergence;
use mend_core::{Decision, NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_rpc::{GRPC_FRAME_BYTES, MESSAGE_BYTES_MAX};
use mend_store::{LeafEntry, MemBackend, Store, StoreConfig, Write};

/// The grid of replica sizes (capped by `MEND_BENCH_MAX_KEYS`).
const N_GRID: [usize; 3] = [10_000, 100_000, 1_000_000];

/// The grid of divergent key counts (only d <= N/2 is run).
const D_GRID: [usize; 3] = [1, 100, 10_000];

/// The single range of both stores.
const RANGE: &str = "all";

/// Origins of the versions.
const ORIGINS: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Wall-clock ms of the first base write.
const T0: u64 = 1_750_000_000_000;

/// Writes per `Store::write` when loading.
const BATCH: usize = 1000;

/// Depth of the Cassandra-style fixed binary tree baseline.
const FIXED_TREE_DEPTH: u32 = 15;

fn max_keys() -> usize {
    match std::env::var("MEND_BENCH_MAX_KEYS") {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| panic!("MEND_BENCH_MAX_KEYS={s:?}: want a positive integer")),
        Err(_) => usize::MAX,
    }
}

/// A comma-separated list of counts from environment variable `var`.
fn list_env(var: &str) -> Option<Vec<usize>> {
    let s = std::env::var(var).ok()?;
    Some(
        s.split(',')
            .map(|x| {
                x.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}={s:?}: want counts separated by commas"))
            })
            .collect(),
    )
}

/// N values: `MEND_BENCH_COMPARE_N` (e.g. `100000,10000000`) or the grid
/// capped by `MEND_BENCH_MAX_KEYS`.
fn n_grid() -> Vec<usize> {
    if let Some(ns) = list_env("MEND_BENCH_COMPARE_N") {
        return ns;
    }
    let cap = max_keys();
    N_GRID.iter().copied().filter(|&n| n <= cap).collect()
}

/// d values for `n`: `MEND_BENCH_COMPARE_D` or the grid, d <= N/2.
fn d_grid(n: usize) -> impl Iterator<Item = usize> {
    list_env("MEND_BENCH_COMPARE_D")
        .unwrap_or(D_GRID.to_vec())
        .into_iter()
        .filter(move |&d| d <= n / 2)
}

/// The agents' `deepen.entries_per_bucket` the fixtures deepen by, as an
/// agent would once loaded (`MEND_BENCH_DEEPEN`; default the agent's, 16;
/// 0 keeps 16^4).
fn deepen_per_bucket() -> u64 {
    std::env::var("MEND_BENCH_DEEPEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(mend_store::DEEPEN_ENTRIES_PER_BUCKET_DEFAULT)
}

/// Message kinds on mend's wire, for the per-kind breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `HandshakeRequest`.
    HandshakeReq,
    /// `HandshakeResponse`.
    HandshakeResp,
    /// `ProbeRequest`.
    ProbeReq,
    /// `ProbeResponse`.
    ProbeResp,
    /// `LeavesRequest`.
    LeavesReq,
    /// One streamed `LeafReply`.
    LeafReply,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::HandshakeReq,
        Kind::HandshakeResp,
        Kind::ProbeReq,
        Kind::ProbeResp,
        Kind::LeavesReq,
        Kind::LeafReply,
    ];

    fn sent(self) -> bool {
        matches!(self, Kind::HandshakeReq | Kind::ProbeReq | Kind::LeavesReq)
    }
}

/// What one mend exchange cost on the wire.
#[derive(Debug, Clone, Default)]
pub struct WireCost {
    /// Sequential round trips (handshake included).
    pub rounds: u32,
    /// Request bytes (protobuf + 5 framing bytes per message).
    pub sent: u64,
    /// Response bytes, likewise.
    pub received: u64,
    /// Per kind: (messages, bytes).
    pub by_kind: BTreeMap<Kind, (u64, u64)>,
    /// The largest single message, framing included.
    pub largest: u64,
}

impl WireCost {
    /// Adds `msgs` messages of `kind`, `encoded` protobuf bytes in all
    /// (each framed by gRPC's 5 bytes).
    fn add_many(&mut self, kind: Kind, msgs: u64, encoded: u64) {
        if msgs == 0 {
            return;
        }
        let b = encoded + msgs * GRPC_FRAME_BYTES;
        if kind.sent() {
            self.sent += b;
        } else {
            self.received += b;
        }
        let e = self.by_kind.entry(kind).or_default();
        e.0 += msgs;
        e.1 += b;
    }

    /// Bytes both ways.
    pub fn total(&self) -> u64 {
        self.sent + self.received
    }

    fn kind(&self, k: Kind) -> (u64, u64) {
        self.by_kind.get(&k).copied().unwrap_or_default()
    }
}

/// One in-memory store with the bench's single range.
pub type MemStore = Store<MemBackend>;

fn store_config(node: &str) -> StoreConfig {
    StoreConfig::new(
        NodeId::new(node).expect("node id"),
        Secret::development(),
        Some(vec![RangeSpec::whole(RANGE, TreeShape::default())]),
    )
}

/// An empty store.
pub fn empty_store(node: &str) -> MemStore {
    Store::open(MemBackend::new(), store_config(node)).expect("open store")
}

/// Two agents over in-memory stores, the initiator reaching the other
/// through `mend_agent::link::mem` with a counting wire: [`Pair::diff`] is
/// the agent's own exchange driver (`mend_agent::exchange::diff`), every
/// message encoded to protobuf and decoded by the peer's real Peer service,
/// and counted as the driver counts it (protobuf length plus 5 bytes of gRPC
/// framing per message).
pub struct Pair {
    local: Arc<AgentState<MemBackend>>,
    wire: Arc<Counting>,
    rt: tokio::runtime::Runtime,
}

impl Pair {
    /// The pair over `local` (the initiator) and `peer`.
    pub fn new(local: Arc<MemStore>, peer: Arc<MemStore>) -> Pair {
        let wire = Arc::new(Counting::default());
        let local = mem::pair(local, peer, wire.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        Pair { local, wire, rt }
    }

    /// One full diff of every range, with what it cost on the wire.
    pub fn diff(&self) -> (Vec<Divergence>, WireCost) {
        self.wire.reset();
        let peer = self.local.config.peers[0].id.clone();
        let out = self
            .rt
            .block_on(mend_agent::exchange::diff(&self.local, &peer, None))
            .expect("diff");
        let mut cost = WireCost {
            rounds: out.cost.rounds,
            ..WireCost::default()
        };
        let kinds = [
            (Rpc::Challenge, false, Kind::HandshakeReq),
            (Rpc::Challenge, true, Kind::HandshakeResp),
            (Rpc::Handshake, false, Kind::HandshakeReq),
            (Rpc::Handshake, true, Kind::HandshakeResp),
            (Rpc::Probe, false, Kind::ProbeReq),
            (Rpc::Probe, true, Kind::ProbeResp),
            (Rpc::Leaves, false, Kind::LeavesReq),
            (Rpc::Leaves, true, Kind::LeafReply),
        ];
        for (rpc, reply, kind) in kinds {
            let (msgs, bytes) = self.wire.get(rpc, reply);
            cost.add_many(kind, msgs, bytes);
        }
        // The driver's own count must be the wire's.
        assert_eq!(
            (out.cost.bytes_sent, out.cost.bytes_received),
            (cost.sent, cost.received),
            "driver and wire count the same bytes"
        );
        cost.largest = self.wire.largest() + GRPC_FRAME_BYTES;
        (out.keys.into_iter().map(|k| k.div).collect(), cost)
    }
}

/// A diff of `local` against `peer` through a fresh [`Pair`].
pub fn mend_exchange(local: &Arc<MemStore>, peer: &Arc<MemStore>) -> (Vec<Divergence>, WireCost) {
    Pair::new(local.clone(), peer.clone()).diff()
}

/// Every entry of range 0, in bucket order.
fn listing(store: &MemStore) -> Vec<LeafEntry> {
    let buckets = store.shape(0).expect("shape").buckets() as u32;
    store
        .leaf_entries_span(0, 0, buckets)
        .expect("listing")
        .into_iter()
        .flat_map(|(_, es)| es)
        .collect()
}

/// Brute force: keys whose entry (or presence) differs between two listings.
fn brute_force_diff(a: &[LeafEntry], b: &[LeafEntry]) -> BTreeSet<Vec<u8>> {
    let ma: HashMap<&[u8], &[u8; 32]> = a.iter().map(|e| (e.key.as_slice(), &e.digest)).collect();
    let mb: HashMap<&[u8], &[u8; 32]> = b.iter().map(|e| (e.key.as_slice(), &e.digest)).collect();
    let mut out = BTreeSet::new();
    for (k, d) in &ma {
        if mb.get(k) != Some(d) {
            out.insert(k.to_vec());
        }
    }
    for k in mb.keys() {
        if !ma.contains_key(k) {
            out.insert(k.to_vec());
        }
    }
    out
}

fn found_keys(divs: &[Divergence]) -> BTreeSet<Vec<u8>> {
    divs.iter().map(|d| d.key.clone()).collect()
}

/// The outcome of one negentropy reconciliation.
#[derive(Debug, Clone)]
pub struct NegentropyCost {
    /// Bytes of all messages both ways (no framing, no handshake).
    pub bytes: u64,
    /// Round trips: messages the initiator sent.
    pub rounds: u32,
    /// Keys of the differing ids, mapped back through both listings.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Reconciles the two listings with negentropy 0.5.3 (no frame size limit),
/// items = (version ms, keyed entry digest), or (0, digest) when
/// `timestamps` is false (no time locality: items in digest order).
pub fn negentropy_exchange(
    local: &[LeafEntry],
    peer: &[LeafEntry],
    timestamps: bool,
) -> NegentropyCost {
    use negentropy::{Id, Negentropy, NegentropyStorageVector};
    let storage = |es: &[LeafEntry]| {
        let mut s = NegentropyStorageVector::with_capacity(es.len());
        for e in es {
            let ts = if timestamps { e.meta.version.ms } else { 0 };
            s.insert(ts, Id::from_byte_array(e.digest))
                .expect("negentropy insert");
        }
        s.seal().expect("negentropy seal");
        s
    };
    let mut init = Negentropy::owned(storage(local), 0).expect("negentropy");
    let mut resp = Negentropy::owned(storage(peer), 0).expect("negentropy");
    let mut msg = init.initiate().expect("initiate");
    let mut bytes = msg.len() as u64;
    let mut rounds = 1;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        let r = resp.reconcile(&msg).expect("reconcile");
        bytes += r.len() as u64;
        match init
            .reconcile_with_ids(&r, &mut have, &mut need)
            .expect("reconcile_with_ids")
        {
            Some(m) => {
                rounds += 1;
                bytes += m.len() as u64;
                msg = m;
            }
            None => break,
        }
    }
    let by_digest = |es: &[LeafEntry]| -> HashMap<[u8; 32], Vec<u8>> {
        es.iter().map(|e| (e.digest, e.key.clone())).collect()
    };
    let (lmap, pmap) = (by_digest(local), by_digest(peer));
    let mut keys = BTreeSet::new();
    for id in have {
        keys.insert(lmap.get(&id.to_bytes()).expect("have id is local").clone());
    }
    for id in need {
        keys.insert(
            pmap.get(&id.to_bytes())
                .expect("need id is the peer's")
                .clone(),
        );
    }
    NegentropyCost {
        bytes,
        rounds,
        keys,
    }
}

/// A naive exchange: every entry's (length-prefixed key, 8-byte digest),
/// one way, no framing.
pub fn naive_bytes(entries: &[LeafEntry]) -> u64 {
    entries
        .iter()
        .map(|e| {
            let k = e.key.len() as u64;
            (64 - u64::from((k | 1).leading_zeros())).div_ceil(7) + k + 8
        })
        .sum()
}

/// A Cassandra-style fixed tree with `2^FIXED_TREE_DEPTH` leaves over the
/// (keyed) key-hash space: the number of distinct keys (over both replicas)
/// in the leaves that hold a divergent key, i.e. what it would stream.
pub fn fixed_tree_streamed(
    secret: &Secret,
    a: &[LeafEntry],
    b: &[LeafEntry],
    divergent: &BTreeSet<Vec<u8>>,
) -> u64 {
    let leaf = |k: &[u8]| secret.placement(k) >> (64 - FIXED_TREE_DEPTH);
    let dirty: HashSet<u64> = divergent.iter().map(|k| leaf(k)).collect();
    let keys: HashSet<&[u8]> = a.iter().chain(b).map(|e| e.key.as_slice()).collect();
    keys.into_iter()
        .filter(|k| dirty.contains(&leaf(k)))
        .count() as u64
}

/// Two replicas of N keys with the first `d` injected divergences.
pub struct Fixture {
    /// N.
    pub n: usize,
    /// Injected divergences so far.
    pub d: usize,
    /// The initiator.
    pub a: Arc<MemStore>,
    /// The peer.
    pub b: Arc<MemStore>,
    /// The two as agents.
    pub pair: Pair,
    base: Vec<[u8; 16]>,
    /// Base key indices in random order: injection `j` updates or deletes
    /// `base[pick[j]]`, so touched keys are spread over key and time order.
    pick: Vec<u32>,
    fresh_keys: StdRng,
    /// The keys injected so far.
    pub injected: BTreeSet<Vec<u8>>,
    verified: Option<usize>,
}

fn base_version(i: usize) -> Version {
    Version {
        ms: T0 + i as u64,
        logical: 0,
        origin: NodeId::new(ORIGINS[i % 3]).expect("origin"),
        seq: (i / 3) as u64 + 1,
    }
}

fn newer_version(n: usize, j: usize) -> Version {
    Version {
        ms: T0 + n as u64 + 60_000 + j as u64,
        logical: 0,
        origin: NodeId::new(ORIGINS[j % 3]).expect("origin"),
        seq: 10_000_000 + j as u64,
    }
}

fn write_one(store: &MemStore, w: Write) {
    let applied = store.write(vec![w]).expect("write");
    assert_eq!(
        applied[0].decision,
        Decision::Apply,
        "injected write applies"
    );
}

impl Fixture {
    /// Loads N identical keys into two stores (the second a copy of the
    /// first's backend).
    pub fn new(n: usize) -> Fixture {
        let mut rng = StdRng::seed_from_u64(0x6d65_6e64_0003);
        let base: Vec<[u8; 16]> = (0..n)
            .map(|_| {
                let mut k = [0u8; 16];
                rng.fill_bytes(&mut k);
                k
            })
            .collect();
        let a = empty_store("node-a");
        for (c, chunk) in base.chunks(BATCH).enumerate() {
            let writes = chunk
                .iter()
                .enumerate()
                .map(|(o, k)| {
                    let i = c * BATCH + o;
                    Write::put(k.to_vec(), (i as u64).to_le_bytes().to_vec()).at(base_version(i))
                })
                .collect();
            a.write(writes).expect("load");
        }
        // Deepened as the agent's check would (the copy inherits the depth).
        let (per_bucket, bytes_max) = (
            deepen_per_bucket(),
            mend_agent::AgentConfig::default().deepen.tree_bytes_max,
        );
        while per_bucket > 0 && a.deepen_due(0, per_bucket).expect("due") {
            let s = a.shape(0).expect("shape");
            if s.at_depth(s.depth + 1)
                .map_or(true, |next| next.tree_bytes() > bytes_max)
            {
                break;
            }
            let d = a.deepen(0).expect("deepen");
            eprintln!(
                "fixture: N = {n} deepened to depth {} in {} ms",
                d.to.depth, d.took_ms
            );
        }
        let mut pick: Vec<u32> = (0..n as u32).collect();
        pick.shuffle(&mut rng);
        let copy = a.backend().snapshot_copy().expect("copy backend");
        let b = Store::open(copy, store_config("node-b")).expect("open copy");
        assert_eq!(a.root(0).expect("root").count, n as u64, "all keys loaded");
        let (a, b) = (Arc::new(a), Arc::new(b));
        Fixture {
            n,
            d: 0,
            pair: Pair::new(a.clone(), b.clone()),
            a,
            b,
            base,
            pick,
            fresh_keys: StdRng::seed_from_u64(0x6d65_6e64_0004),
            injected: BTreeSet::new(),
            verified: None,
        }
    }

    /// Injects divergences `self.d..d`.
    pub fn grow_to(&mut self, d: usize) {
        assert!(d >= self.d && d <= self.n / 2, "d = {d} for N = {}", self.n);
        for j in self.d..d {
            let mut fresh = [0u8; 16];
            self.fresh_keys.fill_bytes(&mut fresh);
            let side = if (j / 4) % 2 == 0 { &self.a } else { &self.b };
            let v = newer_version(self.n, j);
            let key = match j % 4 {
                0 => {
                    let k = self.base[self.pick[j] as usize].to_vec();
                    write_one(side, Write::put(k.clone(), b"updated".to_vec()).at(v));
                    k
                }
                1 => {
                    write_one(
                        &self.a,
                        Write::put(fresh.to_vec(), b"only a".to_vec()).at(v),
                    );
                    fresh.to_vec()
                }
                2 => {
                    write_one(
                        &self.b,
                        Write::put(fresh.to_vec(), b"only b".to_vec()).at(v),
                    );
                    fresh.to_vec()
                }
                _ => {
                    let k = self.base[self.pick[j] as usize].to_vec();
                    write_one(side, Write::delete(k.clone()).at(v));
                    k
                }
            };
            assert!(self.injected.insert(key), "injected keys are distinct");
        }
        self.d = d;
    }

    /// Checks, once per `d`, that the injected set is the brute-force
    /// difference and that mend finds exactly it.
    pub fn verify(&mut self) {
        if self.verified == Some(self.d) {
            return;
        }
        let (la, lb) = (listing(&self.a), listing(&self.b));
        assert_eq!(
            brute_force_diff(&la, &lb),
            self.injected,
            "brute-force diff"
        );
        let (divs, _) = self.pair.diff();
        assert_eq!(
            found_keys(&divs),
            self.injected,
            "mend finds the injected keys"
        );
        self.verified = Some(self.d);
    }
}

/// The fixture for (n, d), reusing the one in `slot` when it can grow to d.
fn fixture_for(slot: &mut Option<Fixture>, n: usize, d: usize) -> &mut Fixture {
    if slot.as_ref().is_none_or(|f| f.n != n || f.d > d) {
        *slot = None;
        *slot = Some(Fixture::new(n));
    }
    let f = slot.as_mut().expect("fixture");
    f.grow_to(d);
    f
}

fn timing(c: &mut Criterion) {
    let slot = RefCell::new(None);
    let mut g = c.benchmark_group("exchange/diff");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in n_grid() {
        for d in d_grid(n) {
            g.bench_function(
                BenchmarkId::new(format!("N={n}"), format!("d={d}")),
                |bch| {
                    let mut slot = slot.borrow_mut();
                    let f = fixture_for(&mut slot, n, d);
                    f.verify();
                    bch.iter(|| black_box(f.pair.diff()));
                },
            );
        }
    }
    g.finish();
}

/// One row of the comparison table.
struct Row {
    n: usize,
    d: usize,
    mend: WireCost,
    neg: NegentropyCost,
    /// Negentropy with every timestamp 0.
    neg_flat: NegentropyCost,
    naive: u64,
    fixed_streamed: u64,
}

/// One wiped-replica row.
struct WipedRow {
    n: usize,
    label: &'static str,
    mend: WireCost,
    neg: NegentropyCost,
    naive: u64,
}

/// Runs of each fixture in [`interleaved_times`].
const TIME_RUNS: usize = 61;

/// The d used to compare diff time across N.
const TIME_D: usize = 100;

/// Median [`mend_exchange`] time of each N at d = `TIME_D`, the fixtures
/// held side by side and their runs interleaved, so load from other
/// processes hits every N alike.
fn interleaved_times() -> Vec<(usize, Duration)> {
    let fixtures: Vec<Fixture> = n_grid()
        .into_iter()
        .filter(|&n| TIME_D <= n / 2)
        .map(|n| {
            let mut f = Fixture::new(n);
            f.grow_to(TIME_D);
            f.verify();
            f
        })
        .collect();
    time_fixtures(&fixtures)
}

/// The median diff time of each fixture, interleaved.
fn time_fixtures(fixtures: &[Fixture]) -> Vec<(usize, Duration)> {
    let mut samples = vec![Vec::with_capacity(TIME_RUNS); fixtures.len()];
    for _ in 0..TIME_RUNS {
        for (f, s) in fixtures.iter().zip(&mut samples) {
            let t = Instant::now();
            black_box(f.pair.diff());
            s.push(t.elapsed());
        }
    }
    fixtures
        .iter()
        .zip(samples)
        .map(|(f, mut s)| {
            s.sort();
            (f.n, s[s.len() / 2])
        })
        .collect()
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}", a as f64 / b as f64)
    }
}

fn fmt_n(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn compare(_c: &mut Criterion) {
    if std::env::var("MEND_BENCH_COMPARE").as_deref() != Ok("1") {
        return;
    }
    let mut rows = Vec::new();
    let mut wiped = Vec::new();
    // Fixtures left at d = TIME_D, reused for the timing when every N is.
    let mut at_time_d = Vec::new();
    for n in n_grid() {
        let started = Instant::now();
        let mut f = Fixture::new(n);
        eprintln!(
            "compare: N = {n} loaded in {:.1?}, tree depth {}",
            started.elapsed(),
            f.a.shape(0).expect("shape").depth
        );

        // Wiped replicas, before any divergence (not past 1M: every key
        // diverges, past the diff's key limit).
        let full = listing(&f.a);
        let empty = Arc::new(empty_store("node-wiped"));
        for (label, local, peer) in [
            ("peer wiped (initiator full)", &f.a, &empty),
            ("initiator wiped (peer full)", &empty, &f.a),
        ]
        .into_iter()
        .filter(|_| n <= 1_000_000)
        {
            let (divs, mend) = mend_exchange(local, peer);
            assert_eq!(divs.len(), n, "{label}: every key diverges");
            let (ll, pl) = (listing(local), listing(peer));
            let neg = negentropy_exchange(&ll, &pl, true);
            assert_eq!(neg.keys.len(), n, "{label}: negentropy finds every key");
            wiped.push(WipedRow {
                n,
                label,
                mend,
                neg,
                naive: naive_bytes(&full),
            });
        }
        drop(empty);

        for d in d_grid(n) {
            f.grow_to(d);
            f.verify();
            let (la, lb) = (listing(&f.a), listing(&f.b));
            let (divs, mend) = f.pair.diff();
            assert_eq!(found_keys(&divs), f.injected, "mend result");
            let neg = negentropy_exchange(&la, &lb, true);
            assert_eq!(neg.keys, f.injected, "negentropy result");
            let neg_flat = negentropy_exchange(&la, &lb, false);
            assert_eq!(
                neg_flat.keys, f.injected,
                "negentropy (no timestamps) result"
            );
            let fixed_streamed = fixed_tree_streamed(f.a.secret(), &la, &lb, &f.injected);
            rows.push(Row {
                n,
                d,
                mend,
                neg,
                neg_flat,
                naive: naive_bytes(&la),
                fixed_streamed,
            });
        }
        eprintln!("compare: N = {n} done in {:.1?}", started.elapsed());
        drop(full);
        if f.d == TIME_D {
            at_time_d.push(f);
        }
    }
    let started = Instant::now();
    let times = if at_time_d.len() == n_grid().len() {
        time_fixtures(&at_time_d)
    } else {
        drop(at_time_d);
        interleaved_times()
    };
    eprintln!(
        "compare: interleaved timing done in {:.1?}",
        started.elapsed()
    );
    print_tables(&rows, &wiped, &times);
}

fn print_tables(rows: &[Row], wiped: &[WipedRow], times: &[(usize, Duration)]) {
    println!();
    println!("#### Bytes and round trips per diff");
    println!();
    println!(
        "| N | d | mend bytes | mend rounds | mend B/key | negentropy bytes | negentropy rounds | negentropy B/key | mend / negentropy | negentropy ts=0 bytes (rounds) | mend / negentropy ts=0 | naive all-digests bytes | mend / naive | depth-15 overstreaming |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let d = r.d as u64;
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} ({}) | {} | {} | {} | {:.1}× ({} entries) |",
            fmt_n(r.n),
            r.d,
            r.mend.total(),
            r.mend.rounds,
            r.mend.total() as f64 / d as f64,
            r.neg.bytes,
            r.neg.rounds,
            r.neg.bytes as f64 / d as f64,
            ratio(r.mend.total(), r.neg.bytes),
            r.neg_flat.bytes,
            r.neg_flat.rounds,
            ratio(r.mend.total(), r.neg_flat.bytes),
            r.naive,
            ratio(r.mend.total(), r.naive),
            r.fixed_streamed as f64 / d as f64,
            r.fixed_streamed,
        );
    }
    println!();
    println!("#### Wiped replica (every key divergent)");
    println!();
    println!(
        "| N | case | mend bytes | mend rounds | largest mend message | negentropy bytes | negentropy rounds | naive all-digests bytes | mend / naive |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for w in wiped {
        let flag = if w.mend.largest > MESSAGE_BYTES_MAX as u64 {
            " (over the 16 MiB MESSAGE_BYTES_MAX)"
        } else {
            ""
        };
        println!(
            "| {} | {} | {} | {} | {}{} | {} | {} | {} | {} |",
            fmt_n(w.n),
            w.label,
            w.mend.total(),
            w.mend.rounds,
            w.mend.largest,
            flag,
            w.neg.bytes,
            w.neg.rounds,
            w.naive,
            ratio(w.mend.total(), w.naive),
        );
    }
    println!();
    println!("#### Where mend's bytes go (messages / bytes incl. framing)");
    println!();
    println!(
        "| N | d | handshake req | handshake resp | probe req | probe resp | leaves req | leaf replies |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let cell = |c: &WireCost, k: Kind| {
        let (m, b) = c.kind(k);
        format!("{m} / {b}")
    };
    for r in rows {
        let cells: Vec<String> = Kind::ALL.iter().map(|k| cell(&r.mend, *k)).collect();
        println!("| {} | {} | {} |", fmt_n(r.n), r.d, cells.join(" | "));
    }
    for w in wiped {
        let cells: Vec<String> = Kind::ALL.iter().map(|k| cell(&w.mend, *k)).collect();
        println!("| {} | {} | {} |", fmt_n(w.n), w.label, cells.join(" | "));
    }
    println!();
    println!(
        "#### mend diff time, d = {TIME_D} (median of {TIME_RUNS} interleaved runs, one process)"
    );
    println!();
    println!("| N | median time | vs N = 100k |");
    println!("|---|---|---|");
    let base = times.iter().find(|(n, _)| *n == 100_000).map(|(_, t)| *t);
    for (n, t) in times {
        let rel = base.map_or("-".into(), |b| {
            format!("{:.2}×", t.as_secs_f64() / b.as_secs_f64())
        });
        println!("| {} | {:.2?} | {} |", fmt_n(*n), t, rel);
    }
    println!();
}

criterion_group!(benches, timing, compare);
