//! A simulated month unattended (issue 12's disk target): 1M writes, 30% of
//! them deletes, over 720 simulated hours on a replica pair whose
//! replication drops 2% of writes; every hour the agent diffs, repairs,
//! purges tombstones and prunes its journal, as its background tasks do.
//! Prints what tombstones and the journal occupy at the end, against what
//! they would without purge and retention.
//!
//! Then the cost of the background scrub and purge on the write path at
//! their default rates (16 buckets/s, up to 1 000 tombstones/s): batched
//! writes to a RocksDB store in a temporary directory, alternating runs
//! without and with a thread doing both at those rates, as a ratio.
//!
//! `cargo bench --bench churn` (one run, a few minutes; `MEND_CHURN_WRITES`
//! scales the month). The month uses in-memory stores with the real agent
//! (`link::mem::pair`): row counts and bytes are the same on RocksDB before
//! compression.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mend_agent::link::mem::{Counting, pair_with};
use mend_agent::repair::{RepairOptions, repair};
use mend_core::rng::SplitMix64;
use mend_core::{NodeId, RangeSpec, Secret, TreeShape};
use mend_store::{Backend, Cf, MemBackend, Store, StoreConfig, Write};

const HOURS: u64 = 720;
const KEYS: u64 = 200_000;
const HOUR_MS: u64 = 3_600_000;
const T0: u64 = 1_700_000_000_000;

fn rows(s: &Store<MemBackend>, cf: Cf, prefix: &[u8]) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    s.backend()
        .scan(cf, prefix, None, &mut |k, v| {
            if k.starts_with(prefix) {
                n += 1;
                bytes += (k.len() + v.len()) as u64;
            }
            true
        })
        .unwrap();
    (n, bytes)
}

fn tombstones(s: &Store<MemBackend>) -> u64 {
    let mut n = 0;
    s.backend()
        .scan(Cf::Data, &[], None, &mut |_, v| {
            if mend_core::Record::decode_meta(v).unwrap().0.tombstone {
                n += 1;
            }
            true
        })
        .unwrap();
    n
}

