//! What goes wrong only after months unattended or under the first unusual
//! event, between real agents over in-memory stores (`link::mem::pair`: the
//! exchange and repair drivers against the peer's real Peer service) on
//! clocks the test moves: tombstone purge must never resurrect a deleted
//! value, one fast clock must not make the others' writes unrepairable, a
//! tree out of step with its data is found and fixed online, and the
//! observed clock survives a restart.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mend_agent::link::mem::{Counting, pair, pair_with};
use mend_agent::repair::{RepairOptions, repair};
use mend_agent::state::AgentState;
use mend_core::{NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::{Cf, MemBackend, Op, Store, StoreConfig, Write};

const GRACE_MS: u64 = 60_000;
const T0: u64 = 1_700_000_000_000;

/// A wall clock the test moves.
#[derive(Clone)]
struct Clock(Arc<AtomicU64>);

impl Clock {
    fn new(ms: u64) -> Clock {
        Clock(Arc::new(AtomicU64::new(ms)))
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    fn wall(&self) -> mend_store::store::WallClock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

fn shape() -> TreeShape {
    TreeShape::new(16, 2).unwrap()
}

fn config(node: &str, clock: &Clock) -> StoreConfig {
    let mut cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"year test"),
        Some(vec![RangeSpec::whole("all", shape())]),
    );
    cfg.tombstone_grace_ms = GRACE_MS;
    cfg.clock = clock.wall();
    cfg
}

fn store(node: &str, clock: &Clock) -> Arc<Store<MemBackend>> {
    Arc::new(Store::open(MemBackend::new(), config(node, clock)).unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn agents(
    a: &Arc<Store<MemBackend>>,
    b: &Arc<Store<MemBackend>>,
) -> (Arc<AgentState<MemBackend>>, Arc<AgentState<MemBackend>>) {
    agents_with(a, b, |c| c.gc.enabled = true)
}

fn agents_with(
    a: &Arc<Store<MemBackend>>,
    b: &Arc<Store<MemBackend>>,
    f: fn(&mut mend_agent::config::AgentConfig),
) -> (Arc<AgentState<MemBackend>>, Arc<AgentState<MemBackend>>) {
    let w = Arc::new(Counting::default());
    (
        pair_with(a.clone(), b.clone(), w.clone(), f),
        pair_with(b.clone(), a.clone(), w, f),
    )
}

fn diff_keys(rt: &tokio::runtime::Runtime, from: &Arc<AgentState<MemBackend>>, to: &str) -> usize {
    rt.block_on(mend_agent::exchange::diff(from, to, None))
        .unwrap()
        .keys
        .len()
}

fn repair_all(rt: &tokio::runtime::Runtime, from: &Arc<AgentState<MemBackend>>, to: &str) {
    rt.block_on(repair(from, to, None, RepairOptions::default(), None))
        .unwrap();
}

/// One round of the background purge, as the agent runs it.
fn purge(rt: &tokio::runtime::Runtime, agent: &Arc<AgentState<MemBackend>>) -> u64 {
    rt.block_on(mend_agent::gc::purge_once(agent))
        .unwrap()
        .purged
}

fn live(s: &Store<MemBackend>, key: &str) -> Option<Vec<u8>> {
    s.get(key.as_bytes())
        .unwrap()
        .filter(|r| !r.meta.tombstone)
        .map(|r| r.value)
}

/// The resurrection Cassandra's gc_grace only hopes to avoid: a delete
/// reaches one replica, that replica's purge runs past the grace period,
/// and the other replica still holds the old value. The value must stay
/// deleted on both, and once both agree the tombstone goes on both.
#[test]
fn purge_never_resurrects_a_delete_the_peer_has_not_seen() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    let (agent_a, agent_b) = agents(&a, &b);
    for s in [&a, &b] {
        s.write(vec![Write::put("k", "old value").at(Version {
            ms: T0 - 10_000,
            logical: 0,
            origin: NodeId::new("a").unwrap(),
            seq: 1,
        })])
        .unwrap();
    }
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0, "both start in sync");
    clock.set(T0 + 1_000);
    // The delete reaches a only.
    a.write(vec![Write::delete("k")]).unwrap();
    clock.set(T0 + 10 * GRACE_MS);
    let purged = purge(&rt, &agent_a);
    assert_eq!(purged, 0, "b was never seen in sync since the delete");
    repair_all(&rt, &agent_a, "b");
    assert_eq!(live(&a, "k"), None, "the deleted value came back on a");
    assert_eq!(live(&b, "k"), None, "b still serves the deleted value");

    // Now both hold the tombstone; once an exchange sees them in sync,
    // purging is safe on both, and a purge on one side alone is not
    // "repaired" back by the other.
    clock.set(T0 + 10 * GRACE_MS + 1);
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0);
    assert_eq!(diff_keys(&rt, &agent_b, "a"), 0);
    clock.set(T0 + 20 * GRACE_MS);
    assert_eq!(purge(&rt, &agent_a), 1);
    repair_all(&rt, &agent_b, "a");
    assert!(
        a.get(b"k").unwrap().is_none(),
        "the purged tombstone was copied back"
    );
    assert_eq!(purge(&rt, &agent_b), 1);
    assert!(b.get(b"k").unwrap().is_none());
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0);
    assert!(a.verify().unwrap().ok() && b.verify().unwrap().ok());
}

