//! Deterministic simulation of the real agent logic under faults.
//!
//! Several agents, each a real [`AgentState`] over an in-memory backend,
//! run the agent's own code: scheduled exchanges with the playbook
//! (`schedule::run_once`: diff, drift history, blast-radius and health
//! preconditions, automatic repair, re-diff), operator repairs and undo,
//! the Peer service answering over [`mend_agent::link::mem`] links that
//! encode every message. Everything runs on one thread, on tokio's paused
//! clock: time moves only when every task waits, so a run depends on
//! nothing but its seed.
//!
//! A nemesis, driven by the same seed, loses, delays, duplicates and
//! reorders messages per directed link, partitions pairs of nodes and heals
//! them, crashes agents (in-memory state dropped, committed backend rows
//! kept) and restarts them, crashes them in the middle of a rate-limited
//! repair, jumps their clocks, and wipes one.
//!
//! The checker holds, at every step: no diff reports "in sync" while the
//! two stores differ; every reported divergent key names the side that is
//! really behind and a category its two entries allow; no repair lowers a
//! stored version (a newer write is never clobbered); automatic repairs stay
//! within the blast radius and the configured key rate. After the faults
//! stop (liveness): a majority converges with the last node still down,
//! then all nodes converge within [`CONVERGE_ROUNDS_MAX`] rounds of
//! repairs, equal in roots and entries, with every acknowledged write
//! present at its version (none lost).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use mend_agent::config::{PeerConfig, Playbook};
use mend_agent::link::mem::{Crossing, Fate, MemDialer, Registry, Wire};
use mend_agent::repair::RepairOptions;
use mend_agent::service::peer::PeerService;
use mend_agent::state::{AgentBackend, AgentState};
use mend_agent::{AgentConfig, journal, repair, schedule};
use mend_core::classify::{Category, Side};
use mend_core::exchange::{EntrySummary, node_hash};
use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::backend::{Call, Wrapper};
use mend_store::{MemBackend, Store, StoreConfig, StoreError, Write};

use crate::rng::SplitMix64;

/// Agents in a simulated cluster.
pub const NODES: usize = 3;

/// Keys the workload writes (`k00` …).
pub const KEYS: u32 = 100;

/// Steps of the fault phase.
pub const FAULT_STEPS: u32 = 150;

/// Full rounds of pairwise repairs allowed to converge after the faults
/// stop.
pub const CONVERGE_ROUNDS_MAX: u32 = 3;

/// Blast radius of the simulated playbook (share of a range's entries).
const BLAST_SHARE: f64 = 0.25;

/// Key rate of automatic repairs (keys per second), as configured.
const RATE_KEYS_PER_S: u64 = 50;

/// Per-call timeout of the links, ms.
const RPC_TIMEOUT_MS: u64 = 2_000;

/// Largest clock offset a node's clock is set to, ms (below the default
/// allowed skew of the taxonomy, so nothing is a future version for good).
const SKEW_MAX_MS: i64 = 400;

/// Tombstone grace period of the simulated agents, ms: short, so purges
/// happen within a run (the fault phase spans minutes of simulated time).
const GRACE_MS: u64 = 20_000;

/// The simulated day starts here (2024-05-01 00:00:00 UTC).
const EPOCH_MS: u64 = 1_714_521_600_000;

/// What kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Faults on every link and node; safety checked throughout; then
    /// healing and convergence.
    Uniform,
    /// Faults confined to one node and its links: the two healthy nodes
    /// must converge with each other before the faults stop.
    Minority,
}

/// Counts and findings of one seed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimOutcome {
    /// The seed.
    pub seed: u64,
    /// Writes the stores acknowledged.
    pub writes_acked: u64,
    /// Writes the apply rule refused (reported to the client, not lost).
    pub writes_refused: u64,
    /// Scheduled exchanges run / failed (faults).
    pub exchanges: u64,
    /// Scheduled exchanges that failed.
    pub exchanges_failed: u64,
    /// Repairs that completed (playbook, operator, liveness).
    pub repairs: u64,
    /// Of those, automatic repairs by the playbook of a scheduled exchange.
    pub auto_repairs: u64,
    /// Keys those repairs wrote.
    pub keys_repaired: u64,
    /// Undos run.
    pub undos: u64,
    /// Tombstones purged by the agents' background purge.
    pub tombstones_purged: u64,
    /// Crashes (including mid-repair and wipes).
    pub crashes: u64,
    /// Crashes in the middle of a repair.
    pub crashes_mid_repair: u64,
    /// Wipes.
    pub wipes: u64,
    /// Writes acknowledged only by a replica that was then wiped (lost by
    /// the fault itself, not by mend).
    pub lost_to_wipe: u64,
    /// Messages carried.
    pub messages: u64,
    /// Messages lost, delayed, duplicated, reordered.
    pub faults_injected: u64,
    /// Rounds of pairwise repairs the liveness phase needed.
    pub converge_rounds: u32,
    /// Every broken property, with the step.
    pub violations: Vec<String>,
    /// Hash of every event and result of the run: equal for equal seeds.
    pub trace: u64,
}

