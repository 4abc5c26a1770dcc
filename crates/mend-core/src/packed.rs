//! The compact wire form of a leaf reply's entry list.
//!
//! When one side of a range is empty or wiped, a leaf reply lists every
//! entry the other side holds, so its per-entry cost *is* the cost of the
//! exchange. Protobuf messages per entry (key, a nested version with the
//! origin spelled out, a tag per field) cost about twice a bare listing of
//! key and digest; this encoding costs about the same as that listing:
//!
//! ```text
//! list    := varint(origins) origin* varint(entries) base_ms:varint entry*
//! origin  := varint(len) bytes              (a NodeId, validated)
//! entry   := varint(shared) varint(len) suffix
//!            varint(ms - base_ms)
//!            varint(origin_index << 2 | has_logical << 1 | tombstone)
//!            [varint(logical)]  if has_logical
//!            varint(seq)
//! ```
//!
//! Keys are front-coded against the previous key of the list (`shared`
//! leading bytes, then `len` new bytes), which pays off for the prefix-heavy
//! keys real stores use; `base_ms` is the smallest timestamp of the list.
//!
//! Entry hashes are *not* carried: every entry the responder lists is by
//! construction absent from the initiator's hashes for its bucket, so the
//! initiator learns nothing from the hash that the listing does not already
//! say ("this entry differs from all of mine"). Decoded summaries carry
//! `hash = 0`, see [`EntrySummary::hash`].
//!
//! Decoding validates everything (lengths, key and node-id limits, index
//! bounds, overflow, trailing bytes) and never panics: this is input from
//! the network.

use std::collections::HashMap;

use crate::exchange::{
    EntrySummary, ExchangeError, LEAF_ENTRY_OVERHEAD_BYTES, LEAF_REPLY_BYTES_MAX,
};
use crate::limits::{KEY_BYTES_MAX, NODE_ID_BYTES_MAX};
use crate::version::{NodeId, Version};

/// Most distinct origins one packed list may name.
pub const PACKED_ORIGINS_MAX: usize = 65_536;

/// Most entries one packed list may carry. A list is bounded in bytes by the
/// gRPC message limit anyway; this bounds the allocation a hostile count can
/// request before the bytes run out.
pub const PACKED_ENTRIES_MAX: usize = 1 << 20;

/// Worst-case bytes one entry adds besides its key: the varints at their
/// widest (shared and length 2 each, ms 10, flags 3, logical 5, seq 10) plus
/// a new origin-table slot (1 + [`NODE_ID_BYTES_MAX`]).
pub const PACKED_ENTRY_OVERHEAD_MAX: usize = 2 + 2 + 10 + 3 + 5 + 10 + 1 + NODE_ID_BYTES_MAX;

// The responder sizes its leaf replies by the exchange's per-entry budget:
// were this encoding's worst case above it, a reply split to fit could
// still overflow the message limit.
const _: () = assert!(PACKED_ENTRY_OVERHEAD_MAX <= LEAF_ENTRY_OVERHEAD_BYTES);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bad(why: impl Into<String>) -> ExchangeError {
    ExchangeError::Protocol(format!("packed entries: {}", why.into()))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self, what: &str) -> Result<u64, ExchangeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.at)
                .ok_or_else(|| bad(format!("truncated {what}")))?;
            self.at += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(bad(format!("{what} overflows 64 bits")));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad(format!("{what} overflows 64 bits")))
    }

    fn usize(&mut self, what: &str, max: usize) -> Result<usize, ExchangeError> {
        let v = self.varint(what)?;
        if v > max as u64 {
            return Err(bad(format!("{what} {v} exceeds {max}")));
        }
        Ok(v as usize)
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], ExchangeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad(format!("truncated {what}")))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
}

