//! Builders and parsers of the row keys whose layouts
//! [`crate::backend::Cf`] documents beside each column family, and the
//! names of the fixed `meta` rows.

/// Prefix length of a data key: range id and bucket.
pub const DATA_PREFIX: usize = 6;

// The prefixes are a u16 range id and a u32 bucket (data, leaves) or u64
// arrival ms (tombstone index): the splitters below and the store's leaf
// loader index into keys by these lengths.
const _: () = assert!(DATA_PREFIX == size_of::<u16>() + size_of::<u32>());
const _: () = assert!(TOMBSTONE_PREFIX == size_of::<u16>() + size_of::<u64>());

/// The data row key of `key` in bucket `bucket` of range `range`.
pub fn data_key(range: u16, bucket: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(DATA_PREFIX + key.len());
    k.extend_from_slice(&range.to_be_bytes());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The first data key of bucket `bucket` (also the leaf row key).
pub fn bucket_key(range: u16, bucket: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(DATA_PREFIX);
    k.extend_from_slice(&range.to_be_bytes());
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// The exclusive end of buckets `..end_bucket` of `range` (the start of the
/// next range when `end_bucket` is past the last bucket).
pub fn bucket_end(range: u16, end_bucket: u64) -> Vec<u8> {
    if end_bucket > u32::MAX as u64 {
        return range_end(range);
    }
    bucket_key(range, end_bucket as u32)
}

/// The first key of a range.
pub fn range_start(range: u16) -> Vec<u8> {
    range.to_be_bytes().to_vec()
}

/// The exclusive end of a range.
pub fn range_end(range: u16) -> Vec<u8> {
    match range.checked_add(1) {
        Some(n) => n.to_be_bytes().to_vec(),
        None => vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    }
}

/// Splits a data key into (range, bucket, user key).
pub fn split_data_key(k: &[u8]) -> Option<(u16, u32, &[u8])> {
    if k.len() <= DATA_PREFIX {
        return None;
    }
    let range = u16::from_be_bytes([k[0], k[1]]);
    let bucket = u32::from_be_bytes([k[2], k[3], k[4], k[5]]);
    Some((range, bucket, &k[DATA_PREFIX..]))
}

/// Bits of a format-3 leaf row's bucket field below the tree depth it
/// belongs to: `[range u16][depth u8][bucket u24]`. Every bucket fits
/// ([`mend_core::limits::BUCKETS_MAX`]), and a depth is at least 1, so a
/// tagged row never reads as an untagged (format-2) one.
pub const LEAF_DEPTH_SHIFT: u32 = 24;
const _: () = assert!(mend_core::limits::BUCKETS_MAX == 1 << LEAF_DEPTH_SHIFT);

/// Where one range's rows are at one tree depth.
///
/// A data row's prefix is its key's bucket at the range's *row depth*
/// (format 3: the deepest depth its fan-out allows,
/// [`mend_core::TreeShape::max_depth`]; format 2: the depth it was created
/// with), so a bucket at any depth up to the row depth is one contiguous
/// span of rows, and a tree deepens without moving a row. Leaf rows of a
/// format-3 store carry their depth ([`LEAF_DEPTH_SHIFT`]), so a deepening
/// writes the next depth's leaves beside the current ones and switches in
/// one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    range: u16,
    /// Row-prefix bits below a bucket at this depth.
    shift: u32,
    /// The depth leaf keys are tagged with (format 3), or none (format 2).
    tag: Option<u32>,
}

impl Layout {
    /// Range `range` at `depth`, its rows at `row_depth` (`depth <=
    /// row_depth`), `fanout_bits` bits per level.
    pub fn new(range: u16, fanout_bits: u32, row_depth: u32, depth: u32, tagged: bool) -> Layout {
        debug_assert!(
            depth <= row_depth,
            "depth {depth} past row depth {row_depth}"
        );
        Layout {
            range,
            shift: fanout_bits * row_depth.saturating_sub(depth),
            tag: tagged.then_some(depth),
        }
    }

    /// The range.
    pub fn range(&self) -> u16 {
        self.range
    }

    /// Whether a bucket's rows are in key order (a bucket is one row
    /// prefix); otherwise they are in (row prefix, key) order.
    pub fn rows_in_key_order(&self) -> bool {
        self.shift == 0
    }

    /// The first data key of `bucket`.
    pub fn data_start(&self, bucket: u32) -> Vec<u8> {
        bucket_end(self.range, u64::from(bucket) << self.shift)
    }

    /// The exclusive end of the data rows of buckets `..end`.
    pub fn data_end(&self, end: u64) -> Vec<u8> {
        bucket_end(self.range, end << self.shift)
    }

    /// The bucket at this depth of a data row with prefix `row`.
    pub fn bucket_of_row(&self, row: u32) -> u32 {
        row >> self.shift
    }

    fn tagged(&self, bucket: u64) -> u64 {
        match self.tag {
            Some(d) => (u64::from(d) << LEAF_DEPTH_SHIFT) + bucket,
            None => bucket,
        }
    }

    /// The leaf row key of `bucket`.
    pub fn leaf_key(&self, bucket: u32) -> Vec<u8> {
        bucket_end(self.range, self.tagged(u64::from(bucket)))
    }

    /// The exclusive end of the leaf rows of buckets `..end`.
    pub fn leaf_end(&self, end: u64) -> Vec<u8> {
        bucket_end(self.range, self.tagged(end))
    }

    /// Whether `k` is a leaf row of this range at another valid depth (rows
    /// a deepening left behind, or wrote ahead of its switch).
    pub fn is_other_depth(&self, k: &[u8]) -> bool {
        let Some(d) = self.tag else { return false };
        k.len() == DATA_PREFIX
            && k[..2] == self.range.to_be_bytes()
            && (1..=mend_core::limits::DEPTH_MAX).contains(&u32::from(k[2]))
            && u32::from(k[2]) != d
    }

    /// The bucket of leaf row key `k`, if it is a leaf row of this range at
    /// this depth.
    pub fn leaf_bucket(&self, k: &[u8]) -> Option<u32> {
        let k: [u8; DATA_PREFIX] = k.try_into().ok()?;
        if u16::from_be_bytes([k[0], k[1]]) != self.range {
            return None;
        }
        let raw = u32::from_be_bytes([k[2], k[3], k[4], k[5]]);
        match self.tag {
            Some(d) if raw >> LEAF_DEPTH_SHIFT == d => Some(raw & ((1 << LEAF_DEPTH_SHIFT) - 1)),
            Some(_) => None,
            None => Some(raw),
        }
    }
}

/// Prefix length of a tombstone index key: range id and arrival ms.
pub const TOMBSTONE_PREFIX: usize = 10;

/// A tombstone index key: the tombstone at `data_key` of `range` arrived
/// at local wall time `arrived_ms`.
pub fn tombstone_key(range: u16, arrived_ms: u64, data_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(TOMBSTONE_PREFIX + data_key.len());
    k.extend_from_slice(&range.to_be_bytes());
    k.extend_from_slice(&arrived_ms.to_be_bytes());
    k.extend_from_slice(data_key);
    k
}

/// The exclusive end of `range`'s tombstone index rows that arrived before
/// `arrived_ms`.
pub fn tombstone_end(range: u16, arrived_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(TOMBSTONE_PREFIX);
    k.extend_from_slice(&range.to_be_bytes());
    k.extend_from_slice(&arrived_ms.to_be_bytes());
    k
}

/// The value of a tombstone index row: the tombstone's version (ms,
/// logical, seq).
pub fn tombstone_value(v: &mend_core::Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&v.ms.to_be_bytes());
    out.extend_from_slice(&v.logical.to_be_bytes());
    out.extend_from_slice(&v.seq.to_be_bytes());
    out
}

