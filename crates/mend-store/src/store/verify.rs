//! Rebuild, verify and tombstone purge.
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

use super::{Store, corrupt, load_tree};
use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::keys;
use crate::tree::RangeTree;

/// Bucket spans per rebuild: enough for rayon to balance uneven buckets.
const REBUILD_SPANS: u64 = 256;

/// Ops per purge batch.
const PURGE_BATCH_OPS: usize = 4096;

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
    /// Recomputes the leaves of range `range` from the data rows.
    pub fn rebuild_leaves(&self, range: u16) -> Result<Vec<Agg>, StoreError> {
        let shape = self.shape(range)?;
        let buckets = shape.buckets();
        let spans = REBUILD_SPANS.min(buckets);
        let per = buckets / spans;
        let parts: Vec<Result<Vec<Agg>, StoreError>> = (0..spans)
            .into_par_iter()
            .map(|s| {
                let lo = s * per;
                let hi = if s + 1 == spans { buckets } else { lo + per };
                let mut leaves = vec![Agg::default(); (hi - lo) as usize];
                let mut bad = None;
                self.backend.scan(
                    Cf::Data,
                    &keys::bucket_key(range, lo as u32),
                    Some(&keys::bucket_end(range, hi)),
                    &mut |k, v| {
                        let Some((_, b, key)) = keys::split_data_key(k) else {
                            bad = Some("data row key too short".to_string());
                            return false;
                        };
                        match Record::decode_meta(v) {
                            Ok((mut meta, at)) => {
                                meta.value_hash = value_hash(&v[at..]);
                                let d = meta.digest(&self.secret, key);
                                leaves[(b as u64 - lo) as usize].add_digest(&d);
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
            })
            .collect();
        let mut out = Vec::with_capacity(buckets as usize);
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    /// Compares every range's persisted tree with a rebuild from the data.
    /// Writers are paused for the duration so the two describe one state.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let _w = self.writer()?;
        let mut ranges = Vec::new();
        for (id, spec) in self.ranges.specs().iter().enumerate() {
            let id = id as u16;
            let rebuilt = self.rebuild_leaves(id)?;
            let persisted = load_tree(&self.backend, id, spec)?;
            let mut first = None;
            let mut bad = 0u64;
            for (b, (p, r)) in persisted.leaves().iter().zip(&rebuilt).enumerate() {
                if p != r {
                    bad += 1;
                    first.get_or_insert(b as u32);
                }
            }
            let entries = rebuilt.iter().map(|a| a.count).sum();
            let tree = RangeTree::from_leaves(spec.shape, rebuilt);
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
        for (id, spec) in self.ranges.specs().iter().enumerate() {
            let id = id as u16;
            let rebuilt = self.rebuild_leaves(id)?;
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
                        keys::bucket_key(id, b as u32),
                        a.encode().to_vec(),
                    ));
                }
            }
            let mut trees = self.trees_write()?;
            self.backend.write(ops, true)?;
            trees[id as usize] = RangeTree::from_leaves(spec.shape, rebuilt);
        }
        Ok(())
    }

    /// Removes tombstones whose version is older than `now - grace`,
    /// keeping the tree right. Returns how many were purged.
    pub fn purge_tombstones(&self) -> Result<u64, StoreError> {
        let cutoff = self.now_ms().saturating_sub(self.cfg.tombstone_grace_ms);
        let _w = self.writer()?;
        let mut candidates = Vec::new();
        self.backend.scan(
            Cf::Tombstones,
            &[],
            Some(&cutoff.to_be_bytes()),
            &mut |k, _| {
                candidates.push(k.to_vec());
                true
            },
        )?;
        let mut purged = 0;
        for chunk in candidates.chunks(PURGE_BATCH_OPS / 3) {
            let mut ops = Vec::with_capacity(chunk.len() * 3);
            let mut leaf_updates: std::collections::HashMap<(u16, u32), Agg> = Default::default();
            {
                let trees = self.trees_read()?;
                for idx_key in chunk {
                    ops.push(Op::Delete(Cf::Tombstones, idx_key.clone()));
                    let Some(dkey) = idx_key.get(8..) else {
                        continue;
                    };
                    let Some((range, bucket, key)) = keys::split_data_key(dkey) else {
                        continue;
                    };
                    let Some(raw) = self.backend.get(Cf::Data, dkey)? else {
                        continue;
                    };
                    let (meta, _) =
                        Record::decode_meta(&raw).map_err(|e| corrupt(e.to_string()))?;
                    if !meta.tombstone || meta.version.ms >= cutoff {
                        continue;
                    }
                    let Some(tree) = trees.get(range as usize) else {
                        continue;
                    };
                    let leaf = leaf_updates
                        .entry((range, bucket))
                        .or_insert_with(|| tree.leaves()[bucket as usize]);
                    leaf.sub_digest(&meta.digest(&self.secret, key));
                    ops.push(Op::Delete(Cf::Data, dkey.to_vec()));
                    purged += 1;
                }
            }
            for ((range, bucket), a) in &leaf_updates {
                let k = keys::bucket_key(*range, *bucket);
                if a.is_empty() {
                    ops.push(Op::Delete(Cf::Leaves, k));
                } else {
                    ops.push(Op::Put(Cf::Leaves, k, a.encode().to_vec()));
                }
            }
            let mut trees = self.trees_write()?;
            self.backend.write(ops, self.cfg.sync_writes)?;
            for ((range, bucket), a) in leaf_updates {
                trees[range as usize].set_leaf(bucket, a);
            }
        }
        Ok(purged)
    }
}
