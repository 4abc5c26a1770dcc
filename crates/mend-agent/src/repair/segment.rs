//! Segments of a repair run (Cassandra Reaper's segments, over mend's
//! trees): a large plan is split by subtree, the planned keys under one
//! range's top-level child (the first fan-out digit of their placement
//! hash) forming one segment, and the run moves one segment at a time.
//!
//! Every segment's plan is written to the journal (`s` rows) in the batch
//! that starts the run, and deleted in the batch that records the segment
//! finished (`RepairHeader::segments_done`), so a run stopped anywhere
//! (paused, failed, or the agent killed) goes on from its first unfinished
//! segment. A segment re-run from its start after a crash is harmless:
//! entries are read fresh and written through the apply rule, so what
//! already moved is an `Equal` no-op and is journaled once.
//!
//! A plan of at most `limits.repair_segment_keys_min` keys is one segment
//! and keeps the whole plan's causal order; a segmented plan keeps it within
//! each segment.

use std::collections::BTreeMap;

use mend_core::classify::{Category, Side};
use mend_core::playbook::Resolution;
use mend_store::{Backend, Cf, Op, Store, StoreError};

use super::Planned;
use crate::journal::{SEGMENT_ROW, prefix_end, row_prefix};

/// The planned keys of one subtree.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// `RANGE/CHILD` (the top-level child's index), or `all` for an
    /// unsegmented plan.
    pub label: String,
    /// Its keys, in plan (causal) order.
    pub planned: Vec<Planned>,
}

/// Splits `planned` into segments: one per (range, top-level child) that
/// has planned keys, in range then child order, or a single `all` segment
/// when the plan has at most `min_keys` keys.
pub fn split<B: Backend>(
    store: &Store<B>,
    planned: Vec<Planned>,
    min_keys: usize,
) -> Result<Vec<Segment>, StoreError> {
    if planned.len() <= min_keys {
        return Ok(vec![Segment {
            label: "all".into(),
            planned,
        }]);
    }
    let mut by: BTreeMap<(u16, u32), Vec<Planned>> = BTreeMap::new();
    for p in planned {
        let (range, _, _) = store.locate(&p.key)?;
        let fanout = store
            .ranges()
            .get(range)
            .map(|r| r.shape.fanout)
            .ok_or_else(|| StoreError::Corrupt(format!("no range {range}")))?;
        // The top-level subtree: the same at every depth the tree has had.
        let top =
            mend_core::TreeShape { fanout, depth: 1 }.bucket_of(store.secret().placement(&p.key));
        by.entry((range, top)).or_default().push(p);
    }
    Ok(by
        .into_iter()
        .map(|((range, child), planned)| Segment {
            label: format!(
                "{}/{child}",
                store.ranges().get(range).map_or("?", |r| r.name.as_str())
            ),
            planned,
        })
        .collect())
}

fn row_key(id: &str, index: u32) -> Vec<u8> {
    let mut k = row_prefix(SEGMENT_ROW, id);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The rows holding every segment's plan of run `id`.
pub fn rows(id: &str, segments: &[Segment]) -> Vec<Op> {
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| Op::Put(Cf::Journal, row_key(id, i as u32), encode(s)))
        .collect()
}

/// The delete of segment `index`'s row, committed with the header that
/// records it finished.
pub fn done_op(id: &str, index: u32) -> Op {
    Op::Delete(Cf::Journal, row_key(id, index))
}

/// The unfinished segments of run `id`, with their indexes, in order.
pub fn load<B: Backend>(store: &Store<B>, id: &str) -> Result<Vec<(u32, Segment)>, StoreError> {
    let prefix = row_prefix(SEGMENT_ROW, id);
    let mut out = Vec::new();
    let mut bad = None;
    store.backend().scan(
        Cf::Journal,
        &prefix,
        Some(&prefix_end(&prefix)),
        &mut |k, v| {
            let index = <[u8; 4]>::try_from(&k[prefix.len()..])
                .ok()
                .map(u32::from_be_bytes);
            match (index, decode(v)) {
                (Some(i), Ok(s)) => {
                    out.push((i, s));
                    true
                }
                (_, Err(e)) => {
                    bad = Some(e);
                    false
                }
                (None, _) => {
                    bad = Some("segment row key");
                    false
                }
            }
        },
    )?;
    match bad {
        Some(e) => Err(StoreError::Corrupt(format!("repair {id}: {e}"))),
        None => Ok(out),
    }
}

/// Deletes every segment row of run `id` (a cancelled or undone run).
pub fn clear<B: Backend>(store: &Store<B>, id: &str) -> Result<(), StoreError> {
    let ops = load(store, id)?
        .into_iter()
        .map(|(i, _)| done_op(id, i))
        .collect::<Vec<_>>();
    if ops.is_empty() {
        return Ok(());
    }
    store.backend().write(ops, false)
}

// Row layout: [label len u16 BE][label] then per key
// [key len u32 BE][key][category len u8][category][behind u8][resolution u8].

fn encode(s: &Segment) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(s.label.len() as u16).to_be_bytes());
    out.extend_from_slice(s.label.as_bytes());
    for p in &s.planned {
        out.extend_from_slice(&(p.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&p.key);
        let c = p.category.as_str();
        out.push(c.len() as u8);
        out.extend_from_slice(c.as_bytes());
        out.push(match p.behind {
            Side::Local => 0,
            Side::Peer => 1,
        });
        out.push(match p.resolution {
            Resolution::Newer => 0,
            Resolution::Authority => 1,
        });
    }
    out
}