/// The backend of a simulated agent: an in-memory backend shared across
/// the agent's incarnations (it is the agent's "disk"), and a flag that
/// goes false when the incarnation crashes, after which its store can
/// neither read nor write.
struct SimBackend {
    disk: Arc<MemBackend>,
    alive: Arc<AtomicBool>,
}

fn dead() -> StoreError {
    StoreError::Backend {
        message: "simulated process crashed".into(),
        retryable: true,
    }
}

impl Wrapper for SimBackend {
    type Inner = MemBackend;
    fn inner(&self) -> &MemBackend {
        &self.disk
    }
    fn before(&self, _call: Call<'_>) -> Result<(), StoreError> {
        if self.alive.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(dead())
        }
    }
}

impl AgentBackend for SimBackend {
    fn shadow_apply(
        store: &mend_store::Store<Self>,
        _data_dir: &std::path::Path,
        _tag: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<mend_agent::shadow::KeyEntry>, StoreError> {
        let copy = SimBackend {
            disk: Arc::new(store.backend().disk.snapshot_copy()?),
            alive: Arc::new(AtomicBool::new(true)),
        };
        mend_agent::shadow::apply_to_copy(store, copy, writes)
    }
}

type Agent = Arc<AgentState<SimBackend>>;

/// The nemesis on the wire: one seeded generator for every message.
struct Nemesis {
    rng: Mutex<SplitMix64>,
    state: Mutex<WireState>,
}

#[derive(Default)]
struct WireState {
    /// Message faults on (per mille each: loss, delay, duplicate, reorder).
    faults: [u64; 4],
    /// Only links touching this node are faulty (minority runs).
    only: Option<String>,
    /// Directed links that deliver nothing.
    cut: BTreeSet<(String, String)>,
    messages: u64,
    injected: u64,
    trace: u64,
}

fn mix(h: &mut u64, v: u64) {
    // FNV-1a over the value's bytes.
    for b in v.to_le_bytes() {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

fn mix_str(h: &mut u64, s: &str) {
    for b in s.bytes() {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
    mix(h, s.len() as u64);
}

impl Wire for Nemesis {
    fn fate(&self, c: Crossing<'_>) -> Fate {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.messages += 1;
        mix(&mut w.trace, c.bytes as u64);
        if w.cut.contains(&(c.from.to_string(), c.to.to_string())) {
            w.injected += 1;
            return Fate::Drop;
        }
        if let Some(n) = &w.only
            && c.from != n
            && c.to != n
        {
            return Fate::Deliver;
        }
        let [loss, delay, dup, reorder] = w.faults;
        if loss + delay + dup + reorder == 0 {
            return Fate::Deliver;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let roll = rng.below(1000);
        let fate = if roll < loss {
            Fate::Drop
        } else if roll < loss + delay {
            Fate::Delay(Duration::from_millis(rng.between(1, 800)))
        } else if roll < loss + delay + dup && !c.reply {
            // Requests only: a retried request reaches the server twice;
            // HTTP/2 never repeats a reply message.
            Fate::Duplicate
        } else if roll < loss + delay + dup + reorder && c.rpc == mend_agent::link::mem::Rpc::Push {
            Fate::Reorder
        } else {
            Fate::Deliver
        };
        if fate != Fate::Deliver {
            w.injected += 1;
        }
        fate
    }
}

/// One simulated agent: its disk survives crashes, its state does not.
struct Node {
    id: String,
    disk: Arc<MemBackend>,
    clock_offset: Arc<AtomicI64>,
    alive: Arc<AtomicBool>,
    agent: Option<Agent>,
}

struct World {
    nodes: Vec<Node>,
    registry: Arc<Registry<SimBackend>>,
    nemesis: Arc<Nemesis>,
    rng: SplitMix64,
    t0: Instant,
    /// The newest acknowledged write of each key: (version, value; `None`
    /// for a delete).
    ledger: BTreeMap<Vec<u8>, (Version, Option<Vec<u8>>)>,
    /// The newest version each node has held of each key (a repair must
    /// never lower it).
    high: Vec<BTreeMap<Vec<u8>, Version>>,
    /// Keys whose highest entry seen on each node is a tombstone: those may
    /// disappear (purged), and must never come back older.
    high_tomb: Vec<std::collections::BTreeSet<Vec<u8>>>,
    out: SimOutcome,
    step: u32,
    wiped: bool,
    /// The replicated store's own replication: (step due, node, write),
    /// delivered late, or never when the node is down or the nemesis drops
    /// it; mend exists to repair what it misses.
    replication: Vec<(u32, usize, Write)>,
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

fn newer(a: &Version, b: &Version) -> bool {
    a.order(b) == std::cmp::Ordering::Greater
}

fn agent_config(id: &str, peers: &[String]) -> AgentConfig {
    let mut c = AgentConfig {
        node_id: id.to_string(),
        insecure_plaintext: true,
        ranges: vec![RangeSpec::whole(
            "default",
            TreeShape::new(4, 3).unwrap_or_default(),
        )],
        peers: peers
            .iter()
            .filter(|p| p.as_str() != id)
            .map(|p| PeerConfig {
                id: p.clone(),
                address: p.clone(),
                interval_ms: 0,
                budget: None,
            })
            .collect(),
        playbook: Playbook {
            blast_radius_share_max: BLAST_SHARE,
            ..Playbook::default()
        },
        ..AgentConfig::default()
    };
    c.limits.rpc_timeout_ms = RPC_TIMEOUT_MS;
    c.limits.repair_rate_keys_per_s = RATE_KEYS_PER_S;
    c.tombstone_grace_ms = GRACE_MS;
    c.gc.enabled = true;
    c
}

impl World {
    fn new(seed: u64, mode: Mode) -> World {
        let mut rng = SplitMix64::new(seed);
        let nemesis = Arc::new(Nemesis {
            rng: Mutex::new(SplitMix64::new(rng.next_u64())),
            state: Mutex::new(WireState::default()),
        });
        let nodes = (0..NODES)
            .map(|i| Node {
                id: format!("s{i}"),
                disk: Arc::new(MemBackend::new()),
                clock_offset: Arc::new(AtomicI64::new(
                    rng.between(0, 2 * SKEW_MAX_MS as u64) as i64 - SKEW_MAX_MS,
                )),
                alive: Arc::new(AtomicBool::new(false)),
                agent: None,
            })
            .collect();
        let mut w = World {
            nodes,
            registry: Arc::new(Registry::default()),
            nemesis,
            rng,
            t0: Instant::now(),
            ledger: BTreeMap::new(),
            high: vec![BTreeMap::new(); NODES],
            high_tomb: vec![Default::default(); NODES],
            out: SimOutcome {
                seed,
                trace: 0xcbf2_9ce4_8422_2325,
                ..SimOutcome::default()
            },
            step: 0,
            wiped: false,
            replication: Vec::new(),
        };
        for i in 0..NODES {
            w.start(i);
        }
        let faults = [15, 50, 20, 20];
        let mut ws = w.wire();
        ws.faults = faults;
        if mode == Mode::Minority {
            ws.only = Some(w.nodes[NODES - 1].id.clone());
        }
        drop(ws);
        w
    }

    fn wire(&self) -> std::sync::MutexGuard<'_, WireState> {
        self.nemesis.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trace(&mut self, what: &str, v: u64) {
        mix_str(&mut self.out.trace, what);
        mix(&mut self.out.trace, v);
    }

    fn violation(&mut self, what: String) {
        self.out
            .violations
            .push(format!("step {}: {what}", self.step));
    }

    /// Opens node `i`'s store over its disk and makes it reachable.
    fn start(&mut self, i: usize) {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let t0 = self.t0;
        let node = &mut self.nodes[i];
        let alive = Arc::new(AtomicBool::new(true));
        node.alive = alive.clone();
        let offset = node.clock_offset.clone();
        let config = agent_config(&node.id, &ids);
        let node_id = NodeId::new(node.id.clone()).unwrap_or_else(|_| unreachable!());
        let mut scfg = StoreConfig::new(
            node_id.clone(),
            Secret::development(),
            Some(config.ranges.clone()),
        );
        scfg.tombstone_grace_ms = config.tombstone_grace_ms;
        scfg.clock_skew_ms = config.clock_skew_ms;
        scfg.clock = Arc::new(move || {
            let t = EPOCH_MS as i64 + t0.elapsed().as_millis() as i64;
            (t + offset.load(Ordering::Relaxed)).max(0) as u64
        });
        let backend = SimBackend {
            disk: node.disk.clone(),
            alive,
        };
        let store = match Store::open(backend, scfg) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("{} does not reopen after a crash: {e}", node.id);
                self.violation(msg);
                return;
            }
        };
        let dialer = MemDialer::new(
            node.id.clone(),
            self.registry.clone(),
            self.nemesis.clone(),
            Duration::from_millis(RPC_TIMEOUT_MS),
        );
        let mut agent = AgentState::new(store, config, Arc::new(dialer), None);
        agent.inline_blocking = true;
        let agent = Arc::new(agent);
        self.registry
            .set(&node.id, Some(Arc::new(PeerService::new(agent.clone()))));
        node.agent = Some(agent);
    }

    /// Kills node `i`: its in-memory state (trees, clock, monitor) is gone,
    /// its disk keeps what was committed.
    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive.store(false, Ordering::Relaxed);
        node.agent = None;
        self.registry.set(&node.id.clone(), None);
        self.out.crashes += 1;
    }

    fn live(&self) -> Vec<usize> {
        (0..NODES)
            .filter(|&i| self.nodes[i].agent.is_some())
            .collect()
    }

    /// Every key's entry at node `i` (must be up).
    fn snapshot(&self, i: usize) -> BTreeMap<Vec<u8>, EntrySummary> {
        let mut out = BTreeMap::new();
        if let Some(a) = &self.nodes[i].agent {
            for k in 0..KEYS {
                if let Ok(Some(e)) = a.store.summary(&key(k)) {
                    out.insert(key(k), e);
                }
            }
        }
        out
    }

    /// A newer-version-never-lowered check of every live node against what
    /// it held before; `except` nodes (undo, wipe) just take the new
    /// baseline.
    fn check_monotonic(&mut self, except: &[usize]) {
        for i in self.live() {
            let snap = self.snapshot(i);
            for k in 0..KEYS {
                let kk = key(k);
                let now = snap.get(&kk).map(|e| e.version.clone());
                let tomb_now = snap.get(&kk).is_some_and(|e| e.tombstone);
                let before = self.high[i].get(&kk).cloned();
                let was_tomb = self.high_tomb[i].contains(&kk);
                match (before, now) {
                    // A purged tombstone: its version stays the floor, so a
                    // value that comes back older is caught above.
                    (Some(_), None) if was_tomb => {}
                    (Some(b), Some(n)) if newer(&b, &n) && !except.contains(&i) => {
                        let msg = format!(
                            "{}: key {} went back from {b} to {n}",
                            self.nodes[i].id,
                            String::from_utf8_lossy(&kk)
                        );
                        self.violation(msg);
                        self.high[i].insert(kk, n);
                    }
                    (Some(b), None) if !except.contains(&i) => {
                        let msg = format!(
                            "{}: key {} at {b} disappeared",
                            self.nodes[i].id,
                            String::from_utf8_lossy(&kk)
                        );
                        self.violation(msg);
                        self.high[i].remove(&kk);
                    }
                    (_, Some(n)) => {
                        if tomb_now {
                            self.high_tomb[i].insert(kk.clone());
                        } else {
                            self.high_tomb[i].remove(&kk);
                        }
                        self.high[i].insert(kk, n);
                    }
                    (_, None) => {
                        self.high_tomb[i].remove(&kk);
                        self.high[i].remove(&kk);
                    }
                }
            }
        }
    }

    async fn advance(&mut self, max_ms: u64) {
        let ms = self.rng.below(max_ms + 1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn pick_live(&mut self) -> Option<usize> {
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.below(live.len() as u64) as usize])
    }

    fn pick_other(&mut self, i: usize) -> usize {
        let j = self.rng.below(NODES as u64 - 1) as usize;
        if j >= i { j + 1 } else { j }
    }

    async fn write(&mut self) {
        let Some(i) = self.pick_live() else { return };
        let Some(a) = self.nodes[i].agent.clone() else {
            return;
        };
        let k = key(self.rng.below(u64::from(KEYS)) as u32);
        let w = if self.rng.percent(20) {
            Write::delete(k.clone())
        } else {
            let n = self.rng.between(4, 24) as usize;
            Write::put(k.clone(), self.rng.bytes(n))
        };
        let value = w.value.clone();
        match a.blocking(move |s| s.write(vec![w])).await {
            Ok(out) => {
                let Some(applied) = out.into_iter().next() else {
                    return;
                };
                if applied.decision != mend_core::Decision::Apply {
                    self.out.writes_refused += 1;
                    self.trace("refused", 1);
                    return;
                }
                self.out.writes_acked += 1;
                self.trace("acked", applied.version.ms);
                let v = applied.version;
                let newest = self.ledger.get(&k).is_none_or(|(old, _)| newer(&v, old));
                if newest {
                    self.ledger.insert(k.clone(), (v.clone(), value.clone()));
                }
                self.high[i].insert(k.clone(), v.clone());
                // The database replicates the write to the other
                // replicas, usually, and a few steps later.
                for n in (0..NODES).filter(|&n| n != i) {
                    if self.rng.percent(85) {
                        let due = self.step + self.rng.between(0, 6) as u32;
                        let w = Write {
                            key: k.clone(),
                            value: value.clone(),
                            version: Some(v.clone()),
                        };
                        self.replication.push((due, n, w));
                    }
                }
            }
            Err(_) => self.out.writes_refused += 1,
        }
    }

    /// Delivers the replicated writes that are due (to nodes that are up;
    /// the others miss them).
    async fn replicate(&mut self) {
        let step = self.step;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replication)
            .into_iter()
            .partition(|(at, _, _)| *at <= step);
        self.replication = later;
        for (_, n, w) in due {
            let Some(a) = self.nodes[n].agent.clone() else {
                continue;
            };
            let k = w.key.clone();
            if let Ok(out) = a.blocking(move |s| s.write(vec![w])).await
                && let Some(applied) = out.first()
                && applied.decision == mend_core::Decision::Apply
            {
                self.high[n].insert(k, applied.version.clone());
            }
        }
    }

    /// A scheduled exchange of node `i` with `j`, with the checks of its
    /// outcome against both stores as they were when it ran.
    async fn exchange(&mut self, i: usize, j: usize) {
        let Some(a) = self.nodes[i].agent.clone() else {
            return;
        };
        let before_i = self.snapshot(i);
        let before_j = self.snapshot(j);
        let entries: u64 = a.store.root(0).map(|r| r.count).unwrap_or(0);
        let headers_before: BTreeSet<String> = journal::list(&a.store)
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.id)
            .collect();
        let peer = a
            .config
            .peers
            .iter()
            .find(|p| p.id == self.nodes[j].id)
            .cloned();
        let Some(peer) = peer else { return };
        let started = Instant::now();
        let outcome = schedule::run_once(&a, &peer).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        self.out.exchanges += 1;
        let Some(o) = outcome else {
            self.out.exchanges_failed += 1;
            self.trace("exchange_failed", 1);
            return;
        };
        self.trace("exchange", o.keys.len() as u64);
        // "In sync" must mean equal stores (nothing else runs between the
        // snapshots and the diff: steps start quiescent).
        if o.keys.is_empty() && self.nodes[j].agent.is_some() && before_i != before_j {
            let msg = format!(
                "diff {} → {} reported in sync while {} keys differ",
                self.nodes[i].id,
                self.nodes[j].id,
                differing(&before_i, &before_j).len()
            );
            self.violation(msg);
        }
        for k in &o.keys {
            let truth_l = before_i.get(&k.div.key);
            let truth_p = before_j.get(&k.div.key);
            if let Some(e) = self.check_key(k, truth_l, truth_p) {
                let msg = format!(
                    "{} → {}: key {}: {e}",
                    self.nodes[i].id,
                    self.nodes[j].id,
                    String::from_utf8_lossy(&k.div.key)
                );
                self.violation(msg);
            }
        }
        // Automatic repairs of this exchange: within the blast radius and
        // the configured key rate.
        let Ok(headers) = journal::list(&a.store) else {
            return;
        };
        for h in headers
            .into_iter()
            .filter(|h| !headers_before.contains(&h.id))
        {
            let keys = h.keys_here + h.keys_pushed;
            self.out.repairs += 1;
            self.out.auto_repairs += 1;
            self.out.keys_repaired += keys;
            self.trace("auto_repair", keys);
            if keys as f64 > BLAST_SHARE * entries.max(1) as f64 {
                let msg = format!(
                    "automatic repair {} wrote {keys} keys, beyond the blast radius of {BLAST_SHARE} × {entries}",
                    h.id
                );
                self.violation(msg);
            }
            // The pacer lets the first batch go at once; everything after
            // it waits its share of the rate.
            let floor_ms = keys.saturating_sub(1) * 1000 / RATE_KEYS_PER_S;
            if keys > 1 && elapsed_ms < floor_ms {
                let msg = format!(
                    "automatic repair {} wrote {keys} keys in {elapsed_ms} ms, faster than limits.repair_rate_keys_per_s = {RATE_KEYS_PER_S}",
                    h.id
                );
                self.violation(msg);
            }
        }
    }

    /// What is wrong with a reported divergent key, given both stores'
    /// true entries: the side named behind must hold an older entry (or
    /// none) than the other, and the category must be one its entries allow.
    fn check_key(
        &self,
        k: &mend_agent::outcome::DivergentKey,
        l: Option<&EntrySummary>,
        p: Option<&EntrySummary>,
    ) -> Option<String> {
        let v = |e: Option<&EntrySummary>| e.map(|e| e.version.clone());
        if v(k.div.local.as_ref()) != v(l) || v(k.div.peer.as_ref()) != v(p) {
            return Some(format!(
                "reported entries {:?} / {:?} are not the stores' {:?} / {:?}",
                v(k.div.local.as_ref()).map(|x| x.to_string()),
                v(k.div.peer.as_ref()).map(|x| x.to_string()),
                v(l).map(|x| x.to_string()),
                v(p).map(|x| x.to_string())
            ));
        }
        if l.map(|e| (&e.version, e.tombstone, e.hash))
            == p.map(|e| (&e.version, e.tombstone, e.hash))
        {
            return Some("reported divergent but both entries are equal".into());
        }
        let (behind, ahead) = match k.behind {
            Some(Side::Local) => (l, p),
            Some(Side::Peer) => (p, l),
            None => return None,
        };
        let Some(ahead) = ahead else {
            return Some(format!(
                "{:?}: the side named ahead has no entry",
                k.category
            ));
        };
        if let Some(b) = behind
            && !newer(&ahead.version, &b.version)
        {
            return Some(format!(
                "{:?}: the side named behind holds {} , not older than {}",
                k.category, b.version, ahead.version
            ));
        }
        let ok = match k.category {
            Category::Missing => behind.is_none(),
            Category::UnpropagatedDelete => ahead.tombstone,
            Category::Stale => behind.is_some(),
            _ => true,
        };
        (!ok).then(|| format!("category {:?} does not fit the entries", k.category))
    }

    async fn undo(&mut self, i: usize) {
        let Some(a) = self.nodes[i].agent.clone() else {
            return;
        };
        let Ok(headers) = journal::list(&a.store) else {
            return;
        };
        let todo: Vec<_> = headers
            .into_iter()
            .filter(|h| h.initiator && !h.undone)
            .collect();
        if todo.is_empty() {
            return;
        }
        let h = &todo[self.rng.below(todo.len() as u64) as usize];
        let r = repair::undo(&a, h.id.clone()).await;
        self.out.undos += 1;
        self.trace("undo", r.is_ok() as u64);
        // Undo restores before-images on both sides: only there may a
        // version go back.
        let mut sides = vec![i];
        sides.extend(self.nodes.iter().position(|n| n.id == h.peer));
        self.check_monotonic(&sides);
    }

    /// Node `i` repairs against `j` at the configured rate and crashes
    /// (or `j` does) partway.
    async fn crash_mid_repair(&mut self, i: usize, j: usize, mode: Mode) {
        let Some(a) = self.nodes[i].agent.clone() else {
            return;
        };
        let opts = RepairOptions {
            rate_keys_per_s: 20,
            ..RepairOptions::default()
        };
        let addr = self.nodes[j].id.clone();
        let cut = Duration::from_millis(self.rng.between(1, 600));
        let r = tokio::time::timeout(cut, repair::repair(&a, &addr, None, opts, None)).await;
        self.trace("repair_cut", r.is_ok() as u64);
        let victim = match mode {
            Mode::Minority => NODES - 1,
            Mode::Uniform if self.rng.percent(50) => i,
            Mode::Uniform => j,
        };
        if self.nodes[victim].agent.is_some() {
            self.crash(victim);
            self.out.crashes_mid_repair += 1;
        }
    }

    fn wipe(&mut self, i: usize) {
        self.crash(i);
        self.out.wipes += 1;
        self.wiped = true;
        self.nodes[i].disk = Arc::new(MemBackend::new());
        self.high[i].clear();
        self.high_tomb[i].clear();
        // Its outbound replication goes with it: a write it originated and
        // has not yet delivered survives only where it already arrived.
        let id = self.nodes[i].id.clone();
        self.replication
            .retain(|(_, _, w)| w.version.as_ref().is_none_or(|v| v.origin.as_str() != id));
        // A write only the wiped replica held is lost by the fault itself:
        // the ledger keeps the newest version some other disk still holds.
        let keys: Vec<Vec<u8>> = self.ledger.keys().cloned().collect();
        for k in keys {
            let Some((v, _)) = self.ledger.get(&k).cloned() else {
                continue;
            };
            let others: Vec<mend_core::Record> = (0..NODES)
                .filter(|&n| n != i)
                .filter_map(|n| self.read_disk(n, &k))
                .collect();
            let held = others.iter().any(|e| !newer(&v, &e.meta.version));
            if !held {
                self.out.lost_to_wipe += 1;
                let best = others
                    .into_iter()
                    .max_by(|x, y| x.meta.version.order(&y.meta.version));
                match best {
                    Some(r) => {
                        let value = (!r.meta.tombstone).then_some(r.value);
                        self.ledger.insert(k, (r.meta.version, value));
                    }
                    None => {
                        self.ledger.remove(&k);
                    }
                }
            }
        }
        self.trace("wipe", i as u64);
    }

    /// Lets every task left from the last step (a stream relay, a push
    /// whose driver was cut) finish, so a step starts with nothing else
    /// running and its checks compare what its own calls saw.
    async fn quiesce(&mut self) {
        let rt = tokio::runtime::Handle::current();
        for _ in 0..1_000 {
            if rt.metrics().num_alive_tasks() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.violation("tasks still running after 100 s of simulated time".into());
    }

    async fn fault_step(&mut self, mode: Mode) {
        self.step += 1;
        self.advance(1_500).await;
        self.quiesce().await;
        self.replicate().await;
        let roll = self.rng.below(100);
        // In minority runs the nemesis touches only the last node.
        let victim = if mode == Mode::Minority {
            NODES - 1
        } else {
            self.rng.below(NODES as u64) as usize
        };
        match roll {
            0..41 => self.write().await,
            41..45 => self.purge().await,
            45..72 => {
                // Mostly with a peer that is up (an exchange with a down
                // peer only fails to connect).
                if let Some(i) = self.pick_live() {
                    let mut j = self.pick_other(i);
                    if self.nodes[j].agent.is_none() && self.rng.percent(80) {
                        j = self.pick_other(i);
                    }
                    self.exchange(i, j).await;
                }
            }
            72..75 => {
                if self.nodes[victim].agent.is_some() && self.live().len() > 1 {
                    self.crash(victim);
                    self.trace("crash", victim as u64);
                }
            }
            75..82 => {
                let down: Vec<usize> = (0..NODES)
                    .filter(|&i| self.nodes[i].agent.is_none())
                    .collect();
                if !down.is_empty() {
                    let i = down[self.rng.below(down.len() as u64) as usize];
                    self.start(i);
                    self.trace("restart", i as u64);
                }
            }
            82..87 => {
                let other = self.pick_other(victim);
                let (a, b) = (self.nodes[victim].id.clone(), self.nodes[other].id.clone());
                let mut w = self.wire();
                if w.cut.contains(&(a.clone(), b.clone())) {
                    w.cut.remove(&(a.clone(), b.clone()));
                    w.cut.remove(&(b, a));
                } else {
                    w.cut.insert((a.clone(), b.clone()));
                    w.cut.insert((b, a));
                }
                drop(w);
                self.trace("partition", victim as u64);
            }
            87..90 => {
                let jump = self.rng.between(0, 2 * SKEW_MAX_MS as u64) as i64 - SKEW_MAX_MS;
                self.nodes[victim]
                    .clock_offset
                    .store(jump, Ordering::Relaxed);
                self.trace("clock", jump as u64);
            }
            90..94 => {
                if !self.wiped
                    && let Some(i) = self.pick_live()
                {
                    self.undo(i).await;
                    return;
                }
            }
            94..98 => {
                if let Some(i) = self.pick_live() {
                    let j = self.pick_other(i);
                    if mode == Mode::Uniform || i == victim || j == victim {
                        self.crash_mid_repair(i, j, mode).await;
                    }
                }
            }
            _ => {
                if !self.wiped && self.nodes[victim].agent.is_some() && self.rng.percent(30) {
                    self.wipe(victim);
                }
            }
        }
        self.check_monotonic(&[]);
    }

    /// One round of a live node's background tombstone purge: it may only
    /// remove tombstones every peer already holds, so the final checks'
    /// "no acknowledged delete undone" holds through it.
    async fn purge(&mut self) {
        let Some(i) = self.pick_live() else { return };
        let Some(a) = self.nodes[i].agent.clone() else {
            return;
        };
        if let Ok(r) = mend_agent::gc::purge_once(&a).await {
            self.out.tombstones_purged += r.purged;
            self.trace("purged", r.purged);
        }
    }

    /// Pairwise operator repairs among `nodes` until they are equal, up to
    /// `CONVERGE_ROUNDS_MAX` rounds; the rounds used, or `None`.
    async fn converge(&mut self, nodes: &[usize]) -> Option<u32> {
        for round in 1..=CONVERGE_ROUNDS_MAX {
            for (x, &i) in nodes.iter().enumerate() {
                for &j in &nodes[x + 1..] {
                    let Some(a) = self.nodes[i].agent.clone() else {
                        continue;
                    };
                    let addr = self.nodes[j].id.clone();
                    match repair::repair(&a, &addr, None, RepairOptions::default(), None).await {
                        Ok(s) => {
                            self.out.repairs += 1;
                            self.out.keys_repaired += s.keys_repaired;
                            self.trace("converge_repair", s.keys_repaired);
                            for (k, why) in s.skipped {
                                self.trace(&why.text, k.len() as u64);
                            }
                        }
                        Err(e) => {
                            let msg = format!(
                                "healed repair {} → {addr} failed: {}",
                                self.nodes[i].id,
                                e.message()
                            );
                            self.violation(msg);
                        }
                    }
                    self.check_monotonic(&[]);
                }
            }
            // Each node's background purge runs too: a tombstone one side
            // purged and the other still holds is no divergence to repair
            // (both say "deleted"), only a purge still to come.
            for &i in nodes {
                if let Some(a) = self.nodes[i].agent.clone()
                    && let Ok(r) = mend_agent::gc::purge_once(&a).await
                {
                    self.out.tombstones_purged += r.purged;
                    self.trace("converge_purged", r.purged);
                }
            }
            let first = live(self.snapshot(nodes[0]));
            if nodes.iter().all(|&n| live(self.snapshot(n)) == first) {
                return Some(round);
            }
        }
        None
    }

    /// The committed entry of `k` on node `i`'s disk, whether the node is
    /// up (through its store) or down (through a store opened on a copy
    /// of its disk).
    fn read_disk(&self, i: usize, k: &[u8]) -> Option<mend_core::Record> {
        let node = &self.nodes[i];
        if let Some(a) = &node.agent {
            return a.store.get(k).ok().flatten();
        }
        let disk = SimBackend {
            disk: Arc::new(node.disk.snapshot_copy().ok()?),
            alive: Arc::new(AtomicBool::new(true)),
        };
        let cfg = StoreConfig::new(
            NodeId::new(node.id.clone()).ok()?,
            Secret::development(),
            Some(agent_config(&node.id, &[]).ranges),
        );
        Store::open(disk, cfg).ok()?.get(k).ok().flatten()
    }

    /// The initial data set: every key written once at its origin and
    /// replicated everywhere, before any fault.
    async fn load(&mut self) {
        for k in 0..KEYS {
            let i = (k as usize) % NODES;
            let Some(a) = self.nodes[i].agent.clone() else {
                continue;
            };
            let w = Write::put(key(k), self.rng.bytes(8));
            let value = w.value.clone();
            let Ok(out) = a.blocking(move |s| s.write(vec![w])).await else {
                continue;
            };
            let Some(v) = out.first().map(|o| o.version.clone()) else {
                continue;
            };
            self.ledger.insert(key(k), (v.clone(), value.clone()));
            for n in (0..NODES).filter(|&n| n != i) {
                let w = Write {
                    key: key(k),
                    value: value.clone(),
                    version: Some(v.clone()),
                };
                self.replication.push((0, n, w));
            }
        }
        self.replicate().await;
        self.check_monotonic(&[]);
    }

    async fn run(&mut self, mode: Mode) {
        self.load().await;
        for _ in 0..FAULT_STEPS {
            self.fault_step(mode).await;
        }
        self.quiesce().await;
        if mode == Mode::Minority {
            // The healthy pair converges while the nemesis still works on
            // the third node (once writes are past the settle window).
            tokio::time::sleep(Duration::from_secs(120)).await;
            if self.converge(&[0, 1]).await.is_none() {
                self.violation("the healthy pair did not converge under faults".into());
            }
        }
        // The faults stop: the wire heals, clocks agree within the skew
        // they were given, and time passes beyond the settle window (so
        // nothing is in flight or ahead of any clock).
        self.step += 1;
        {
            let mut w = self.wire();
            w.faults = [0; 4];
            w.cut.clear();
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        // Liveness, in two stages: a healthy majority converges with the
        // last node still down, then everyone.
        let down = NODES - 1;
        if self.nodes[down].agent.is_some() {
            self.crash(down);
        }
        for i in 0..down {
            if self.nodes[i].agent.is_none() {
                self.start(i);
            }
        }
        let majority: Vec<usize> = (0..down).collect();
        if self.converge(&majority).await.is_none() {
            self.violation("the healthy majority did not converge".into());
        }
        self.start(down);
        let all: Vec<usize> = (0..NODES).collect();
        match self.converge(&all).await {
            Some(r) => self.out.converge_rounds = r,
            None => {
                let msg = format!(
                    "replicas did not converge within {CONVERGE_ROUNDS_MAX} rounds: {} keys differ",
                    differing(&self.snapshot(0), &self.snapshot(1)).len()
                        + differing(&self.snapshot(0), &self.snapshot(2)).len()
                );
                self.violation(msg);
            }
        }
        self.final_checks();
    }

    fn final_checks(&mut self) {
        // Equal roots, unless tombstones differ only by purge (one side
        // purged, the other's purge is still to come: both read "deleted").
        let roots: Vec<u64> = self
            .live()
            .into_iter()
            .filter_map(|i| self.nodes[i].agent.as_ref()?.store.root(0).ok())
            .map(|r| node_hash(&r))
            .collect();
        let views: Vec<_> = self
            .live()
            .into_iter()
            .map(|i| live(self.snapshot(i)))
            .collect();
        if roots.windows(2).any(|w| w[0] != w[1]) && views.windows(2).any(|w| w[0] != w[1]) {
            self.violation(format!("roots differ after convergence: {roots:x?}"));
        }
        for r in &roots {
            self.trace("root", *r);
        }
        // No acknowledged write lost: every node holds each key's newest
        // acknowledged write, or a newer one.
        let ledger = self.ledger.clone();
        for i in 0..NODES {
            for (k, (v, value)) in &ledger {
                let held = self.read_disk(i, k);
                let ok = match &held {
                    // A delete whose tombstone was purged: safe only if no
                    // replica still serves the value (checked for every
                    // node: an older live value fails below).
                    None => value.is_none(),
                    Some(r) if newer(&r.meta.version, v) => true,
                    Some(r) if r.meta.version.same_as(v) => {
                        r.meta.tombstone == value.is_none()
                            && value.as_ref().is_none_or(|val| *val == r.value)
                    }
                    _ => false,
                };
                if !ok {
                    let msg = format!(
                        "{}: acknowledged {} {v} of key {} lost (holds {:?})",
                        self.nodes[i].id,
                        if value.is_some() { "write" } else { "delete" },
                        String::from_utf8_lossy(k),
                        held.map(|r| r.meta.version.to_string())
                    );
                    self.violation(msg);
                }
            }
        }
        let w = self.wire();
        let (messages, injected, wire_trace) = (w.messages, w.injected, w.trace);
        drop(w);
        self.out.messages = messages;
        self.out.faults_injected = injected;
        mix(&mut self.out.trace, wire_trace);
    }
}

/// A snapshot without its tombstones: what a reader sees (a tombstone and
/// no entry both read "not found").
fn live(mut s: BTreeMap<Vec<u8>, EntrySummary>) -> BTreeMap<Vec<u8>, EntrySummary> {
    s.retain(|_, e| !e.tombstone);
    s
}

fn differing(
    a: &BTreeMap<Vec<u8>, EntrySummary>,
    b: &BTreeMap<Vec<u8>, EntrySummary>,
) -> Vec<Vec<u8>> {
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Runs one seed in `mode` on a fresh single-threaded runtime with a
/// paused clock.
pub fn run_seed(seed: u64, mode: Mode) -> SimOutcome {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return SimOutcome {
                seed,
                violations: vec![format!("no runtime: {e}")],
                ..SimOutcome::default()
            };
        }
    };
    rt.block_on(async move {
        let mut w = World::new(seed, mode);
        w.run(mode).await;
        w.out
    })
}

/// The mode a seed runs in: every fourth seed is a minority run.
pub fn mode_of(seed: u64) -> Mode {
    if seed % 4 == 3 {
        Mode::Minority
    } else {
        Mode::Uniform
    }
}
