//! Repairs of digest-only ranges through row adapters (`rows`), between two
//! agents over in-memory stores and links, each range fed by the change
//! feed of a store the agents do not own. The store here is an in-memory
//! table with the semantics `mend-pg` gives PostgreSQL (a version check in
//! the store, a feed that reports a delete at the deleted row's version
//! with `logical + 1`, delivered when the test says so); the real
//! PostgreSQL path is `tests/e2e/postgres.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mend_agent::AgentError;
use mend_agent::link::mem::{Counting, pair_both};
use mend_agent::repair::RepairOptions;
use mend_agent::rows::{JournalFn, Restore, RowAdapter, RowChange, RowError, RowFuture};
use mend_agent::state::AgentState;
use mend_core::digest::value_hash;
use mend_core::{EntryMeta, NodeId, RangeMode, RangeSpec, Record, Secret, TreeShape, Version};
use mend_store::{IngestBatch, IngestEntry, MemBackend, Store, StoreConfig};

type Rows = BTreeMap<Vec<u8>, (Version, Vec<u8>)>;

/// A table beside an agent: rows, a version check on repair writes, and a
/// change feed into the agent's digest-only range.
struct Table {
    rows: tokio::sync::Mutex<Rows>,
    feed: Mutex<Vec<IngestEntry>>,
    store: Arc<Store<MemBackend>>,
    position: AtomicU64,
    /// The feed delivers each change as it is made.
    live: AtomicBool,
    /// The next call through the adapter makes the feed live (delivering
    /// what it held back): a feed that lags until the agent looks.
    live_when_called: AtomicBool,
}

fn v(ms: u64) -> Version {
    Version {
        ms,
        logical: 0,
        origin: NodeId::new("pg").unwrap(),
        seq: 0,
    }
}

fn live(version: &Version, payload: &[u8]) -> EntryMeta {
    EntryMeta {
        version: version.clone(),
        tombstone: false,
        value_hash: value_hash(payload),
    }
}

/// The feed's entry for a deleted row of `version`.
fn deleted(version: &Version) -> EntryMeta {
    EntryMeta {
        version: Version {
            logical: version.logical + 1,
            ..version.clone()
        },
        tombstone: true,
        value_hash: value_hash(b""),
    }
}

impl Table {
    fn new(store: Arc<Store<MemBackend>>) -> Arc<Table> {
        Arc::new(Table {
            rows: Default::default(),
            feed: Default::default(),
            store,
            position: AtomicU64::new(0),
            live: AtomicBool::new(false),
            live_when_called: AtomicBool::new(false),
        })
    }

    /// From now on the feed delivers each change as it is made.
    fn go_live(&self) {
        self.live.store(true, Ordering::SeqCst);
        self.deliver();
    }

    /// Called by every adapter method.
    fn called(&self) {
        if self.live_when_called.swap(false, Ordering::SeqCst) {
            self.go_live();
        }
    }

    fn publish(&self, key: &[u8], meta: EntryMeta) {
        self.feed.lock().unwrap().push(IngestEntry {
            key: key.to_vec(),
            version: meta.version,
            value_hash: (!meta.tombstone).then_some(meta.value_hash),
        });
        if self.live.load(Ordering::SeqCst) {
            self.deliver();
        }
    }

    /// An application's write: no version check.
    async fn write(&self, key: &str, ms: u64, payload: &str) {
        let version = v(ms);
        self.publish(key.as_bytes(), live(&version, payload.as_bytes()));
        self.rows
            .lock()
            .await
            .insert(key.into(), (version, payload.into()));
    }

    /// An application's delete.
    async fn delete(&self, key: &str) {
        if let Some((version, _)) = self.rows.lock().await.remove(key.as_bytes()) {
            self.publish(key.as_bytes(), deleted(&version));
        }
    }

    /// Delivers the feed to the agent's range.
    fn deliver(&self) {
        let entries = std::mem::take(&mut *self.feed.lock().unwrap());
        if entries.is_empty() {
            return;
        }
        let n = self.position.fetch_add(1, Ordering::SeqCst) + 1;
        self.store
            .ingest(IngestBatch {
                range: 0,
                source: "table".into(),
                position_to: n.to_be_bytes().to_vec(),
                entries,
            })
            .unwrap();
    }

    async fn snapshot(&self) -> Rows {
        self.rows.lock().await.clone()
    }

    /// Every key's tree entry is what the feed reports for its row.
    async fn assert_tree_follows(&self, keys: &[&str]) {
        let rows = self.rows.lock().await;
        for k in keys {
            let tree = self.store.get(k.as_bytes()).unwrap().map(|r| r.meta);
            match rows.get(k.as_bytes()) {
                Some((version, payload)) => {
                    assert_eq!(tree, Some(live(version, payload)), "tree of {k}")
                }
                None => assert!(
                    tree.as_ref().is_none_or(|t| t.tombstone),
                    "tree of {k} holds a live entry for a row that is gone: {tree:?}"
                ),
            }
        }
    }
}