fn decode(mut raw: &[u8]) -> Result<Segment, &'static str> {
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if raw.len() < n {
            return Err("segment row truncated");
        }
        let (a, b) = raw.split_at(n);
        *raw = b;
        Ok(a)
    }
    let n = u16::from_be_bytes([take(&mut raw, 1)?[0], take(&mut raw, 1)?[0]]) as usize;
    let label = String::from_utf8(take(&mut raw, n)?.to_vec()).map_err(|_| "segment label")?;
    let mut planned = Vec::new();
    while !raw.is_empty() {
        let len = take(&mut raw, 4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let key = take(&mut raw, len)?.to_vec();
        let c = take(&mut raw, 1)?[0] as usize;
        let category = std::str::from_utf8(take(&mut raw, c)?)
            .ok()
            .and_then(Category::parse)
            .ok_or("segment category")?;
        let behind = match take(&mut raw, 1)?[0] {
            0 => Side::Local,
            1 => Side::Peer,
            _ => return Err("segment side"),
        };
        let resolution = match take(&mut raw, 1)?[0] {
            0 => Resolution::Newer,
            1 => Resolution::Authority,
            _ => return Err("segment resolution"),
        };
        planned.push(Planned {
            key,
            category,
            behind,
            resolution,
        });
    }
    Ok(Segment { label, planned })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_store::MemBackend;

    fn store() -> Store<MemBackend> {
        // Two ranges, `a` and `b`, of fan-out 4.
        Store::open(MemBackend::new(), mend_store::conformance::config("n", 1)).unwrap()
    }

    fn planned(key: String, i: usize) -> Planned {
        Planned {
            key: key.into_bytes(),
            category: [
                Category::Missing,
                Category::Stale,
                Category::UnpropagatedDelete,
            ][i % 3],
            behind: if i.is_multiple_of(2) {
                Side::Peer
            } else {
                Side::Local
            },
            resolution: if i.is_multiple_of(5) {
                Resolution::Authority
            } else {
                Resolution::Newer
            },
        }
    }

    #[test]
    fn a_large_plan_splits_by_top_level_subtree_and_its_rows_round_trip() {
        let s = store();
        let plan: Vec<Planned> = (0..500)
            .map(|i| planned(format!("{}{i:04}", ["a", "x"][i % 2]), i))
            .collect();
        let small = split(&s, plan.clone(), 500).unwrap();
        assert_eq!(small.len(), 1, "at the threshold: one segment");
        assert_eq!(small[0].planned, plan, "in plan order");
        let segs = split(&s, plan.clone(), 10).unwrap();
        assert_eq!(segs.len(), 8, "two ranges × four top-level children");
        let mut n = 0;
        for seg in &segs {
            for p in &seg.planned {
                let (range, bucket, _) = s.locate(&p.key).unwrap();
                let spec = s.ranges().get(range).unwrap();
                assert_eq!(
                    seg.label,
                    format!(
                        "{}/{}",
                        spec.name,
                        s.shape(range).unwrap().ancestor(bucket, 1)
                    ),
                    "every key of a segment is under its subtree"
                );
            }
            let pos: Vec<usize> = seg
                .planned
                .iter()
                .map(|p| plan.iter().position(|q| q.key == p.key).unwrap())
                .collect();
            assert!(
                pos.windows(2).all(|w| w[0] < w[1]),
                "plan order in {}",
                seg.label
            );
            n += seg.planned.len();
        }
        assert_eq!(n, plan.len(), "every key in exactly one segment");
        assert_eq!(segs[0].label, "a/0");
        assert_eq!(segs[7].label, "b/3");

        s.backend().write(rows("r1", &segs), false).unwrap();
        let back: Vec<Segment> = load(&s, "r1")
            .unwrap()
            .into_iter()
            .map(|(_, x)| x)
            .collect();
        assert_eq!(back, segs, "rows round-trip");
        assert!(load(&s, "r").unwrap().is_empty(), "ids do not share rows");
        s.backend().write(vec![done_op("r1", 0)], false).unwrap();
        let left = load(&s, "r1").unwrap();
        assert_eq!(left.len(), 7);
        assert_eq!(left[0].0, 1, "the first unfinished segment comes first");
        clear(&s, "r1").unwrap();
        assert!(load(&s, "r1").unwrap().is_empty());
    }

    #[test]
    fn a_damaged_segment_row_is_a_typed_error_not_a_panic() {
        let s = store();
        let label = "a/3";
        let good = encode(&Segment {
            label: label.into(),
            planned: vec![planned("k".into(), 1)],
        });
        let mut bad_category = good.clone();
        let at = 2 + label.len() + 4 + 1 + 1;
        bad_category[at] = b'?';
        let mut rows: Vec<Vec<u8>> = (0..good.len())
            .filter(|&cut| cut != 2 + label.len()) // a valid empty segment
            .map(|cut| good[..cut].to_vec())
            .collect();
        rows.push(bad_category);
        for row in rows {
            s.backend()
                .write(
                    vec![Op::Put(Cf::Journal, row_key("r", 0), row.clone())],
                    false,
                )
                .unwrap();
            assert!(
                matches!(load(&s, "r"), Err(StoreError::Corrupt(_))),
                "{row:?}"
            );
        }
    }
}
