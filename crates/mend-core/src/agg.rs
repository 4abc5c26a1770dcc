//! Leaf and node aggregates: the sum of entry digests (as four 64-bit lanes,
//! each modulo 2^64) plus the number of entries.
//!
//! Addition is invertible, so a write updates a leaf in O(1) by subtracting
//! the old entry's digest and adding the new one, without rescanning the
//! bucket; an interior node is the sum of its children. Unlike XOR, the sum
//! does not cancel when the same digest is added twice, and the digests are
//! keyed, so sums cannot be steered by whoever chooses keys (the construction
//! negentropy and Riak's Tictac trees use).

use thiserror::Error;

use crate::digest::Digest;

/// A multiset aggregate of entry digests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Agg {
    /// Lane-wise sum of the digests, each lane modulo 2^64.
    pub sum: [u64; 4],
    /// Number of entries aggregated.
    pub count: u64,
}

/// An aggregate asked to lose more entries than it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("aggregate counts {count} entries and cannot lose {removed}")]
pub struct AggUnderflow {
    /// The entries the aggregate counts.
    pub count: u64,
    /// The entries asked to be removed.
    pub removed: u64,
}

/// Encoded size of an [`Agg`] in bytes.
pub const AGG_BYTES: usize = 40;

// The encoding is the four lanes and the count, eight bytes each: the
// leaves column family stores exactly this, and the store refuses rows of
// another length.
const _: () = assert!(AGG_BYTES == 5 * std::mem::size_of::<u64>());

fn lanes(d: &Digest) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, lane) in out.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i * 8..i * 8 + 8]);
        *lane = u64::from_le_bytes(b);
    }
    out
}

impl Agg {
    /// Adds one entry digest.
    pub fn add_digest(&mut self, d: &Digest) {
        let l = lanes(d);
        for (s, x) in self.sum.iter_mut().zip(l) {
            *s = s.wrapping_add(x);
        }
        self.count = self.count.wrapping_add(1);
    }

    /// Removes one entry digest (the inverse of [`Agg::add_digest`]). The
    /// lanes wrap (they are sums modulo 2^64), the count does not: removing
    /// an entry from an aggregate that counts none means the aggregate does
    /// not describe the entries it is said to hold, and the aggregate is
    /// left unchanged.
    pub fn sub_digest(&mut self, d: &Digest) -> Result<(), AggUnderflow> {
        let Some(count) = self.count.checked_sub(1) else {
            return Err(AggUnderflow {
                count: self.count,
                removed: 1,
            });
        };
        let l = lanes(d);
        for (s, x) in self.sum.iter_mut().zip(l) {
            *s = s.wrapping_sub(x);
        }
        self.count = count;
        Ok(())
    }

    /// Adds another aggregate.
    pub fn add(&mut self, o: &Agg) {
        for (s, x) in self.sum.iter_mut().zip(o.sum) {
            *s = s.wrapping_add(x);
        }
        self.count = self.count.wrapping_add(o.count);
    }

    /// Subtracts another aggregate.
    pub fn sub(&mut self, o: &Agg) {
        for (s, x) in self.sum.iter_mut().zip(o.sum) {
            *s = s.wrapping_sub(x);
        }
        self.count = self.count.wrapping_sub(o.count);
    }

    /// True for the aggregate of nothing.
    pub fn is_empty(&self) -> bool {
        *self == Agg::default()
    }

    /// The node hash exchanged with peers: a hash of sum and count. Peers
    /// compare (a prefix of) it; equal hashes mean equal entry multisets up to
    /// the collision probability of the truncation.
    pub fn hash(&self) -> Digest {
        if self.is_empty() {
            return [0u8; 32];
        }
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Encodes as 40 bytes: four little-endian u64 lanes, then the count.
    pub fn encode(&self) -> [u8; AGG_BYTES] {
        let mut out = [0u8; AGG_BYTES];
        for (i, s) in self.sum.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&s.to_le_bytes());
        }
        out[32..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Decodes [`Agg::encode`]'s output; `None` if the length is wrong.
    pub fn decode(b: &[u8]) -> Option<Agg> {
        if b.len() != AGG_BYTES {
            return None;
        }
        let mut a = Agg::default();
        for i in 0..4 {
            a.sum[i] = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().ok()?);
        }
        a.count = u64::from_le_bytes(b[32..40].try_into().ok()?);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn order_independent_and_invertible(ds in proptest::collection::vec(any::<[u8; 32]>(), 0..20)) {
            let mut fwd = Agg::default();
            for d in &ds { fwd.add_digest(d); }
            let mut rev = Agg::default();
            for d in ds.iter().rev() { rev.add_digest(d); }
            prop_assert_eq!(fwd, rev);
            prop_assert_eq!(Agg::decode(&fwd.encode()), Some(fwd));
            for d in &ds { prop_assert!(fwd.sub_digest(d).is_ok()); }
            prop_assert!(fwd.is_empty());
        }
    }

    #[test]
    fn removing_from_an_empty_aggregate_is_refused_and_changes_nothing() {
        let mut a = Agg::default();
        assert_eq!(
            a.sub_digest(&[3u8; 32]),
            Err(AggUnderflow {
                count: 0,
                removed: 1
            })
        );
        assert!(a.is_empty());
        a.add_digest(&[3u8; 32]);
        assert_eq!(a.sub_digest(&[3u8; 32]), Ok(()));
        assert!(a.is_empty());
    }

    #[test]
    fn duplicate_digests_do_not_cancel() {
        let d = [7u8; 32];
        let mut a = Agg::default();
        a.add_digest(&d);
        a.add_digest(&d);
        assert!(!a.is_empty());
        assert_ne!(a.hash(), Agg::default().hash());
    }
}