/// Both replicas hold an old delete of `k`; `a` then deletes it again (a
/// newer tombstone) and `b` misses that. `b` holding an *older* tombstone
/// does not hold `a`'s delete: a write between the two versions reaching
/// `b` later would be `missing` at `a` and repaired back to life. So `a`
/// must not purge until an exchange sees `b` holding the newer tombstone;
/// and undoing the repair that gave it to `b` must not take it back (found
/// by the fault simulation with purges on, seeds 287 and 1131).
#[test]
fn an_older_tombstone_at_the_peer_does_not_hold_a_newer_delete() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    let (agent_a, agent_b) = agents(&a, &b);
    for s in [&a, &b] {
        s.write(vec![Write::delete("k").at(version(T0 - 10_000, "a", 1))])
            .unwrap();
    }
    clock.set(T0 + 1_000);
    a.write(vec![Write::delete("k")]).unwrap();
    let newer = a.get(b"k").unwrap().unwrap().meta.version;
    clock.set(T0 + 10 * GRACE_MS);
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 1);
    assert_eq!(
        purge(&rt, &agent_a),
        0,
        "purged a delete the peer holds only an older tombstone for"
    );
    let sum = rt
        .block_on(repair(&agent_a, "b", None, RepairOptions::default(), None))
        .unwrap();
    assert_eq!(sum.keys_to_peer, 1);
    let u = rt
        .block_on(mend_agent::repair::undo(&agent_a, sum.repair_id))
        .unwrap();
    assert_eq!(u.restored_peer, 0, "{:?}", u.skipped);
    assert_eq!(
        b.get(b"k").unwrap().unwrap().meta.version,
        newer,
        "undo took the newer delete back from b"
    );
    clock.set(T0 + 10 * GRACE_MS + 1);
    assert_eq!(diff_keys(&rt, &agent_b, "a"), 0);
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0);
    clock.set(T0 + 20 * GRACE_MS);
    assert_eq!(purge(&rt, &agent_a), 1, "in sync since: the purge may go");
}

/// A node whose clock runs 30 s fast replicates a write to `a`; `a`'s own
/// next write must still be repairable to a third replica with a correct
/// clock (today `a` follows the fast clock up to 60 s while classification
/// calls anything over 1 s ahead `future_version`, never repaired).
#[test]
fn one_fast_clock_does_not_make_the_others_writes_unrepairable() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, c) = (store("a", &clock), store("c", &clock));
    let (agent_a, _agent_c) = agents(&a, &c);
    let fast = Write::put("from-b", "x").at(Version {
        ms: T0 + 30_000,
        logical: 0,
        origin: NodeId::new("b").unwrap(),
        seq: 1,
    });
    // The replicated write as the Replica service takes it: refused when
    // beyond the allowed skew (the agent's check), else applied.
    if agent_a.check_future(std::slice::from_ref(&fast)).is_ok() {
        a.write(vec![fast]).unwrap();
    }
    clock.set(T0 + 10_000);
    a.write(vec![Write::put("from-a", "y")]).unwrap();
    let stamped = a.get(b"from-a").unwrap().unwrap().meta.version.ms;
    assert!(
        stamped <= T0 + 10_000 + 1_000,
        "a's own write is stamped {} ms ahead of its clock",
        stamped - (T0 + 10_000)
    );
    // Past the settle window (nothing in flight), within 30 s of b's clock.
    clock.set(T0 + 20_000);
    repair_all(&rt, &agent_a, "c");
    assert_eq!(live(&c, "from-a").as_deref(), Some(&b"y"[..]));
}

/// A local write to a key whose stored version is ahead of the local clock
/// (accepted under `future_writes = accept`, or written before a clock
/// step back) wins: it is stamped past the stored version, never decided
/// `stale` and silently dropped.
#[test]
fn a_local_overwrite_of_a_key_stamped_ahead_is_not_dropped() {
    let clock = Clock::new(T0);
    let a = store("a", &clock);
    a.write(vec![Write::put("k", "ahead").at(Version {
        ms: T0 + 3_600_000,
        logical: 7,
        origin: NodeId::new("b").unwrap(),
        seq: 1,
    })])
    .unwrap();
    let out = a.write(vec![Write::put("k", "now")]).unwrap();
    assert_eq!(out[0].decision, mend_core::Decision::Apply);
    assert_eq!(live(&a, "k").as_deref(), Some(&b"now"[..]));
}

