//! The store: open and the shared state.
//!
//! Every write (client put/delete, replicated write, repair, and a change
//! feed's batch through [`Store::ingest`]) goes through one commit
//! (`Store::commit`, in `write`), which decides each entry with
//! [`mend_core::decide`] and commits data row, tombstone index row, leaf
//! row, clock row and, for an ingest, the source's position row in one
//! backend batch. Reads for the exchange, rebuild, verify and purge live in
//! the submodules; ingest in `ingest`.

mod deepen;
mod ingest;
mod read;
mod verify;
mod write;

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use mend_core::error::check_key;
use mend_core::{Agg, Hlc, NodeId, RangeMap, RangeSpec, Record, Secret, TreeShape};

use crate::backend::{Backend, Cf, Op};
use crate::error::StoreError;
use crate::keys;
use crate::tree::RangeTree;

pub use deepen::{CATCH_UP_LOCKED_MAX, DEEPEN_ENTRIES_PER_BUCKET_DEFAULT, Deepened};
pub use ingest::{IngestBatch, IngestEntry, Ingested};
pub use read::{LEAF_LIST_PARALLEL_BUCKETS_MIN, LeafEntry, RangeStats, Stats};
pub use verify::{LeafSnapshot, Purged, RangeVerify, VerifyReport};
pub use write::{Applied, ExtraRows, Write};
pub(crate) use write::{Commit, Content, Incoming, PositionUpdate, remove_from_leaf};

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
    /// The ranges as created (their shapes' depths are the initial ones).
    ranges: Vec<RangeSpec>,
    /// Format 3: each range's tree depth now (it deepens as the range
    /// grows), in range order; empty until a range first deepens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    depths: Vec<u32>,
}

impl Params {
    /// Range `id`'s tree depth now.
    fn depth(&self, id: usize) -> u32 {
        self.depths
            .get(id)
            .copied()
            .unwrap_or(self.ranges[id].shape.depth)
    }
}

/// 3: data rows laid out by the bucket at the deepest depth
/// ([`keys::Layout`]) and leaf rows tagged with their depth, so trees
/// deepen online. 2: tombstone index rows keyed by range and arrival time;
/// data rows by the bucket at the created depth (a format-2 store keeps its
/// depth). 1: tombstone index by version ms (migrated to 2 on open).
const PARAMS_FORMAT: u32 = 3;

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
    /// The persisted parameters (format and depths; a deepening rewrites
    /// the depths under the writer lock).
    params: Mutex<Params>,
    /// A deepening in progress: the buckets writers have touched since it
    /// started ([`deepen`]).
    deepening: Mutex<Option<deepen::Touched>>,
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
                if !(1..=PARAMS_FORMAT).contains(&p.format) {
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
                    depths: Vec::new(),
                };
                let raw = serde_json::to_vec(&p).map_err(|e| corrupt(e.to_string()))?;
                backend.write(
                    vec![Op::Put(Cf::Meta, keys::META_PARAMS.to_vec(), raw)],
                    true,
                )?;
                p
            }
        };
        let mut params = params;
        if params.format == 1 {
            migrate_tombstone_index(&backend, &params)?;
            params.format = 2;
        }
        if !params.depths.is_empty() && params.depths.len() != params.ranges.len() {
            return Err(corrupt(format!(
                "{} tree depths for {} ranges",
                params.depths.len(),
                params.ranges.len()
            )));
        }
        let ranges = RangeMap::new(params.ranges.clone())
            .map_err(|e| corrupt(format!("persisted ranges: {e}")))?;
        let mut trees = Vec::with_capacity(ranges.specs().len());
        for (id, spec) in ranges.specs().iter().enumerate() {
            let shape = spec
                .shape
                .at_depth(params.depth(id))
                .ok()
                .filter(|s| s.depth >= spec.shape.depth && s.depth <= row_depth(&params, id))
                .ok_or_else(|| {
                    corrupt(format!(
                        "range {:?}: tree depth {} is not reachable from its shape",
                        spec.name,
                        params.depth(id)
                    ))
                })?;
            let layout = layout_of(&params, id as u16, shape.depth);
            trees.push(load_tree(&backend, layout, spec, shape)?);
        }
        let (hlc, seq) = match backend.get(Cf::Meta, keys::META_CLOCK)? {
            Some(raw) if raw.len() == CLOCK_ROW_BYTES => {
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
            params: Mutex::new(params),
            deepening: Mutex::new(None),
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

    fn params(&self) -> Result<MutexGuard<'_, Params>, StoreError> {
        self.params.lock().map_err(|_| poisoned())
    }

    /// Where range `range`'s rows are at tree depth `depth` (at most its
    /// tree's depth now).
    pub fn layout(&self, range: u16, depth: u32) -> Result<keys::Layout, StoreError> {
        let p = self.params()?;
        if usize::from(range) >= p.ranges.len() {
            return Err(corrupt("range id"));
        }
        Ok(layout_of(&p, range, depth))
    }

    /// The deepest depth range `range`'s tree may reach: the depth its data
    /// rows are laid out by ([`keys::Layout`]).
    pub fn row_depth(&self, range: u16) -> Result<u32, StoreError> {
        let p = self.params()?;
        if usize::from(range) >= p.ranges.len() {
            return Err(corrupt("range id"));
        }
        Ok(row_depth(&p, usize::from(range)))
    }

    /// Locates a key: (range id, its data row prefix, data row key). The
    /// prefix is its bucket at the range's row depth; its bucket at the
    /// tree's depth is [`keys::Layout::bucket_of_row`] of it.
    pub(crate) fn locate_row(&self, key: &[u8]) -> Result<(u16, u32, Vec<u8>), StoreError> {
        check_key(key)?;
        let range = self.ranges.lookup(key)?;
        let fanout = self
            .ranges
            .get(range)
            .map(|s| s.shape.fanout)
            .ok_or_else(|| corrupt("range id"))?;
        let depth = self.row_depth(range)?;
        let row = TreeShape { fanout, depth }.bucket_of(self.secret.placement(key));
        Ok((range, row, keys::data_key(range, row, key)))
    }

    /// Locates a key: (range id, bucket at the tree's depth now, data row
    /// key).
    pub fn locate(&self, key: &[u8]) -> Result<(u16, u32, Vec<u8>), StoreError> {
        let (range, row, dkey) = self.locate_row(key)?;
        let depth = self.trees_read()?[usize::from(range)].shape().depth;
        let bucket = self.layout(range, depth)?.bucket_of_row(row);
        Ok((range, bucket, dkey))
    }
}