impl RowAdapter for Table {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>]) -> RowFuture<'a, Vec<Option<Record>>> {
        Box::pin(async move {
            self.called();
            let rows = self.rows.lock().await;
            Ok(keys
                .iter()
                .map(|k| {
                    rows.get(k).map(|(version, payload)| Record {
                        meta: live(version, payload),
                        value: payload.clone(),
                    })
                })
                .collect())
        })
    }

    fn apply<'a>(
        &'a self,
        key: &'a [u8],
        change: &'a RowChange,
        journal: JournalFn<'a>,
    ) -> RowFuture<'a, bool> {
        Box::pin(async move {
            self.called();
            let mut rows = self.rows.lock().await;
            let held = rows.get(key).cloned();
            let before = held.as_ref().map(|(version, payload)| Record {
                meta: live(version, payload),
                value: payload.clone(),
            });
            match change {
                RowChange::Put { version, payload } => {
                    if held
                        .iter()
                        .any(|(h, _)| (h.ms, h.logical) >= (version.ms, version.logical))
                    {
                        return Ok(false);
                    }
                    let after = live(version, payload);
                    journal(before, after.clone()).await?;
                    rows.insert(key.to_vec(), (version.clone(), payload.clone()));
                    self.publish(key, after);
                }
                RowChange::Delete { version } => {
                    let Some((h, _)) = held else {
                        return Ok(false);
                    };
                    if h.ms > version.ms || (h.ms == version.ms && h.logical >= version.logical) {
                        return Ok(false);
                    }
                    let after = deleted(&h);
                    journal(before, after.clone()).await?;
                    rows.remove(key);
                    self.publish(key, after);
                }
            }
            Ok(true)
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a [u8],
        after: &'a EntryMeta,
        before: Option<&'a Record>,
    ) -> RowFuture<'a, Restore> {
        Box::pin(async move {
            self.called();
            let mut rows = self.rows.lock().await;
            let now = rows.get(key).map(|(v, p)| live(v, p));
            let is_after = if after.tombstone {
                now.is_none()
            } else {
                now.as_ref() == Some(after)
            };
            if !is_after {
                return Ok(if now == before.map(|b| b.meta.clone()) {
                    Restore::AlreadyRestored
                } else {
                    Restore::Changed
                });
            }
            match before {
                Some(b) => {
                    rows.insert(key.to_vec(), (b.meta.version.clone(), b.value.clone()));
                    self.publish(key, b.meta.clone());
                }
                None => {
                    if let Some((version, _)) = rows.remove(key) {
                        self.publish(key, deleted(&version));
                    }
                }
            }
            Ok(Restore::Restored)
        })
    }
}

/// A table whose store is unreachable.
struct Down;

impl RowAdapter for Down {
    fn read<'a>(&'a self, _: &'a [Vec<u8>]) -> RowFuture<'a, Vec<Option<Record>>> {
        Box::pin(async { Err(RowError::Unavailable("connection refused".into())) })
    }
    fn apply<'a>(&'a self, _: &'a [u8], _: &'a RowChange, _: JournalFn<'a>) -> RowFuture<'a, bool> {
        Box::pin(async { Err(RowError::Unavailable("connection refused".into())) })
    }
    fn restore<'a>(
        &'a self,
        _: &'a [u8],
        _: &'a EntryMeta,
        _: Option<&'a Record>,
    ) -> RowFuture<'a, Restore> {
        Box::pin(async { Err(RowError::Unavailable("connection refused".into())) })
    }
}

fn store(node: &str) -> Arc<Store<MemBackend>> {
    let mut spec = RangeSpec::whole("orders", TreeShape::new(16, 2).unwrap());
    spec.mode = RangeMode::Digests;
    let cfg = StoreConfig::new(
        NodeId::new(node).unwrap(),
        Secret::from_bytes(b"rows test"),
        Some(vec![spec]),
    );
    Arc::new(Store::open(MemBackend::new(), cfg).unwrap())
}

struct Pair {
    a: Arc<AgentState<MemBackend>>,
    ta: Arc<Table>,
    tb: Arc<Table>,
}