/// The clock a store observed from replicated writes survives a restart:
/// after reopening, a local write still orders after them.
#[test]
fn the_observed_clock_survives_a_restart() {
    let clock = Clock::new(T0);
    let a = Store::open(MemBackend::new(), config("a", &clock)).unwrap();
    a.write(vec![Write::put("r", "replicated").at(Version {
        ms: T0 + 500,
        logical: 3,
        origin: NodeId::new("b").unwrap(),
        seq: 9,
    })])
    .unwrap();
    let a = Store::open(a.into_backend(), config("a", &clock)).unwrap();
    a.write(vec![Write::put("l", "local")]).unwrap();
    let v = a.get(b"l").unwrap().unwrap().meta.version;
    assert!(
        (v.ms, v.logical) > (T0 + 500, 3),
        "local write stamped {}.{} after observing {}.3",
        v.ms,
        v.logical,
        T0 + 500
    );
}

/// A persisted leaf out of step with the data (a torn write, a bit flip on
/// disk): the roots differ while no key does. The exchange must not call
/// that "in sync"; the agent verifies the buckets involved against its data
/// and fixes its own tree online.
#[test]
fn a_tree_out_of_step_with_its_data_is_found_and_fixed_online() {
    let rt = rt();
    let clock = Clock::new(T0);
    let writes: Vec<Write> = (0..200)
        .map(|i| {
            Write::put(format!("key-{i}"), "v").at(Version {
                ms: T0 - 10_000,
                logical: 0,
                origin: NodeId::new("a").unwrap(),
                seq: i,
            })
        })
        .collect();
    let a = Store::open(MemBackend::new(), config("a", &clock)).unwrap();
    a.write(writes.clone()).unwrap();
    // Corrupt one persisted leaf behind the store's back, then reopen.
    let (_, bucket, _) = a.locate(b"key-7").unwrap();
    let leaf_key = a
        .layout(0, a.shape(0).unwrap().depth)
        .unwrap()
        .leaf_key(bucket);
    let backend = a.into_backend();
    mend_store::Backend::write(
        &backend,
        vec![Op::Put(Cf::Leaves, leaf_key, vec![0x5a; 40])],
        true,
    )
    .unwrap();
    let a = Arc::new(Store::open(backend, config("a", &clock)).unwrap());
    assert!(!a.verify().unwrap().ok());
    let b = store("b", &clock);
    b.write(writes).unwrap();
    let (agent_a, _agent_b) = agents(&a, &b);
    let out = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    assert!(out.keys.is_empty());
    assert_eq!(out.tree_mismatches.len(), 1, "{:?}", out.tree_mismatches);
    assert!(out.tree_mismatches[0].buckets.contains(&bucket));
    assert!(a.verify().unwrap().ok(), "the agent did not fix its tree");
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0);
    let again = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    assert!(again.tree_mismatches.is_empty());
}

/// A wire that, at every message, checks the causal-order invariant on
/// both stores: of the keys a repair moves, those already holding their
/// new version form a prefix of the version order.
/// A store, with the keys it is behind on and the version (seq) each is
/// repaired to, in version order.
type Behind = (Arc<Store<MemBackend>>, Vec<(String, u64)>);

struct CausalCheck {
    stores: Vec<Behind>,
    violations: std::sync::Mutex<Vec<String>>,
}

impl mend_agent::link::mem::Wire for CausalCheck {
    fn fate(&self, _c: mend_agent::link::mem::Crossing<'_>) -> mend_agent::link::mem::Fate {
        for (s, order) in &self.stores {
            let arrived: Vec<bool> = order
                .iter()
                .map(|(k, seq)| {
                    s.get(k.as_bytes())
                        .unwrap()
                        .is_some_and(|r| r.meta.version.seq == *seq)
                })
                .collect();
            if let Some(gap) = arrived.iter().position(|a| !a)
                && let Some(late) = arrived[gap..].iter().position(|a| *a)
            {
                self.violations.lock().unwrap().push(format!(
                    "{}: {} arrived before {}",
                    s.node_id(),
                    order[gap + late].0,
                    order[gap].0
                ));
            }
        }
        mend_agent::link::mem::Fate::Deliver
    }
}

