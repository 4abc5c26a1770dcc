//! The write path: every write (client put/delete, replicated write,
//! repair, and a change feed's batch) goes through [`Store::commit`], in
//! steps of one job each: locate and validate every key, read what the keys
//! (and an ingest's source position) hold now, decide each entry by the
//! apply rule, build its rows, and commit rows and tree update together
//! ([`Store::commit_rows`]). Undo's [`Store::compare_and_restore`] bypasses
//! the apply rule on purpose but commits through the same `commit_rows`.

use foldhash::{HashMap, HashMapExt};

use mend_core::error::check_value;
use mend_core::{Agg, Decision, EntryMeta, RangeMode, Record, Secret, Version, decide};

use super::{Store, WriterState, clock_row, corrupt, leaf_op};
use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::keys;

/// One write: a put (`value = Some`) or a delete, with an explicit version
/// for replicated writes or none to be stamped by the local clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: Vec<u8>,
    /// The value, or `None` for a delete (tombstone).
    pub value: Option<Vec<u8>>,
    /// The version to store, or `None` to stamp one locally.
    pub version: Option<Version>,
}

impl Write {
    /// A local put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Write {
        Write {
            key: key.into(),
            value: Some(value.into()),
            version: None,
        }
    }

    /// A local delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Write {
        Write {
            key: key.into(),
            value: None,
            version: None,
        }
    }

    /// Carries an explicit version (a replicated write).
    pub fn at(mut self, version: Version) -> Write {
        self.version = Some(version);
        self
    }

    /// Builds the write that stores `record` under `key`.
    pub fn from_record(key: Vec<u8>, record: Record) -> Write {
        Write {
            key,
            value: if record.meta.tombstone {
                None
            } else {
                Some(record.value)
            },
            version: Some(record.meta.version),
        }
    }
}

/// The outcome of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the apply rule decided.
    pub decision: Decision,
    /// The version of the incoming entry (stamped, for local writes).
    pub version: Version,
    /// The incoming entry's meta (what was written when `decision` is `Apply`).
    pub meta: EntryMeta,
    /// The local entry's meta before this write, if any.
    pub previous: Option<EntryMeta>,
    /// The local entry before this write, when the caller asked for
    /// before-images (repair journals).
    pub before: Option<Record>,
}

/// What an incoming entry carries: `Write`s and ingested entries both
/// become one of these before the apply rule sees them.
pub(crate) enum Content {
    /// A value (value-holding ranges).
    Value(Vec<u8>),
    /// A value's 32-byte hash and no value (digest-only ranges).
    Digest(mend_core::Digest),
    /// A delete.
    Tombstone,
}

/// One entry on its way to the apply rule.
pub(crate) struct Incoming {
    pub(crate) key: Vec<u8>,
    pub(crate) content: Content,
    pub(crate) version: Option<Version>,
}

/// A position to record in the same batch as the entries it covers: row
/// `row` of `meta` moves to `to` unless it already holds `to` or a
/// position after it (byte order).
pub(crate) struct PositionUpdate<'a> {
    pub(crate) row: Vec<u8>,
    pub(crate) to: &'a [u8],
}

/// What [`Store::commit`] did: each entry's outcome and, for an ingest, the
/// durable position after the batch and whether it moved.
pub(crate) type Committed = (Vec<Applied>, Option<(Vec<u8>, bool)>);

/// How [`Store::commit`] commits one batch.
pub(crate) struct Commit<'a> {
    /// The mode every entry's range must have.
    pub(crate) mode: RangeMode,
    /// Return each key's before-image.
    pub(crate) capture: bool,
    /// Rows derived from the outcomes, committed in the same batch.
    pub(crate) extra: Option<ExtraRows<'a>>,
    /// A source's position, committed in the same batch.
    pub(crate) position: Option<PositionUpdate<'a>>,
    /// Force the batch to stable storage before returning.
    pub(crate) sync: bool,
    /// Apply in feed order instead of by version (a versionless range's
    /// ingest): each entry replaces what the key holds unless it is the
    /// same entry, and a batch whose position is not past the stored one
    /// (a redelivery) changes nothing.
    pub(crate) feed_order: bool,
}

