//! [`RangeView`]: the store seen as one range's tree, for the sans-I/O
//! exchange in `mend_core::exchange`.

use mend_core::TreeShape;
use mend_core::exchange::{EntrySummary, ExchangeError, NodeHash, TreeView, entry_hash, node_hash};

use crate::backend::Backend;
use crate::store::Store;

/// One range of a store, as a [`TreeView`].
pub struct RangeView<'a, B: Backend> {
    store: &'a Store<B>,
    range: u16,
    shape: TreeShape,
}

impl<'a, B: Backend> RangeView<'a, B> {
    /// A view of range `range` at its tree's depth now.
    pub fn new(store: &'a Store<B>, range: u16) -> Result<RangeView<'a, B>, crate::StoreError> {
        let shape = store.shape(range)?;
        Ok(RangeView {
            store,
            range,
            shape,
        })
    }

    /// A view of range `range` at `depth` (at most its tree's now): the
    /// tree's upper levels, its buckets at that depth listed as the spans
    /// of its deeper buckets. Two trees of one fan-out compare at the
    /// smaller of their depths. A view stays valid while the tree deepens
    /// (depths only grow).
    pub fn at_depth(
        store: &'a Store<B>,
        range: u16,
        depth: u32,
    ) -> Result<RangeView<'a, B>, crate::StoreError> {
        let shape = store.shape_at(range, depth)?;
        Ok(RangeView {
            store,
            range,
            shape,
        })
    }

    /// The root's wire hash.
    pub fn root_hash(&self) -> Result<NodeHash, ExchangeError> {
        self.store
            .root(self.range)
            .map(|a| node_hash(&a))
            .map_err(local)
    }
}

impl<B: Backend> Store<B> {
    /// The exchange summary (version, tombstone flag, 8-byte entry hash) of
    /// `key`'s current entry, if any.
    pub fn summary(&self, key: &[u8]) -> Result<Option<EntrySummary>, crate::StoreError> {
        Ok(self.get(key)?.map(|r| EntrySummary {
            hash: entry_hash(&r.meta.digest(self.secret(), key)),
            key: key.to_vec(),
            version: r.meta.version,
            tombstone: r.meta.tombstone,
        }))
    }
}

fn local(e: crate::StoreError) -> ExchangeError {
    ExchangeError::Local {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

impl<B: Backend> TreeView for RangeView<'_, B> {
    fn shape(&self) -> TreeShape {
        self.shape
    }

    fn child_hashes(&self, level: u32, parents: &[u32]) -> Result<Vec<NodeHash>, ExchangeError> {
        let aggs = self
            .store
            .child_aggs(self.range, level, parents)
            .map_err(local)?;
        Ok(aggs.iter().map(node_hash).collect())
    }

    fn bucket_of(&self, key: &[u8]) -> Option<u32> {
        let spec = self.store.ranges().get(self.range)?;
        if !spec.contains(key) {
            return None;
        }
        Some(self.shape.bucket_of(self.store.secret().placement(key)))
    }

    fn entries_of(&self, buckets: &[u32]) -> Result<Vec<(u32, Vec<EntrySummary>)>, ExchangeError> {
        let listed = self
            .store
            .leaf_entries_of_at(self.range, self.shape.depth, buckets)
            .map_err(local)?;
        Ok(summaries(listed))
    }

    fn entries(
        &self,
        first: u32,
        count: u32,
    ) -> Result<Vec<(u32, Vec<EntrySummary>)>, ExchangeError> {
        let listed = self
            .store
            .leaf_entries_span_at(self.range, self.shape.depth, first, count)
            .map_err(local)?;
        Ok(summaries(listed))
    }
}

fn summaries(listed: Vec<(u32, Vec<crate::LeafEntry>)>) -> Vec<(u32, Vec<EntrySummary>)> {
    listed
        .into_iter()
        .map(|(b, es)| {
            (
                b,
                es.into_iter()
                    .map(|e| EntrySummary {
                        hash: entry_hash(&e.digest),
                        key: e.key,
                        version: e.meta.version,
                        tombstone: e.meta.tombstone,
                    })
                    .collect(),
            )
        })
        .collect()
}