/// A repair applies a lost stream of writes on the behind side in version
/// order, batch by batch: a reader there never sees a write while an
/// earlier missing write of the same origin is absent (keys are named so
/// that key order is the reverse of version order, and there are more than
/// one batch of them in each direction).
#[test]
fn repairs_apply_in_version_order_on_the_behind_side() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    const N: u64 = 700;
    let (mut behind_a, mut behind_b) = (Vec::new(), Vec::new());
    for i in 0..N {
        // Even writes were lost on b, odd ones on a.
        let (to, origin) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let key = format!("k{:04}", N - i);
        to.write(vec![Write::put(key.clone(), "v").at(Version {
            ms: T0 - 100_000 + i,
            logical: 0,
            origin: NodeId::new(origin).unwrap(),
            seq: 1_000 + i,
        })])
        .unwrap();
        let behind = if i % 2 == 0 {
            &mut behind_b
        } else {
            &mut behind_a
        };
        behind.push((key, 1_000 + i));
    }
    let wire = Arc::new(CausalCheck {
        stores: vec![(a.clone(), behind_a), (b.clone(), behind_b)],
        violations: Default::default(),
    });
    let agent_a = pair(a.clone(), b.clone(), wire.clone());
    let sum = rt
        .block_on(repair(&agent_a, "b", None, RepairOptions::default(), None))
        .unwrap();
    assert_eq!(sum.keys_repaired, N);
    let v = wire.violations.lock().unwrap();
    assert!(
        v.is_empty(),
        "{} violations, first: {:?}",
        v.len(),
        v.first()
    );
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0);
}

fn missing_on_b(a: &Store<MemBackend>, from: u64, n: u64) {
    let writes: Vec<Write> = (from..from + n)
        .map(|i| {
            Write::put(format!("m{i:04}"), "v").at(Version {
                ms: T0 - 100_000 + i,
                logical: 0,
                origin: NodeId::new("a").unwrap(),
                seq: i,
            })
        })
        .collect();
    a.write(writes).unwrap();
}

/// The scheduled playbook repairs exactly the key set its blast-radius
/// check passed: keys that diverged after that diff are left for the next
/// exchange (today it re-diffs and repairs whatever the second diff finds).
#[test]
fn the_playbook_repairs_exactly_the_checked_key_set() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    let (agent_a, _agent_b) = agents_with(&a, &b, |c| c.playbook.blast_radius_share_max = 0.1);
    // 100 shared keys, 5 missing on b: within a 10% blast radius.
    for s in [&a, &b] {
        let w: Vec<Write> = (0..100)
            .map(|i| {
                Write::put(format!("s{i:03}"), "v").at(Version {
                    ms: T0 - 200_000,
                    logical: 0,
                    origin: NodeId::new("a").unwrap(),
                    seq: 10_000 + i,
                })
            })
            .collect();
        s.write(w).unwrap();
    }
    missing_on_b(&a, 0, 5);
    let checked = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    assert_eq!(checked.keys.len(), 5);
    // 50 more go missing after the check: over the blast radius.
    missing_on_b(&a, 100, 50);
    let peer = agent_a.config.peers[0].clone();
    let (kind, action) = rt.block_on(mend_agent::schedule::playbook(
        &agent_a, &peer, "b", &checked,
    ));
    assert_eq!(kind, mend_core::playbook::PlaybookAction::Repaired);
    assert!(action.starts_with("repaired 5 keys"), "{action}");
    for i in 100..150 {
        assert!(b.get(format!("m{i:04}").as_bytes()).unwrap().is_none());
    }
    for i in 0..5 {
        assert!(b.get(format!("m{i:04}").as_bytes()).unwrap().is_some());
    }
}