/// Where a key lives: (range id, data row prefix, data row key); see
/// [`Store::locate_row`].
pub(crate) type Located = (u16, u32, Vec<u8>);

/// Each key's data row as the backend held it before a batch, by data key.
pub(crate) type Stored<'k> = HashMap<&'k [u8], Option<Vec<u8>>>;

impl Content {
    /// The record this content becomes at `version`.
    fn into_record(self, version: Version) -> Record {
        match self {
            Content::Value(v) => Record::live(version, v),
            Content::Digest(h) => Record::digest_only(version, h),
            Content::Tombstone => Record::tombstone(version),
        }
    }
}

/// One write batch on its way to the backend: what its keys held before
/// it, and the rows, leaves and outcomes it has built so far.
struct Batch<'k> {
    /// The cluster secret the entries' digests are keyed with.
    secret: &'k Secret,
    /// The local wall time the batch is written at (its tombstones'
    /// arrival time).
    now: u64,
    /// Each key's data row before the batch.
    stored: Stored<'k>,
    /// Entries this batch has applied, by data key: a later write of the
    /// same key in the batch is decided against them. The whole record is
    /// kept only when the caller asked for before-images.
    pending: HashMap<&'k [u8], (EntryMeta, Option<Record>)>,
    /// The leaves the batch changed, by (range, bucket).
    leaves: HashMap<(u16, u32), Agg>,
    /// The rows to commit.
    ops: Vec<Op>,
    /// Each entry's outcome, in input order.
    out: Vec<Applied>,
}

impl<'k> Batch<'k> {
    fn new(stored: Stored<'k>, secret: &'k Secret, now: u64, entries: usize) -> Batch<'k> {
        Batch {
            secret,
            now,
            stored,
            pending: HashMap::with_capacity(entries),
            leaves: HashMap::with_capacity(entries),
            ops: Vec::with_capacity(entries * 2 + 3),
            out: Vec::with_capacity(entries),
        }
    }

    /// What `dkey` holds now (an earlier entry of this batch, else the
    /// stored row): its meta and, when `capture`, the whole record.
    fn current(
        &self,
        dkey: &[u8],
        capture: bool,
    ) -> Result<(Option<EntryMeta>, Option<Record>), StoreError> {
        if let Some((m, r)) = self.pending.get(dkey) {
            return Ok((Some(m.clone()), r.clone()));
        }
        let Some(raw) = self.stored.get(dkey).and_then(|v| v.as_deref()) else {
            return Ok((None, None));
        };
        if capture {
            let r = Record::decode(raw).map_err(|e| corrupt(e.to_string()))?;
            Ok((Some(r.meta.clone()), Some(r)))
        } else {
            let (m, _) = Record::decode_meta(raw).map_err(|e| corrupt(e.to_string()))?;
            Ok((Some(m), None))
        }
    }

    /// Builds the rows of an applied entry: its leaf moves from `previous`
    /// to `record`, a tombstone gets its index row, and the data row is
    /// written. `leaf` is (range, bucket, the tree's leaf before the batch).
    fn build_rows(
        &mut self,
        leaf: (u16, u32, Agg),
        dkey: &'k [u8],
        key: &[u8],
        previous: Option<&EntryMeta>,
        record: Record,
        capture: bool,
    ) -> Result<(), StoreError> {
        let (range, bucket, base) = leaf;
        let agg = self.leaves.entry((range, bucket)).or_insert(base);
        if let Some(p) = previous {
            remove_from_leaf(agg, &p.digest(self.secret, key), range, bucket)?;
        }
        agg.add_digest(&record.meta.digest(self.secret, key));
        if record.meta.tombstone {
            self.ops.push(Op::Put(
                Cf::Tombstones,
                keys::tombstone_key(range, self.now, dkey),
                keys::tombstone_value(&record.meta.version),
            ));
        }
        self.ops
            .push(Op::Put(Cf::Data, dkey.to_vec(), record.encode()));
        let kept = if capture {
            (record.meta.clone(), Some(record))
        } else {
            (record.meta, None)
        };
        self.pending.insert(dkey, kept);
        Ok(())
    }
}

