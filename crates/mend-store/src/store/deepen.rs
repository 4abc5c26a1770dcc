//! Deepening a range's tree online (issue 14): when its buckets fill up, a
//! range's tree grows one level (each bucket splits into `fanout`), so the
//! leaf step of an exchange lists about as many entries per differing
//! bucket at 10M keys as at 100k.
//!
//! Data rows never move: they are laid out by the bucket at the deepest
//! depth ([`keys::Layout`]). A deepening computes the next depth's leaves
//! from the data while writes go on, then switches in one batch:
//!
//! 1. It starts recording the buckets writers touch ([`Store::touched`],
//!    called by every commit after its rows are in), then lists the range's
//!    rows (each scan a snapshot taken after recording began) into the new
//!    leaves, on rayon's pool.
//! 2. It recomputes the buckets written meanwhile, in rounds, until few are
//!    left ([`CATCH_UP_LOCKED_MAX`]), writes the new leaf rows, tagged with
//!    the new depth so the store's readers never see them, and catches up
//!    again in rounds on what was written while it wrote them.
//! 3. Under the writer lock it recomputes the last touched buckets, checks
//!    that every old leaf is the sum of its new children (a missed write
//!    would break that, and the deepening is refused rather than switched),
//!    and commits the changed leaf rows with the new depth in the parameters
//!    row in one batch, then swaps the tree. Writers wait for this step
//!    only.
//! 4. It removes the old depth's leaf rows. A crash before the switch
//!    leaves rows of the next depth that nothing reads; the next deepening
//!    removes them first.

use std::time::Instant;

use foldhash::{HashSet, HashSetExt};
use rayon::prelude::*;

use mend_core::{Agg, TreeShape};

use super::{Params, Store, corrupt, leaf_op, poisoned};
use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::keys;
use crate::tree::RangeTree;

/// A range deepens when its entries pass this many per bucket on average
/// (the agent's `tree.deepen_entries_per_bucket`). With fan-out 16, a
/// range at 16^4 buckets deepens past about 1M entries, to about one
/// entry per bucket.
pub const DEEPEN_ENTRIES_PER_BUCKET_DEFAULT: u64 = 16;

/// The switch (step 3) recomputes at most about this many touched buckets
/// under the writer lock; more, and another round runs without it first.
pub const CATCH_UP_LOCKED_MAX: usize = 1024;

/// Catch-up rounds without the lock before the switch takes the lock
/// whatever is left (a write rate that touches buckets faster than a round
/// recomputes them would otherwise never let the deepening finish).
const CATCH_UP_ROUNDS_MAX: usize = 8;

/// Leaf rows written per batch while preparing the new depth.
const LEAF_ROWS_PER_BATCH: usize = 16 * 1024;

/// The buckets (at the depth being deepened from) of one range that
/// writers touched since its deepening started.
pub(crate) struct Touched {
    range: u16,
    buckets: HashSet<u32>,
}

/// What one [`Store::deepen`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deepened {
    /// The range.
    pub range: u16,
    /// The tree's shape before.
    pub from: TreeShape,
    /// The tree's shape now.
    pub to: TreeShape,
    /// Entries under the root at the switch.
    pub entries: u64,
    /// Buckets recomputed because writes touched them while the deepening
    /// ran (without the writer lock, then with it).
    pub caught_up: u64,
    /// Of those, the ones recomputed under the writer lock.
    pub caught_up_locked: u64,
    /// Wall time of the whole deepening, ms.
    pub took_ms: u64,
    /// Of which writers waited (the switch), ms.
    pub locked_ms: u64,
}

/// The error of a deepening given up because `stop()` said so.
pub(crate) fn stopped(stop: &(dyn Fn() -> bool + Sync)) -> Result<(), StoreError> {
    if stop() {
        return Err(StoreError::Backend {
            message: "deepening given up: stopping".into(),
            retryable: true,
        });
    }
    Ok(())
}

/// Clears the store's deepening record however the deepening ends.
struct Recording<'a, B: Backend>(&'a Store<B>);

impl<B: Backend> Drop for Recording<'_, B> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.0.deepening.lock() {
            *d = None;
        }
    }
}

impl<B: Backend> Store<B> {
    /// Notes leaves a commit changed, for a deepening in progress. Called
    /// after the commit's rows are in, under the writer lock.
    pub(crate) fn touched(&self, leaves: &[(u16, u32, Agg)]) -> Result<(), StoreError> {
        let mut d = self.deepening.lock().map_err(|_| poisoned())?;
        if let Some(t) = d.as_mut() {
            t.buckets.extend(
                leaves
                    .iter()
                    .filter(|(r, _, _)| *r == t.range)
                    .map(|(_, b, _)| *b),
            );
        }
        Ok(())
    }