/// Encodes `entries` (in the order given; listing them in key order makes
/// the front coding effective). Hashes are dropped.
pub fn encode(entries: &[EntrySummary]) -> Vec<u8> {
    let mut origins: Vec<&NodeId> = Vec::new();
    let mut slot: HashMap<&NodeId, usize> = HashMap::new();
    let mut index: Vec<usize> = Vec::with_capacity(entries.len());
    for e in entries {
        let i = *slot.entry(&e.version.origin).or_insert_with(|| {
            origins.push(&e.version.origin);
            origins.len() - 1
        });
        index.push(i);
    }
    let base_ms = entries.iter().map(|e| e.version.ms).min().unwrap_or(0);
    let mut out = Vec::with_capacity(16 + entries.iter().map(|e| e.key.len() + 12).sum::<usize>());
    put_varint(&mut out, origins.len() as u64);
    for o in &origins {
        put_varint(&mut out, o.as_str().len() as u64);
        out.extend_from_slice(o.as_str().as_bytes());
    }
    put_varint(&mut out, entries.len() as u64);
    put_varint(&mut out, base_ms);
    let mut prev: &[u8] = &[];
    for (e, i) in entries.iter().zip(index) {
        let shared = prev.iter().zip(&e.key).take_while(|(a, b)| a == b).count();
        put_varint(&mut out, shared as u64);
        put_varint(&mut out, (e.key.len() - shared) as u64);
        out.extend_from_slice(&e.key[shared..]);
        put_varint(&mut out, e.version.ms - base_ms);
        let has_logical = e.version.logical != 0;
        put_varint(
            &mut out,
            (i as u64) << 2 | u64::from(has_logical) << 1 | u64::from(e.tombstone),
        );
        if has_logical {
            put_varint(&mut out, u64::from(e.version.logical));
        }
        put_varint(&mut out, e.version.seq);
        prev = &e.key;
    }
    out
}

/// Most key bytes one packed list may decode to (64 MiB). Front coding
/// lets a few wire bytes stand for a 4 KiB key, so a list of a few MiB
/// could otherwise decode to gigabytes (a "packed bomb"); this bounds the
/// allocation before it is made. A legitimate reply is split by the
/// responder at [`crate::exchange::LEAF_REPLY_BYTES_MAX`] of *decoded*
/// bytes, far below this.
pub const PACKED_KEY_BYTES_MAX: usize = 64 << 20;

// A legitimate reply (at most LEAF_REPLY_BYTES_MAX, or one entry of the
// largest key when that alone is larger) must decode under the bomb bound,
// or honest peers' replies would be refused.
const _: () = assert!(LEAF_REPLY_BYTES_MAX + KEY_BYTES_MAX <= PACKED_KEY_BYTES_MAX);

/// Decodes a list made by [`encode`]; every summary has `hash = 0`. At most
/// [`PACKED_ENTRIES_MAX`] entries and [`PACKED_KEY_BYTES_MAX`] key bytes.
pub fn decode(buf: &[u8]) -> Result<Vec<EntrySummary>, ExchangeError> {
    decode_bounded(buf, PACKED_ENTRIES_MAX, PACKED_KEY_BYTES_MAX)
}

