//! Reads: point gets, node aggregates and leaf entry lists for the exchange,
//! and statistics. Node aggregates come from the in-memory tree; entry lists
//! are scanned under the tree's read lock, so a batch of either describes one
//! committed state even while writes continue.

use serde::Serialize;

use mend_core::{Agg, Digest, EntryMeta, Record, TreeShape};

use super::{Store, corrupt};
use crate::backend::{Backend, Cf};
use crate::error::StoreError;
use crate::keys;

/// Leaf listings of at least this many buckets are scanned as two halves
/// side by side on rayon's pool (the leaf step's listing and hashing on both
/// cores); smaller ones on the caller's thread, where handing off costs
/// more than it saves.
pub const LEAF_LIST_PARALLEL_BUCKETS_MIN: usize = 64;

/// Entries grouped by bucket, in bucket order, empty buckets omitted.
type Listing = Vec<(u32, Vec<LeafEntry>)>;

/// One entry of a leaf, as listed for the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafEntry {
    /// The user key.
    pub key: Vec<u8>,
    /// Version, tombstone flag, value hash.
    pub meta: EntryMeta,
    /// The keyed entry digest.
    pub digest: Digest,
}

/// Statistics of one range.
#[derive(Debug, Clone, Serialize)]
pub struct RangeStats {
    /// Range name.
    pub name: String,
    /// Live keys.
    pub keys: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Tree fan-out.
    pub fanout: u32,
    /// Tree depth.
    pub depth: u32,
    /// Buckets (leaves).
    pub buckets: u64,
    /// Root hash, hex.
    pub root: String,
    /// Bytes of the in-memory tree.
    pub tree_memory_bytes: u64,
}

/// Statistics of a store.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Live keys over all ranges.
    pub keys: u64,
    /// Tombstones over all ranges.
    pub tombstones: u64,
    /// Per range.
    pub ranges: Vec<RangeStats>,
    /// Approximate bytes on disk.
    pub disk_bytes: u64,
}

fn bad_request(msg: String) -> StoreError {
    StoreError::Input(mend_core::CoreError::Ranges(msg))
}