    /// Whether range `range` is due to deepen: more than `per_bucket`
    /// entries per bucket on average, and room below.
    pub fn deepen_due(&self, range: u16, per_bucket: u64) -> Result<bool, StoreError> {
        let shape = self.shape(range)?;
        let entries = self.root(range)?.count;
        Ok(shape.depth < self.row_depth(range)?
            && entries > per_bucket.saturating_mul(shape.buckets()))
    }

    /// Deepens range `range`'s tree by one level online (see the module
    /// docs): writes go on throughout, and wait only for the switch. One
    /// deepening runs at a time; a second is refused.
    pub fn deepen(&self, range: u16) -> Result<Deepened, StoreError> {
        self.deepen_until(range, &|| false)
    }

    /// [`Store::deepen`], giving up (before the switch, leaving the tree as
    /// it was) at its next step once `stop()` says so: an agent shutting
    /// down does not wait for a deepening of millions of entries.
    pub fn deepen_until(
        &self,
        range: u16,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Deepened, StoreError> {
        let started = Instant::now();
        let from = self.shape(range)?;
        let row_depth = self.row_depth(range)?;
        if from.depth >= row_depth {
            return Err(StoreError::Input(mend_core::CoreError::Ranges(format!(
                "range {range}: its tree is at depth {}, the deepest its rows allow{}",
                from.depth,
                if row_depth == from.depth && self.params()?.format < 3 {
                    " (a format-2 store keeps the depth it was created with)"
                } else {
                    ""
                }
            ))));
        }
        let to = from.at_depth(from.depth + 1)?;
        let layout = self.layout(range, to.depth)?;
        {
            let mut d = self.deepening.lock().map_err(|_| poisoned())?;
            if let Some(t) = d.as_ref() {
                return Err(StoreError::Backend {
                    message: format!("range {} is deepening now; try again later", t.range),
                    retryable: true,
                });
            }
            *d = Some(Touched {
                range,
                buckets: HashSet::new(),
            });
        }
        let _recording = Recording(self);
        // Rows of the new depth left by a deepening that did not finish.
        self.clear_leaf_rows(range, |t| t == to.depth)?;

        // 1. The new leaves from the data.
        let mut leaves = self.leaves_in_spans(layout, to.buckets(), stop)?;

        // 2. Catch up without the lock, write the new rows, and catch up
        //    again on what was written meanwhile (writing a million rows
        //    takes seconds), each later round writing its buckets' rows.
        let f = from.fanout;
        let mut caught_up = self.catch_up(layout, f, &mut leaves, stop, false)?;
        let mut ops = Vec::with_capacity(LEAF_ROWS_PER_BATCH);
        for (b, a) in leaves.iter().enumerate() {
            if !a.is_empty() {
                ops.push(leaf_op(&layout, b as u32, a));
            }
            if ops.len() == LEAF_ROWS_PER_BATCH {
                self.backend.write(std::mem::take(&mut ops), false)?;
            }
        }
        if !ops.is_empty() {
            self.backend.write(ops, false)?;
        }
        caught_up += self.catch_up(layout, f, &mut leaves, stop, true)?;

        // 3. The switch.
        stopped(stop)?;
        let lock_at = Instant::now();
        let _w = self.writer()?;
        let last = self.take_touched(|_| true)?.unwrap_or_default();
        self.recompute(layout, f, &last, &mut leaves)?;
        let mut ops: Vec<Op> = Vec::with_capacity(last.len() * f as usize + 1);
        for b in &last {
            for c in *b * f..(*b + 1) * f {
                ops.push(leaf_op(&layout, c, &leaves[c as usize]));
            }
        }
        let tree = RangeTree::from_leaves(to, leaves);
        let entries;
        {
            let trees = self.trees_read()?;
            let old = &trees[usize::from(range)];
            entries = old.root().count;
            if let Some(b) = (0..from.buckets() as u32)
                .find(|b| tree.node(from.depth, *b) != Some(old.leaves()[*b as usize]))
            {
                return Err(corrupt(format!(
                    "range {range}: deepening to depth {}: bucket {b}'s new children do not sum \
                     to its leaf (the tree or the data changed unseen); not switched, run \
                     `mend verify`",
                    to.depth
                )));
            }
        }
        let mut params: Params = self.params()?.clone();
        if params.depths.is_empty() {
            params.depths = params.ranges.iter().map(|s| s.shape.depth).collect();
            let trees = self.trees_read()?;
            for (id, t) in trees.iter().enumerate() {
                params.depths[id] = t.shape().depth;
            }
        }
        params.depths[usize::from(range)] = to.depth;
        let raw = serde_json::to_vec(&params).map_err(|e| corrupt(e.to_string()))?;
        ops.push(Op::Put(Cf::Meta, keys::META_PARAMS.to_vec(), raw));
        {
            let mut trees = self.trees_write()?;
            self.backend.write(ops, true)?;
            trees[usize::from(range)] = tree;
        }
        *self.params()? = params;
        drop(_w);
        let locked_ms = lock_at.elapsed().as_millis() as u64;

        // 4. The old depth's rows.
        self.clear_leaf_rows(range, |t| t != to.depth)?;
        Ok(Deepened {
            range,
            from,
            to,
            entries,
            caught_up: caught_up + last.len() as u64,
            caught_up_locked: last.len() as u64,
            took_ms: started.elapsed().as_millis() as u64,
            locked_ms,
        })
    }

    /// Rounds of recomputing touched buckets without the writer lock, while
    /// more than [`CATCH_UP_LOCKED_MAX`] are touched (at most
    /// [`CATCH_UP_ROUNDS_MAX`]); with `write`, each round also writes the
    /// recomputed buckets' leaf rows. Returns the buckets recomputed.
    fn catch_up(
        &self,
        layout: keys::Layout,
        fanout: u32,
        leaves: &mut [Agg],
        stop: &(dyn Fn() -> bool + Sync),
        write: bool,
    ) -> Result<u64, StoreError> {
        let mut caught_up = 0u64;
        for _ in 0..CATCH_UP_ROUNDS_MAX {
            stopped(stop)?;
            let Some(batch) = self.take_touched(|n| n > CATCH_UP_LOCKED_MAX)? else {
                break;
            };
            caught_up += batch.len() as u64;
            self.recompute(layout, fanout, &batch, leaves)?;
            if write {
                let ops: Vec<Op> = batch
                    .iter()
                    .flat_map(|b| *b * fanout..(*b + 1) * fanout)
                    .map(|c| leaf_op(&layout, c, &leaves[c as usize]))
                    .collect();
                for chunk in ops.chunks(LEAF_ROWS_PER_BATCH) {
                    self.backend.write(chunk.to_vec(), false)?;
                }
            }
        }
        Ok(caught_up)
    }

    /// Takes the touched buckets when `take(how many)` says so.
    fn take_touched(&self, take: impl Fn(usize) -> bool) -> Result<Option<Vec<u32>>, StoreError> {
        let mut d = self.deepening.lock().map_err(|_| poisoned())?;
        let Some(t) = d.as_mut() else {
            return Err(corrupt("deepening record lost"));
        };
        if !take(t.buckets.len()) {
            return Ok(None);
        }
        let mut out: Vec<u32> = t.buckets.drain().collect();
        out.sort_unstable();
        Ok(Some(out))
    }

    /// Recomputes from the data the new leaves under each of `coarse` (old
    /// buckets, ascending), `fanout` each.
    fn recompute(
        &self,
        layout: keys::Layout,
        fanout: u32,
        coarse: &[u32],
        leaves: &mut [Agg],
    ) -> Result<(), StoreError> {
        let fresh: Vec<Result<Vec<Agg>, StoreError>> = coarse
            .par_iter()
            .map(|b| {
                let lo = u64::from(*b) * u64::from(fanout);
                self.leaves_from_data(layout, lo, lo + u64::from(fanout))
            })
            .collect();
        for (b, agg) in coarse.iter().zip(fresh) {
            let lo = (*b * fanout) as usize;
            leaves[lo..lo + fanout as usize].copy_from_slice(&agg?);
        }
        Ok(())
    }

    /// Deletes range `range`'s leaf rows whose depth tag `drop(tag)` picks,
    /// in batches, without the writer lock (no reader reads rows of a depth
    /// other than its tree's).
    fn clear_leaf_rows(&self, range: u16, drop: impl Fn(u32) -> bool) -> Result<(), StoreError> {
        let end = keys::range_end(range);
        let mut from = keys::range_start(range);
        loop {
            let mut ops = Vec::new();
            let (mut bad, mut seen, mut last) = (None, 0usize, None);
            self.backend
                .scan(Cf::Leaves, &from, Some(&end), &mut |k, _| {
                    let Some(tag) = k.get(2).map(|t| u32::from(*t)) else {
                        bad = Some(format!("leaf row key {k:02x?}"));
                        return false;
                    };
                    if drop(tag) {
                        ops.push(Op::Delete(Cf::Leaves, k.to_vec()));
                    }
                    seen += 1;
                    if seen == LEAF_ROWS_PER_BATCH {
                        last = Some(k.to_vec());
                        return false;
                    }
                    true
                })?;
            if let Some(why) = bad {
                return Err(corrupt(why));
            }
            if !ops.is_empty() {
                self.backend.write(ops, false)?;
            }
            match last {
                Some(mut k) => {
                    k.push(0);
                    from = k;
                }
                None => return Ok(()),
            }
        }
    }
}