/// The journal keeps repairs by age and count, pruned in the background;
/// undo of a pruned repair says it was pruned; an undo holds the keys it
/// restored against scheduled repairs until the hold expires; and an undo
/// that crashed halfway is finished by running it again.
#[test]
fn journal_retention_holds_and_resumable_undo() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    let (agent_a, _agent_b) = agents_with(&a, &b, |c| c.playbook.blast_radius_share_max = 1.0);
    let peer = agent_a.config.peers[0].clone();
    let mut ids = Vec::new();
    for r in 0..3u64 {
        clock.set(T0 + r * 1_000);
        missing_on_b(&a, r * 10, 2);
        let sum = rt
            .block_on(repair(&agent_a, "b", None, RepairOptions::default(), None))
            .unwrap();
        assert_eq!(sum.keys_repaired, 2);
        ids.push(sum.repair_id);
    }
    // An undo that crashed after the peer restored its side: the peer's
    // half done, ours not.
    let link = rt.block_on(agent_a.dialer.dial("b")).unwrap();
    rt.block_on(link.undo_push(mend_rpc::pb::UndoPushRequest {
        repair_id: ids[2].clone(),
    }))
    .unwrap();
    assert!(
        b.get(b"m0020").unwrap().is_none(),
        "the peer's half was undone"
    );
    let resumed = rt
        .block_on(mend_agent::repair::undo(&agent_a, ids[2].clone()))
        .unwrap();
    assert!(resumed.skipped.is_empty(), "{:?}", resumed.skipped);
    // The restored keys are held: the next scheduled exchange leaves them.
    let o = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    assert_eq!(o.keys.len(), 2);
    let (_, action) = rt.block_on(mend_agent::schedule::playbook(&agent_a, &peer, "b", &o));
    assert!(action.contains("2 keys held by an undo"), "{action}");
    assert!(
        b.get(b"m0020").unwrap().is_none(),
        "re-repaired what undo restored"
    );
    // Retention: at most two repairs; the oldest goes, its undo says so.
    let mut cfg_a = agent_a.config.clone();
    cfg_a.journal.repairs_max = 2;
    let r = mend_agent::journal::Retention {
        age_ms: cfg_a.journal.retention_ms,
        count_max: cfg_a.journal.repairs_max,
    };
    assert_eq!(
        mend_agent::journal::prune(&a, clock_now(&clock), r).unwrap(),
        1
    );
    let e = rt
        .block_on(mend_agent::repair::undo(&agent_a, ids[0].clone()))
        .unwrap_err();
    assert!(matches!(e, mend_agent::AgentError::NotFound(_)), "{e:?}");
    assert!(e.message().contains("pruned"), "{}", e.message());
    // A running hold keeps its repair (and its before-images) whatever the
    // retention says; once it expires the repair goes too.
    let none = mend_agent::journal::Retention { count_max: 0, ..r };
    assert_eq!(
        mend_agent::journal::prune(&a, clock_now(&clock), none).unwrap(),
        1
    );
    assert_eq!(
        mend_agent::journal::list(&a).unwrap()[0].id,
        ids[2],
        "the held repair was pruned"
    );
    clock.set(T0 + cfg_a.journal.undo_hold_ms + 10_000);
    assert_eq!(
        mend_agent::journal::prune(&a, clock_now(&clock), none).unwrap(),
        1
    );
    assert!(mend_agent::journal::list(&a).unwrap().is_empty());
    // With the hold expired, the next scheduled repair repairs them again.
    let o = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    let (kind, action) = rt.block_on(mend_agent::schedule::playbook(&agent_a, &peer, "b", &o));
    assert_eq!(kind, mend_core::playbook::PlaybookAction::Repaired);
    assert!(action.starts_with("repaired 2 keys"), "{action}");
}

fn clock_now(c: &Clock) -> u64 {
    c.0.load(Ordering::SeqCst)
}

/// Drift history and budget state survive a restart of the agent.
#[test]
fn drift_history_survives_a_restart() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    missing_on_b(&a, 0, 3);
    let (agent_a, _agent_b) = agents_with(&a, &b, |c| c.playbook.blast_radius_share_max = 0.0);
    let peer = agent_a.config.peers[0].clone();
    for _ in 0..2 {
        rt.block_on(mend_agent::schedule::run_once(&agent_a, &peer))
            .unwrap();
    }
    let before = agent_a.monitor.view(None);
    assert_eq!(before[0].records.len(), 2);
    drop(agent_a);
    // A new agent over the same store: the history is back.
    let (again, _b2) = agents_with(&a, &b, |c| c.playbook.blast_radius_share_max = 0.0);
    let after = again.monitor.view(None);
    assert_eq!(after.len(), before.len());
    assert_eq!(after[0].records, before[0].records);
}

/// The background scrub finds a corrupt leaf nobody exchanges about and
/// fixes it online, a bounded number of buckets per step, resuming where
/// it stopped.
#[test]
fn the_scrub_finds_and_fixes_a_corrupt_leaf() {
    let rt = rt();
    let clock = Clock::new(T0);
    let a = Store::open(MemBackend::new(), config("a", &clock)).unwrap();
    missing_on_b(&a, 0, 300);
    let (_, bucket, _) = a.locate(b"m0042").unwrap();
    let leaf_key = a
        .layout(0, a.shape(0).unwrap().depth)
        .unwrap()
        .leaf_key(bucket);
    let backend = a.into_backend();
    mend_store::Backend::write(
        &backend,
        vec![Op::Put(Cf::Leaves, leaf_key, vec![1; 40])],
        true,
    )
    .unwrap();
    let a = Arc::new(Store::open(backend, config("a", &clock)).unwrap());
    let (agent_a, _b) = agents(&a, &store("b", &clock));
    let buckets = shape().buckets() as u32;
    let mut at = mend_agent::scrub::Cursor::default();
    let mut fixed = Vec::new();
    let mut steps = 0;
    loop {
        let s = rt
            .block_on(mend_agent::scrub::step(&agent_a, at, 16))
            .unwrap();
        assert!(s.verified <= 16);
        fixed.extend(s.fixed);
        steps += 1;
        at = s.next;
        if at == mend_agent::scrub::Cursor::default() {
            break;
        }
    }
    assert_eq!(steps, buckets.div_ceil(16));
    assert_eq!(fixed, vec![bucket]);
    assert!(a.verify().unwrap().ok());
}

fn version(ms: u64, origin: &str, seq: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new(origin).unwrap(),
        seq,
    }
}