impl<B: Backend> Store<B> {
    /// Reads a key's current entry (tombstones included).
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let (_, _, dkey) = self.locate_row(key)?;
        match self.backend.get(Cf::Data, &dkey)? {
            Some(raw) => Ok(Some(
                Record::decode(&raw).map_err(|e| corrupt(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    /// The current records of `keys`, in order, read with one batched
    /// backend read. These are the reads that move values (repair, fetch):
    /// a key of a digest-only range is refused, since its record has no
    /// value to move and sending one would plant an empty value elsewhere.
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, StoreError> {
        let dkeys = keys
            .iter()
            .map(|k| {
                let (range, _, d) = self.locate_row(k)?;
                if let Some(spec) = self.ranges.get(range)
                    && spec.mode == mend_core::RangeMode::Digests
                {
                    return Err(StoreError::WrongMode {
                        range: spec.name.clone(),
                        mode: spec.mode.as_str(),
                        why: "its values are not held here; repair through the source's adapter"
                            .into(),
                    });
                }
                Ok(d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = dkeys.iter().map(Vec::as_slice).collect();
        self.backend
            .multi_get(Cf::Data, &refs)?
            .into_iter()
            .map(|raw| {
                raw.map(|r| Record::decode(&r).map_err(|e| corrupt(e.to_string())))
                    .transpose()
            })
            .collect()
    }

    /// The shape of range `range`'s tree now (its depth grows as the
    /// range does, [`Store::deepen`]; never shrinks).
    pub fn shape(&self, range: u16) -> Result<TreeShape, StoreError> {
        self.trees_read()?
            .get(usize::from(range))
            .map(|t| t.shape())
            .ok_or_else(|| bad_request(format!("no range with id {range}")))
    }

    /// The shape of range `range` at `depth`, if its tree is at least that
    /// deep now (a tree presents itself at any smaller depth by its upper
    /// levels: a node's aggregate is the same at every depth).
    pub fn shape_at(&self, range: u16, depth: u32) -> Result<TreeShape, StoreError> {
        let now = self.shape(range)?;
        if depth == 0 || depth > now.depth {
            return Err(bad_request(format!(
                "depth {depth}: range {range}'s tree has depth {} (1..={} can be compared)",
                now.depth, now.depth
            )));
        }
        Ok(TreeShape {
            fanout: now.fanout,
            depth,
        })
    }

    /// The root aggregate of range `range`.
    pub fn root(&self, range: u16) -> Result<Agg, StoreError> {
        self.shape(range)?;
        Ok(self.trees_read()?[range as usize].root())
    }

    /// Aggregates of nodes `indices` at `level` of range `range`, read from
    /// one consistent state.
    pub fn node_aggs(
        &self,
        range: u16,
        level: u32,
        indices: &[u32],
    ) -> Result<Vec<Agg>, StoreError> {
        self.shape(range)?;
        let trees = self.trees_read()?;
        let t = &trees[range as usize];
        indices
            .iter()
            .map(|i| {
                t.node(level, *i).ok_or_else(|| {
                    bad_request(format!("node {i} at level {level} is outside the tree"))
                })
            })
            .collect()
    }

    /// Aggregates of all children of `parents` at `level` (children at
    /// `level + 1`), in order: `fanout` per parent.
    pub fn child_aggs(
        &self,
        range: u16,
        level: u32,
        parents: &[u32],
    ) -> Result<Vec<Agg>, StoreError> {
        let shape = self.shape(range)?;
        if level >= shape.depth {
            return Err(bad_request(format!(
                "level {level} has no children (depth {})",
                shape.depth
            )));
        }
        let mut idx = Vec::with_capacity(parents.len() * shape.fanout as usize);
        for p in parents {
            for c in 0..shape.fanout {
                idx.push(p.saturating_mul(shape.fanout).saturating_add(c));
            }
        }
        self.node_aggs(range, level + 1, &idx)
    }

    /// The entries of each of `buckets` of range `range`, in key order per
    /// bucket, from one consistent state.
    pub fn leaf_entries(
        &self,
        range: u16,
        buckets: &[u32],
    ) -> Result<Vec<(u32, Vec<LeafEntry>)>, StoreError> {
        let depth = self.shape(range)?.depth;
        self.leaf_entries_at(range, depth, buckets)
    }

    /// [`Store::leaf_entries`] of buckets at `depth` (at most the tree's).
    pub fn leaf_entries_at(
        &self,
        range: u16,
        depth: u32,
        buckets: &[u32],
    ) -> Result<Vec<(u32, Vec<LeafEntry>)>, StoreError> {
        let shape = self.shape_at(range, depth)?;
        let layout = self.layout(range, depth)?;
        let mut out = Vec::with_capacity(buckets.len());
        for b in buckets {
            if *b as u64 >= shape.buckets() {
                return Err(bad_request(format!("bucket {b} is outside the tree")));
            }
            let mut entries = Vec::new();
            let mut bad = None;
            self.backend.scan(
                Cf::Data,
                &layout.data_start(*b),
                Some(&layout.data_end(*b as u64 + 1)),
                &mut |k, v| match Record::decode_meta(v) {
                    Ok((meta, _)) => {
                        let key = k[keys::DATA_PREFIX..].to_vec();
                        let digest = meta.digest(&self.secret, &key);
                        entries.push(LeafEntry { key, meta, digest });
                        true
                    }
                    Err(e) => {
                        bad = Some(e);
                        false
                    }
                },
            )?;
            if let Some(e) = bad {
                return Err(corrupt(format!("bucket {b}: {e}")));
            }
            if !layout.rows_in_key_order() {
                entries.sort_unstable_by(|x: &LeafEntry, y| x.key.cmp(&y.key));
            }
            out.push((*b, entries));
        }
        Ok(out)
    }

    /// The entries of buckets `first..first + count` of range `range`, listed
    /// with one scan (memory proportional to the entries found, not to the
    /// span), grouped by bucket; empty buckets are omitted. Holds no lock
    /// (see `list_halves`).
    pub fn leaf_entries_span(
        &self,
        range: u16,
        first: u32,
        count: u32,
    ) -> Result<Vec<(u32, Vec<LeafEntry>)>, StoreError> {
        let depth = self.shape(range)?.depth;
        self.leaf_entries_span_at(range, depth, first, count)
    }

    /// [`Store::leaf_entries_span`] of buckets at `depth` (at most the
    /// tree's).
    pub fn leaf_entries_span_at(
        &self,
        range: u16,
        depth: u32,
        first: u32,
        count: u32,
    ) -> Result<Vec<(u32, Vec<LeafEntry>)>, StoreError> {
        let shape = self.shape_at(range, depth)?;
        let layout = self.layout(range, depth)?;
        let end = first as u64 + count as u64;
        if count == 0 || end > shape.buckets() {
            return Err(bad_request(format!(
                "buckets {first}+{count} are outside the tree"
            )));
        }
        self.list_halves(layout, count as usize, &|i, j| {
            self.list_span(layout, first + i as u32, first as u64 + j as u64)
        })
    }

    /// The entries of buckets `lo..hi` at `layout`, in one scan.
    fn list_span(&self, layout: keys::Layout, lo: u32, hi: u64) -> Result<Listing, StoreError> {
        let mut out: Listing = Vec::new();
        let mut bad = None;
        self.backend.scan(
            Cf::Data,
            &layout.data_start(lo),
            Some(&layout.data_end(hi)),
            &mut |k, v| {
                let Some((_, row, key)) = keys::split_data_key(k) else {
                    bad = Some("short data key".to_string());
                    return false;
                };
                self.push_listed(&mut out, &mut bad, layout.bucket_of_row(row), key, v)
            },
        )?;
        if let Some(why) = bad {
            return Err(corrupt(why));
        }
        Ok(out)
    }

    /// Lists `n` buckets with `list(i, j)` (the `i..j`th of them, in bucket
    /// order), from [`LEAF_LIST_PARALLEL_BUCKETS_MIN`] buckets as two halves
    /// side by side on rayon's pool (the leaf step's listing and hashing on
    /// both cores), joined in bucket order. No lock is held, so a listing never holds a
    /// writer back: each scan reads one state (an iterator's snapshot), and
    /// a commit may land between the halves as one may between an
    /// exchange's rounds; the descent compares what each side holds at its
    /// step, and the next exchange finds a write that landed meanwhile.
    ///
    /// A bucket shallower than the row depth spans several row prefixes,
    /// its rows in (prefix, key) order: each group is sorted by key here,
    /// so a listing is in key order per bucket at every depth.
    fn list_halves(
        &self,
        layout: keys::Layout,
        n: usize,
        list: &(dyn Fn(usize, usize) -> Result<Listing, StoreError> + Sync),
    ) -> Result<Listing, StoreError> {
        let sorted = |l: Result<Listing, StoreError>| {
            let mut l = l?;
            if !layout.rows_in_key_order() {
                for (_, es) in &mut l {
                    es.sort_unstable_by(|x, y| x.key.cmp(&y.key));
                }
            }
            Ok::<_, StoreError>(l)
        };
        if n < LEAF_LIST_PARALLEL_BUCKETS_MIN {
            return sorted(list(0, n));
        }
        let mid = n / 2;
        let (a, b) = rayon::join(|| sorted(list(0, mid)), || sorted(list(mid, n)));
        let mut out = a?;
        out.extend(b?);
        Ok(out)
    }

    /// The entries of each of `buckets` (ascending, no repeats) of range
    /// `range`, grouped by bucket, empty buckets omitted: one pass over the
    /// backend (one RocksDB iterator seeking from bucket to bucket). Holds no
    /// lock (see `list_halves`).
    pub fn leaf_entries_of(
        &self,
        range: u16,
        buckets: &[u32],
    ) -> Result<Vec<(u32, Vec<LeafEntry>)>, StoreError> {
        let depth = self.shape(range)?.depth;
        self.leaf_entries_of_at(range, depth, buckets)
    }

    /// [`Store::leaf_entries_of`] of buckets at `depth` (at most the
    /// tree's).
    pub fn leaf_entries_of_at(
        &self,
        range: u16,
        depth: u32,
        buckets: &[u32],
    ) -> Result<Vec<(u32, Vec<LeafEntry>)>, StoreError> {
        let shape = self.shape_at(range, depth)?;
        let layout = self.layout(range, depth)?;
        if let Some(b) = buckets.iter().find(|b| **b as u64 >= shape.buckets()) {
            return Err(bad_request(format!("bucket {b} is outside the tree")));
        }
        if buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad_request(
                "buckets must be ascending and distinct".to_string(),
            ));
        }
        self.list_halves(layout, buckets.len(), &|i, j| {
            self.list_of(layout, &buckets[i..j])
        })
    }

    /// The entries of `buckets` at `layout`, in one pass of
    /// [`Backend::scan_spans`].
    fn list_of(&self, layout: keys::Layout, buckets: &[u32]) -> Result<Listing, StoreError> {
        let spans: Vec<(Vec<u8>, Vec<u8>)> = buckets
            .iter()
            .map(|b| (layout.data_start(*b), layout.data_end(*b as u64 + 1)))
            .collect();
        let mut out: Listing = Vec::new();
        let mut bad = None;
        self.backend.scan_spans(Cf::Data, &spans, &mut |i, k, v| {
            let Some((_, row, key)) = keys::split_data_key(k) else {
                bad = Some("short data key".to_string());
                return false;
            };
            let bucket = layout.bucket_of_row(row);
            debug_assert_eq!(bucket, buckets[i], "a span holds its bucket's rows only");
            self.push_listed(&mut out, &mut bad, bucket, key, v)
        })?;
        if let Some(why) = bad {
            return Err(corrupt(why));
        }
        Ok(out)
    }

    /// Decodes a data row of `bucket` into a [`LeafEntry`] and appends it to
    /// its bucket's group in `out` (rows arrive in bucket order); on a
    /// corrupt record notes why in `bad` and returns false (stop the scan).
    fn push_listed(
        &self,
        out: &mut Listing,
        bad: &mut Option<String>,
        bucket: u32,
        key: &[u8],
        raw: &[u8],
    ) -> bool {
        match Record::decode_meta(raw) {
            Ok((meta, _)) => {
                let digest = meta.digest(&self.secret, key);
                let e = LeafEntry {
                    key: key.to_vec(),
                    meta,
                    digest,
                };
                match out.last_mut() {
                    Some((lb, es)) if *lb == bucket => es.push(e),
                    _ => out.push((bucket, vec![e])),
                }
                true
            }
            Err(e) => {
                *bad = Some(format!("bucket {bucket}: {e}"));
                false
            }
        }
    }

    /// Up to `n` entries of range `range` drawn uniformly at random (with
    /// replacement) by descending the tree by its entry counts, so no scan
    /// is needed; `seed` makes the draw reproducible.
    pub fn sample_entries(
        &self,
        range: u16,
        n: usize,
        seed: u64,
    ) -> Result<Vec<LeafEntry>, StoreError> {
        self.shape(range)?;
        let mut picks: Vec<(u32, u64)> = Vec::with_capacity(n);
        let shape;
        {
            let trees = self.trees_read()?;
            let t = &trees[range as usize];
            shape = t.shape();
            let total = t.root().count;
            if total == 0 {
                return Ok(Vec::new());
            }
            let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
            for _ in 0..n {
                // splitmix64
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let mut r = z % total;
                let mut idx = 0u32;
                for level in 1..=shape.depth {
                    let first = idx * shape.fanout;
                    let mut chosen = first;
                    for c in first..first + shape.fanout {
                        let cnt = t.node(level, c).map(|a| a.count).unwrap_or(0);
                        chosen = c;
                        if r < cnt {
                            break;
                        }
                        r -= cnt;
                    }
                    idx = chosen;
                }
                picks.push((idx, r));
            }
        }
        picks.sort_unstable();
        let mut out = Vec::with_capacity(n);
        let mut cache: Option<(u32, Vec<LeafEntry>)> = None;
        for (b, r) in picks {
            if cache.as_ref().is_none_or(|(cb, _)| *cb != b) {
                let listed = self.leaf_entries_at(range, shape.depth, &[b])?;
                cache = listed.into_iter().next();
            }
            if let Some((_, es)) = &cache
                && !es.is_empty()
            {
                out.push(es[(r as usize).min(es.len() - 1)].clone());
            }
        }
        Ok(out)
    }

    /// Counts keys and tombstones (one scan of the data) and reports shapes.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut ranges = Vec::new();
        let (mut keys_total, mut tombs_total) = (0, 0);
        for (id, spec) in self.ranges.specs().iter().enumerate() {
            let (mut live, mut tombs) = (0u64, 0u64);
            self.backend.scan(
                Cf::Data,
                &keys::range_start(id as u16),
                Some(&keys::range_end(id as u16)),
                &mut |_, v| {
                    if v.get(1).is_some_and(|f| f & 1 == 1) {
                        tombs += 1;
                    } else {
                        live += 1;
                    }
                    true
                },
            )?;
            let trees = self.trees_read()?;
            let t = &trees[id];
            let shape = t.shape();
            ranges.push(RangeStats {
                name: spec.name.clone(),
                keys: live,
                tombstones: tombs,
                fanout: shape.fanout,
                depth: shape.depth,
                buckets: shape.buckets(),
                root: mend_core::record::hex(&t.root().hash()),
                tree_memory_bytes: t.memory_bytes() as u64,
            });
            keys_total += live;
            tombs_total += tombs;
        }
        Ok(Stats {
            keys: keys_total,
            tombstones: tombs_total,
            ranges,
            disk_bytes: self.backend.disk_bytes(),
        })
    }
}
