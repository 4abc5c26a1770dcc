//! Conformance checks of digest-only ranges and ingest: the apply rule on
//! digests, redelivery, the atomicity of a batch's entries and its source's
//! position, modes refusing the other write path, and the tree a digest-only
//! range builds equalling a value-holding range's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mend_core::digest::value_hash;
use mend_core::limits::{INGEST_BATCH_ENTRIES_MAX, POSITION_BYTES_MAX, SOURCE_NAME_BYTES_MAX};
use mend_core::{Decision, RangeMode, RangeSpec};

use super::{Harness, config, ranges, v};
use crate::backend::{Backend, Call, Cf, Op, Wrapper};
use crate::error::StoreError;
use crate::keys;
use crate::store::{IngestBatch, IngestEntry, Store, StoreConfig, Write};

/// Range `a` holds values, `b` (["m", ..)) digests only.
pub fn digest_ranges() -> Vec<RangeSpec> {
    let mut r = ranges();
    r[1].mode = RangeMode::Digests;
    r
}

fn digest_config(node: &str) -> StoreConfig {
    let mut c = config(node, 1000);
    c.ranges = Some(digest_ranges());
    c
}

fn entry(key: &str, ms: u64, value: Option<&str>) -> IngestEntry {
    IngestEntry {
        key: key.as_bytes().to_vec(),
        version: v(ms, "pg", ms),
        value_hash: value.map(|x| value_hash(x.as_bytes())),
    }
}

fn batch(pos: u64, entries: Vec<IngestEntry>) -> IngestBatch {
    IngestBatch {
        range: 1,
        source: "feed".into(),
        position_to: pos.to_be_bytes().to_vec(),
        entries,
    }
}

/// Every row of every column family, to show that nothing changed.
fn dump<B: Backend>(b: &B) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for cf in Cf::ALL {
        b.scan(cf, &[], None, &mut |k, v| {
            out.push((cf, k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    }
    out
}

/// A backend that records every batch it commits and can be told to fail
/// the next one (as a full disk would), to check what commits together.
pub struct Spy<B> {
    inner: B,
    batches: Arc<Mutex<Vec<Vec<Op>>>>,
    fail_next: Arc<AtomicBool>,
}

impl<B: Backend> Wrapper for Spy<B> {
    type Inner = B;
    fn inner(&self) -> &B {
        &self.inner
    }
    fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        let Call::Write(ops) = call else {
            return Ok(());
        };
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Backend {
                message: "injected write failure".into(),
                retryable: true,
            });
        }
        self.batches.lock().unwrap().push(ops.to_vec());
        Ok(())
    }
}

/// Runs every ingest check.
pub fn run_ingest<H: Harness>(h: &mut H) {
    digests_follow_the_apply_rule(h);
    redelivery_is_a_noop(h);
    position_and_entries_are_atomic(h);
    modes_refuse_the_other_path(h);
    ingest_limits_are_checked(h);
    digest_tree_equals_value_tree(h);
    versionless_ranges_apply_in_feed_order(h);
}

/// A versionless range (every entry at one version): each entry replaces
/// what its key holds in feed order, a repeated entry is a duplicate, a
/// redelivered batch changes nothing, and the position still commits with
/// the entries; after a reopen the range is still versionless.
fn versionless_ranges_apply_in_feed_order<H: Harness>(h: &mut H) {
    let mut c = digest_config("n1");
    if let Some(r) = c.ranges.as_mut() {
        r[1].versionless = true;
    }
    let s = Store::open(h.fresh(), c.clone()).unwrap();
    let at = |key: &str, value: Option<&str>| IngestEntry {
        key: key.as_bytes().to_vec(),
        version: v(0, "pg", 0),
        value_hash: value.map(|x| value_hash(x.as_bytes())),
    };
    let r = s
        .ingest(batch(
            1,
            vec![
                at("mk", Some("one")),
                at("mk", Some("two")),
                at("mt", Some("t")),
            ],
        ))
        .unwrap();
    let d: Vec<_> = r.applied.iter().map(|a| a.decision).collect();
    assert_eq!(d, [Decision::Apply, Decision::Apply, Decision::Apply]);
    let held = |s: &Store<H::B>, k: &str| s.get(k.as_bytes()).unwrap().map(|r| r.meta);
    assert_eq!(
        held(&s, "mk").map(|m| m.value_hash),
        Some(value_hash(b"two")),
        "the later entry of the feed wins at the same version"
    );
    let r = s
        .ingest(batch(2, vec![at("mk", Some("two")), at("mt", None)]))
        .unwrap();
    let d: Vec<_> = r.applied.iter().map(|a| a.decision).collect();
    assert_eq!(d, [Decision::Duplicate, Decision::Apply]);
    assert!(held(&s, "mt").unwrap().tombstone);
    // A redelivery of batch 1 would set both keys back: it changes nothing.
    let before = dump(s.backend());
    let r = s
        .ingest(batch(1, vec![at("mk", Some("one")), at("mt", Some("t"))]))
        .unwrap();
    assert!(!r.advanced);
    assert!(r.applied.iter().all(|a| a.decision == Decision::Duplicate));
    assert_eq!(dump(s.backend()), before);
    let b = h.reopen(s.into_backend());
    let s = Store::open(b, c).unwrap();
    assert!(s.ranges().specs()[1].versionless);
    assert_eq!(
        s.ingest_position(1, "feed").unwrap(),
        Some(2u64.to_be_bytes().to_vec())
    );
}

