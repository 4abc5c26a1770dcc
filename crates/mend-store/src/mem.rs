//! An in-memory backend: one `BTreeMap` per column family behind a lock.
//! Used by fast tests, the conformance suite and the simulator.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use crate::backend::{Backend, Cf, Op, Visit};
use crate::error::StoreError;

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

/// In-memory [`Backend`].
#[derive(Debug, Default)]
pub struct MemBackend {
    tables: RwLock<[Table; 5]>,
}

fn idx(cf: Cf) -> usize {
    match cf {
        Cf::Data => 0,
        Cf::Leaves => 1,
        Cf::Tombstones => 2,
        Cf::Meta => 3,
        Cf::Journal => 4,
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend {
        message: "memory backend lock poisoned".into(),
        retryable: false,
    }
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> MemBackend {
        MemBackend::default()
    }

    /// A deep copy (a "checkpoint" for tests and shadow runs).
    pub fn snapshot_copy(&self) -> Result<MemBackend, StoreError> {
        let t = self.tables.read().map_err(|_| poisoned())?;
        Ok(MemBackend {
            tables: RwLock::new(t.clone()),
        })
    }

    /// Overwrites one row directly, bypassing the store: for tests that
    /// simulate corruption (with the `conformance` feature only).
    #[cfg(any(test, feature = "conformance"))]
    pub fn poke(&self, cf: Cf, key: &[u8], value: Option<&[u8]>) {
        if let Ok(mut t) = self.tables.write() {
            match value {
                Some(v) => t[idx(cf)].insert(key.to_vec(), v.to_vec()),
                None => t[idx(cf)].remove(key),
            };
        }
    }
}

impl Backend for MemBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tables.read().map_err(|_| poisoned())?;
        Ok(t[idx(cf)].get(key).cloned())
    }

    fn write(&self, ops: Vec<Op>, _sync: bool) -> Result<(), StoreError> {
        let mut t = self.tables.write().map_err(|_| poisoned())?;
        for op in ops {
            match op {
                Op::Put(cf, k, v) => {
                    t[idx(cf)].insert(k, v);
                }
                Op::Delete(cf, k) => {
                    t[idx(cf)].remove(&k);
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let t = self.tables.read().map_err(|_| poisoned())?;
        let upper = match end {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        for (k, v) in t[idx(cf)].range::<[u8], _>((Bound::Included(start), upper)) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemBackend;
    use crate::conformance::{Harness, run_all};

    struct Mem;

    impl Harness for Mem {
        type B = MemBackend;
        fn fresh(&mut self) -> MemBackend {
            MemBackend::new()
        }
        fn reopen(&mut self, b: MemBackend) -> MemBackend {
            b
        }
    }

    /// The backend conformance suite on the in-memory backend.
    #[test]
    fn memory_backend_conforms() {
        run_all(&mut Mem);
    }
}
