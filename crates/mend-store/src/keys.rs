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