/// A conflict (same version, different content) and, under scope `all`, a
/// key where the authority holds the *older* version: both sides end up
/// with the authority's content under one new version, the winner is in
/// the initiator's journal, and undo puts both sides back. Without an
/// authority the conflict is only reported, as before.
#[test]
fn conflicts_resolve_toward_the_range_authority() {
    let rt = rt();
    let clock = Clock::new(T0);
    let (a, b) = (store("a", &clock), store("b", &clock));
    let old = T0 - 100_000;
    a.write(vec![Write::put("k", "from-a").at(version(old, "c", 1))])
        .unwrap();
    b.write(vec![Write::put("k", "from-b").at(version(old, "c", 1))])
        .unwrap();
    a.write(vec![Write::put("s", "a-older").at(version(old, "a", 2))])
        .unwrap();
    b.write(vec![Write::put("s", "b-newer").at(version(
        old + 1,
        "b",
        3,
    ))])
    .unwrap();

    // No authority: the conflict is reported and left; `s` goes newer-wins.
    let (plain_b, _) = agents_with(&b, &a, |c| c.playbook.blast_radius_share_max = 1.0);
    let dry = RepairOptions {
        dry_run: true,
        categories: vec![mend_core::Category::Conflict, mend_core::Category::Stale],
        ..RepairOptions::default()
    };
    let sum = rt
        .block_on(repair(&plain_b, "a", None, dry.clone(), None))
        .unwrap();
    assert!(
        sum.skipped.iter().any(|(k, why)| k == b"k"
            && why.reason == mend_core::playbook::SkipReason::Conflict
            && why.text.starts_with("conflict")),
        "{:?}",
        sum.skipped
    );
    assert_eq!(
        sum.plan.len(),
        1,
        "only the stale key moves: {:?}",
        sum.plan
    );

    // Authority `a`, scope all, repair run by `b` (the authority is its peer).
    let (agent_b, _) = agents_with(&b, &a, |c| {
        c.playbook.blast_radius_share_max = 1.0;
        c.authority = vec![mend_agent::config::AuthorityConfig {
            range: "all".into(),
            node: "a".into(),
            scope: mend_core::playbook::AuthorityScope::All,
        }];
    });
    let sum = rt
        .block_on(repair(&agent_b, "a", None, RepairOptions::default(), None))
        .unwrap();
    assert_eq!(sum.keys_toward_authority, 2, "{:?}", sum.skipped);
    assert_eq!(live(&b, "k").as_deref(), Some(&b"from-a"[..]));
    assert_eq!(live(&b, "s").as_deref(), Some(&b"a-older"[..]));
    assert_eq!(live(&a, "k").as_deref(), Some(&b"from-a"[..]));
    assert_eq!(live(&a, "s").as_deref(), Some(&b"a-older"[..]));
    // One new version on both sides, newer than either held: in sync.
    assert_eq!(diff_keys(&rt, &agent_b, "a"), 0);
    let kb = b.get(b"k").unwrap().unwrap().meta.version;
    assert!(kb.ms >= old && kb.origin.as_str() == "b", "{kb:?}");
    let mut winners = mend_agent::journal::winners(&b, &sum.repair_id).unwrap();
    winners.sort();
    assert_eq!(
        winners,
        vec![
            (b"k".to_vec(), "a".to_string()),
            (b"s".to_vec(), "a".to_string())
        ]
    );
    let h = mend_agent::journal::get_header(&b, &sum.repair_id)
        .unwrap()
        .unwrap();
    assert_eq!(h.keys_toward_authority, 2);

    // Undo restores both sides' before-images: the divergence is back.
    let u = rt
        .block_on(mend_agent::repair::undo(&agent_b, sum.repair_id.clone()))
        .unwrap();
    assert!(u.skipped.is_empty(), "{:?}", u.skipped);
    assert_eq!(live(&b, "k").as_deref(), Some(&b"from-b"[..]));
    assert_eq!(live(&a, "k").as_deref(), Some(&b"from-a"[..]));
    assert_eq!(live(&b, "s").as_deref(), Some(&b"b-newer"[..]));
    assert_eq!(diff_keys(&rt, &agent_b, "a"), 2);

    // The authority's own scheduled exchange, conflicts only, with the
    // playbook repairing conflicts: the conflict goes toward `a` (local),
    // the stale key newer-wins.
    let (agent_a, _) = agents_with(&a, &b, |c| {
        c.playbook.blast_radius_share_max = 1.0;
        c.playbook.require_healthy_peer = false;
        c.playbook.conflict = mend_agent::config::Action::Repair;
        c.authority = vec![mend_agent::config::AuthorityConfig {
            range: "all".into(),
            node: "a".into(),
            scope: mend_core::playbook::AuthorityScope::Conflicts,
        }];
    });
    let peer = agent_a.config.peers[0].clone();
    let o = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    // The undo holds what it restored, on both sides, until its hold ends.
    let (_, action) = rt.block_on(mend_agent::schedule::playbook(&agent_a, &peer, "b", &o));
    assert!(action.contains("2 keys held by an undo"), "{action}");
    clock.set(T0 + agent_a.config.journal.undo_hold_ms + 1_000);
    let o = rt
        .block_on(mend_agent::exchange::diff(&agent_a, "b", None))
        .unwrap();
    let (kind, action) = rt.block_on(mend_agent::schedule::playbook(&agent_a, &peer, "b", &o));
    assert_eq!(kind, mend_core::playbook::PlaybookAction::Repaired);
    assert!(action.starts_with("repaired 2 keys"), "{action}");
    assert_eq!(live(&b, "k").as_deref(), Some(&b"from-a"[..]));
    assert_eq!(live(&b, "s").as_deref(), Some(&b"b-newer"[..]));
    assert_eq!(live(&a, "s").as_deref(), Some(&b"b-newer"[..]));
    assert_eq!(diff_keys(&rt, &agent_a, "b"), 0);
}

