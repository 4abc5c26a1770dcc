//! mend-rocks: the RocksDB backend of `mend-store`.
//!
//! One RocksDB database per data directory, one column family per
//! [`mend_store::Cf`]. Batches map to a RocksDB `WriteBatch` (atomic, one WAL
//! record), scans to a raw iterator over an implicit snapshot. Blocking
//! calls: async callers run them on a blocking thread.
//!
//! Invariant: opening an existing store never creates anything; a missing
//! directory, a directory without a mend store or a locked database is a
//! typed error before any write.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, DBRawIterator,
    ErrorKind, MemtableFactory, Options, ReadOptions, WriteBatch, WriteOptions,
};

use mend_store::backend::{SpanVisit, Visit};
use mend_store::{Backend, Cf, Op, StoreError};

/// Block cache shared by all column families, in bytes.
pub const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Memtable size of the data column family, in bytes.
pub const DATA_WRITE_BUFFER_BYTES: usize = 64 << 20;

/// Database-wide options. Benchmarks use the same ones for their plain
/// RocksDB baseline, so comparisons measure mend, not tuning.
pub fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.increase_parallelism(2);
    o.set_max_background_jobs(2);
    o.set_bytes_per_sync(1 << 20);
    o.set_keep_log_file_num(4);
    // Vector memtables (below) need single-threaded memtable inserts; each
    // write is one batch from one writer anyway.
    o.set_allow_concurrent_memtable_write(false);
    o
}

/// Options of column family `cf`: LZ4, a bloom filter for point reads (the
/// apply rule reads before every write, mostly misses on fresh keys).
///
/// Per family, from the write-path profile (BENCHMARKS.md, "Store"):
/// `data` gets a whole-key bloom filter in its memtable, so the apply
/// rule's read of a fresh key skips the memtable's skip list; `leaves` and
/// `meta`, rewritten by every write and read only when the store opens,
/// get vector memtables (an append per write instead of a skip-list
/// insert). Benchmarks give their plain-RocksDB baseline the same options.
pub fn cf_options(cf: Cf, cache: &Cache) -> Options {
    let mut o = Options::default();
    let mut t = BlockBasedOptions::default();
    t.set_bloom_filter(10.0, false);
    t.set_block_cache(cache);
    t.set_cache_index_and_filter_blocks(true);
    o.set_block_based_table_factory(&t);
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_write_buffer_size(DATA_WRITE_BUFFER_BYTES);
    match cf {
        Cf::Data => {
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.1);
        }
        Cf::Leaves | Cf::Meta => o.set_memtable_factory(MemtableFactory::Vector),
        Cf::Tombstones | Cf::Journal => {}
    }
    o
}

/// The RocksDB backend.
pub struct RocksBackend {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksBackend({})", self.path.display())
    }
}

fn map_err(path: &Path, e: rocksdb::Error) -> StoreError {
    let msg = e.to_string();
    if msg.contains("lock")
        && (msg.contains("LOCK") || msg.contains("Resource temporarily unavailable"))
    {
        return StoreError::Locked {
            path: path.display().to_string(),
        };
    }
    let retryable = matches!(
        e.kind(),
        ErrorKind::Busy | ErrorKind::TryAgain | ErrorKind::TimedOut
    );
    StoreError::Backend {
        message: msg,
        retryable,
    }
}