/// The apply rule for one entry, or, for a versionless range's ingest
/// (`feed_order`), feed order: there a redelivered batch (`redelivery`: its
/// position is not past the stored one) changes nothing, since the store
/// holds everything up to that position and replaying an older change
/// would set a key back; otherwise an entry replaces what the key holds
/// unless it is the same entry.
fn decide_one(
    feed_order: bool,
    redelivery: bool,
    previous: Option<&EntryMeta>,
    record: &Record,
) -> Decision {
    match (feed_order, redelivery) {
        (false, _) => decide(previous, &record.meta),
        (true, true) => Decision::Duplicate,
        (true, false) if previous == Some(&record.meta) => Decision::Duplicate,
        (true, false) => Decision::Apply,
    }
}

/// Takes the digest `d` of an entry the data rows hold out of leaf
/// `bucket` of `range`. The leaf must count that entry: a leaf with no
/// entries left while a data row still holds one is a tree out of step with
/// its data (a bug in this store's bookkeeping, or rows changed behind its
/// back), so debug builds stop here and release builds refuse the write as
/// [`StoreError::Corrupt`] instead of wrapping the count round to 2^64 - 1.
pub(crate) fn remove_from_leaf(
    leaf: &mut Agg,
    d: &mend_core::Digest,
    range: u16,
    bucket: u32,
) -> Result<(), StoreError> {
    leaf.sub_digest(d).map_err(|e| {
        debug_assert!(false, "range {range} leaf {bucket}: {e}");
        corrupt(format!("range {range} leaf {bucket}: {e}"))
    })
}

/// Derives extra rows from the outcomes of a write batch, committed in the
/// same batch (see [`Store::write_with_extra`]).
pub type ExtraRows<'a> = &'a dyn Fn(&[Applied]) -> Vec<Op>;

impl<B: Backend> Store<B> {
    /// Applies writes atomically: all validated first (any invalid write
    /// rejects the whole batch, nothing written), then each decided by the
    /// apply rule against the local entry (or an earlier write of the same
    /// batch), then committed together with their tree updates. A key of a
    /// digest-only range is refused ([`StoreError::WrongMode`]): those
    /// ranges take entries only through [`Store::ingest`].
    pub fn write(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        self.write_inner(writes, false)
    }

    /// As [`Store::write`], also returning each key's before-image.
    pub fn write_capturing(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        self.write_inner(writes, true)
    }

    /// As [`Store::write_capturing`], and commits the rows `extra` derives
    /// from the outcomes in the same atomic batch (a repair journal's
    /// before-images commit together with the repair).
    pub fn write_with_extra(
        &self,
        writes: Vec<Write>,
        extra: ExtraRows<'_>,
    ) -> Result<Vec<Applied>, StoreError> {
        self.write_inner_extra(writes, true, Some(extra))
    }

    fn write_inner(&self, writes: Vec<Write>, capture: bool) -> Result<Vec<Applied>, StoreError> {
        self.write_inner_extra(writes, capture, None)
    }

    fn write_inner_extra(
        &self,
        writes: Vec<Write>,
        capture: bool,
        extra: Option<ExtraRows<'_>>,
    ) -> Result<Vec<Applied>, StoreError> {
        let incoming = writes
            .into_iter()
            .map(|w| Incoming {
                key: w.key,
                content: match w.value {
                    Some(v) => Content::Value(v),
                    None => Content::Tombstone,
                },
                version: w.version,
            })
            .collect();
        let commit = Commit {
            mode: RangeMode::Values,
            capture,
            extra,
            position: None,
            sync: self.cfg.sync_writes,
            feed_order: false,
        };
        Ok(self.commit(incoming, commit)?.0)
    }

