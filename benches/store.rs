//! Store area (issue 2): mend's write path and rebuild against plain RocksDB
//! doing the same work with the same options.
//!
//! * `store/write_single`: N fresh keys, one write per call. `mend` is
//!   [`Store::write`] with one locally stamped put; `rocksdb` is `put_cf_opt`
//!   (default `WriteOptions`, unsynced like mend) into a database opened with
//!   [`mend_rocks::db_options`] and the same column families, each with
//!   [`mend_rocks::cf_options`] over one shared block cache.
//! * `store/write_batch1000`: the same keys, 1000 per [`Store::write`] versus
//!   1000 puts per `WriteBatch`.
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
fn pairs() -> &'static [Pair] {
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

fn open_store(path: &Path) -> Store<RocksBackend> {
    let backend = RocksBackend::open_or_create(path).expect("open RocksBackend");
    let cfg = StoreConfig::new(
        NodeId::new("bench").expect("node id"),
        Secret::development(),
        Some(vec![RangeSpec::whole("all", TreeShape::default())]),
    );
    Store::open(backend, cfg).expect("open store")
}

/// A plain RocksDB database with exactly mend's options and column families.
fn open_plain(path: &Path) -> DB {
    let cache = Cache::new_lru_cache(mend_rocks::BLOCK_CACHE_BYTES);
    let cfs = Cf::ALL
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), mend_rocks::cf_options(&cache)));
    DB::open_cf_descriptors(&mend_rocks::db_options(), path, cfs).expect("open plain RocksDB")
}