/// Whether index row value `raw` names version `v`.
pub fn tombstone_names(raw: &[u8], v: &mend_core::Version) -> bool {
    raw == tombstone_value(v).as_slice()
}

/// Splits a tombstone index key into (range, arrived ms, data key).
pub fn split_tombstone_key(k: &[u8]) -> Option<(u16, u64, &[u8])> {
    let range = u16::from_be_bytes(k.get(0..2)?.try_into().ok()?);
    let ms = u64::from_be_bytes(k.get(2..TOMBSTONE_PREFIX)?.try_into().ok()?);
    Some((range, ms, k.get(TOMBSTONE_PREFIX..)?))
}

/// Meta rows under this prefix belong to the agent (sync records, purge
/// and scrub state); the store never reads them.
pub const META_AGENT_PREFIX: &[u8] = b"agent/";

/// Meta row: store parameters.
pub const META_PARAMS: &[u8] = b"params";
/// Meta row: clock and sequence state.
pub const META_CLOCK: &[u8] = b"clock";
/// Meta row: the agent's health probe (value: ms since the epoch, u64
/// big-endian), rewritten every health check to prove the store writable.
pub const META_HEALTH_PROBE: &[u8] = b"health-probe";

/// Meta rows under this prefix hold ingest positions, one per (range,
/// source): `ingest/[range u16][source name]` → position bytes. Keyed by
/// range id (persisted and checked on open, like the data rows) so a source
/// may feed several ranges, each with its own position.
pub const META_INGEST_PREFIX: &[u8] = b"ingest/";

/// The meta row key of `source`'s position in `range`.
pub fn ingest_position_key(range: u16, source: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(META_INGEST_PREFIX.len() + 2 + source.len());
    k.extend_from_slice(META_INGEST_PREFIX);
    k.extend_from_slice(&range.to_be_bytes());
    k.extend_from_slice(source.as_bytes());
    k
}