/// [`decode`] with tighter bounds: at most `entries_max` entries and
/// `key_bytes_max` bytes of decoded keys, checked before each allocation.
pub fn decode_bounded(
    buf: &[u8],
    entries_max: usize,
    key_bytes_max: usize,
) -> Result<Vec<EntrySummary>, ExchangeError> {
    let mut r = Reader { buf, at: 0 };
    let n_origins = r.usize("origin count", PACKED_ORIGINS_MAX)?;
    let mut origins = Vec::with_capacity(n_origins.min(buf.len()));
    for _ in 0..n_origins {
        let len = r.usize("origin length", NODE_ID_BYTES_MAX)?;
        let raw = r.bytes(len, "origin")?;
        let s = std::str::from_utf8(raw).map_err(|_| bad("origin is not UTF-8"))?;
        origins.push(NodeId::new(s).map_err(|e| bad(e.to_string()))?);
    }
    let n = r.usize("entry count", entries_max.min(PACKED_ENTRIES_MAX))?;
    let base_ms = r.varint("base ms")?;
    // Each entry takes at least 5 bytes, so a lying count fails on the
    // bytes before it can make the allocation large.
    let mut out = Vec::with_capacity(n.min(buf.len() / 5));
    let mut prev: Vec<u8> = Vec::new();
    let mut key_bytes = 0usize;
    for _ in 0..n {
        let shared = r.usize("shared prefix", prev.len())?;
        let len = r.usize("key suffix length", KEY_BYTES_MAX - shared)?;
        key_bytes += shared + len;
        if key_bytes > key_bytes_max {
            return Err(bad(format!(
                "decoded keys exceed {key_bytes_max} bytes (a front-coded bomb?)"
            )));
        }
        let mut key = Vec::with_capacity(shared + len);
        key.extend_from_slice(&prev[..shared]);
        key.extend_from_slice(r.bytes(len, "key")?);
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let ms = base_ms
            .checked_add(r.varint("ms")?)
            .ok_or_else(|| bad("ms overflows"))?;
        let flags = r.varint("flags")?;
        let origin = origins
            .get((flags >> 2) as usize)
            .ok_or_else(|| bad(format!("origin index {} of {n_origins}", flags >> 2)))?
            .clone();
        let logical = if flags & 2 != 0 {
            u32::try_from(r.varint("logical")?).map_err(|_| bad("logical exceeds 32 bits"))?
        } else {
            0
        };
        let seq = r.varint("seq")?;
        out.push(EntrySummary {
            key: key.clone(),
            version: Version {
                ms,
                logical,
                origin,
                seq,
            },
            tombstone: flags & 1 != 0,
            hash: 0,
        });
        prev = key;
    }
    if r.at != buf.len() {
        return Err(bad(format!("{} trailing bytes", buf.len() - r.at)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &[u8], ms: u64, logical: u32, origin: &str, seq: u64, tomb: bool) -> EntrySummary {
        EntrySummary {
            key: key.to_vec(),
            version: Version {
                ms,
                logical,
                origin: NodeId::new(origin).unwrap_or_else(|_| unreachable!()),
                seq,
            },
            tombstone: tomb,
            hash: 0,
        }
    }

    #[test]
    fn roundtrips_and_is_compact() {
        let list = vec![
            e(b"user:000123", 1_700_000_000_000, 0, "node-a", 77, false),
            e(b"user:000124", 1_700_000_000_500, 3, "node-b", 1, true),
            e(b"user:1", 1_700_000_000_001, 0, "node-a", 78, false),
            e(b"x", u64::MAX, u32::MAX, "node-c", u64::MAX, false),
        ];
        let bytes = encode(&list);
        assert_eq!(decode(&bytes).ok(), Some(list.clone()));
        assert_eq!(decode(&encode(&[])).ok(), Some(vec![]));
        // Front coding: the second key costs its 3 new bytes, not 11.
        let two = encode(&list[..2]);
        let one = encode(&list[..1]);
        assert!(two.len() - one.len() < 16, "{} vs {}", two.len(), one.len());
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let good = encode(&[e(b"k1", 5, 0, "n", 1, false), e(b"k2", 6, 0, "n", 2, true)]);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        // origin index out of bounds: 1 origin, 1 entry, flags index 5.
        let bad_index = [1, 1, b'n', 1, 0, 0, 1, b'k', 0, 5 << 2, 0];
        assert!(decode(&bad_index).is_err());
        // shared prefix longer than the previous key.
        let bad_shared = [1, 1, b'n', 1, 0, 3, 1, b'k', 0, 0, 0];
        assert!(decode(&bad_shared).is_err());
        // empty key, invalid origin, huge counts, 11-byte varint.
        assert!(decode(&[1, 1, b'n', 1, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&[1, 1, b' ', 0, 0]).is_err());
        assert!(decode(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]).is_err());
        assert!(decode(&[0xff; 11]).is_err());
        // ms overflow: base u64::MAX plus 1.
        let mut over = vec![1, 1, b'n', 1];
        put_varint(&mut over, u64::MAX);
        over.extend_from_slice(&[0, 1, b'k', 1, 0, 0]);
        assert!(decode(&over).is_err());
    }
}
