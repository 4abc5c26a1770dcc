//! Repair apply area (issue 5): what the behind side spends applying
//! repaired entries, without the network.
//!
//! `repair_apply/mend` applies K entries with 1 KiB values and explicit
//! (replicated) versions the way the `Push` handler does: in chunks of
//! [`REPAIR_BATCH_KEYS`] through [`Store::write_with_extra`], i.e. the apply
//! rule's read of the current entry, the data, leaf and clock rows, and the
//! journal's before-image rows, in one RocksDB batch per chunk.
//! `repair_apply/rocksdb` writes the same key/value pairs in the same chunks
//! as plain `WriteBatch`es into RocksDB with the same options. Every sample
//! starts from a fresh database; K is `MEND_BENCH_APPLY_KEYS` (default
//! 20 000), the chunk size `MEND_BENCH_APPLY_BATCH` (default
//! [`REPAIR_BATCH_KEYS`]; for tuning it by measurement).

use criterion::{Criterion, Throughput, criterion_group};
use mend_agent::journal;
use mend_agent::repair::REPAIR_BATCH_KEYS;
use mend_core::{NodeId, Version};
use mend_store::{Cf, Write};
use rocksdb::WriteBatch;

use crate::store::{fresh, open_plain, open_store};

/// Bytes per value.
const VALUE_BYTES: usize = 1024;

fn keys() -> u64 {
    std::env::var("MEND_BENCH_APPLY_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn batch() -> usize {
    std::env::var("MEND_BENCH_APPLY_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(REPAIR_BATCH_KEYS)
}

fn entries() -> Vec<(Vec<u8>, Vec<u8>, Version)> {
    let origin = NodeId::new("node-a").unwrap();
    (0..keys())
        .map(|k| {
            (
                format!("repair-{k:09}").into_bytes(),
                vec![(k % 251) as u8; VALUE_BYTES],
                Version {
                    ms: 1_700_000_000_000 + k,
                    logical: 0,
                    origin: origin.clone(),
                    seq: k + 1,
                },
            )
        })
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let es = entries();
    let bytes: u64 = es.iter().map(|(k, v, _)| (k.len() + v.len()) as u64).sum();
    let mut g = c.benchmark_group("repair_apply");
    g.sample_size(10)
        .throughput(Throughput::Bytes(bytes))
        .measurement_time(std::time::Duration::from_secs(5));
    g.bench_function("mend", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_store, |store| {
                for chunk in es.chunks(batch()) {
                    let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _, _)| k.clone()).collect();
                    let writes = chunk
                        .iter()
                        .map(|(k, v, ver)| Write::put(k.clone(), v.clone()).at(ver.clone()))
                        .collect();
                    store
                        .write_with_extra(writes, &|o| journal::entry_ops("bench", &keys, o))
                        .expect("apply");
                }
            })
        })
    });
    g.bench_function("rocksdb", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_plain, |db| {
                let cf = db.cf_handle(Cf::Data.name()).expect("data cf");
                for chunk in es.chunks(batch()) {
                    let mut batch = WriteBatch::default();
                    for (k, v, _) in chunk {
                        batch.put_cf(&cf, k, v);
                    }
                    db.write(batch).expect("plain write");
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_apply);
