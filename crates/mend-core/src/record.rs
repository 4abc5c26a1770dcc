//! The stored form of an entry, shared by every backend.
//!
//! Layout of a record (the value of a data row), all integers big-endian:
//!
//! ```text
//! [0]      format = 1
//! [1]      flags: bit 0 = tombstone; other bits must be 0
//! [2..10]  version.ms      u64
//! [10..14] version.logical u32
//! [14..22] version.seq     u64
//! [22]     origin length n (1..=64)
//! [23..23+n]       origin bytes
//! [23+n..55+n]     value hash (BLAKE3 of the value, 32 bytes)
//! [55+n..]         value bytes (empty for tombstones)
//! ```
//!
//! The value hash is stored so listing a bucket's entries does not rehash
//! values; `verify` rehashes them, so a flipped bit in a value is caught.

use crate::digest::{Digest, Secret, value_hash};
use crate::error::CoreError;
use crate::version::{NodeId, Version};

const FORMAT: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;

/// What the apply rule and the exchange need to know about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The entry's version.
    pub version: Version,
    /// True for a delete.
    pub tombstone: bool,
    /// BLAKE3 hash of the value (of the empty value for tombstones).
    pub value_hash: Digest,
}

impl EntryMeta {
    /// The entry's keyed digest.
    pub fn digest(&self, secret: &Secret, key: &[u8]) -> Digest {
        secret.entry_digest(key, &self.version, self.tombstone, &self.value_hash)
    }
}

/// A decoded record: meta plus value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Version, tombstone flag, value hash.
    pub meta: EntryMeta,
    /// The value (empty for tombstones).
    pub value: Vec<u8>,
}

impl Record {
    /// A live value.
    pub fn live(version: Version, value: Vec<u8>) -> Record {
        Record {
            meta: EntryMeta {
                version,
                tombstone: false,
                value_hash: value_hash(&value),
            },
            value,
        }
    }

    /// A live entry of a digest-only range: the value's 32-byte hash as a
    /// change-feed adapter computed it, and no value. Its digest equals the
    /// digest of `Record::live(version, v)` for any `v` hashing to
    /// `value_hash`.
    pub fn digest_only(version: Version, value_hash: Digest) -> Record {
        Record {
            meta: EntryMeta {
                version,
                tombstone: false,
                value_hash,
            },
            value: Vec::new(),
        }
    }

    /// A tombstone.
    pub fn tombstone(version: Version) -> Record {
        Record {
            meta: EntryMeta {
                version,
                tombstone: true,
                value_hash: value_hash(b""),
            },
            value: Vec::new(),
        }
    }

    /// Encodes in the layout documented on this module.
    pub fn encode(&self) -> Vec<u8> {
        let origin = self.meta.version.origin.as_str().as_bytes();
        let mut out = Vec::with_capacity(55 + origin.len() + self.value.len());
        out.push(FORMAT);
        out.push(if self.meta.tombstone {
            FLAG_TOMBSTONE
        } else {
            0
        });
        out.extend_from_slice(&self.meta.version.ms.to_be_bytes());
        out.extend_from_slice(&self.meta.version.logical.to_be_bytes());
        out.extend_from_slice(&self.meta.version.seq.to_be_bytes());
        out.push(origin.len() as u8);
        out.extend_from_slice(origin);
        out.extend_from_slice(&self.meta.value_hash);
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes only the meta (no value copy).
    pub fn decode_meta(b: &[u8]) -> Result<(EntryMeta, usize), CoreError> {
        if b.len() < 23 || b[0] != FORMAT {
            return Err(CoreError::Malformed("record header"));
        }
        // Unknown flag bits are an error, not ignored: a record is read back
        // exactly as it was written, or not at all.
        if b[1] & !FLAG_TOMBSTONE != 0 {
            return Err(CoreError::Malformed("unknown record flags"));
        }
        let tombstone = b[1] & FLAG_TOMBSTONE != 0;
        let ms = u64::from_be_bytes(
            b[2..10]
                .try_into()
                .map_err(|_| CoreError::Malformed("ms"))?,
        );
        let logical = u32::from_be_bytes(
            b[10..14]
                .try_into()
                .map_err(|_| CoreError::Malformed("logical"))?,
        );
        let seq = u64::from_be_bytes(
            b[14..22]
                .try_into()
                .map_err(|_| CoreError::Malformed("seq"))?,
        );
        let n = b[22] as usize;
        let hash_at = 23 + n;
        let value_at = hash_at + 32;
        if b.len() < value_at {
            return Err(CoreError::Malformed("record too short"));
        }
        let origin = std::str::from_utf8(&b[23..hash_at])
            .map_err(|_| CoreError::Malformed("origin utf-8"))?;
        let origin = NodeId::new(origin).map_err(|_| CoreError::Malformed("origin"))?;
        let mut value_hash = [0u8; 32];
        value_hash.copy_from_slice(&b[hash_at..value_at]);
        if tombstone && b.len() != value_at {
            return Err(CoreError::Malformed("tombstone with a value"));
        }
        Ok((
            EntryMeta {
                version: Version {
                    ms,
                    logical,
                    origin,
                    seq,
                },
                tombstone,
                value_hash,
            },
            value_at,
        ))
    }

    /// Decodes a whole record.
    pub fn decode(b: &[u8]) -> Result<Record, CoreError> {
        let (meta, at) = Record::decode_meta(b)?;
        Ok(Record {
            meta,
            value: b[at..].to_vec(),
        })
    }
}

/// Renders bytes as lowercase hex (for messages about keys).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unknown_flag_bits_are_an_error() {
        // The fuzz target's first find: a record whose flags byte has a bit
        // besides `tombstone` decoded, and re-encoded to other bytes.
        let v = Version {
            ms: 1,
            logical: 0,
            origin: NodeId::new("a").unwrap(),
            seq: 1,
        };
        let mut b = Record::live(v, b"x".to_vec()).encode();
        for bit in 1..8 {
            b[1] = 1 << bit;
            assert_eq!(
                Record::decode(&b),
                Err(CoreError::Malformed("unknown record flags")),
                "bit {bit}"
            );
            crate::fuzzing::record_roundtrip(&b);
        }
    }

    proptest! {
        #[test]
        fn roundtrip(ms in any::<u64>(), logical in any::<u32>(), seq in any::<u64>(),
                     origin in "[a-z0-9-]{1,64}", value in proptest::collection::vec(any::<u8>(), 0..64),
                     tomb in any::<bool>()) {
            let v = Version { ms, logical, origin: NodeId::new(origin).unwrap(), seq };
            let r = if tomb { Record::tombstone(v) } else { Record::live(v, value) };
            prop_assert_eq!(Record::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Record::decode(&b);
        }
    }
}
