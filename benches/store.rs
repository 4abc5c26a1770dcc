//! Store area (issue 2): mend's write path and rebuild against plain RocksDB
//! doing the same work with the same options.
//!
//! * `store/write_single`: N fresh keys, one write per call. `mend` is
//!   [`Store::write`] with one locally stamped put; `rocksdb` is `put_cf_opt`
//!   (default `WriteOptions`, unsynced like mend) into a database opened with
//!   [`mend_rocks::db_options`] and the same column families, each with
//!   [`mend_rocks::cf_options`] over one shared block cache.
//!   `rocksdb_read_put` reads the key (`get_cf`) before putting it: the
//!   minimum work of any store that never writes blind, which is what the
//!   apply rule needs (issue 14's yardstick).
//! * `store/write_batch1000`: the same keys, 1000 per [`Store::write`] versus
//!   1000 puts per `WriteBatch` (`rocksdb`), and versus one
//!   `batched_multi_get_cf` of the 1000 keys followed by their `WriteBatch`
//!   (`rocksdb_read_put`).
//! * `store/rebuild`: [`Store::rebuild_leaves`] of the single range of a store
//!   holding N entries versus a single-threaded raw iterator over a checkpoint
//!   of the same data column family (touching every key and value). The store
//!   is built once, flushed and fully compacted so both sides read the same,
//!   stable SST layout.
//!
//! N is `MEND_BENCH_KEYS` (default 1 000 000). Keys are 16 random bytes and
//! values 100 random bytes from a fixed seed. Every write sample starts from a
//! fresh database in a new temporary directory; creating and dropping it is
//! outside the timed part. Samples take seconds, so each one is a single
//! iteration (flat sampling, 10 samples).

use std::cell::OnceCell;
use std::hint::black_box;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rocksdb::{Cache, ColumnFamilyDescriptor, DB, WriteBatch, WriteOptions};
use tempfile::TempDir;

use mend_core::{NodeId, RangeSpec, Secret, TreeShape};
use mend_rocks::RocksBackend;
use mend_store::{Cf, Store, StoreConfig, Write};

/// Keys per benchmark unless `MEND_BENCH_KEYS` says otherwise.
const KEYS_DEFAULT: usize = 1_000_000;

/// Value size of every entry, in bytes.
const VALUE_BYTES: usize = 100;

/// Writes per batch in the batched variant.
const BATCH: usize = 1000;

type Pair = ([u8; 16], [u8; VALUE_BYTES]);

fn key_count() -> usize {
    match std::env::var("MEND_BENCH_KEYS") {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| panic!("MEND_BENCH_KEYS={s:?}: want a positive integer")),
        Err(_) => KEYS_DEFAULT,
    }
}

/// The N key/value pairs, generated once per process.
pub(crate) fn pairs() -> &'static [Pair] {
    static PAIRS: OnceLock<Vec<Pair>> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(0x6d65_6e64);
        (0..key_count())
            .map(|_| {
                let mut p = ([0u8; 16], [0u8; VALUE_BYTES]);
                rng.fill_bytes(&mut p.0);
                rng.fill_bytes(&mut p.1);
                p
            })
            .collect()
    })
}

pub(crate) fn open_store(path: &Path) -> Store<RocksBackend> {
    let backend = RocksBackend::open_or_create(path).expect("open RocksBackend");
    let cfg = StoreConfig::new(
        NodeId::new("bench").expect("node id"),
        Secret::development(),
        Some(vec![RangeSpec::whole("all", TreeShape::default())]),
    );
    Store::open(backend, cfg).expect("open store")
}

/// A plain RocksDB database with exactly mend's options and column families.
pub(crate) fn open_plain(path: &Path) -> DB {
    let cache = Cache::new_lru_cache(mend_rocks::BLOCK_CACHE_BYTES);
    let cfs = Cf::ALL
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), mend_rocks::cf_options(*cf, &cache)));
    DB::open_cf_descriptors(&mend_rocks::db_options(), path, cfs).expect("open plain RocksDB")
}

/// Runs `load` `iters` times, each on a database `open` creates in a fresh
/// temporary directory, and returns the time spent in `load` only.
pub(crate) fn fresh<T>(iters: u64, open: impl Fn(&Path) -> T, load: impl Fn(&T)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = open(dir.path());
        let start = Instant::now();
        load(&db);
        total += start.elapsed();
        drop(db);
        drop(dir);
    }
    total
}

pub(crate) fn slow_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(key_count() as u64));
    g
}