type Trio = (
    Vec<Arc<AgentState<MemBackend>>>,
    Arc<mend_agent::link::mem::Registry<MemBackend>>,
);

/// Three agents on one in-memory registry, each configured with the other
/// two as peers (gc on); the registry lets a test replace or remove one.
fn trio(stores: &[Arc<Store<MemBackend>>; 3]) -> Vec<Arc<AgentState<MemBackend>>> {
    trio_on(stores).0
}

fn trio_on(stores: &[Arc<Store<MemBackend>>; 3]) -> Trio {
    use mend_agent::link::mem::Registry;
    let registry = Arc::new(Registry::default());
    let wire = Arc::new(Counting::default());
    let ids: Vec<String> = stores.iter().map(|s| s.node_id().to_string()).collect();
    let agents = stores
        .iter()
        .map(|s| join(&registry, &wire, s, &ids))
        .collect();
    (agents, registry)
}

/// An agent over `s` in `registry`, with the other `ids` as peers (gc on),
/// registered under its node id (replacing whatever served it before).
fn join(
    registry: &Arc<mend_agent::link::mem::Registry<MemBackend>>,
    wire: &Arc<Counting>,
    s: &Arc<Store<MemBackend>>,
    ids: &[String],
) -> Arc<AgentState<MemBackend>> {
    use mend_agent::link::mem::MemDialer;
    use mend_agent::service::peer::PeerService;
    let me = s.node_id().to_string();
    let mut config = mend_agent::config::AgentConfig {
        node_id: me.clone(),
        ranges: s.ranges().specs().to_vec(),
        peers: ids
            .iter()
            .filter(|p| **p != me)
            .map(|p| mend_agent::config::PeerConfig {
                id: p.clone(),
                address: p.clone(),
                interval_ms: 0,
                budget: None,
            })
            .collect(),
        insecure_plaintext: true,
        tombstone_grace_ms: GRACE_MS,
        ..Default::default()
    };
    config.gc.enabled = true;
    let dialer = MemDialer::new(
        me.clone(),
        registry.clone(),
        wire.clone(),
        std::time::Duration::from_secs(600),
    );
    let mut a = AgentState::new_shared(s.clone(), config, Arc::new(dialer), None);
    a.inline_blocking = true;
    let a = Arc::new(a);
    registry.set(&me, Some(Arc::new(PeerService::new(a.clone()))));
    a
}

/// `a` holds a delete, `b` nothing, `c` the older value. `a` sees `b` in
/// sync (nothing cannot resurrect), then `c` repairs its value to `b` (a
/// `missing` key there) and only then takes `a`'s delete. Both of `a`'s
/// peers have now been seen without an older value, but not at the same
/// time: `b` got one in between. `a` must not purge on that evidence, or
/// `b`'s copy comes back as `missing` (found by the fault simulation,
/// seed 6370 of 10 000).
#[test]
fn a_peer_holding_nothing_does_not_vouch_for_a_third_replica() {
    let rt = rt();
    let clock = Clock::new(T0);
    let stores = [store("a", &clock), store("b", &clock), store("c", &clock)];
    let [a, b, c] = &stores;
    let agents = trio(&stores);
    let (agent_a, agent_c) = (&agents[0], &agents[2]);
    c.write(vec![Write::put("k", "old").at(version(
        T0 - 10_000,
        "c",
        1,
    ))])
    .unwrap();
    a.write(vec![Write::delete("k")]).unwrap();
    clock.set(T0 + 10 * GRACE_MS);
    assert_eq!(
        diff_keys(&rt, agent_a, "b"),
        1,
        "a's tombstone against nothing"
    );
    repair_all(&rt, agent_c, "b");
    assert_eq!(live(b, "k").as_deref(), Some(&b"old"[..]));
    clock.set(T0 + 10 * GRACE_MS + 1_000);
    repair_all(&rt, agent_a, "c");
    assert_eq!(diff_keys(&rt, agent_a, "c"), 0);
    clock.set(T0 + 20 * GRACE_MS);
    assert_eq!(
        purge(&rt, agent_a),
        0,
        "purged on b's word while b took c's older value after it"
    );
    // b gets the delete; once a sees b holding it, the purge may go.
    repair_all(&rt, agent_a, "b");
    assert_eq!(live(b, "k"), None);
    clock.set(T0 + 20 * GRACE_MS + 1_000);
    assert_eq!(diff_keys(&rt, agent_a, "b"), 0);
    clock.set(T0 + 30 * GRACE_MS);
    assert_eq!(purge(&rt, agent_a), 1);
}

