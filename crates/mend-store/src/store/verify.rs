//! Rebuild, verify (whole store or a few buckets online) and tombstone purge.
//!
//! A rebuild recomputes every leaf of a range from the data rows, in
//! parallel over contiguous bucket spans (rayon), rehashing each value so a
//! flipped bit in a value or a stale stored hash shows up as a leaf mismatch.
//! `verify` compares the persisted leaves with a rebuild and names the first
//! bucket that disagrees.

use rayon::prelude::*;
use serde::Serialize;

use mend_core::record::hex;
use mend_core::{Agg, Record, digest::value_hash};

use super::{Store, corrupt, load_tree, remove_from_leaf};
use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::keys;
use crate::tree::RangeTree;

/// Bucket spans per rebuild: enough for rayon to balance uneven buckets.
const REBUILD_SPANS: u64 = 256;

/// The outcome of verifying one range.
#[derive(Debug, Clone, Serialize)]
pub struct RangeVerify {
    /// Range name.
    pub name: String,
    /// Root hash of the rebuilt tree, hex.
    pub root: String,
    /// Entries seen by the rebuild.
    pub entries: u64,
    /// The first bucket whose persisted leaf differs from the rebuild.
    pub first_bad_bucket: Option<u32>,
    /// How many buckets differ.
    pub bad_buckets: u64,
}

/// The outcome of verifying a store.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Per range.
    pub ranges: Vec<RangeVerify>,
}

impl VerifyReport {
    /// True when every range's persisted tree equals its rebuild.
    pub fn ok(&self) -> bool {
        self.ranges.iter().all(|r| r.first_bad_bucket.is_none())
    }
}

impl<B: Backend> Store<B> {
    /// Recomputes the leaves of range `range` (at its tree's depth now)
    /// from the data rows.
    pub fn rebuild_leaves(&self, range: u16) -> Result<Vec<Agg>, StoreError> {
        let depth = self.shape(range)?.depth;
        self.rebuild_leaves_at(range, depth)
    }

    /// Recomputes the leaves of range `range` at `depth` (at most the
    /// tree's) from the data rows, in [`REBUILD_SPANS`] spans on rayon's
    /// pool.
    pub fn rebuild_leaves_at(&self, range: u16, depth: u32) -> Result<Vec<Agg>, StoreError> {
        let buckets = self.shape_at(range, depth)?.buckets();
        let layout = self.layout(range, depth)?;
        self.leaves_in_spans(layout, buckets, &|| false)
    }