/// The depth range `id`'s data rows are laid out by.
fn row_depth(p: &Params, id: usize) -> u32 {
    let created = p.ranges[id].shape;
    if p.format >= 3 {
        TreeShape::max_depth(created.fanout)
    } else {
        created.depth
    }
}

fn layout_of(p: &Params, range: u16, depth: u32) -> keys::Layout {
    let id = usize::from(range);
    keys::Layout::new(
        range,
        p.ranges[id].shape.fanout_bits(),
        row_depth(p, id),
        depth,
        p.format >= 3,
    )
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
        format: 2,
        ..p.clone()
    };
    let raw = serde_json::to_vec(&p).map_err(|e| corrupt(e.to_string()))?;
    ops.push(Op::Put(Cf::Meta, keys::META_PARAMS.to_vec(), raw));
    backend.write(ops, true)
}

/// The op that persists leaf `agg` of `bucket` (at `layout`'s depth): the
/// empty aggregate is stored as no row.
fn leaf_op(layout: &keys::Layout, bucket: u32, agg: &Agg) -> Op {
    let k = layout.leaf_key(bucket);
    if agg.is_empty() {
        Op::Delete(Cf::Leaves, k)
    } else {
        Op::Put(Cf::Leaves, k, agg.encode().to_vec())
    }
}

/// Bytes of the `clock` meta row: `[hlc ms u64][hlc logical u32][seq u64]`.
const CLOCK_ROW_BYTES: usize = 20;

fn clock_row(st: &WriterState) -> Vec<u8> {
    let mut v = Vec::with_capacity(CLOCK_ROW_BYTES);
    v.extend_from_slice(&st.hlc.ms.to_be_bytes());
    v.extend_from_slice(&st.hlc.logical.to_be_bytes());
    v.extend_from_slice(&st.seq.to_be_bytes());
    // The row written is the row `open` reads back: a field widened here
    // only would make the next open refuse the store as corrupt.
    assert_eq!(v.len(), CLOCK_ROW_BYTES, "clock row layout");
    v
}

/// Loads range `spec`'s tree of `shape` from its leaf rows at `layout`.
/// Leaf rows of another depth (a deepening that did not finish) are not
/// read; [`Store::deepen`] removes them.
fn load_tree<B: Backend>(
    backend: &B,
    layout: keys::Layout,
    spec: &RangeSpec,
    shape: TreeShape,
) -> Result<RangeTree, StoreError> {
    let buckets = shape.buckets();
    let mut leaves = vec![Agg::default(); buckets as usize];
    let mut bad: Option<String> = None;
    let mut total = 0u64;
    backend.scan(
        Cf::Leaves,
        &keys::range_start(layout.range()),
        Some(&keys::range_end(layout.range())),
        &mut |k, v| {
            let Some(b) = layout.leaf_bucket(k) else {
                if layout.is_other_depth(k) {
                    return true;
                }
                bad = Some(format!("leaf row key {k:02x?} is not a leaf row"));
                return false;
            };
            let b = u64::from(b);
            if b >= buckets {
                bad = Some(format!(
                    "range {:?}: leaf row for bucket {b} but the shape has {buckets} buckets",
                    spec.name
                ));
                return false;
            }
            match Agg::decode(v) {
                // The tree sums the counts; a sum past u64::MAX would wrap
                // and break its invariant that a node counts at least each
                // leaf under it. No real range holds 2^64 entries.
                Some(a) if total.checked_add(a.count).is_none() => {
                    bad = Some(format!(
                        "range {:?}: leaf {b} counts {} entries, past any real total",
                        spec.name, a.count
                    ));
                    return false;
                }
                Some(a) => {
                    total += a.count;
                    leaves[b as usize] = a;
                }
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
    Ok(RangeTree::from_leaves(shape, leaves))
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
