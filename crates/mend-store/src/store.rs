//! The store: open, the write path, and the shared state.
//!
//! Every write (client put/delete, replicated write, repair, and a change
//! feed's batch through [`Store::ingest`]) goes through one commit
//! (`Store::commit`), which decides each entry with [`mend_core::decide`]
//! and commits data row, tombstone index row, leaf row, clock row and, for
//! an ingest, the source's position row in one backend batch. Reads for the
//! exchange, rebuild, verify and purge live in the submodules; ingest in
//! `ingest`.

mod ingest;
mod read;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use mend_core::error::{check_key, check_value};
use mend_core::{
    Agg, Decision, EntryMeta, Hlc, NodeId, RangeMap, RangeMode, RangeSpec, Record, Secret, Version,
    decide,
};

use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::keys;
use crate::tree::RangeTree;

pub use ingest::{IngestBatch, IngestEntry, Ingested};
pub use read::{LeafEntry, RangeStats, Stats};
pub use verify::{LeafSnapshot, Purged, RangeVerify, VerifyReport};

/// What an incoming entry carries: `Write`s and ingested entries both
/// become one of these before the apply rule sees them.
pub(crate) enum Content {
    /// A value (value-holding ranges).
    Value(Vec<u8>),
    /// A value's 32-byte hash and no value (digest-only ranges).
    Digest(mend_core::Digest),
    /// A delete.
    Tombstone,
}

/// One entry on its way to the apply rule.
pub(crate) struct Incoming {
    pub(crate) key: Vec<u8>,
    pub(crate) content: Content,
    pub(crate) version: Option<Version>,
}

/// A position to record in the same batch as the entries it covers: row
/// `row` of `meta` moves to `to` unless it already holds `to` or a
/// position after it (byte order).
pub(crate) struct PositionUpdate<'a> {
    pub(crate) row: Vec<u8>,
    pub(crate) to: &'a [u8],
}

/// What [`Store::commit`] did: each entry's outcome and, for an ingest, the
/// durable position after the batch and whether it moved.
pub(crate) type Committed = (Vec<Applied>, Option<(Vec<u8>, bool)>);

/// How [`Store::commit`] commits one batch.
pub(crate) struct Commit<'a> {
    /// The mode every entry's range must have.
    pub(crate) mode: RangeMode,
    /// Return each key's before-image.
    pub(crate) capture: bool,
    /// Rows derived from the outcomes, committed in the same batch.
    pub(crate) extra: Option<ExtraRows<'a>>,
    /// A source's position, committed in the same batch.
    pub(crate) position: Option<PositionUpdate<'a>>,
    /// Force the batch to stable storage before returning.
    pub(crate) sync: bool,
    /// Apply in feed order instead of by version (a versionless range's
    /// ingest): each entry replaces what the key holds unless it is the
    /// same entry, and a batch whose position is not past the stored one
    /// (a redelivery) changes nothing.
    pub(crate) feed_order: bool,
}

/// Derives extra rows from the outcomes of a write batch, committed in the
/// same batch (see [`Store::write_with_extra`]).
pub type ExtraRows<'a> = &'a dyn Fn(&[Applied]) -> Vec<Op>;

/// A source of wall-clock milliseconds (injectable for tests and simulation).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> WallClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// Default tombstone grace period: 10 days, as Cassandra's gc_grace_seconds.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 10 * 24 * 3600 * 1000;

/// Default allowed clock skew ([`mend_core::classify::CLOCK_SKEW_MS_DEFAULT`]):
/// the local clock follows a replicated version only up to this far ahead
/// of local time. Versions further ahead are still stored (the apply rule
/// decides; the agent refuses them by default) but do not drag the clock
/// along.
pub const CLOCK_SKEW_MS_DEFAULT: u64 = mend_core::classify::CLOCK_SKEW_MS_DEFAULT;

