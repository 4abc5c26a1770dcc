//! Ingest area (issue 13): a change feed's batches into a digest-only range
//! against plain RocksDB writing the same rows with the same durability.
//!
//! * `store/ingest_batch1000/mend`: [`Store::ingest`] of N entries (a
//!   16-byte key, a version from origin `pg` with its sequence number, and
//!   a 32-byte value hash), 1000 per batch, each batch committed with the
//!   source's position and synced, as the `Ingest` service does.
//! * `store/ingest_batch1000/rocksdb_synced`: the same batches as plain
//!   `WriteBatch`es (key → hash and version bytes, plus one position row)
//!   into a database with mend's options, written with `sync = true`.
//!
//! The target is at least 50 000 changes/s on this machine; the
//! ratio to the plain baseline says what mend's apply rule and tree upkeep
//! cost on top of the synced write. N is `MEND_BENCH_KEYS` (default
//! 1 000 000); every sample starts from a fresh database (store.rs's
//! `fresh`), one iteration per sample.

use criterion::{Criterion, criterion_group};
use rocksdb::{WriteBatch, WriteOptions};

use mend_core::{NodeId, RangeMode, RangeSpec, Secret, TreeShape, Version};
use mend_rocks::RocksBackend;
use mend_store::{Cf, IngestBatch, IngestEntry, Store, StoreConfig};

use crate::store::{fresh, open_plain, pairs, slow_group};

/// Entries per ingest batch (what an adapter sends per message).
const BATCH: usize = 1000;

/// The first version's wall-clock part (2026-01-01).
const T0_MS: u64 = 1_767_225_600_000;

fn open_digest_store(path: &std::path::Path) -> Store<RocksBackend> {
    let backend = RocksBackend::open_or_create(path).expect("open RocksBackend");
    let mut range = RangeSpec::whole("all", TreeShape::default());
    range.mode = RangeMode::Digests;
    let cfg = StoreConfig::new(
        NodeId::new("bench").expect("node id"),
        Secret::development(),
        Some(vec![range]),
    );
    Store::open(backend, cfg).expect("open store")
}

/// The feed as batches: entry i has sequence number i and a hash of its
/// value, and batch b reaches position b + 1 (big-endian, byte order = feed
/// order).
fn batches() -> Vec<IngestBatch> {
    let origin = NodeId::new("pg").expect("node id");
    pairs()
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| IngestBatch {
            range: 0,
            source: "feed".into(),
            position_to: (b as u64 + 1).to_be_bytes().to_vec(),
            entries: chunk
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    let seq = (b * BATCH + i) as u64;
                    IngestEntry {
                        key: k.to_vec(),
                        version: Version {
                            ms: T0_MS + seq,
                            logical: 0,
                            origin: origin.clone(),
                            seq,
                        },
                        value_hash: Some(mend_core::digest::value_hash(v)),
                    }
                })
                .collect(),
        })
        .collect()
}

fn ingest_batched(c: &mut Criterion) {
    let feed = batches();
    let mut g = slow_group(c, "store/ingest_batch1000");
    g.bench_function("mend", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_digest_store, |store| {
                for batch in &feed {
                    store.ingest(batch.clone()).expect("mend ingest");
                }
            })
        })
    });
    g.bench_function("rocksdb_synced", |b| {
        b.iter_custom(|iters| {
            fresh(iters, open_plain, |db| {
                let data = db.cf_handle(Cf::Data.name()).expect("data column family");
                let meta = db.cf_handle(Cf::Meta.name()).expect("meta column family");
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                for batch in &feed {
                    let mut wb = WriteBatch::default();
                    for e in &batch.entries {
                        let mut row = Vec::with_capacity(32 + 20);
                        row.extend_from_slice(&e.version.ms.to_be_bytes());
                        row.extend_from_slice(&e.version.seq.to_be_bytes());
                        row.extend_from_slice(e.value_hash.as_ref().expect("live entry"));
                        wb.put_cf(data, &e.key, row);
                    }
                    wb.put_cf(meta, b"ingest/feed", &batch.position_to);
                    db.write_opt(wb, &wo).expect("rocksdb write");
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, ingest_batched);