/// Two agents whose tables hold the same 200 rows, then diverge: b is
/// behind on `k-010` (a newer update), `k-020` (a delete) and `only-a`; a
/// is behind on `k-030` and `only-b`.
async fn diverged(adapters: (bool, bool)) -> Pair {
    let (sa, sb) = (store("a"), store("b"));
    let (a, b) = pair_both(sa.clone(), sb.clone(), Arc::new(Counting::default()), |c| {
        c.gc.enabled = false
    });
    let (ta, tb) = (Table::new(sa), Table::new(sb));
    if adapters.0 {
        a.rows.register("orders", ta.clone());
    }
    if adapters.1 {
        b.rows.register("orders", tb.clone());
    }
    for t in [&ta, &tb] {
        for i in 0..200u64 {
            t.write(&format!("k-{i:03}"), 1_000 + i, &format!("row {i}"))
                .await;
        }
    }
    ta.write("k-010", 9_000, "newer at a").await;
    ta.delete("k-020").await;
    ta.write("only-a", 9_001, "only at a").await;
    tb.write("k-030", 9_002, "newer at b").await;
    tb.write("only-b", 9_003, "only at b").await;
    ta.deliver();
    tb.deliver();
    Pair { a, ta, tb }
}

/// Key -> category of a diff from `a` to its peer.
async fn categories(a: &Arc<AgentState<MemBackend>>) -> BTreeMap<Vec<u8>, mend_core::Category> {
    let d = mend_agent::exchange::diff(a, "b", None).await.unwrap();
    d.keys
        .into_iter()
        .map(|k| (k.div.key, k.category))
        .collect()
}