/// How a store is opened.
#[derive(Clone)]
pub struct StoreConfig {
    /// This node's id: the origin stamped on local writes.
    pub node_id: NodeId,
    /// The cluster secret (must match the one the store was created with).
    pub secret: Secret,
    /// Ranges to create the store with, or to check against the persisted
    /// ones. `None` opens an existing store with whatever it has.
    pub ranges: Option<Vec<RangeSpec>>,
    /// How long tombstones are kept before [`Store::purge_tombstones`] may
    /// remove them, in ms.
    pub tombstone_grace_ms: u64,
    /// See [`CLOCK_SKEW_MS_DEFAULT`]; the agent sets it from its one
    /// `clock_skew_ms`, so the store follows exactly the versions that
    /// classification does not call `future_version`.
    pub clock_skew_ms: u64,
    /// Force every write batch to stable storage before acknowledging.
    pub sync_writes: bool,
    /// The wall clock.
    pub clock: WallClock,
}

impl StoreConfig {
    /// Defaults for node `node_id` with `secret` and `ranges`.
    pub fn new(node_id: NodeId, secret: Secret, ranges: Option<Vec<RangeSpec>>) -> StoreConfig {
        StoreConfig {
            node_id,
            secret,
            ranges,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS_DEFAULT,
            clock_skew_ms: CLOCK_SKEW_MS_DEFAULT,
            sync_writes: false,
            clock: system_clock(),
        }
    }
}

/// Parameters persisted at creation and checked on every open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Params {
    format: u32,
    secret_fingerprint: String,
    ranges: Vec<RangeSpec>,
}

/// 2: tombstone index rows keyed by range and arrival time (1: by version
/// ms; migrated on open).
const PARAMS_FORMAT: u32 = 2;

/// One write: a put (`value = Some`) or a delete, with an explicit version
/// for replicated writes or none to be stamped by the local clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: Vec<u8>,
    /// The value, or `None` for a delete (tombstone).
    pub value: Option<Vec<u8>>,
    /// The version to store, or `None` to stamp one locally.
    pub version: Option<Version>,
}

impl Write {
    /// A local put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Write {
        Write {
            key: key.into(),
            value: Some(value.into()),
            version: None,
        }
    }

    /// A local delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Write {
        Write {
            key: key.into(),
            value: None,
            version: None,
        }
    }

    /// Carries an explicit version (a replicated write).
    pub fn at(mut self, version: Version) -> Write {
        self.version = Some(version);
        self
    }

    /// Builds the write that stores `record` under `key`.
    pub fn from_record(key: Vec<u8>, record: Record) -> Write {
        Write {
            key,
            value: if record.meta.tombstone {
                None
            } else {
                Some(record.value)
            },
            version: Some(record.meta.version),
        }
    }
}

/// The outcome of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the apply rule decided.
    pub decision: Decision,
    /// The version of the incoming entry (stamped, for local writes).
    pub version: Version,
    /// The incoming entry's meta (what was written when `decision` is `Apply`).
    pub meta: EntryMeta,
    /// The local entry's meta before this write, if any.
    pub previous: Option<EntryMeta>,
    /// The local entry before this write, when the caller asked for
    /// before-images (repair journals).
    pub before: Option<Record>,
}

struct WriterState {
    hlc: Hlc,
    seq: u64,
}

/// The versioned store with one incremental Merkle tree per range.
pub struct Store<B: Backend> {
    backend: B,
    secret: Secret,
    node_id: NodeId,
    ranges: RangeMap,
    /// One tree per range, in range-id order. Writers hold the write lock
    /// across the backend commit and the tree update.
    trees: RwLock<Vec<RangeTree>>,
    /// Serialises writers (the read-decide-write of the apply rule).
    writer: Mutex<WriterState>,
    cfg: StoreConfig,
}

