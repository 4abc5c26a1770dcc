//! Keyed digests. All hashing that decides "are two replicas equal" is keyed
//! with the cluster secret (BLAKE3 keyed mode), so a client that can write
//! keys cannot craft entries whose digests cancel out or collide and so hide
//! divergence. Each use derives its own subkey (domain separation).

use std::fmt;

use crate::version::Version;

/// A 32-byte digest.
pub type Digest = [u8; 32];

const CTX_SECRET: &str = "mend v1 2026-11 cluster secret";
const CTX_ENTRY: &str = "mend v1 2026-11 entry digest";
const CTX_BUCKET: &str = "mend v1 2026-11 bucket placement";
const CTX_FINGERPRINT: &str = "mend v1 2026-11 secret fingerprint";
const CTX_HANDSHAKE: &str = "mend v3 2026-12 handshake proof";

/// The development secret used when none is configured. Agents log a warning
/// when they fall back to it.
pub const DEV_SECRET: &[u8] = b"mend development secret: not for production";

/// The cluster secret, with the subkeys derived from it.
#[derive(Clone)]
pub struct Secret {
    entry_key: [u8; 32],
    bucket_key: [u8; 32],
    handshake_key: [u8; 32],
    fingerprint: [u8; 8],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(fingerprint={})", self.fingerprint_hex())
    }
}

impl Secret {
    /// Derives the secret from arbitrary bytes (a passphrase or key file).
    /// Surrounding ASCII whitespace is trimmed so `echo secret > file` works.
    pub fn from_bytes(material: &[u8]) -> Secret {
        let material = material.trim_ascii();
        let root = blake3::derive_key(CTX_SECRET, material);
        let fp = blake3::derive_key(CTX_FINGERPRINT, &root);
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&fp[..8]);
        Secret {
            entry_key: blake3::derive_key(CTX_ENTRY, &root),
            bucket_key: blake3::derive_key(CTX_BUCKET, &root),
            handshake_key: blake3::derive_key(CTX_HANDSHAKE, &root),
            fingerprint,
        }
    }

    /// The development secret.
    pub fn development() -> Secret {
        Secret::from_bytes(DEV_SECRET)
    }

    /// A public fingerprint of the secret: peers compare it at handshake, and
    /// the store records it so a store is never reopened with another secret
    /// (bucket placement depends on the secret).
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Proof of holding the secret, bound to `label` (which side proves)
    /// and `parts` (both sides' fresh nonces and node ids), so a proof
    /// answers one challenge only and cannot be replayed. Each part is
    /// length-prefixed, so no two different part lists hash alike.
    pub fn handshake_proof(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.handshake_key);
        h.update(&(label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    /// The fingerprint as hex.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The 64-bit placement hash of a key; its top bits choose the bucket.
    pub fn placement(&self, key: &[u8]) -> u64 {
        let h = blake3::keyed_hash(&self.bucket_key, key);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_be_bytes(b)
    }

    /// The digest of one entry: covers the key, the whole version (breadcrumb
    /// included), the tombstone flag and the hash of the value.
    pub fn entry_digest(
        &self,
        key: &[u8],
        version: &Version,
        tombstone: bool,
        value_hash: &Digest,
    ) -> Digest {
        // One contiguous input and one call: hashing a short input through
        // nine `Hasher::update` calls cost 3-4x as much (digest/entry bench).
        let origin = version.origin.as_str().as_bytes();
        let fields = [
            &(key.len() as u32).to_be_bytes()[..],
            key,
            &version.ms.to_be_bytes(),
            &version.logical.to_be_bytes(),
            &[origin.len() as u8],
            origin,
            &version.seq.to_be_bytes(),
            &[tombstone as u8],
            value_hash,
        ];
        let len: usize = fields.iter().map(|f| f.len()).sum();
        let mut stack = [0u8; ENTRY_INPUT_STACK_BYTES];
        if len <= stack.len() {
            let mut at = 0;
            for f in fields {
                stack[at..at + f.len()].copy_from_slice(f);
                at += f.len();
            }
            *blake3::keyed_hash(&self.entry_key, &stack[..len]).as_bytes()
        } else {
            let mut h = blake3::Hasher::new_keyed(&self.entry_key);
            for f in fields {
                h.update(f);
            }
            *h.finalize().as_bytes()
        }
    }
}

/// Entry digests whose input (key, version, flags, value hash: 62 bytes
/// plus key and origin) fits here are hashed from a stack buffer in one call.
const ENTRY_INPUT_STACK_BYTES: usize = 256;

/// The (unkeyed) hash of a value. Tombstones use the hash of the empty value.
pub fn value_hash(value: &[u8]) -> Digest {
    *blake3::hash(value).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::NodeId;

    #[test]
    fn digests_depend_on_every_field_and_on_the_secret() {
        let s = Secret::from_bytes(b"one");
        let v = Version {
            ms: 5,
            logical: 1,
            origin: NodeId::new("a").unwrap(),
            seq: 3,
        };
        let vh = value_hash(b"x");
        let base = s.entry_digest(b"k", &v, false, &vh);
        assert_ne!(base, s.entry_digest(b"k2", &v, false, &vh));
        assert_ne!(base, s.entry_digest(b"k", &v, true, &vh));
        assert_ne!(base, s.entry_digest(b"k", &v, false, &value_hash(b"y")));
        let mut v2 = v.clone();
        v2.seq = 4;
        assert_ne!(base, s.entry_digest(b"k", &v2, false, &vh));
        let other = Secret::from_bytes(b"two");
        assert_ne!(base, other.entry_digest(b"k", &v, false, &vh));
        assert_ne!(s.fingerprint(), other.fingerprint());
        let p = s.handshake_proof("initiator", &[b"n1", b"n2"]);
        assert_eq!(p, s.handshake_proof("initiator", &[b"n1", b"n2"]));
        assert_ne!(p, s.handshake_proof("responder", &[b"n1", b"n2"]));
        assert_ne!(p, s.handshake_proof("initiator", &[b"n1n", b"2"]));
        assert_ne!(p, other.handshake_proof("initiator", &[b"n1", b"n2"]));
        assert_eq!(Secret::from_bytes(b" one\n").fingerprint(), s.fingerprint());
    }

    #[test]
    fn the_entry_digest_is_the_keyed_hash_of_the_documented_byte_stream() {
        // Stored aggregates depend on this format: the one-call stack path
        // and the streaming path must both hash exactly this stream.
        let s = Secret::from_bytes(b"format");
        let v = Version {
            ms: 1_700_000_000_123,
            logical: 7,
            origin: NodeId::new("node-a").unwrap(),
            seq: 42,
        };
        let vh = value_hash(b"value");
        for key in [b"k".to_vec(), vec![9u8; 4000]] {
            let mut h = blake3::Hasher::new_keyed(&s.entry_key);
            h.update(&(key.len() as u32).to_be_bytes());
            h.update(&key);
            h.update(&v.ms.to_be_bytes());
            h.update(&v.logical.to_be_bytes());
            h.update(&[6]);
            h.update(b"node-a");
            h.update(&v.seq.to_be_bytes());
            h.update(&[1]);
            h.update(&vh);
            assert_eq!(
                s.entry_digest(&key, &v, true, &vh),
                *h.finalize().as_bytes()
            );
        }
    }
}