fn write_single(c: &mut Criterion) {
    let mut g = slow_group(c, "store/write_single");
    g.bench_function("mend", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_store, |store| {
                for (k, v) in pairs() {
                    store
                        .write(vec![Write::put(k.to_vec(), v.to_vec())])
                        .expect("mend write");
                }
            })
        })
    });
    g.bench_function("rocksdb", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_plain, |db| {
                let cf = db.cf_handle(Cf::Data.name()).expect("data column family");
                let wo = WriteOptions::default();
                for (k, v) in pairs() {
                    db.put_cf_opt(cf, k, v, &wo).expect("rocksdb put");
                }
            })
        })
    });
    g.bench_function("rocksdb_read_put", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_plain, |db| {
                let cf = db.cf_handle(Cf::Data.name()).expect("data column family");
                let wo = WriteOptions::default();
                for (k, v) in pairs() {
                    black_box(db.get_cf(cf, k).expect("rocksdb get"));
                    db.put_cf_opt(cf, k, v, &wo).expect("rocksdb put");
                }
            })
        })
    });
    g.finish();
}

fn write_batched(c: &mut Criterion) {
    let mut g = slow_group(c, "store/write_batch1000");
    g.bench_function("mend", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_store, |store| {
                for chunk in pairs().chunks(BATCH) {
                    let writes = chunk
                        .iter()
                        .map(|(k, v)| Write::put(k.to_vec(), v.to_vec()))
                        .collect();
                    store.write(writes).expect("mend write");
                }
            })
        })
    });
    g.bench_function("rocksdb", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_plain, |db| {
                let cf = db.cf_handle(Cf::Data.name()).expect("data column family");
                let wo = WriteOptions::default();
                for chunk in pairs().chunks(BATCH) {
                    let mut batch = WriteBatch::default();
                    for (k, v) in chunk {
                        batch.put_cf(cf, k, v);
                    }
                    db.write_opt(batch, &wo).expect("rocksdb write");
                }
            })
        })
    });
    g.bench_function("rocksdb_read_put", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_plain, |db| {
                let cf = db.cf_handle(Cf::Data.name()).expect("data column family");
                let wo = WriteOptions::default();
                for chunk in pairs().chunks(BATCH) {
                    let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
                    for r in db.batched_multi_get_cf(cf, &keys, false) {
                        black_box(r.expect("rocksdb multi_get"));
                    }
                    let mut batch = WriteBatch::default();
                    for (k, v) in chunk {
                        batch.put_cf(cf, k, v);
                    }
                    db.write_opt(batch, &wo).expect("rocksdb write");
                }
            })
        })
    });
    g.finish();
}

/// A store of N entries and a plain database opened on a checkpoint of it.
struct RebuildFixture {
    store: Store<RocksBackend>,
    raw: DB,
    _dir: TempDir,
}

fn rebuild_fixture() -> RebuildFixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store_dir = dir.path().join("store");
    {
        let store = open_store(&store_dir);
        for chunk in pairs().chunks(BATCH) {
            let writes = chunk
                .iter()
                .map(|(k, v)| Write::put(k.to_vec(), v.to_vec()))
                .collect();
            store.write(writes).expect("mend write");
        }
        store.backend().flush().expect("flush");
    }
    {
        let db = open_plain(&store_dir);
        for cf in Cf::ALL {
            let h = db.cf_handle(cf.name()).expect("column family");
            db.compact_range_cf(h, None::<&[u8]>, None::<&[u8]>);
        }
    }
    let store = open_store(&store_dir);
    let raw_dir = dir.path().join("raw");
    store.backend().checkpoint(&raw_dir).expect("checkpoint");
    let raw = open_plain(&raw_dir);
    let n = pairs().len() as u64;
    let entries: u64 = store
        .rebuild_leaves(0)
        .expect("rebuild")
        .iter()
        .map(|a| a.count)
        .sum();
    assert_eq!(entries, n, "rebuild saw every entry");
    assert_eq!(raw_scan(&raw).0, n, "raw scan saw every entry");
    RebuildFixture {
        store,
        raw,
        _dir: dir,
    }
}

/// Reads every row of the data column family: (rows, key + value bytes).
fn raw_scan(db: &DB) -> (u64, u64) {
    let cf = db.cf_handle(Cf::Data.name()).expect("data column family");
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        rows += 1;
        bytes += (k.len() + v.len()) as u64;
        it.next();
    }
    it.status().expect("raw scan");
    (rows, bytes)
}

fn rebuild(c: &mut Criterion) {
    let fixture = OnceCell::new();
    let mut g = slow_group(c, "store/rebuild");
    g.warm_up_time(Duration::from_secs(2));
    g.bench_function("mend", |b| {
        let f = fixture.get_or_init(rebuild_fixture);
        b.iter(|| black_box(f.store.rebuild_leaves(0).expect("rebuild")))
    });
    g.bench_function("rocksdb_scan", |b| {
        let f = fixture.get_or_init(rebuild_fixture);
        b.iter(|| black_box(raw_scan(&f.raw)))
    });
    g.finish();
}

criterion_group!(benches, write_single, write_batched, rebuild);