impl<B: Backend> std::fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node_id", &self.node_id)
            .field("ranges", &self.ranges.specs().len())
            .finish()
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend {
        message: "store lock poisoned by a panicked writer".into(),
        retryable: false,
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

impl<B: Backend> Store<B> {
    /// Opens (or, when `cfg.ranges` is given and the backend is empty,
    /// creates) a store. Checks the secret fingerprint and range parameters
    /// against the persisted ones and loads the trees.
    pub fn open(backend: B, cfg: StoreConfig) -> Result<Store<B>, StoreError> {
        let fp = cfg.secret.fingerprint_hex();
        let params = match backend.get(Cf::Meta, keys::META_PARAMS)? {
            Some(raw) => {
                let p: Params = serde_json::from_slice(&raw)
                    .map_err(|e| corrupt(format!("parameters unreadable: {e}")))?;
                if p.format != PARAMS_FORMAT && p.format != 1 {
                    return Err(corrupt(format!("unknown parameters format {}", p.format)));
                }
                if p.secret_fingerprint != fp {
                    return Err(StoreError::SecretMismatch {
                        stored: p.secret_fingerprint,
                        given: fp,
                    });
                }
                if let Some(want) = &cfg.ranges
                    && *want != p.ranges
                {
                    return Err(StoreError::ParamsMismatch(describe_mismatch(
                        &p.ranges, want,
                    )));
                }
                p
            }
            None => {
                let Some(ranges) = cfg.ranges.clone() else {
                    return Err(StoreError::NotAStore {
                        path: String::new(),
                        why: "no mend parameters row".into(),
                    });
                };
                RangeMap::new(ranges.clone())?;
                let mut any = false;
                backend.scan(Cf::Data, &[], None, &mut |_, _| {
                    any = true;
                    false
                })?;
                if any {
                    return Err(corrupt("data rows present but no parameters row"));
                }
                let p = Params {
                    format: PARAMS_FORMAT,
                    secret_fingerprint: fp,
                    ranges,
                };
                let raw = serde_json::to_vec(&p).map_err(|e| corrupt(e.to_string()))?;
                backend.write(
                    vec![Op::Put(Cf::Meta, keys::META_PARAMS.to_vec(), raw)],
                    true,
                )?;
                p
            }
        };
        if params.format == 1 {
            migrate_tombstone_index(&backend, &params)?;
        }
        let ranges =
            RangeMap::new(params.ranges).map_err(|e| corrupt(format!("persisted ranges: {e}")))?;
        let mut trees = Vec::with_capacity(ranges.specs().len());
        for (id, spec) in ranges.specs().iter().enumerate() {
            trees.push(load_tree(&backend, id as u16, spec)?);
        }
        let (hlc, seq) = match backend.get(Cf::Meta, keys::META_CLOCK)? {
            Some(raw) if raw.len() == 20 => {
                let ms = u64::from_be_bytes(raw[0..8].try_into().map_err(|_| corrupt("clock"))?);
                let logical =
                    u32::from_be_bytes(raw[8..12].try_into().map_err(|_| corrupt("clock"))?);
                let seq = u64::from_be_bytes(raw[12..20].try_into().map_err(|_| corrupt("clock"))?);
                (Hlc { ms, logical }, seq)
            }
            Some(_) => return Err(corrupt("clock row has the wrong length")),
            None => (Hlc::default(), 0),
        };
        Ok(Store {
            backend,
            secret: cfg.secret.clone(),
            node_id: cfg.node_id.clone(),
            ranges,
            trees: RwLock::new(trees),
            writer: Mutex::new(WriterState { hlc, seq }),
            cfg,
        })
    }

    /// Proves the store writable now: one small unsynced write of a meta
    /// row that nothing else reads ([`keys::META_HEALTH_PROBE`]). An engine
    /// that turned read-only (disk full, a background error) fails it.
    pub fn probe_writable(&self) -> Result<(), StoreError> {
        let now = self.now_ms().to_be_bytes().to_vec();
        self.backend.write(
            vec![Op::Put(Cf::Meta, keys::META_HEALTH_PROBE.to_vec(), now)],
            false,
        )
    }

    /// The backend (for backend-specific operations such as checkpoints).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The configured ranges.
    pub fn ranges(&self) -> &RangeMap {
        &self.ranges
    }

    /// The cluster secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The current wall-clock time as the store sees it.
    pub fn now_ms(&self) -> u64 {
        (self.cfg.clock)()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub(crate) fn trees_read(&self) -> Result<RwLockReadGuard<'_, Vec<RangeTree>>, StoreError> {
        self.trees.read().map_err(|_| poisoned())
    }

    pub(crate) fn trees_write(&self) -> Result<RwLockWriteGuard<'_, Vec<RangeTree>>, StoreError> {
        self.trees.write().map_err(|_| poisoned())
    }

    fn writer(&self) -> Result<MutexGuard<'_, WriterState>, StoreError> {
        self.writer.lock().map_err(|_| poisoned())
    }

    /// Locates a key: (range id, bucket, data row key).
    pub fn locate(&self, key: &[u8]) -> Result<(u16, u32, Vec<u8>), StoreError> {
        check_key(key)?;
        let range = self.ranges.lookup(key)?;
        let shape = self
            .ranges
            .get(range)
            .map(|s| s.shape)
            .ok_or_else(|| corrupt("range id"))?;
        let bucket = shape.bucket_of(self.secret.placement(key));
        Ok((range, bucket, keys::data_key(range, bucket, key)))
    }

    /// Applies writes atomically: all validated first (any invalid write
    /// rejects the whole batch, nothing written), then each decided by the
    /// apply rule against the local entry (or an earlier write of the same
    /// batch), then committed together with their tree updates. A key of a
    /// digest-only range is refused ([`StoreError::WrongMode`]): those
    /// ranges take entries only through [`Store::ingest`].
    pub fn write(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        self.write_inner(writes, false)
    }

    /// As [`Store::write`], also returning each key's before-image.
    pub fn write_capturing(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        self.write_inner(writes, true)
    }

    /// As [`Store::write_capturing`], and commits the rows `extra` derives
    /// from the outcomes in the same atomic batch (a repair journal's
    /// before-images commit together with the repair).
    pub fn write_with_extra(
        &self,
        writes: Vec<Write>,
        extra: ExtraRows<'_>,
    ) -> Result<Vec<Applied>, StoreError> {
        self.write_inner_extra(writes, true, Some(extra))
    }

    fn write_inner(&self, writes: Vec<Write>, capture: bool) -> Result<Vec<Applied>, StoreError> {
        self.write_inner_extra(writes, capture, None)
    }

    fn write_inner_extra(
        &self,
        writes: Vec<Write>,
        capture: bool,
        extra: Option<ExtraRows<'_>>,
    ) -> Result<Vec<Applied>, StoreError> {
        let incoming = writes
            .into_iter()
            .map(|w| Incoming {
                key: w.key,
                content: match w.value {
                    Some(v) => Content::Value(v),
                    None => Content::Tombstone,
                },
                version: w.version,
            })
            .collect();
        let commit = Commit {
            mode: RangeMode::Values,
            capture,
            extra,
            position: None,
            sync: self.cfg.sync_writes,
            feed_order: false,
        };
        Ok(self.commit(incoming, commit)?.0)
    }

    /// The one write path: validates every entry (key, value, the range's
    /// mode), decides each by the apply rule, and commits data, tombstone
    /// index, leaf, clock and (for an ingest) position rows in one backend
    /// batch. Returns the outcomes and, when `c.position` is given, the
    /// durable position after the batch and whether it moved.
    pub(crate) fn commit(
        &self,
        writes: Vec<Incoming>,
        c: Commit<'_>,
    ) -> Result<Committed, StoreError> {
        let mut located = Vec::with_capacity(writes.len());
        for w in &writes {
            let loc = self.locate(&w.key)?;
            if let Content::Value(v) = &w.content {
                check_value(v)?;
            }
            self.check_mode(loc.0, c.mode)?;
            located.push(loc);
        }
        let mut st = self.writer()?;
        let clock_before = st.hlc;
        // The apply rule needs each key's current entry: read them all in
        // one batched read (under the writer lock, so nothing changes them
        // before this batch commits).
        let mut stored: HashMap<&[u8], Option<Vec<u8>>> = HashMap::with_capacity(located.len());
        {
            let mut wanted: Vec<&[u8]> = Vec::with_capacity(located.len());
            for (_, _, dkey) in &located {
                if stored.insert(dkey.as_slice(), None).is_none() {
                    wanted.push(dkey.as_slice());
                }
            }
            for (k, v) in wanted
                .iter()
                .zip(self.backend.multi_get(Cf::Data, &wanted)?)
            {
                stored.insert(k, v);
            }
        }
        let now = self.now_ms();
        let mut ops = Vec::with_capacity(writes.len() * 2 + 3);
        // The source's position is read under the writer lock too, so two
        // batches of one source cannot both decide to move it.
        let position = match &c.position {
            None => None,
            Some(p) => {
                let held = self.backend.get(Cf::Meta, &p.row)?;
                match held {
                    Some(h) if p.to <= h.as_slice() => Some((h, false)),
                    _ => {
                        ops.push(Op::Put(Cf::Meta, p.row.clone(), p.to.to_vec()));
                        Some((p.to.to_vec(), true))
                    }
                }
            }
        };
        let mut pending: HashMap<&[u8], (EntryMeta, Record)> = HashMap::new();
        let mut leaves: HashMap<(u16, u32), Agg> = HashMap::new();
        let mut stamped = false;
        let mut out = Vec::with_capacity(writes.len());
        let trees = self.trees_read()?;
        for (w, (range, bucket, dkey)) in writes.into_iter().zip(&located) {
            let (range, bucket) = (*range, *bucket);
            let (previous, before) = match pending.get(dkey.as_slice()) {
                Some((m, r)) => (Some(m.clone()), c.capture.then(|| r.clone())),
                None => match stored.get(dkey.as_slice()).and_then(|v| v.as_deref()) {
                    Some(raw) => {
                        if c.capture {
                            let r = Record::decode(raw).map_err(|e| corrupt(e.to_string()))?;
                            (Some(r.meta.clone()), Some(r))
                        } else {
                            let (m, _) =
                                Record::decode_meta(raw).map_err(|e| corrupt(e.to_string()))?;
                            (Some(m), None)
                        }
                    }
                    None => (None, None),
                },
            };
            let version = match w.version {
                Some(v) => {
                    if v.ms <= now.saturating_add(self.cfg.clock_skew_ms) {
                        st.hlc.observe(v.ms, v.logical);
                    }
                    v
                }
                None => {
                    let (mut ms, mut logical) = st.hlc.tick(now);
                    // A local write supersedes whatever the key holds, even
                    // a version stamped ahead of this clock (accepted from a
                    // fast node, or from before a clock step back): it is
                    // stamped just past it rather than decided stale and
                    // dropped. The clock itself follows only within the skew.
                    if let Some(p) = &previous
                        && (p.version.ms, p.version.logical) >= (ms, logical)
                    {
                        (ms, logical) = match p.version.logical.checked_add(1) {
                            Some(l) => (p.version.ms, l),
                            None => (p.version.ms.saturating_add(1), 0),
                        };
                        if ms <= now.saturating_add(self.cfg.clock_skew_ms) {
                            st.hlc.observe(ms, logical);
                        }
                    }
                    st.seq += 1;
                    stamped = true;
                    Version {
                        ms,
                        logical,
                        origin: self.node_id.clone(),
                        seq: st.seq,
                    }
                }
            };
            let record = match w.content {
                Content::Value(v) => Record::live(version.clone(), v),
                Content::Digest(h) => Record::digest_only(version.clone(), h),
                Content::Tombstone => Record::tombstone(version.clone()),
            };
            let decision = match (c.feed_order, &position) {
                (false, _) => decide(previous.as_ref(), &record.meta),
                // A redelivered batch: the store holds everything up to
                // its stored position, and replaying an older change in
                // feed order would set a key back.
                (true, Some((_, false))) => Decision::Duplicate,
                (true, _) if previous.as_ref() == Some(&record.meta) => Decision::Duplicate,
                (true, _) => Decision::Apply,
            };
            let incoming_meta = record.meta.clone();
            if decision == Decision::Apply {
                let leaf = leaves
                    .entry((range, bucket))
                    .or_insert_with(|| trees[range as usize].leaves()[bucket as usize]);
                if let Some(p) = &previous {
                    leaf.sub_digest(&p.digest(&self.secret, &w.key));
                }
                leaf.add_digest(&record.meta.digest(&self.secret, &w.key));
                if record.meta.tombstone {
                    ops.push(Op::Put(
                        Cf::Tombstones,
                        keys::tombstone_key(range, now, dkey),
                        keys::tombstone_value(&version),
                    ));
                }
                ops.push(Op::Put(Cf::Data, dkey.clone(), record.encode()));
                pending.insert(dkey.as_slice(), (record.meta.clone(), record));
            }
            out.push(Applied {
                decision,
                version,
                meta: incoming_meta,
                previous,
                before,
            });
        }
        drop(trees);
        if let Some(f) = c.extra {
            ops.extend(f(&out));
        }
        // The clock is persisted whenever it moved, by a local stamp or by
        // a replicated version it followed, so a restart never hands out a
        // version older than one this store has already ordered after.
        let clock_moved = stamped || st.hlc != clock_before;
        if ops.is_empty() && !clock_moved {
            return Ok((out, position));
        }
        for ((range, bucket), agg) in &leaves {
            ops.push(leaf_op(*range, *bucket, agg));
        }
        if clock_moved {
            ops.push(Op::Put(Cf::Meta, keys::META_CLOCK.to_vec(), clock_row(&st)));
        }
        let mut trees = self.trees_write()?;
        self.backend.write(ops, c.sync)?;
        for ((range, bucket), agg) in leaves {
            trees[range as usize].set_leaf(bucket, agg);
        }
        Ok((out, position))
    }

    /// Refuses an entry of range `range` written through the path for
    /// `mode` when the range has the other mode.
    pub(crate) fn check_mode(&self, range: u16, mode: RangeMode) -> Result<(), StoreError> {
        let spec = self.ranges.get(range).ok_or_else(|| corrupt("range id"))?;
        if spec.mode == mode {
            return Ok(());
        }
        let why = match spec.mode {
            RangeMode::Digests => "it takes entries only through ingest (no values)",
            RangeMode::Values => {
                "it takes values only (ingest needs a range with mode = \"digests\")"
            }
        };
        Err(StoreError::WrongMode {
            range: spec.name.clone(),
            mode: spec.mode.as_str(),
            why: why.into(),
        })
    }

    /// Moves the clock past `v` (within the clock skew, as for a replicated
    /// write) and persists it, so the next local stamp is newer than `v`: a
    /// repair that re-stamps an authority's content past the other side's
    /// version calls this first. A version beyond the skew is not followed.
    pub fn observe(&self, v: &Version) -> Result<(), StoreError> {
        let mut st = self.writer()?;
        let before = st.hlc;
        if v.ms <= self.now_ms().saturating_add(self.cfg.clock_skew_ms) {
            st.hlc.observe(v.ms, v.logical);
        }
        if st.hlc != before {
            let row = clock_row(&st);
            self.backend.write(
                vec![Op::Put(Cf::Meta, keys::META_CLOCK.to_vec(), row)],
                self.cfg.sync_writes,
            )?;
        }
        Ok(())
    }

    /// Replaces the entry at `key` with `restore` (or removes it when `None`)
    /// only if the current entry's meta equals `expected`. Undo uses this to
    /// put back before-images; it deliberately bypasses the apply rule
    /// (restoring an older version is the point) but never clobbers a write
    /// made since. Returns whether the restore happened.
    pub fn compare_and_restore(
        &self,
        key: &[u8],
        expected: Option<&EntryMeta>,
        restore: Option<&Record>,
    ) -> Result<bool, StoreError> {
        let (range, bucket, dkey) = self.locate(key)?;
        if let Some(r) = restore
            && !r.meta.tombstone
        {
            check_value(&r.value)?;
        }
        let _st = self.writer()?;
        let current = match self.backend.get(Cf::Data, &dkey)? {
            Some(raw) => Some(
                Record::decode_meta(&raw)
                    .map_err(|e| corrupt(e.to_string()))?
                    .0,
            ),
            None => None,
        };
        if current.as_ref() != expected {
            return Ok(false);
        }
        let mut leaf = self.trees_read()?[range as usize].leaves()[bucket as usize];
        let mut ops = Vec::with_capacity(3);
        if let Some(c) = &current {
            leaf.sub_digest(&c.digest(&self.secret, key));
        }
        match restore {
            Some(r) => {
                leaf.add_digest(&r.meta.digest(&self.secret, key));
                if r.meta.tombstone {
                    ops.push(Op::Put(
                        Cf::Tombstones,
                        keys::tombstone_key(range, self.now_ms(), &dkey),
                        keys::tombstone_value(&r.meta.version),
                    ));
                }
                ops.push(Op::Put(Cf::Data, dkey, r.encode()));
            }
            None => ops.push(Op::Delete(Cf::Data, dkey)),
        }
        ops.push(leaf_op(range, bucket, &leaf));
        let mut trees = self.trees_write()?;
        self.backend.write(ops, self.cfg.sync_writes)?;
        trees[range as usize].set_leaf(bucket, leaf);
        Ok(true)
    }
}

