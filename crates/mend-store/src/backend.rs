//! The storage backend: ordered byte-keyed column families, point reads,
//! ordered scans and atomic multi-row batches. Everything else is `Store`'s.

use crate::error::StoreError;

/// Column families, each with its row layout. All integers are big-endian
/// so that byte order equals numeric order, which makes a subtree's buckets
/// one contiguous key span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Entries: `[range u16][row bucket u32][user key]` → a
    /// [`mend_core::Record`]; the row bucket is the key's bucket at the
    /// range's row depth (format 3: the deepest its fan-out allows;
    /// format 2: its created depth), see [`crate::keys::Layout`].
    Data,
    /// Tree leaves: `[range u16][depth u8][bucket u24]` (format 3; format
    /// 2: `[range u16][bucket u32]`) → a [`mend_core::Agg`] (40 bytes);
    /// absent means the empty aggregate. Rows of a depth other than the
    /// tree's are a deepening's, not yet switched to or not yet removed.
    Leaves,
    /// Tombstone index, by the local wall time each tombstone was written
    /// here, per range, for the purge (which may remove only tombstones
    /// every replica already held, known by when they arrived):
    /// `[range u16][arrived ms u64][data key]` →
    /// `[version ms u64][logical u32][seq u64]`. The value names the
    /// tombstone the row was written for: a row whose data entry has been
    /// overwritten since is stale.
    Tombstones,
    /// Store parameters, clock and ingest positions:
    /// * `params` → JSON `{"format", "secret_fingerprint", "ranges",
    ///   "depths"}`, the parameters persisted at creation and checked on
    ///   every open (`depths`: each range's tree depth, once one deepened);
    /// * `clock` → `[hlc ms u64][hlc logical u32][seq u64]`;
    /// * `health-probe` → `[ms u64]`, rewritten to prove the store writable;
    /// * `ingest/[range u16][source name bytes]` → the source's position
    ///   (opaque bytes, 1..=`POSITION_BYTES_MAX`), written in the same batch
    ///   as the entries that reach it;
    /// * `agent/...` → rows of the agent's; the store never reads them.
    Meta,
    /// Repair journal (owned by the agent): `[repair id][...]` → before-images.
    Journal,
}

impl Cf {
    /// Every column family, each at the index of its discriminant (`cf as
    /// usize`), so backends may keep per-family state in an array.
    pub const ALL: [Cf; 5] = [Cf::Data, Cf::Leaves, Cf::Tombstones, Cf::Meta, Cf::Journal];

    /// Its name in RocksDB.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Leaves => "leaves",
            Cf::Tombstones => "tombstones",
            Cf::Meta => "meta",
            Cf::Journal => "journal",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Cf::ALL.len() {
        assert!(Cf::ALL[i] as usize == i, "Cf::ALL in discriminant order");
        i += 1;
    }
};

/// One write in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a row.
    Put(Cf, Vec<u8>, Vec<u8>),
    /// Remove a row.
    Delete(Cf, Vec<u8>),
}

impl Op {
    /// The row the op writes: its column family and key.
    pub fn row(&self) -> (Cf, &[u8]) {
        match self {
            Op::Put(cf, k, _) | Op::Delete(cf, k) => (*cf, k),
        }
    }
}

/// A scan visitor: gets each (key, value) in order; returns `false` to stop.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// A visitor over several spans: gets the span's index and each (key,
/// value) in order; returns `false` to stop.
pub type SpanVisit<'a> = dyn FnMut(usize, &[u8], &[u8]) -> bool + 'a;

/// Ordered key-value storage with atomic batches.
pub trait Backend: Send + Sync + 'static {
    /// Reads one row.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads several rows of one column family, in the order of `keys`.
    /// Backends with a batched read (RocksDB's `MultiGet`) override this.
    fn multi_get(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(cf, k)).collect()
    }

    /// Applies all `ops` atomically: after a crash either all or none are
    /// visible. `sync` forces them to stable storage before returning.
    fn write(&self, ops: Vec<Op>, sync: bool) -> Result<(), StoreError>;

    /// Visits the rows with `start <= key < end` (`end = None`: to the end of
    /// the column family) in key order, from one consistent view.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError>;

    /// Visits the rows of each span `[start, end)` in turn (spans ascending
    /// and disjoint), telling `visit` the span's index. Backends with
    /// iterators override this to use one iterator for all spans.
    fn scan_spans(
        &self,
        cf: Cf,
        spans: &[(Vec<u8>, Vec<u8>)],
        visit: &mut SpanVisit<'_>,
    ) -> Result<(), StoreError> {
        let mut stopped = false;
        for (i, (start, end)) in spans.iter().enumerate() {
            self.scan(cf, start, Some(end), &mut |k, v| {
                stopped = !visit(i, k, v);
                !stopped
            })?;
            if stopped {
                break;
            }
        }
        Ok(())
    }

    /// Approximate bytes the backend occupies on disk (0 for memory).
    fn disk_bytes(&self) -> u64 {
        0
    }
}

/// A call to a backend, as a [`Wrapper`] sees it before passing it on.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// [`Backend::get`] in this column family.
    Get(Cf),
    /// [`Backend::multi_get`] in this column family.
    MultiGet(Cf),
    /// [`Backend::write`] of these ops.
    Write(&'a [Op]),
    /// [`Backend::scan`] in this column family.
    Scan(Cf),
    /// [`Backend::scan_spans`] in this column family.
    ScanSpans(Cf),
}

/// A backend around another that sees every call first and may fail it:
/// fault injection and spies (the simulator's crashed process, tests' busy
/// or full disks). Every type that implements this is a [`Backend`] that
/// passes each call, after [`Wrapper::before`], to [`Wrapper::inner`].
pub trait Wrapper: Send + Sync + 'static {
    /// The wrapped backend.
    type Inner: Backend;
    /// The wrapped backend.
    fn inner(&self) -> &Self::Inner;
    /// Sees `call` before the wrapped backend does; an error fails the
    /// call without passing it on.
    fn before(&self, call: Call<'_>) -> Result<(), StoreError>;
}

impl<W: Wrapper> Backend for W {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.before(Call::Get(cf))?;
        self.inner().get(cf, key)
    }
    fn multi_get(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.before(Call::MultiGet(cf))?;
        self.inner().multi_get(cf, keys)
    }
    fn write(&self, ops: Vec<Op>, sync: bool) -> Result<(), StoreError> {
        self.before(Call::Write(&ops))?;
        self.inner().write(ops, sync)
    }
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        self.before(Call::Scan(cf))?;
        self.inner().scan(cf, start, end, visit)
    }
    fn scan_spans(
        &self,
        cf: Cf,
        spans: &[(Vec<u8>, Vec<u8>)],
        visit: &mut SpanVisit<'_>,
    ) -> Result<(), StoreError> {
        self.before(Call::ScanSpans(cf))?;
        self.inner().scan_spans(cf, spans, visit)
    }
    fn disk_bytes(&self) -> u64 {
        self.inner().disk_bytes()
    }
}
