//! Tree shape arithmetic. A range's tree has `fanout^depth` buckets (leaves);
//! a key's bucket is the top `log2(fanout) * depth` bits of its keyed
//! placement hash, so two replicas' trees have the same shape whatever keys
//! they hold. Nodes are addressed as (level, index): level 0 is the root,
//! level `depth` holds the leaves, node `i` at level `l` has children
//! `i*fanout .. (i+1)*fanout` at level `l+1`.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::limits::{BUCKETS_MAX, DEPTH_MAX, FANOUT_MAX, FANOUT_MIN};

/// Fan-out and depth of a range's tree; fixed when the range is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeShape {
    /// Children per interior node: a power of two in 2..=256.
    pub fanout: u32,
    /// Levels below the root: 1..=8, with `fanout^depth <= 2^24`.
    pub depth: u32,
}

impl Default for TreeShape {
    /// 16^4 = 65 536 buckets: about 15 keys per bucket at 1M keys, ~3 MiB of
    /// tree in memory per range.
    fn default() -> Self {
        TreeShape {
            fanout: 16,
            depth: 4,
        }
    }
}

impl TreeShape {
    /// Builds and validates a shape.
    pub fn new(fanout: u32, depth: u32) -> Result<TreeShape, CoreError> {
        let s = TreeShape { fanout, depth };
        s.validate()?;
        Ok(s)
    }

    /// Checks the bounds documented on the fields.
    pub fn validate(&self) -> Result<(), CoreError> {
        let err = |why| CoreError::Shape {
            fanout: self.fanout,
            depth: self.depth,
            why,
        };
        if !(FANOUT_MIN..=FANOUT_MAX).contains(&self.fanout) || !self.fanout.is_power_of_two() {
            return Err(err("fanout must be a power of two in 2..=256"));
        }
        if self.depth == 0 || self.depth > DEPTH_MAX {
            return Err(err("depth must be in 1..=8"));
        }
        if (self.fanout as u64)
            .checked_pow(self.depth)
            .is_none_or(|b| b > BUCKETS_MAX)
        {
            return Err(err("fanout^depth must be at most 2^24 buckets"));
        }
        Ok(())
    }

    /// Bits of the placement hash that select a child at each level.
    pub fn fanout_bits(&self) -> u32 {
        self.fanout.trailing_zeros()
    }

    /// Number of buckets (leaves).
    pub fn buckets(&self) -> u64 {
        (self.fanout as u64).pow(self.depth)
    }

    /// Number of nodes at `level` (0 = root).
    pub fn nodes_at(&self, level: u32) -> u64 {
        (self.fanout as u64).pow(level)
    }

    /// The bucket for a placement hash.
    pub fn bucket_of(&self, placement: u64) -> u32 {
        let bits = self.fanout_bits() * self.depth;
        (placement >> (64 - bits)) as u32
    }

    /// The ancestor at `level` of the bucket `bucket`.
    pub fn ancestor(&self, bucket: u32, level: u32) -> u32 {
        bucket >> (self.fanout_bits() * (self.depth - level))
    }

    /// The deepest depth a tree of fan-out `fanout` may reach: the most
    /// levels within [`DEPTH_MAX`] and [`BUCKETS_MAX`] buckets. A store's
    /// data rows are laid out by the bucket at this depth, so its trees can
    /// deepen up to it without moving a row.
    pub fn max_depth(fanout: u32) -> u32 {
        let bits = fanout.trailing_zeros().max(1);
        (BUCKETS_MAX.trailing_zeros() / bits).min(DEPTH_MAX)
    }

    /// Bytes of the in-memory tree of this shape: one aggregate per node
    /// of every level.
    pub fn tree_bytes(&self) -> u64 {
        (0..=self.depth).map(|l| self.nodes_at(l)).sum::<u64>()
            * std::mem::size_of::<crate::Agg>() as u64
    }

    /// This fan-out at `depth` (validated).
    pub fn at_depth(&self, depth: u32) -> Result<TreeShape, CoreError> {
        TreeShape::new(self.fanout, depth)
    }

    /// The first leaf (bucket) under node `index` at `level`, and how many.
    pub fn leaf_span(&self, level: u32, index: u32) -> (u32, u32) {
        let shift = self.fanout_bits() * (self.depth - level);
        (index << shift, 1u32 << shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes() {
        assert!(TreeShape::new(3, 2).is_err());
        assert!(TreeShape::new(1, 2).is_err());
        assert!(TreeShape::new(512, 2).is_err());
        assert!(TreeShape::new(16, 0).is_err());
        assert!(TreeShape::new(256, 4).is_err());
        assert!(TreeShape::new(16, 6).is_ok());
        assert!(TreeShape::new(2, 8).is_ok());
    }

    #[test]
    fn max_depth_is_the_deepest_valid_shape() {
        for bits in 1..=8u32 {
            let fanout = 1u32 << bits;
            let d = TreeShape::max_depth(fanout);
            assert!(
                TreeShape::new(fanout, d).is_ok(),
                "fanout {fanout} depth {d}"
            );
            assert!(
                TreeShape::new(fanout, d + 1).is_err(),
                "fanout {fanout} depth {}",
                d + 1
            );
        }
        assert_eq!(TreeShape::max_depth(16), 6);
        assert_eq!(TreeShape::max_depth(2), 8);
        assert_eq!(TreeShape::max_depth(256), 3);
    }

    #[test]
    fn bucket_arithmetic_is_consistent() {
        let s = TreeShape::new(16, 3).unwrap();
        assert_eq!(s.buckets(), 4096);
        assert_eq!(s.bucket_of(u64::MAX), 4095);
        assert_eq!(s.bucket_of(0), 0);
        let b = s.bucket_of(0xABCD_0000_0000_0000);
        assert_eq!(b, 0xABC);
        assert_eq!(s.ancestor(b, 1), 0xA);
        assert_eq!(s.ancestor(b, 2), 0xAB);
        assert_eq!(s.ancestor(b, 3), b);
        assert_eq!(s.leaf_span(1, 0xA), (0xA00, 256));
        assert_eq!(s.leaf_span(3, b), (b, 1));
    }
}