impl RocksBackend {
    /// Opens the database at `path`, creating it (and the directory) if needed.
    pub fn open_or_create(path: &Path) -> Result<RocksBackend, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Backend {
            message: format!("cannot create {}: {e}", path.display()),
            retryable: false,
        })?;
        Self::open_inner(path, true)
    }

    /// Opens an existing mend store at `path`; creates nothing.
    pub fn open_existing(path: &Path) -> Result<RocksBackend, StoreError> {
        let not = |why: &str| StoreError::NotAStore {
            path: path.display().to_string(),
            why: why.to_string(),
        };
        if !path.is_dir() {
            return Err(not("no such directory"));
        }
        if !path.join("CURRENT").is_file() {
            return Err(not("no RocksDB database in it"));
        }
        let cfs = DB::list_cf(&Options::default(), path).map_err(|e| map_err(path, e))?;
        for cf in Cf::ALL {
            if !cfs.iter().any(|c| c == cf.name()) {
                return Err(not(&format!("column family {:?} is missing", cf.name())));
            }
        }
        Self::open_inner(path, false)
    }

    fn open_inner(path: &Path, create: bool) -> Result<RocksBackend, StoreError> {
        let mut opts = db_options();
        opts.create_if_missing(create);
        opts.create_missing_column_families(create);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(*cf, &cache)));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| map_err(path, e))?;
        Ok(RocksBackend {
            db,
            path: path.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a RocksDB checkpoint (hard-linked SST files) at `dir`, which
    /// must not exist yet. Shadow runs apply repairs to such a copy.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let cp =
            rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| map_err(&self.path, e))?;
        cp.create_checkpoint(dir)
            .map_err(|e| map_err(&self.path, e))
    }

    /// Seeks `it` to `start` and visits rows until `end` (exclusive; `None`:
    /// the iterator's own bound). Returns true when `visit` asked to stop.
    fn visit_from(
        &self,
        it: &mut DBRawIterator<'_>,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<bool, StoreError> {
        it.seek(start);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if end.is_some_and(|e| k >= e) {
                break;
            }
            if !visit(k, v) {
                return Ok(true);
            }
            it.next();
        }
        it.status().map_err(|e| map_err(&self.path, e))?;
        Ok(false)
    }

    /// Flushes memtables to SST files.
    pub fn flush(&self) -> Result<(), StoreError> {
        for cf in Cf::ALL {
            let h = self.handle(cf)?;
            self.db.flush_cf(h).map_err(|e| map_err(&self.path, e))?;
        }
        Ok(())
    }

    fn handle(&self, cf: Cf) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| StoreError::Corrupt(format!("column family {:?} is missing", cf.name())))
    }
}

impl Backend for RocksBackend {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.handle(cf)?, key)
            .map_err(|e| map_err(&self.path, e))
    }

    fn multi_get(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // One key (a write of one entry, the common client call): a point
        // read skips MultiGet's key preparation and sort.
        if let [key] = keys {
            return Ok(vec![self.get(cf, key)?]);
        }
        self.db
            .batched_multi_get_cf(self.handle(cf)?, keys, false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|s| s.to_vec()))
                    .map_err(|e| map_err(&self.path, e))
            })
            .collect()
    }

    fn write(&self, mut ops: Vec<Op>, sync: bool) -> Result<(), StoreError> {
        // Rows in (family, key) order: the memtable's skip list inserts
        // each row next to the one before it instead of searching from the
        // top (a batch's data keys are scattered by their buckets). The sort
        // is stable, so two ops on one row keep their order.
        if ops.len() > 1 {
            ops.sort_by(|a, b| a.row().cmp(&b.row()));
        }
        // Each family's handle looked up once per batch, not per row (a
        // lookup is a search of the handles by name).
        let handles = Cf::ALL.map(|cf| self.db.cf_handle(cf.name()));
        let handle = |cf: Cf| {
            handles[cf as usize].ok_or_else(|| {
                StoreError::Corrupt(format!("column family {:?} is missing", cf.name()))
            })
        };
        let mut b = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(cf, k, v) => b.put_cf(handle(cf)?, k, v),
                Op::Delete(cf, k) => b.delete_cf(handle(cf)?, k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .write_opt(b, &wo)
            .map_err(|e| map_err(&self.path, e))
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let mut ro = ReadOptions::default();
        if let Some(e) = end {
            ro.set_iterate_upper_bound(e.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.handle(cf)?, ro);
        self.visit_from(&mut it, start, None, visit)?;
        Ok(())
    }

    fn scan_spans(
        &self,
        cf: Cf,
        spans: &[(Vec<u8>, Vec<u8>)],
        visit: &mut SpanVisit<'_>,
    ) -> Result<(), StoreError> {
        let Some((_, last_end)) = spans.last() else {
            return Ok(());
        };
        // One iterator (one snapshot, one merge of the memtables and SST
        // files) for all spans, seeking forward from span to span.
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(last_end.clone());
        let mut it = self.db.raw_iterator_cf_opt(self.handle(cf)?, ro);
        for (i, (start, end)) in spans.iter().enumerate() {
            if self.visit_from(&mut it, start, Some(end), &mut |k, v| visit(i, k, v))? {
                break;
            }
        }
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.path)
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