/// Rewrites a format-1 store's tombstone index (keyed by version ms) in
/// the format-2 layout, taking each tombstone's version ms as its arrival
/// time (the best a format-1 store knows), and records format 2.
fn migrate_tombstone_index<B: Backend>(backend: &B, p: &Params) -> Result<(), StoreError> {
    let mut ops = Vec::new();
    backend.scan(Cf::Tombstones, &[], None, &mut |k, _| {
        ops.push(Op::Delete(Cf::Tombstones, k.to_vec()));
        true
    })?;
    let mut bad = None;
    backend.scan(Cf::Data, &[], None, &mut |k, v| {
        let Some((range, _, _)) = keys::split_data_key(k) else {
            bad = Some("data row key too short".to_string());
            return false;
        };
        match Record::decode_meta(v) {
            Ok((m, _)) if m.tombstone => {
                ops.push(Op::Put(
                    Cf::Tombstones,
                    keys::tombstone_key(range, m.version.ms, k),
                    keys::tombstone_value(&m.version),
                ));
                true
            }
            Ok(_) => true,
            Err(e) => {
                bad = Some(e.to_string());
                false
            }
        }
    })?;
    if let Some(why) = bad {
        return Err(corrupt(format!("migrating the tombstone index: {why}")));
    }
    let p = Params {
        format: PARAMS_FORMAT,
        ..p.clone()
    };
    let raw = serde_json::to_vec(&p).map_err(|e| corrupt(e.to_string()))?;
    ops.push(Op::Put(Cf::Meta, keys::META_PARAMS.to_vec(), raw));
    backend.write(ops, true)
}