/// `a` and `b` hold a delete, `c` the older value; `a` sees `b` in sync.
/// Then `b` loses its disk and rejoins empty under the same node id, `c`
/// repairs its older value to it (a `missing` key there), and only then
/// takes `a`'s delete. On its records `a` may purge (both peers seen
/// holding the delete), but `b`'s record is of a disk that is gone: the
/// purge must wait for an exchange with the new `b`, or `b`'s copy comes
/// back to `a` as `missing` (the limit the README named before agents
/// told each other their incarnation).
#[test]
fn a_wiped_replica_does_not_vouch_on_its_old_disk() {
    let rt = rt();
    let clock = Clock::new(T0);
    let stores = [store("a", &clock), store("b", &clock), store("c", &clock)];
    let [a, _, c] = &stores;
    let (agents, registry) = trio_on(&stores);
    let (agent_a, agent_c) = (&agents[0], &agents[2]);
    c.write(vec![Write::put("k", "old").at(version(
        T0 - 10_000,
        "c",
        1,
    ))])
    .unwrap();
    for s in [a, &stores[1]] {
        s.write(vec![Write::delete("k").at(version(T0, "a", 2))])
            .unwrap();
    }
    clock.set(T0 + 10 * GRACE_MS);
    assert_eq!(diff_keys(&rt, agent_a, "b"), 0, "b holds the delete");

    // b's disk is lost; it rejoins empty under the same id.
    let b2 = store("b", &clock);
    let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let _agent_b2 = join(&registry, &Arc::new(Counting::default()), &b2, &ids);
    repair_all(&rt, agent_c, "b");
    assert_eq!(live(&b2, "k").as_deref(), Some(&b"old"[..]));
    clock.set(T0 + 10 * GRACE_MS + 1_000);
    repair_all(&rt, agent_a, "c");
    assert_eq!(diff_keys(&rt, agent_a, "c"), 0);
    clock.set(T0 + 20 * GRACE_MS);
    assert_eq!(
        purge(&rt, agent_a),
        0,
        "purged on the word of b's lost disk"
    );
    // The exchange with the new b puts the delete there; the value stays
    // deleted on every replica, and the purge may go once b is seen in
    // sync again.
    repair_all(&rt, agent_a, "b");
    assert_eq!(live(a, "k"), None, "the deleted value came back on a");
    assert_eq!(live(&b2, "k"), None);
    clock.set(T0 + 20 * GRACE_MS + 1_000);
    assert_eq!(diff_keys(&rt, agent_a, "b"), 0);
    clock.set(T0 + 30 * GRACE_MS);
    assert_eq!(purge(&rt, agent_a), 1);
}

/// A peer that does not answer cannot confirm it still holds the disk its
/// records are about, so no purge runs on them until it answers again.
#[test]
fn a_purge_waits_for_every_peer_to_answer() {
    let rt = rt();
    let clock = Clock::new(T0);
    let stores = [store("a", &clock), store("b", &clock), store("c", &clock)];
    let [a, b, c] = &stores;
    let (agents, registry) = trio_on(&stores);
    let agent_a = &agents[0];
    for s in &stores {
        s.write(vec![Write::delete("k").at(version(T0, "a", 2))])
            .unwrap();
    }
    clock.set(T0 + 10 * GRACE_MS);
    assert_eq!(diff_keys(&rt, agent_a, "b"), 0);
    assert_eq!(diff_keys(&rt, agent_a, "c"), 0);
    clock.set(T0 + 20 * GRACE_MS);
    registry.set("c", None);
    let round = rt.block_on(mend_agent::gc::purge_once(agent_a)).unwrap();
    assert_eq!(round.purged, 0, "purged while c could not be asked");
    assert_eq!(round.horizons[0].held_by.as_deref(), Some("c"));
    assert_eq!(round.horizons[0].before_ms, 0);
    registry.set(
        "c",
        Some(Arc::new(mend_agent::service::peer::PeerService::new(
            agents[2].clone(),
        ))),
    );
    assert_eq!(purge(&rt, agent_a), 1);
    assert!(a.get(b"k").unwrap().is_none(), "the tombstone is gone on a");
    assert!(b.get(b"k").unwrap().is_some() && c.get(b"k").unwrap().is_some());
}