/// Greater version replaces; equal version with another digest is a
/// conflict and never overwrites; an older one is stale; tombstones ingest.
fn digests_follow_the_apply_rule<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), digest_config("n1")).unwrap();
    let r = s
        .ingest(batch(1, vec![entry("mk", 10, Some("x"))]))
        .unwrap();
    assert_eq!(r.applied[0].decision, Decision::Apply);
    let r = s
        .ingest(batch(
            2,
            vec![
                entry("mk", 10, Some("other")),
                entry("mk", 5, Some("older")),
                entry("mk", 20, Some("y")),
                entry("mt", 30, None),
            ],
        ))
        .unwrap();
    let d: Vec<_> = r.applied.iter().map(|a| a.decision).collect();
    assert_eq!(
        d,
        [
            Decision::Conflict,
            Decision::Stale,
            Decision::Apply,
            Decision::Apply
        ]
    );
    let rec = s.get(b"mk").unwrap().unwrap();
    assert_eq!(rec.meta.value_hash, value_hash(b"y"));
    assert!(rec.value.is_empty(), "a digest-only entry holds no value");
    assert!(s.get(b"mt").unwrap().unwrap().meta.tombstone);
    assert_eq!(r.position, 2u64.to_be_bytes());
    assert!(s.verify().unwrap().ok(), "verify uses the stored digests");
}

/// Delivering an acknowledged batch again, or an older one after a newer,
/// changes no row at all and does not move the position back.
fn redelivery_is_a_noop<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), digest_config("n1")).unwrap();
    let first = batch(7, vec![entry("ma", 10, Some("1")), entry("mb", 11, None)]);
    let second = batch(9, vec![entry("ma", 12, Some("2"))]);
    assert!(s.ingest(first.clone()).unwrap().advanced);
    assert!(s.ingest(second.clone()).unwrap().advanced);
    let rows = dump(s.backend());
    let root = s.root(1).unwrap();
    for b in [second, first] {
        let again = s.ingest(b).unwrap();
        assert!(!again.advanced);
        assert_eq!(again.position, 9u64.to_be_bytes(), "the position holds");
        assert!(
            again
                .applied
                .iter()
                .all(|a| matches!(a.decision, Decision::Duplicate | Decision::Stale)),
            "{:?}",
            again.applied
        );
        assert_eq!(dump(s.backend()), rows, "redelivery wrote nothing");
        assert_eq!(s.root(1).unwrap(), root);
    }
}

/// A batch's entries, leaves and position are one backend batch: a failed
/// commit leaves none of them (and the in-memory tree as it was), a retry
/// commits all of them, and a reopen finds both.
fn position_and_entries_are_atomic<H: Harness>(h: &mut H) {
    let spy = Spy {
        inner: h.fresh(),
        batches: Arc::default(),
        fail_next: Arc::default(),
    };
    let (batches, fail) = (spy.batches.clone(), spy.fail_next.clone());
    let s = Store::open(spy, digest_config("n1")).unwrap();
    let b = batch(
        3,
        vec![entry("mx", 10, Some("a")), entry("my", 11, Some("b"))],
    );
    let root = s.root(1).unwrap();
    let before = dump(s.backend());
    fail.store(true, Ordering::SeqCst);
    let e = s.ingest(b.clone()).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(dump(s.backend()), before, "a failed batch leaves nothing");
    assert_eq!(s.root(1).unwrap(), root, "nor a tree change");
    assert_eq!(s.ingest_position(1, "feed").unwrap(), None);
    batches.lock().unwrap().clear();
    let ok = s.ingest(b).unwrap();
    assert!(ok.advanced);
    let committed = batches.lock().unwrap().clone();
    assert_eq!(committed.len(), 1, "one backend batch");
    let row = keys::ingest_position_key(1, "feed");
    let ops = &committed[0];
    let has = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    assert_eq!(has(&|o| matches!(o, Op::Put(Cf::Data, _, _))), 2);
    assert!(has(&|o| matches!(o, Op::Put(Cf::Leaves, _, _))) >= 1);
    assert_eq!(
        has(&|o| matches!(o, Op::Put(Cf::Meta, k, p) if *k == row && p[..] == 3u64.to_be_bytes())),
        1,
        "the position rides in the entries' batch"
    );
    let root = s.root(1).unwrap();
    let spy = s.into_backend();
    let s = Store::open(h.reopen(spy.inner), digest_config("n1")).unwrap();
    assert_eq!(
        s.ingest_position(1, "feed").unwrap(),
        Some(3u64.to_be_bytes().to_vec())
    );
    assert_eq!(s.root(1).unwrap(), root);
    assert!(s.get(b"my").unwrap().is_some());
    assert_eq!(s.ingest_position(1, "other").unwrap(), None, "per source");
}