const TOUCHED: [&str; 5] = ["k-010", "k-020", "only-a", "k-030", "only-b"];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn a_digest_only_range_is_repaired_through_both_adapters_and_undone() {
    rt().block_on(async {
        let p = diverged((true, true)).await;
        let (before_a, before_b) = (p.ta.snapshot().await, p.tb.snapshot().await);
        let diverged_as = categories(&p.a).await;
        assert_eq!(diverged_as.len(), 5, "{diverged_as:?}");

        // Dry run: the plan names every key and its direction; no table
        // changes.
        let dry = mend_agent::repair::repair(
            &p.a,
            "b",
            None,
            RepairOptions {
                dry_run: true,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        let mut plan: Vec<(String, &str)> = dry
            .plan
            .iter()
            .map(|x| (String::from_utf8(x.key.clone()).unwrap(), x.behind.as_str()))
            .collect();
        plan.sort();
        assert_eq!(
            plan,
            vec![
                ("k-010".into(), "peer"),
                ("k-020".into(), "peer"),
                ("k-030".into(), "local"),
                ("only-a".into(), "peer"),
                ("only-b".into(), "local"),
            ]
        );
        assert!(dry.skipped.is_empty(), "{:?}", dry.skipped);
        assert_eq!(p.ta.snapshot().await, before_a);
        assert_eq!(p.tb.snapshot().await, before_b);

        let sum = mend_agent::repair::repair(&p.a, "b", None, RepairOptions::default(), None)
            .await
            .unwrap();
        assert!(sum.skipped.is_empty(), "{:?}", sum.skipped);
        assert_eq!((sum.keys_to_peer, sum.keys_to_local), (3, 2));
        // The tables agree row for row...
        assert_eq!(p.ta.snapshot().await, p.tb.snapshot().await);
        let b_rows = p.tb.snapshot().await;
        assert_eq!(b_rows[b"k-010".as_slice()].1, b"newer at a");
        assert!(!b_rows.contains_key(b"k-020".as_slice()));
        // ...and once the feeds deliver, so do the trees.
        p.ta.deliver();
        p.tb.deliver();
        let d = mend_agent::exchange::diff(&p.a, "b", None).await.unwrap();
        assert!(d.keys.is_empty(), "{:?}", d.keys);

        // Undo: both tables back to their rows before the repair, and both
        // trees following them (the restored rows carry older versions,
        // which the feed alone could not put back).
        p.ta.go_live();
        p.tb.go_live();
        let undo = mend_agent::repair::undo(&p.a, sum.repair_id.clone())
            .await
            .unwrap();
        assert!(undo.skipped.is_empty(), "{:?}", undo.skipped);
        assert_eq!((undo.restored_local, undo.restored_peer), (2, 3));
        assert_eq!(p.ta.snapshot().await, before_a);
        assert_eq!(p.tb.snapshot().await, before_b);
        p.ta.deliver();
        p.tb.deliver();
        p.ta.assert_tree_follows(&TOUCHED).await;
        p.tb.assert_tree_follows(&TOUCHED).await;
        // Diverged again exactly as before the repair: an undone insert is
        // no entry, not a delete a later repair would carry over.
        assert_eq!(categories(&p.a).await, diverged_as);
    });
}

#[test]
fn rows_written_newer_during_a_repair_survive_on_both_sides() {
    rt().block_on(async {
        let p = diverged((true, true)).await;
        let d = mend_agent::exchange::diff(&p.a, "b", None).await.unwrap();
        // After the diff, before the repair: newer rows on the behind side
        // of k-010 (at b) and k-030 (at a).
        p.tb.write("k-010", 9_500, "newest at b").await;
        p.ta.write("k-030", 9_600, "newest at a").await;
        let sum = mend_agent::repair::repair_outcome(&p.a, "b", &d, RepairOptions::default())
            .await
            .unwrap();
        let mut skipped: Vec<(String, String)> = sum
            .skipped
            .iter()
            .map(|(k, why)| (String::from_utf8(k.clone()).unwrap(), why.text.clone()))
            .collect();
        skipped.sort();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(skipped[0].0, "k-010");
        assert!(
            skipped[0].1.contains("peer kept its entry (stale)"),
            "{skipped:?}"
        );
        assert_eq!(skipped[1].0, "k-030");
        assert!(
            skipped[1].1.contains("kept the local entry (stale)"),
            "{skipped:?}"
        );
        assert_eq!((sum.keys_to_peer, sum.keys_to_local), (2, 1));
        assert_eq!(p.tb.snapshot().await[b"k-010".as_slice()].1, b"newest at b");
        assert_eq!(p.ta.snapshot().await[b"k-030".as_slice()].1, b"newest at a");
    });
}

#[test]
fn undo_waits_for_a_lagging_feed_so_the_trees_follow_the_tables() {
    rt().block_on(async {
        let p = diverged((true, true)).await;
        let before_b = p.tb.snapshot().await;
        let sum = mend_agent::repair::repair(&p.a, "b", None, RepairOptions::default(), None)
            .await
            .unwrap();
        // The feeds have delivered none of the repair's writes when the
        // undo starts; each delivers them once the undo looks at its table.
        p.ta.live_when_called.store(true, Ordering::SeqCst);
        p.tb.live_when_called.store(true, Ordering::SeqCst);
        let undo = mend_agent::repair::undo(&p.a, sum.repair_id).await;
        let undo = undo.unwrap();
        assert!(undo.skipped.is_empty(), "{:?}", undo.skipped);
        assert_eq!(p.tb.snapshot().await, before_b);
        p.ta.deliver();
        p.tb.deliver();
        p.ta.assert_tree_follows(&TOUCHED).await;
        p.tb.assert_tree_follows(&TOUCHED).await;
    });
}

#[test]
fn a_peer_without_an_adapter_or_with_its_store_down_fails_the_repair_clearly() {
    rt().block_on(async {
        let p = diverged((true, false)).await;
        let err = mend_agent::repair::repair(&p.a, "b", None, RepairOptions::default(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Precondition(_)), "{err:?}");
        assert!(
            err.message().contains("no adapter serves its rows on b"),
            "{err:?}"
        );

        // Without an adapter here, the keys are planned as skipped.
        let p = diverged((false, true)).await;
        let dry = mend_agent::repair::repair(
            &p.a,
            "b",
            None,
            RepairOptions {
                dry_run: true,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        assert!(dry.plan.is_empty());
        assert_eq!(dry.skipped.len(), 5);
        assert!(dry.skipped.iter().all(|(_, why)| why.reason
            == mend_core::playbook::SkipReason::DigestOnly
            && why.text == mend_agent::repair::DIGEST_ONLY_SKIP));

        // A store that cannot be reached is "retry later", not a fault.
        p.a.rows.register("orders", Arc::new(Down));
        let err = mend_agent::repair::repair(&p.a, "b", None, RepairOptions::default(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
        assert!(err.message().contains("connection refused"), "{err:?}");
    });
}

#[test]
fn a_versionless_range_is_not_compared_with_a_versioned_one() {
    // Every key would differ (one side's entries carry the store's
    // versions, the other's one version): the handshake refuses.
    rt().block_on(async {
        let mut spec = RangeSpec::whole("orders", TreeShape::new(16, 2).unwrap());
        spec.mode = RangeMode::Digests;
        spec.versionless = true;
        let cfg = StoreConfig::new(
            NodeId::new("a").unwrap(),
            Secret::from_bytes(b"rows test"),
            Some(vec![spec]),
        );
        let sa = Arc::new(Store::open(MemBackend::new(), cfg).unwrap());
        let (a, _) = pair_both(sa, store("b"), Arc::new(Counting::default()), |_| {});
        let err = mend_agent::exchange::diff(&a, "b", None).await.unwrap_err();
        assert!(matches!(err, AgentError::Precondition(_)), "{err:?}");
        assert!(
            err.message().contains("versioned here, versionless at a"),
            "{err:?}"
        );
    });
}