    /// The one write path: validates every entry (key, value, the range's
    /// mode), decides each by the apply rule, and commits data, tombstone
    /// index, leaf, clock and (for an ingest) position rows in one backend
    /// batch. Returns the outcomes and, when `c.position` is given, the
    /// durable position after the batch and whether it moved.
    ///
    /// The steps, each its own function: locate every key
    /// ([`Store::locate_all`]), read what the keys and the source's position
    /// hold now ([`Store::read_current`], [`Store::read_position`]), decide
    /// each entry ([`Store::decide_one`]), build its rows
    /// ([`Batch::build_rows`]), and commit rows and tree together
    /// ([`Store::commit_rows`]).
    pub(crate) fn commit(
        &self,
        writes: Vec<Incoming>,
        c: Commit<'_>,
    ) -> Result<Committed, StoreError> {
        let located = self.locate_all(&writes, c.mode)?;
        let mut st = self.writer()?;
        let clock_before = st.hlc;
        let stored = self.read_current(&located)?;
        let now = self.now_ms();
        let mut batch = Batch::new(stored, &self.secret, now, writes.len());
        let position = self.read_position(c.position.as_ref(), &mut batch.ops)?;
        let redelivery = matches!(position, Some((_, false)));
        let mut stamped = false;
        {
            let trees = self.trees_read()?;
            // Under the writer lock: a deepening switches depth only while
            // holding it, so these are the depths this batch commits at.
            let layouts = self.layouts(&trees)?;
            for (w, (range, row, dkey)) in writes.into_iter().zip(&located) {
                let (previous, before) = batch.current(dkey, c.capture)?;
                stamped |= w.version.is_none();
                let version = self.stamp(&mut st, w.version, previous.as_ref(), now);
                let record = w.content.into_record(version.clone());
                let decision = decide_one(c.feed_order, redelivery, previous.as_ref(), &record);
                let meta = record.meta.clone();
                if decision == Decision::Apply {
                    let bucket = layouts[usize::from(*range)].bucket_of_row(*row);
                    let leaf = (
                        *range,
                        bucket,
                        trees[*range as usize].leaves()[bucket as usize],
                    );
                    batch.build_rows(leaf, dkey, &w.key, previous.as_ref(), record, c.capture)?;
                }
                batch.out.push(Applied {
                    decision,
                    version,
                    meta,
                    previous,
                    before,
                });
            }
        }
        if let Some(f) = c.extra {
            batch.ops.extend(f(&batch.out));
        }
        // The clock is persisted whenever it moved, by a local stamp or by
        // a replicated version it followed, so a restart never hands out a
        // version older than one this store has already ordered after.
        let clock_moved = stamped || st.hlc != clock_before;
        if batch.ops.is_empty() && !clock_moved {
            return Ok((batch.out, position));
        }
        let clock = clock_moved.then(|| clock_row(&st));
        let leaves = batch
            .leaves
            .into_iter()
            .map(|((r, b), a)| (r, b, a))
            .collect();
        self.commit_rows(batch.ops, leaves, clock, c.sync)?;
        Ok((batch.out, position))
    }

    /// Locates every entry of a batch and validates it (value size, the
    /// range's mode) before anything is read or written: one bad entry
    /// refuses the whole batch. On the caller's thread: locating and hashing
    /// a batch on rayon's pool made batched writes 10% slower on two cores
    /// (BENCHMARKS.md, issue 14).
    fn locate_all(&self, writes: &[Incoming], mode: RangeMode) -> Result<Vec<Located>, StoreError> {
        let mut located = Vec::with_capacity(writes.len());
        for w in writes {
            let loc = self.locate_row(&w.key)?;
            if let Content::Value(v) = &w.content {
                check_value(v)?;
            }
            self.check_mode(loc.0, mode)?;
            located.push(loc);
        }
        Ok(located)
    }