/// A digest-only range refuses value writes and value reads; a
/// value-holding range refuses ingest; a range's mode cannot change on
/// reopen.
fn modes_refuse_the_other_path<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), digest_config("n1")).unwrap();
    let wrong = |e: StoreError| assert!(matches!(e, StoreError::WrongMode { .. }), "{e}");
    wrong(s.write(vec![Write::put("mz", "v")]).unwrap_err());
    wrong(s.write(vec![Write::delete("mz")]).unwrap_err());
    s.write(vec![Write::put("az", "v")]).unwrap();
    let mut into_values = batch(1, vec![entry("az", 10, Some("x"))]);
    into_values.range = 0;
    wrong(s.ingest(into_values).unwrap_err());
    s.ingest(batch(1, vec![entry("mz", 10, Some("x"))]))
        .unwrap();
    wrong(s.get_many(&[b"mz".to_vec()]).unwrap_err());
    let b = h.reopen(s.into_backend());
    let e = Store::open(b, config("n1", 1000)).unwrap_err();
    assert!(matches!(e, StoreError::ParamsMismatch(_)), "{e}");
}

/// Each named limit is a typed input error, and nothing is written; so is
/// a key outside the batch's range.
fn ingest_limits_are_checked<H: Harness>(h: &mut H) {
    let s = Store::open(h.fresh(), digest_config("n1")).unwrap();
    let before = dump(s.backend());
    let input = |b: IngestBatch| {
        let e = s.ingest(b).unwrap_err();
        assert!(matches!(e, StoreError::Input(_)), "{e}");
    };
    let mut b = batch(1, vec![]);
    b.position_to = vec![];
    input(b);
    let mut b = batch(1, vec![]);
    b.position_to = vec![1; POSITION_BYTES_MAX + 1];
    input(b);
    let mut b = batch(1, vec![]);
    b.source = "s".repeat(SOURCE_NAME_BYTES_MAX + 1);
    input(b);
    input(batch(
        1,
        (0..=INGEST_BATCH_ENTRIES_MAX as u64)
            .map(|i| entry(&format!("m{i}"), 1, Some("x")))
            .collect(),
    ));
    input(batch(
        1,
        vec![entry("mok", 1, Some("x")), entry("a-outside", 1, Some("x"))],
    ));
    assert_eq!(dump(s.backend()), before);
    let mut b = batch(1, vec![]);
    b.position_to = vec![1; POSITION_BYTES_MAX];
    b.source = "s".repeat(SOURCE_NAME_BYTES_MAX);
    assert!(s.ingest(b).unwrap().advanced, "limits are inclusive");
}

/// A digest-only range fed with the hashes of the values a value-holding
/// replica holds (same keys, versions, tombstones) has the same tree,
/// leaf by leaf and entry by entry, so the two compare equal.
fn digest_tree_equals_value_tree<H: Harness>(h: &mut H) {
    let digests = Store::open(h.fresh(), digest_config("n1")).unwrap();
    let values = Store::open(h.fresh(), config("n2", 1000)).unwrap();
    let mut entries = Vec::new();
    let mut writes = Vec::new();
    for i in 0..200u64 {
        let key = format!("m{i:04}");
        let value = format!("value-{}", i * 7);
        let ver = v(100 + i, "pg", i);
        if i % 9 == 0 {
            entries.push(IngestEntry {
                key: key.clone().into_bytes(),
                version: ver.clone(),
                value_hash: None,
            });
            writes.push(Write::delete(key).at(ver));
        } else {
            entries.push(IngestEntry {
                key: key.clone().into_bytes(),
                version: ver.clone(),
                value_hash: Some(value_hash(value.as_bytes())),
            });
            writes.push(Write::put(key, value).at(ver));
        }
    }
    digests.ingest(batch(1, entries)).unwrap();
    values.write(writes).unwrap();
    assert_eq!(digests.root(1).unwrap(), values.root(1).unwrap());
    let buckets: Vec<u32> = (0..digests.shape(1).unwrap().buckets() as u32).collect();
    assert_eq!(
        digests.leaf_entries(1, &buckets).unwrap(),
        values.leaf_entries(1, &buckets).unwrap(),
        "entry by entry"
    );
    assert!(digests.verify().unwrap().ok());
    let rebuilt = digests.rebuild_leaves(1).unwrap();
    let tree = crate::RangeTree::from_leaves(digests.shape(1).unwrap(), rebuilt);
    assert_eq!(tree.root(), values.root(1).unwrap());
}