fn main() {
    // MEND_UPKEEP_ONLY=1: only the write-path cost of scrub and purge.
    if std::env::var_os("MEND_UPKEEP_ONLY").is_some() {
        upkeep_cost();
        return;
    }
    let writes: u64 = std::env::var("MEND_CHURN_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let now = Arc::new(AtomicU64::new(T0));
    let open = |node: &str| {
        let mut c = StoreConfig::new(
            NodeId::new(node).unwrap(),
            Secret::from_bytes(b"churn"),
            Some(vec![RangeSpec::whole(
                "all",
                TreeShape::new(16, 3).unwrap(),
            )]),
        );
        let n = now.clone();
        c.clock = Arc::new(move || n.load(Ordering::SeqCst));
        Arc::new(Store::open(MemBackend::new(), c).unwrap())
    };
    let (a, b) = (open("a"), open("b"));
    let configure = |c: &mut mend_agent::config::AgentConfig| {
        c.playbook.blast_radius_share_max = 1.0;
        c.gc.enabled = true;
    };
    let wire = Arc::new(Counting::default());
    let agent_a = pair_with(a.clone(), b.clone(), wire.clone(), configure);
    let agent_b = pair_with(b.clone(), a.clone(), wire, configure);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut rng = SplitMix64::new(12);
    let per_hour = writes / HOURS;
    let (mut deletes, mut dropped, mut repaired, mut purged, mut pruned) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    for h in 0..HOURS {
        let mut batch = Vec::with_capacity(per_hour as usize);
        for i in 0..per_hour {
            now.store(T0 + h * HOUR_MS + i * HOUR_MS / per_hour, Ordering::SeqCst);
            let k = format!("key-{:07}", rng.below(KEYS));
            let w = if rng.percent(30) {
                deletes += 1;
                Write::delete(k)
            } else {
                Write::put(k, rng.bytes(100))
            };
            let out = a.write(vec![w.clone()]).unwrap();
            if rng.percent(2) {
                dropped += 1;
            } else {
                batch.push(Write {
                    version: Some(out[0].version.clone()),
                    ..w
                });
            }
        }
        for c in batch.chunks(1000) {
            b.write(c.to_vec()).unwrap();
        }
        // The hour's upkeep, past the settle window.
        now.store(T0 + (h + 1) * HOUR_MS, Ordering::SeqCst);
        let sum = rt
            .block_on(repair(&agent_a, "b", None, RepairOptions::default(), None))
            .unwrap();
        repaired += sum.keys_repaired;
        // Both sides' diffs record their in-sync horizons.
        rt.block_on(mend_agent::exchange::diff(&agent_a, "b", None))
            .unwrap();
        rt.block_on(mend_agent::exchange::diff(&agent_b, "a", None))
            .unwrap();
        for ag in [&agent_a, &agent_b] {
            purged += rt.block_on(mend_agent::gc::purge_once(ag)).unwrap().purged;
            pruned += rt.block_on(mend_agent::gc::prune_journal(ag)).unwrap();
        }
    }
    let grace_h = agent_a.config.tombstone_grace_ms / HOUR_MS;
    let retention_h = agent_a.config.journal.retention_ms / HOUR_MS;
    let (ti, tib) = rows(&a, Cf::Tombstones, &[]);
    let (jh, jhb) = rows(&a, Cf::Journal, b"h");
    let (je, jeb) = rows(&b, Cf::Journal, b"e");
    let (jq, jqb) = rows(&a, Cf::Journal, b"q");
    let live_tombs = tombstones(&a);
    println!(
        "month churn: {writes} writes ({deletes} deletes, {dropped} dropped by replication) over {HOURS} h, \
         {KEYS} keys, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  repaired {repaired} keys, purged {purged} tombstones (both sides), pruned {pruned} repairs"
    );
    println!(
        "  node a: {live_tombs} tombstones held, {ti} tombstone index rows ({} KiB); bound: the deletes of the \
         last grace period ({grace_h} h) + 1 h = {} at this rate",
        tib / 1024,
        deletes * (grace_h + 1) / HOURS
    );
    println!(
        "  journal: a {jh} headers ({} KiB) + {jq} pushed-key rows ({} KiB), b {je} before-images ({} KiB); \
         bound: repairs of the last {retention_h} h (at most journal.repairs_max = {})",
        jhb / 1024,
        jqb / 1024,
        jeb / 1024,
        agent_a.config.journal.repairs_max
    );
    println!(
        "  without purge and retention: {deletes} tombstone writes and every repair's rows ({repaired} keys) would stay"
    );
    assert!(a.verify().unwrap().ok() && b.verify().unwrap().ok());
    upkeep_cost();
}

/// Batched writes of 300 000 keys (30% deletes) into a fresh RocksDB store,
/// with or without a thread running the scrub and the purge at their
/// default rates; returns the writes per second.
fn write_rate(with_upkeep: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let backend = mend_rocks::RocksBackend::open_or_create(dir.path()).unwrap();
    let mut cfg = StoreConfig::new(
        NodeId::new("bench").unwrap(),
        Secret::from_bytes(b"churn"),
        Some(vec![RangeSpec::whole("all", TreeShape::default())]),
    );
    cfg.tombstone_grace_ms = 0;
    let store = Arc::new(Store::open(backend, cfg).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let upkeep = with_upkeep.then(|| {
        let (s, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let buckets = TreeShape::default().buckets() as u32;
            let mut at = 0u32;
            let mut snap: Option<mend_store::LeafSnapshot> = None;
            while !stop.load(Ordering::Relaxed) {
                // One second of upkeep as the agent runs it: 16 buckets
                // verified (the persisted leaves read once per
                // `SNAPSHOT_STEPS` steps), up to 1 000 tombstone index rows
                // purged (grace 0, horizon now).
                if !snap.as_ref().is_some_and(|p| p.covers(0, at, 16)) {
                    let n = 16 * mend_agent::scrub::SNAPSHOT_STEPS;
                    snap = Some(s.snapshot_leaves(0, at, n).unwrap());
                }
                if let Some(p) = &snap {
                    s.repair_buckets_with(0, at, 16, p).unwrap();
                }
                at = (at + 16) % buckets;
                let mut left = 1_000;
                while left > 0 {
                    let p = s.purge_tombstones(0, u64::MAX, left.min(256)).unwrap();
                    left -= p.examined as usize;
                    if !p.more {
                        break;
                    }
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
    });
    let mut rng = SplitMix64::new(7);
    let n = 300_000u64;
    let t = std::time::Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for _ in 0..n {
        let k = format!("key-{:08}", rng.below(n));
        batch.push(if rng.percent(30) {
            Write::delete(k)
        } else {
            Write::put(k, rng.bytes(100))
        });
        if batch.len() == 1000 {
            store.write(std::mem::take(&mut batch)).unwrap();
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = upkeep {
        h.join().unwrap();
    }
    rate
}

/// Runs with and without upkeep compared (each about two seconds on this
/// machine, so a median over several pairs).
const UPKEEP_PAIRS: usize = 8;

fn upkeep_cost() {
    let mut ratios = Vec::new();
    for i in 0..UPKEEP_PAIRS {
        // Alternating which goes first, so neither always runs beside the
        // previous store's background compaction.
        let (plain, with) = if i % 2 == 0 {
            (write_rate(false), write_rate(true))
        } else {
            let with = write_rate(true);
            (write_rate(false), with)
        };
        ratios.push(with / plain);
        println!(
            "  upkeep: {plain:.0} writes/s plain, {with:.0} with scrub + purge ({:.3}x)",
            with / plain
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "upkeep cost on the write path: median {:.3}x of plain (range {:.3}-{:.3}; target >= 0.95x)",
        (ratios[UPKEEP_PAIRS / 2 - 1] + ratios[UPKEEP_PAIRS / 2]) / 2.0,
        ratios[0],
        ratios[UPKEEP_PAIRS - 1]
    );
}