    /// The `buckets` leaves at `layout` recomputed from the data rows, in
    /// [`REBUILD_SPANS`] spans on rayon's pool.
    /// `stop()` is asked before each span; once it says so, the rest fail.
    pub(crate) fn leaves_in_spans(
        &self,
        layout: keys::Layout,
        buckets: u64,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Agg>, StoreError> {
        let spans = REBUILD_SPANS.min(buckets);
        let per = buckets / spans;
        let parts: Vec<Result<Vec<Agg>, StoreError>> = (0..spans)
            .into_par_iter()
            .map(|s| {
                let lo = s * per;
                let hi = if s + 1 == spans { buckets } else { lo + per };
                super::deepen::stopped(stop)?;
                self.leaves_from_data(layout, lo, hi)
            })
            .collect();
        let mut out = Vec::with_capacity(buckets as usize);
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    /// The leaves of buckets `lo..hi` of `range`, recomputed from the data
    /// rows with every value rehashed (digest-only ranges: with the stored
    /// hashes, and no value allowed).
    pub(crate) fn leaves_from_data(
        &self,
        layout: keys::Layout,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<Agg>, StoreError> {
        let digests = self
            .ranges
            .get(layout.range())
            .is_some_and(|s| s.mode == mend_core::RangeMode::Digests);
        let mut leaves = vec![Agg::default(); (hi - lo) as usize];
        let mut bad = None;
        self.backend.scan(
            Cf::Data,
            &layout.data_start(lo as u32),
            Some(&layout.data_end(hi)),
            &mut |k, v| {
                let Some((_, row, key)) = keys::split_data_key(k) else {
                    bad = Some("data row key too short".to_string());
                    return false;
                };
                let b = layout.bucket_of_row(row);
                let Some(slot) = (b as u64)
                    .checked_sub(lo)
                    .and_then(|i| leaves.get_mut(i as usize))
                else {
                    bad = Some(format!("data row of bucket {b} listed for {lo}..{hi}"));
                    return false;
                };
                match Record::decode_meta(v) {
                    Ok((_, at)) if digests && at != v.len() => {
                        bad = Some(format!("bucket {b}: a value in a digest-only range"));
                        false
                    }
                    Ok((mut meta, at)) => {
                        // A digest-only range holds no value to rehash: its
                        // hash is the adapter's, and the record checks it
                        // is well-formed.
                        if !digests {
                            meta.value_hash = value_hash(&v[at..]);
                        }
                        slot.add_digest(&meta.digest(&self.secret, key));
                        true
                    }
                    Err(e) => {
                        bad = Some(format!("bucket {b}: {e}"));
                        false
                    }
                }
            },
        )?;
        match bad {
            Some(why) => Err(corrupt(why)),
            None => Ok(leaves),
        }
    }

    /// Compares every range's persisted tree with a rebuild from the data.
    /// Writers are paused for the duration so the two describe one state.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let _w = self.writer()?;
        let mut ranges = Vec::new();
        for (id, spec) in self.ranges.specs().iter().enumerate() {
            let id = id as u16;
            let shape = self.shape(id)?;
            let rebuilt = self.rebuild_leaves_at(id, shape.depth)?;
            let layout = self.layout(id, shape.depth)?;
            let persisted = load_tree(&self.backend, layout, spec, shape)?;
            let mut first = None;
            let mut bad = 0u64;
            for (b, (p, r)) in persisted.leaves().iter().zip(&rebuilt).enumerate() {
                if p != r {
                    bad += 1;
                    first.get_or_insert(b as u32);
                }
            }
            let entries = rebuilt.iter().map(|a| a.count).sum();
            let tree = RangeTree::from_leaves(shape, rebuilt);
            ranges.push(RangeVerify {
                name: spec.name.clone(),
                root: hex(&tree.root().hash()),
                entries,
                first_bad_bucket: first,
                bad_buckets: bad,
            });
        }
        Ok(VerifyReport { ranges })
    }

    /// Replaces every range's persisted and in-memory tree with a rebuild
    /// from the data (the fix after `verify` reports a mismatch).
    pub fn rebuild(&self) -> Result<(), StoreError> {
        let _w = self.writer()?;
        for id in 0..self.ranges.specs().len() {
            let id = id as u16;
            let shape = self.shape(id)?;
            let layout = self.layout(id, shape.depth)?;
            let rebuilt = self.rebuild_leaves_at(id, shape.depth)?;
            let mut ops = Vec::new();
            self.backend.scan(
                Cf::Leaves,
                &keys::range_start(id),
                Some(&keys::range_end(id)),
                &mut |k, _| {
                    ops.push(Op::Delete(Cf::Leaves, k.to_vec()));
                    true
                },
            )?;
            for (b, a) in rebuilt.iter().enumerate() {
                if !a.is_empty() {
                    ops.push(Op::Put(
                        Cf::Leaves,
                        layout.leaf_key(b as u32),
                        a.encode().to_vec(),
                    ));
                }
            }
            let mut trees = self.trees_write()?;
            self.backend.write(ops, true)?;
            trees[id as usize] = RangeTree::from_leaves(shape, rebuilt);
        }
        Ok(())
    }

    /// Removes tombstones of `range` that arrived here before
    /// `arrived_before_ms` (local wall time) and whose version was already
    /// older than the grace period then, examining at most `max` index rows
    /// (oldest arrivals first), keeping the tree exact.
    ///
    /// The caller picks `arrived_before_ms`: the agent passes the oldest
    /// time at which every replica of the range was last seen in sync, so
    /// only tombstones every replica already held go (see the agent's `gc`).
    /// Index rows whose data entry was overwritten since are dropped.
    pub fn purge_tombstones(
        &self,
        range: u16,
        arrived_before_ms: u64,
        max: usize,
    ) -> Result<Purged, StoreError> {
        self.shape(range)?;
        // The grace period bounds how late an older write of the key may
        // still arrive: the horizon's proof ("every replica held this
        // tombstone, something newer, or nothing") covers only writes that
        // had arrived by then, so the tombstone must already have been past
        // its grace at the horizon, not merely now.
        let version_before = self
            .now_ms()
            .min(arrived_before_ms)
            .saturating_sub(self.cfg.tombstone_grace_ms);
        let arrived_before = arrived_before_ms.min(version_before);
        let _w = self.writer()?;
        let mut rows = Vec::new();
        self.backend.scan(
            Cf::Tombstones,
            &keys::tombstone_end(range, 0),
            Some(&keys::tombstone_end(range, arrived_before)),
            &mut |k, v| {
                rows.push((k.to_vec(), v.to_vec()));
                rows.len() < max
            },
        )?;
        let mut out = Purged {
            examined: rows.len() as u64,
            more: rows.len() >= max,
            ..Purged::default()
        };
        let mut ops = Vec::with_capacity(rows.len() * 2 + 16);
        let mut leaf_updates: std::collections::HashMap<u32, Agg> = Default::default();
        {
            let trees = self.trees_read()?;
            let tree = &trees[range as usize];
            let layout = self.layout(range, tree.shape().depth)?;
            for (idx_key, idx_val) in &rows {
                let Some((_, _, dkey)) = keys::split_tombstone_key(idx_key) else {
                    return Err(corrupt("tombstone index key too short"));
                };
                let Some((_, row, key)) = keys::split_data_key(dkey) else {
                    return Err(corrupt("tombstone index names a short data key"));
                };
                let bucket = layout.bucket_of_row(row);
                let current = match self.backend.get(Cf::Data, dkey)? {
                    Some(raw) => Some(
                        Record::decode_meta(&raw)
                            .map_err(|e| corrupt(e.to_string()))?
                            .0,
                    ),
                    None => None,
                };
                match current {
                    Some(m) if m.tombstone && keys::tombstone_names(idx_val, &m.version) => {
                        if m.version.ms >= version_before {
                            // Within its grace: stays, and its index row too.
                            out.kept += 1;
                            continue;
                        }
                        let leaf = leaf_updates
                            .entry(bucket)
                            .or_insert_with(|| tree.leaves()[bucket as usize]);
                        remove_from_leaf(leaf, &m.digest(&self.secret, key), range, bucket)?;
                        ops.push(Op::Delete(Cf::Data, dkey.to_vec()));
                        out.purged += 1;
                    }
                    // Overwritten or purged since: a stale index row.
                    _ => out.stale += 1,
                }
                ops.push(Op::Delete(Cf::Tombstones, idx_key.clone()));
            }
        }
        if ops.is_empty() {
            return Ok(out);
        }
        let leaves = leaf_updates
            .into_iter()
            .map(|(b, a)| (range, b, a))
            .collect();
        self.commit_rows(ops, leaves, None, self.cfg.sync_writes)?;
        Ok(out)
    }

    /// Verifies buckets `first..first + count` of `range` against their
    /// data rows and fixes every leaf (persisted and in memory) that is out
    /// of step, online: writers wait only while these buckets are
    /// recomputed. Returns the buckets that were wrong.
    pub fn repair_buckets(
        &self,
        range: u16,
        first: u32,
        count: u32,
    ) -> Result<Vec<u32>, StoreError> {
        let snap = self.snapshot_leaves(range, first, count)?;
        self.repair_buckets_with(range, first, count, &snap)
    }

    /// The persisted leaves of buckets `first..first + count` of `range`,
    /// read in one scan without the writer lock, for
    /// [`Store::repair_buckets_with`]. One snapshot can serve several
    /// scrub steps: every read of the `leaves` column family sorts a copy
    /// of its vector memtable, the one cost of the scrub that grows with
    /// the write rate, so the scrub takes one per several steps.
    pub fn snapshot_leaves(
        &self,
        range: u16,
        first: u32,
        count: u32,
    ) -> Result<LeafSnapshot, StoreError> {
        let shape = self.shape(range)?;
        let buckets = shape.buckets();
        let layout = self.layout(range, shape.depth)?;
        let lo = u64::from(first).min(buckets);
        let hi = (lo + u64::from(count)).min(buckets);
        // The tree's leaves first, then the rows: a leaf that differs from
        // `before` when the snapshot is used was written since, and every
        // leaf write rewrites its row from the tree (under the writer
        // lock), so its row is not what this snapshot holds, nor in doubt.
        let before = {
            let trees = self.trees_read()?;
            let t = &trees[range as usize];
            if t.shape() != shape {
                // Deepened since: an empty snapshot covers nothing.
                return Ok(LeafSnapshot {
                    range,
                    depth: t.shape().depth,
                    lo: 0,
                    before: Vec::new(),
                    persisted: Vec::new(),
                });
            }
            t.leaves()[lo as usize..hi as usize].to_vec()
        };
        let mut persisted: Vec<Option<Agg>> = vec![Some(Agg::default()); (hi - lo) as usize];
        if lo < hi {
            self.backend.scan(
                Cf::Leaves,
                &layout.leaf_key(lo as u32),
                Some(&layout.leaf_end(hi)),
                &mut |k, v| {
                    if let Some(slot) = layout
                        .leaf_bucket(k)
                        .and_then(|b| u64::from(b).checked_sub(lo))
                        .and_then(|i| persisted.get_mut(i as usize))
                    {
                        *slot = Agg::decode(v);
                    }
                    true
                },
            )?;
        }
        Ok(LeafSnapshot {
            range,
            depth: shape.depth,
            lo,
            before,
            persisted,
        })
    }

    /// [`Store::repair_buckets`] against the persisted leaves of `snap`
    /// (taken by [`Store::snapshot_leaves`], possibly several calls ago).
    /// A bucket `snap` does not cover, or whose leaf was written since
    /// `snap` (its row rewritten from the tree since), is checked against
    /// its data only; a row that disagrees with a leaf unchanged since
    /// `snap` is read again under the lock before it counts (a leaf can
    /// change and change back).
    pub fn repair_buckets_with(
        &self,
        range: u16,
        first: u32,
        count: u32,
        snap: &LeafSnapshot,
    ) -> Result<Vec<u32>, StoreError> {
        let _w = self.writer()?;
        // Under the writer lock, so the depth stays as read.
        let shape = self.shape(range)?;
        let buckets = shape.buckets();
        let layout = self.layout(range, shape.depth)?;
        let lo = u64::from(first).min(buckets);
        let hi = (lo + u64::from(count)).min(buckets);
        if lo == hi {
            return Ok(Vec::new());
        }
        let rebuilt = self.leaves_from_data(layout, lo, hi)?;
        let mut fixed = Vec::new();
        {
            let trees = self.trees_read()?;
            let tree = &trees[range as usize];
            for (i, agg) in rebuilt.iter().enumerate() {
                let b = (lo + i as u64) as u32;
                let leaf = tree.leaves()[b as usize];
                let mut bad = leaf != *agg;
                if !bad
                    && let Some((before, persisted)) = snap.get(range, shape.depth, u64::from(b))
                    && leaf == before
                    && persisted != Some(*agg)
                {
                    // An unreadable persisted leaf is what this fixes, not an error.
                    let now = match self.backend.get(Cf::Leaves, &layout.leaf_key(b))? {
                        Some(raw) => Agg::decode(&raw),
                        None => Some(Agg::default()),
                    };
                    bad = now != Some(*agg);
                }
                if bad {
                    fixed.push(b);
                }
            }
        }
        if fixed.is_empty() {
            return Ok(fixed);
        }
        let leaves = fixed
            .iter()
            .map(|b| (range, *b, rebuilt[(u64::from(*b) - lo) as usize]))
            .collect();
        self.commit_rows(Vec::new(), leaves, None, true)?;
        Ok(fixed)
    }
}

/// The persisted leaves of a span of buckets with the tree's leaves just
/// before they were read ([`Store::snapshot_leaves`]).
#[derive(Debug, Clone)]
pub struct LeafSnapshot {
    range: u16,
    /// The tree depth its buckets are at.
    depth: u32,
    lo: u64,
    before: Vec<Agg>,
    persisted: Vec<Option<Agg>>,
}

impl LeafSnapshot {
    /// The tree depth its buckets are at.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether the snapshot holds `range`'s buckets `first..first + count`.
    pub fn covers(&self, range: u16, first: u32, count: u32) -> bool {
        let (first, count) = (u64::from(first), u64::from(count));
        range == self.range
            && first >= self.lo
            && first + count <= self.lo + self.before.len() as u64
    }

    fn get(&self, range: u16, depth: u32, bucket: u64) -> Option<(Agg, Option<Agg>)> {
        if range != self.range || depth != self.depth {
            return None;
        }
        let i = usize::try_from(bucket.checked_sub(self.lo)?).ok()?;
        Some((*self.before.get(i)?, *self.persisted.get(i)?))
    }
}

/// The outcome of one [`Store::purge_tombstones`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Index rows examined.
    pub examined: u64,
    /// Tombstones removed.
    pub purged: u64,
    /// Tombstones still within their grace period (kept).
    pub kept: u64,
    /// Index rows dropped because their tombstone was overwritten since.
    pub stale: u64,
    /// The call stopped at `max` rows: more may be due.
    pub more: bool,
}