    /// Each located key's current data row, read in one batched read. The
    /// caller holds the writer lock, so nothing changes them before its
    /// batch commits.
    fn read_current<'k>(&self, located: &'k [Located]) -> Result<Stored<'k>, StoreError> {
        let mut stored: Stored<'k> = HashMap::with_capacity(located.len());
        let mut wanted: Vec<&[u8]> = Vec::with_capacity(located.len());
        for (_, _, dkey) in located {
            if stored.insert(dkey.as_slice(), None).is_none() {
                wanted.push(dkey.as_slice());
            }
        }
        for (k, v) in wanted
            .iter()
            .zip(self.backend.multi_get(Cf::Data, &wanted)?)
        {
            stored.insert(k, v);
        }
        Ok(stored)
    }

    /// The source's durable position after this batch and whether the
    /// batch moves it (then its row is added to `ops`). Read under the
    /// writer lock too, so two batches of one source cannot both decide to
    /// move it.
    fn read_position(
        &self,
        p: Option<&PositionUpdate<'_>>,
        ops: &mut Vec<Op>,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        let Some(p) = p else {
            return Ok(None);
        };
        match self.backend.get(Cf::Meta, &p.row)? {
            Some(h) if p.to <= h.as_slice() => Ok(Some((h, false))),
            _ => {
                ops.push(Op::Put(Cf::Meta, p.row.clone(), p.to.to_vec()));
                Ok(Some((p.to.to_vec(), true)))
            }
        }
    }

    /// The version an entry is written with: its own (a replicated write,
    /// which the clock follows within the skew), or a fresh local stamp.
    fn stamp(
        &self,
        st: &mut WriterState,
        given: Option<Version>,
        previous: Option<&EntryMeta>,
        now: u64,
    ) -> Version {
        if let Some(v) = given {
            if v.ms <= now.saturating_add(self.cfg.clock_skew_ms) {
                st.hlc.observe(v.ms, v.logical);
            }
            return v;
        }
        let (mut ms, mut logical) = st.hlc.tick(now);
        // A local write supersedes whatever the key holds, even a version
        // stamped ahead of this clock (accepted from a fast node, or from
        // before a clock step back): it is stamped just past it rather than
        // decided stale and dropped. The clock itself follows only within
        // the skew.
        if let Some(p) = previous
            && (p.version.ms, p.version.logical) >= (ms, logical)
        {
            (ms, logical) = match p.version.logical.checked_add(1) {
                Some(l) => (p.version.ms, l),
                None => (p.version.ms.saturating_add(1), 0),
            };
            if ms <= now.saturating_add(self.cfg.clock_skew_ms) {
                st.hlc.observe(ms, logical);
            }
        }
        st.seq += 1;
        Version {
            ms,
            logical,
            origin: self.node_id.clone(),
            seq: st.seq,
        }
    }

    /// Commits `ops` with the rows of the changed `leaves` (and the clock
    /// row, when given) in one backend batch, then moves the in-memory tree
    /// to those leaves under the same write lock, so readers never see a
    /// tree describing data that is not there. The caller holds the writer
    /// lock (so the trees' depths stay as they are) and names each leaf by
    /// its bucket at its tree's depth now.
    pub(crate) fn commit_rows(
        &self,
        mut ops: Vec<Op>,
        leaves: Vec<(u16, u32, Agg)>,
        clock: Option<Vec<u8>>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let mut trees = self.trees_write()?;
        let layouts = self.layouts(&trees)?;
        for (range, bucket, agg) in &leaves {
            ops.push(leaf_op(&layouts[usize::from(*range)], *bucket, agg));
        }
        if let Some(row) = clock {
            ops.push(Op::Put(Cf::Meta, keys::META_CLOCK.to_vec(), row));
        }
        self.backend.write(ops, sync)?;
        for (range, bucket, agg) in &leaves {
            trees[*range as usize].set_leaf(*bucket, *agg);
        }
        drop(trees);
        // After the rows are in: a deepening that recomputes these buckets
        // from now on reads them.
        self.touched(&leaves)
    }

    /// Each range's layout at its tree's depth in `trees`.
    pub(crate) fn layouts(
        &self,
        trees: &[crate::RangeTree],
    ) -> Result<Vec<keys::Layout>, StoreError> {
        trees
            .iter()
            .enumerate()
            .map(|(id, t)| self.layout(id as u16, t.shape().depth))
            .collect()
    }

    /// Refuses an entry of range `range` written through the path for
    /// `mode` when the range has the other mode.
    pub(crate) fn check_mode(&self, range: u16, mode: RangeMode) -> Result<(), StoreError> {
        let spec = self.ranges.get(range).ok_or_else(|| corrupt("range id"))?;
        if spec.mode == mode {
            return Ok(());
        }
        let why = match spec.mode {
            RangeMode::Digests => "it takes entries only through ingest (no values)",
            RangeMode::Values => {
                "it takes values only (ingest needs a range with mode = \"digests\")"
            }
        };
        Err(StoreError::WrongMode {
            range: spec.name.clone(),
            mode: spec.mode.as_str(),
            why: why.into(),
        })
    }

    /// Moves the clock past `v` (within the clock skew, as for a replicated
    /// write) and persists it, so the next local stamp is newer than `v`: a
    /// repair that re-stamps an authority's content past the other side's
    /// version calls this first. A version beyond the skew is not followed.
    pub fn observe(&self, v: &Version) -> Result<(), StoreError> {
        let mut st = self.writer()?;
        let before = st.hlc;
        if v.ms <= self.now_ms().saturating_add(self.cfg.clock_skew_ms) {
            st.hlc.observe(v.ms, v.logical);
        }
        if st.hlc != before {
            let row = clock_row(&st);
            self.backend.write(
                vec![Op::Put(Cf::Meta, keys::META_CLOCK.to_vec(), row)],
                self.cfg.sync_writes,
            )?;
        }
        Ok(())
    }

    /// Replaces the entry at `key` with `restore` (or removes it when `None`)
    /// only if the current entry's meta equals `expected`. Undo uses this to
    /// put back before-images; it deliberately bypasses the apply rule
    /// (restoring an older version is the point) but never clobbers a write
    /// made since. Returns whether the restore happened.
    pub fn compare_and_restore(
        &self,
        key: &[u8],
        expected: Option<&EntryMeta>,
        restore: Option<&Record>,
    ) -> Result<bool, StoreError> {
        let (range, row, dkey) = self.locate_row(key)?;
        if let Some(r) = restore
            && !r.meta.tombstone
        {
            check_value(&r.value)?;
        }
        let _st = self.writer()?;
        let depth = self.trees_read()?[usize::from(range)].shape().depth;
        let bucket = self.layout(range, depth)?.bucket_of_row(row);
        let current = match self.backend.get(Cf::Data, &dkey)? {
            Some(raw) => Some(
                Record::decode_meta(&raw)
                    .map_err(|e| corrupt(e.to_string()))?
                    .0,
            ),
            None => None,
        };
        if current.as_ref() != expected {
            return Ok(false);
        }
        let mut leaf = self.trees_read()?[range as usize].leaves()[bucket as usize];
        let mut ops = Vec::with_capacity(3);
        if let Some(c) = &current {
            remove_from_leaf(&mut leaf, &c.digest(&self.secret, key), range, bucket)?;
        }
        match restore {
            Some(r) => {
                leaf.add_digest(&r.meta.digest(&self.secret, key));
                if r.meta.tombstone {
                    ops.push(Op::Put(
                        Cf::Tombstones,
                        keys::tombstone_key(range, self.now_ms(), &dkey),
                        keys::tombstone_value(&r.meta.version),
                    ));
                }
                ops.push(Op::Put(Cf::Data, dkey, r.encode()));
            }
            None => ops.push(Op::Delete(Cf::Data, dkey)),
        }
        self.commit_rows(ops, vec![(range, bucket, leaf)], None, self.cfg.sync_writes)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;
    use crate::conformance::config;

    /// Overwriting an entry whose leaf does not count it (its persisted leaf
    /// emptied behind the store's back) would take the leaf's count below
    /// zero: debug builds stop on the assertion, release builds refuse the
    /// write as corrupt and write nothing.
    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "cannot lose 1"))]
    fn overwriting_an_entry_its_leaf_does_not_count_is_corrupt() {
        let s = Store::open(MemBackend::new(), config("n1", 1000)).unwrap();
        s.write(vec![Write::put("k", "v")]).unwrap();
        let (range, bucket, _) = s.locate(b"k").unwrap();
        let leaf = s
            .layout(range, s.shape(range).unwrap().depth)
            .unwrap()
            .leaf_key(bucket);
        s.backend()
            .write(vec![Op::Delete(Cf::Leaves, leaf)], true)
            .unwrap();
        let s = Store::open(s.into_backend(), config("n1", 1000)).unwrap();
        let e = s.write(vec![Write::put("k", "w")]).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt(m) if m.contains("cannot lose 1")),
            "{e}"
        );
        assert_eq!(s.get(b"k").unwrap().unwrap().value, b"v");
    }
}