/// The op that persists leaf `agg` of `bucket` in `range`: the empty
/// aggregate is stored as no row.
fn leaf_op(range: u16, bucket: u32, agg: &Agg) -> Op {
    let k = keys::bucket_key(range, bucket);
    if agg.is_empty() {
        Op::Delete(Cf::Leaves, k)
    } else {
        Op::Put(Cf::Leaves, k, agg.encode().to_vec())
    }
}

fn clock_row(st: &WriterState) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&st.hlc.ms.to_be_bytes());
    v.extend_from_slice(&st.hlc.logical.to_be_bytes());
    v.extend_from_slice(&st.seq.to_be_bytes());
    v
}

fn load_tree<B: Backend>(backend: &B, id: u16, spec: &RangeSpec) -> Result<RangeTree, StoreError> {
    let buckets = spec.shape.buckets();
    let mut leaves = vec![Agg::default(); buckets as usize];
    let mut bad: Option<String> = None;
    backend.scan(
        Cf::Leaves,
        &keys::range_start(id),
        Some(&keys::range_end(id)),
        &mut |k, v| {
            if k.len() != keys::DATA_PREFIX {
                bad = Some(format!("leaf row key of {} bytes", k.len()));
                return false;
            }
            let b = u32::from_be_bytes([k[2], k[3], k[4], k[5]]) as u64;
            if b >= buckets {
                bad = Some(format!(
                    "range {:?}: leaf row for bucket {b} but the shape has {buckets} buckets",
                    spec.name
                ));
                return false;
            }
            match Agg::decode(v) {
                Some(a) => leaves[b as usize] = a,
                None => {
                    bad = Some(format!(
                        "range {:?}: leaf {b} has {} bytes, not 40",
                        spec.name,
                        v.len()
                    ));
                    return false;
                }
            }
            true
        },
    )?;
    if let Some(why) = bad {
        return Err(corrupt(why));
    }
    Ok(RangeTree::from_leaves(spec.shape, leaves))
}

fn describe_mismatch(stored: &[RangeSpec], want: &[RangeSpec]) -> String {
    if stored.len() != want.len() {
        return format!(
            "store has {} ranges, configuration has {}",
            stored.len(),
            want.len()
        );
    }
    for (s, w) in stored.iter().zip(want) {
        if s != w {
            return format!(
                "range {:?} (fanout {}, depth {}) in the store vs {:?} (fanout {}, depth {}) configured, or its bounds differ",
                s.name, s.shape.fanout, s.shape.depth, w.name, w.shape.fanout, w.shape.depth
            );
        }
    }
    "ranges differ".into()
}

impl<B: Backend> Store<B> {
    /// Closes the store, returning its backend.
    pub fn into_backend(self) -> B {
        self.backend
    }
}
