//! The in-memory tree of one range: every level's aggregates, leaves last.
//! Its size depends only on the shape (about 48 bytes per bucket), never on
//! the number of keys. Leaves are persisted (the `leaves` column family);
//! interior nodes are sums of their children and are rebuilt on open.

use mend_core::{Agg, TreeShape};

/// Aggregates of every node of one range's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeTree {
    shape: TreeShape,
    /// `levels[l][i]` is node `i` at level `l`; `levels[depth]` are the leaves.
    levels: Vec<Vec<Agg>>,
}

impl RangeTree {
    /// A tree of empty nodes.
    pub fn empty(shape: TreeShape) -> RangeTree {
        let levels = (0..=shape.depth)
            .map(|l| vec![Agg::default(); shape.nodes_at(l) as usize])
            .collect();
        RangeTree { shape, levels }
    }

    /// Builds a tree from its leaves (`leaves.len()` must equal the bucket
    /// count). Their counts must not sum past `u64::MAX` (the store checks
    /// persisted leaves for that when it loads them).
    pub fn from_leaves(shape: TreeShape, leaves: Vec<Agg>) -> RangeTree {
        assert_eq!(
            leaves.len() as u64,
            shape.buckets(),
            "leaf count must match shape"
        );
        let mut levels = vec![leaves];
        for l in (0..shape.depth).rev() {
            let below = &levels[levels.len() - 1];
            let mut cur = vec![Agg::default(); shape.nodes_at(l) as usize];
            for (i, a) in below.iter().enumerate() {
                cur[i / shape.fanout as usize].add(a);
            }
            levels.push(cur);
        }
        levels.reverse();
        RangeTree { shape, levels }
    }

    /// The shape.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// The root aggregate.
    pub fn root(&self) -> Agg {
        self.levels[0][0]
    }

    /// The leaves.
    pub fn leaves(&self) -> &[Agg] {
        &self.levels[self.shape.depth as usize]
    }

    /// Node `index` at `level`, or `None` if out of bounds.
    pub fn node(&self, level: u32, index: u32) -> Option<Agg> {
        self.levels
            .get(level as usize)?
            .get(index as usize)
            .copied()
    }

    /// Sets leaf `bucket` to `new`, updating every ancestor by the difference
    /// in O(depth).
    pub fn set_leaf(&mut self, bucket: u32, new: Agg) {
        let depth = self.shape.depth;
        let old = self.levels[depth as usize][bucket as usize];
        if old == new {
            return;
        }
        for l in 0..depth {
            let a = &mut self.levels[l as usize][self.shape.ancestor(bucket, l) as usize];
            // An interior node is the sum of its children, so it counts at
            // least the entries of every leaf under it. One that counts
            // fewer was updated without its leaves (or a leaf without it):
            // every hash above it is wrong, and subtracting would wrap.
            assert!(
                a.count >= old.count,
                "level {l} node of bucket {bucket} counts {} entries, its leaf {}",
                a.count,
                old.count
            );
            a.sub(&old);
            a.add(&new);
        }
        self.levels[depth as usize][bucket as usize] = new;
    }

    /// Approximate heap bytes held by the tree.
    pub fn memory_bytes(&self) -> usize {
        self.levels
            .iter()
            .map(|l| l.len() * std::mem::size_of::<Agg>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_updates_match_a_fresh_build() {
        let shape = TreeShape::new(4, 3).unwrap();
        let mut t = RangeTree::empty(shape);
        let mut leaves = vec![Agg::default(); 64];
        for (i, b) in [5u32, 17, 63, 5, 0].iter().enumerate() {
            let mut a = leaves[*b as usize];
            a.add_digest(&[i as u8 + 1; 32]);
            leaves[*b as usize] = a;
            t.set_leaf(*b, a);
        }
        assert_eq!(t, RangeTree::from_leaves(shape, leaves));
        assert_eq!(t.root().count, 5);
        assert_eq!(t.node(1, 1).map(|a| a.count), Some(1));
    }

    #[test]
    #[should_panic(expected = "counts 0 entries, its leaf 1")]
    fn a_node_counting_fewer_entries_than_its_leaf_trips_the_assert() {
        let shape = TreeShape::new(4, 2).unwrap();
        let mut one = Agg::default();
        one.add_digest(&[1; 32]);
        let mut leaves = vec![Agg::default(); 16];
        leaves[5] = one;
        let mut t = RangeTree::from_leaves(shape, leaves);
        // Corrupt the interior node above bucket 5 as a buggy update would.
        t.levels[1][1] = Agg::default();
        t.set_leaf(5, Agg::default());
    }
}
