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

/// The development secret used when none is configured. Agents log a warning
/// when they fall back to it.
pub const DEV_SECRET: &[u8] = b"mend development secret: not for production";

/// The cluster secret, with the subkeys derived from it.
#[derive(Clone)]
pub struct Secret {
    entry_key: [u8; 32],
    bucket_key: [u8; 32],
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
        let mut h = blake3::Hasher::new_keyed(&self.entry_key);
        h.update(&(key.len() as u32).to_be_bytes());
        h.update(key);
        h.update(&version.ms.to_be_bytes());
        h.update(&version.logical.to_be_bytes());
        h.update(&[version.origin.as_str().len() as u8]);
        h.update(version.origin.as_str().as_bytes());
        h.update(&version.seq.to_be_bytes());
        h.update(&[tombstone as u8]);
        h.update(value_hash);
        *h.finalize().as_bytes()
    }
}

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
        assert_eq!(Secret::from_bytes(b" one\n").fingerprint(), s.fingerprint());
    }
}