/// Runs `load` `iters` times, each on a database `open` creates in a fresh
/// temporary directory, and returns the time spent in `load` only.
fn fresh<T>(iters: u64, open: impl Fn(&Path) -> T, load: impl Fn(&T)) -> Duration {
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

fn slow_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
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

// ---- TEMPORARY EXPERIMENTS (removed before hand-off) ----
fn open_variant(path: &Path, vec_leaves: bool, bloom: bool) -> DB {
    let cache = Cache::new_lru_cache(mend_rocks::BLOCK_CACHE_BYTES);
    let mut dbo = mend_rocks::db_options();
    if vec_leaves {
        dbo.set_allow_concurrent_memtable_write(false);
    }
    let cfs = Cf::ALL.iter().map(|cf| {
        let mut o = mend_rocks::cf_options(&cache);
        if vec_leaves && matches!(cf, Cf::Leaves | Cf::Meta) {
            o.set_memtable_factory(rocksdb::MemtableFactory::Vector);
        }
        if bloom && *cf == Cf::Data {
            o.set_memtable_prefix_bloom_ratio(0.1);
            o.set_memtable_whole_key_filtering(true);
        }
        ColumnFamilyDescriptor::new(cf.name(), o)
    });
    DB::open_cf_descriptors(&dbo, path, cfs).expect("open variant")
}

fn emulate(db: &DB, single: bool, get: bool, leaf: bool, multiget: bool) {
    emulate2(db, single, get, leaf, leaf, multiget)
}

fn emulate2(db: &DB, single: bool, get: bool, leaf: bool, clock: bool, multiget: bool) {
    let data = db.cf_handle(Cf::Data.name()).expect("cf");
    let leaves = db.cf_handle(Cf::Leaves.name()).expect("cf");
    let meta = db.cf_handle(Cf::Meta.name()).expect("cf");
    let wo = WriteOptions::default();
    let per = if single { 1 } else { BATCH };
    for chunk in pairs().chunks(per) {
        let mut batch = WriteBatch::default();
        let dks: Vec<(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|(k, v)| {
                let mut dk = Vec::with_capacity(22);
                dk.extend_from_slice(&[0, 0, 0, 0, k[0], k[1]]);
                dk.extend_from_slice(k);
                // a record-sized, incompressible value: header, 32 random bytes, value
                let mut rec = Vec::with_capacity(160);
                rec.extend_from_slice(&[1u8; 28]);
                rec.extend_from_slice(k);
                rec.extend_from_slice(&v[..16]);
                rec.extend_from_slice(v);
                (dk, rec)
            })
            .collect();
        if get && multiget {
            black_box(db.batched_multi_get_cf(data, dks.iter().map(|d| &d.0), false));
        }
        for (dk, rec) in &dks {
            if get && !multiget {
                black_box(db.get_cf(data, dk).expect("get"));
            }
            batch.put_cf(data, dk, rec);
        }
        if leaf {
            for (dk, _) in &dks {
                batch.put_cf(leaves, &dk[..6], [1u8; 40]);
            }
        }
        if clock {
            batch.put_cf(meta, b"clock", [0u8; 20]);
        }
        db.write_opt(batch, &wo).expect("write");
    }
}

fn experiments(_c: &mut Criterion) {
    let Ok(rounds) = std::env::var("MEND_EXP_ROUNDS") else {
        return;
    };
    let rounds: usize = rounds.parse().expect("rounds");
    let only = std::env::var("MEND_EXP_ONLY").unwrap_or_default();
    // name, single, get, leaf, multiget, vec_leaves, bloom
    let variants = [
        ("s_plain", true, false, false, false, false, false),
        ("s_emul", true, true, true, false, false, false),
        ("s_emul_both", true, true, true, false, true, true),
        ("s_noget_vec", true, false, true, false, true, false),
        ("b_plain", false, false, false, false, false, false),
        ("b_emul", false, true, true, false, false, false),
        ("b_emul_both_mg", false, true, true, true, true, true),
        ("b_noget_vec", false, false, true, false, true, false),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len() + 2];
    for _ in 0..rounds {
        for (i, &(name, single, get, leaf, mg, vl, bl)) in variants.iter().enumerate() {
            if !only.is_empty() && !only.split(',').any(|o| o == name) {
                continue;
            }
            let t = fresh(
                1,
                |p| open_variant(p, vl, bl),
                |db| emulate(db, single, get, leaf, mg),
            );
            times[i].push(t.as_secs_f64());
        }
        if only.is_empty() || only.contains("s_mend") {
            let t = fresh(1, open_store, |store| {
                for (k, v) in pairs() {
                    store
                        .write(vec![Write::put(k.to_vec(), v.to_vec())])
                        .expect("w");
                }
            });
            times[variants.len()].push(t.as_secs_f64());
        }
        if only.is_empty() || only.contains("b_mend") {
            let t = fresh(1, open_store, |store| {
                for chunk in pairs().chunks(BATCH) {
                    let w = chunk
                        .iter()
                        .map(|(k, v)| Write::put(k.to_vec(), v.to_vec()))
                        .collect();
                    store.write(w).expect("w");
                }
            });
            times[variants.len() + 1].push(t.as_secs_f64());
        }
    }
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v.0)
        .chain(["s_mend", "b_mend"])
        .collect();
    for (n, mut t) in names.into_iter().zip(times) {
        if t.is_empty() {
            continue;
        }
        t.sort_by(|a, b| a.partial_cmp(b).expect("nan"));
        eprintln!("EXP {n:16} median {:.3}s  all {:?}", t[t.len() / 2], t);
    }
}
fn rebuild_experiments(_c: &mut Criterion) {
    use mend_core::{Agg, Record, digest::value_hash};
    use mend_store::Backend;
    let Ok(rounds) = std::env::var("MEND_EXP_REBUILD") else {
        return;
    };
    let rounds: usize = rounds.parse().expect("rounds");
    let f = rebuild_fixture();
    let be = f.store.backend();
    let secret = f.store.secret().clone();
    let names = [
        "raw_scan",
        "backend_scan",
        "+decode_meta",
        "+value_hash",
        "+entry_digest",
        "rebuild_leaves",
        "raw_scan_par256",
        "backend_scan_par256",
        "digest_only_par",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for (i, _) in names.iter().enumerate() {
            let t = Instant::now();
            match i {
                0 => {
                    black_box(raw_scan(&f.raw));
                }
                1..=4 => {
                    let mut agg = Agg::default();
                    let mut n = 0u64;
                    be.scan(Cf::Data, &[], None, &mut |k, v| {
                        n += (k.len() + v.len()) as u64;
                        if i >= 2 {
                            let (mut meta, at) = Record::decode_meta(v).expect("meta");
                            if i >= 3 {
                                meta.value_hash = value_hash(&v[at..]);
                            }
                            if i >= 4 {
                                agg.add_digest(&meta.digest(&secret, &k[6..]));
                            }
                            black_box(&meta);
                        }
                        true
                    })
                    .expect("scan");
                    black_box((agg, n));
                }
                5 => {
                    black_box(f.store.rebuild_leaves(0).expect("rebuild"));
                }
                6 | 7 | 8 => {
                    let spans = 256u32;
                    let per = 65536 / spans;
                    let next = std::sync::atomic::AtomicU32::new(0);
                    let work = |s: u32| -> u64 {
                        let lo = mend_store::keys::bucket_key(0, s * per);
                        let hi = mend_store::keys::bucket_end(0, ((s + 1) * per) as u64);
                        let mut n = 0u64;
                        if i == 6 {
                            let cf = f.raw.cf_handle(Cf::Data.name()).expect("cf");
                            let mut ro = rocksdb::ReadOptions::default();
                            ro.set_iterate_upper_bound(hi);
                            let mut it = f.raw.raw_iterator_cf_opt(cf, ro);
                            it.seek(&lo);
                            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                                n += (k.len() + v.len()) as u64;
                                it.next();
                            }
                        } else {
                            be.scan(Cf::Data, &lo, Some(&hi), &mut |k, v| {
                                if i == 8 {
                                    let (mut meta, at) = Record::decode_meta(v).expect("meta");
                                    meta.value_hash = value_hash(&v[at..]);
                                    n = n.wrapping_add(meta.digest(&secret, &k[6..])[0] as u64);
                                } else {
                                    n += (k.len() + v.len()) as u64;
                                }
                                true
                            })
                            .expect("scan");
                        }
                        n
                    };
                    let tot: u64 = std::thread::scope(|sc| {
                        let hs: Vec<_> = (0..2)
                            .map(|_| {
                                sc.spawn(|| {
                                    let mut t = 0u64;
                                    loop {
                                        let s =
                                            next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                        if s >= spans {
                                            break t;
                                        }
                                        t = t.wrapping_add(work(s));
                                    }
                                })
                            })
                            .collect();
                        hs.into_iter()
                            .map(|h| h.join().expect("join"))
                            .fold(0, u64::wrapping_add)
                    });
                    black_box(tot);
                }
                _ => unreachable!(),
            }
            times[i].push(t.elapsed().as_secs_f64());
        }
    }
    for (n, mut t) in names.into_iter().zip(times) {
        t.sort_by(|a, b| a.partial_cmp(b).expect("nan"));
        eprintln!("EXPR {n:20} median {:.3}s  all {:?}", t[t.len() / 2], t);
    }
}
criterion_group!(exp_benches, experiments, rebuild_experiments);
