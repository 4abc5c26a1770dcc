//! The tree exchange, sans I/O: the messages two replicas trade to find the
//! exact set of keys on which they differ, the responder's answers, and the
//! initiator's state machine. The gRPC layer only carries these messages;
//! tests and benchmarks drive them in memory.
//!
//! One round trip advances two levels. The initiator sends its hashes of the
//! children of the nodes it already knows differ ([`Probe`]); the responder
//! marks which of them differ from its own and, in the same reply, sends its
//! hashes of *their* children ([`ProbeReply`]); the initiator compares those
//! locally and probes again two levels down. Node hashes are 8-byte
//! truncations of the aggregate hash: a false match needs a 2^-64 event in a
//! keyed hash. A subtree that is empty on one side is not descended: if the
//! peer's is empty, the local entries under it are listed locally; if the
//! local one is, the peer lists its entries for the whole span at once. That
//! keeps a wiped replica close to the cost of listing every entry.
//!
//! At the leaves, the initiator sends the 8-byte digests of its entries in
//! each differing bucket ([`LeafProbe`]); the responder answers which of them
//! it lacks and lists its own entries the initiator lacks ([`LeafReply`]).
//! Keys then pair up into [`Divergence`]s carrying both sides' versions.

use std::collections::{BTreeMap, HashMap, HashSet};

use thiserror::Error;

use crate::agg::Agg;
use crate::limits::NODE_ID_BYTES_MAX;
use crate::shape::TreeShape;
use crate::version::Version;

/// Most hashes one [`Probe`] carries (512 KiB of hashes); larger levels are
/// split into several probes.
pub const PROBE_HASHES_MAX: usize = 65_536;

/// Most child hashes the replies to one probe request may carry (8 MiB of
/// hashes): the initiator sizes probes and groups them into requests
/// ([`probe_batches`]) so that even if every probed node differs, the reply
/// fits the gRPC message limit, whatever the fan-out (16 to 256); the
/// responder refuses larger requests.
pub const PROBE_REPLY_HASHES_MAX: usize = 1 << 20;

// A probe of one parent (FANOUT_MAX hashes) fits a probe, and its reply's
// grandchildren a request: so `per` above is never 0 and no probe is refused.
const _: () = assert!((crate::limits::FANOUT_MAX as usize) <= PROBE_HASHES_MAX);
const _: () = assert!(
    (crate::limits::FANOUT_MAX as usize) * (crate::limits::FANOUT_MAX as usize)
        <= PROBE_REPLY_HASHES_MAX
);

/// Most bucket queries one [`LeafProbe`] carries.
pub const LEAF_QUERIES_MAX: usize = 4_096;

/// Most entry digests one [`LeafProbe`] carries in total.
pub const LEAF_DIGESTS_MAX: usize = 262_144;

/// Approximate bytes of entries per [`LeafReply`] (1 MiB): a query whose
/// entries exceed it (a span over a wiped replica) is answered with several
/// replies, each well under the gRPC message limit. An entry costs its key
/// plus [`LEAF_ENTRY_OVERHEAD_BYTES`].
pub const LEAF_REPLY_BYTES_MAX: usize = 1 << 20;

/// Most bytes an entry adds to a reply besides its key, in any encoding of
/// a leaf reply: its version as varints (ms 10, logical 5, seq 10 bytes),
/// its origin once (a length byte and [`NODE_ID_BYTES_MAX`]), and 7 bytes
/// of framing (key prefix and length, flags). The packed encoding asserts
/// at compile time that its worst case fits.
pub const LEAF_ENTRY_OVERHEAD_BYTES: usize = (10 + 5 + 10) + (1 + NODE_ID_BYTES_MAX) + 7;

/// Most buckets one [`LeafProbe`] may cover in total (the sum of its
/// queries' counts). Bounds what one request makes the responder list: a
/// peer-only span over a wiped replica is sent as several probes. The
/// listing of a request costs about this many buckets' entries.
pub const LEAF_SPAN_BUCKETS_MAX: u64 = 4_096;

// The descent cuts spans into pieces of this many buckets with an `as u32`
// cast: it must fit, or the pieces would silently shrink to nothing.
const _: () = assert!(LEAF_SPAN_BUCKETS_MAX <= u32::MAX as u64);

/// Most entries the initiator keeps from its leaf listing until the replies
/// arrive (about 30 MiB); buckets past it are listed again for their lacking
/// entries.
pub const LISTING_CACHE_ENTRIES_MAX: usize = 262_144;

/// Most quiet buckets (hashes differ, entries do not) a descent names; more
/// are counted but not listed.
pub const QUIET_BUCKETS_MAX: usize = 1_024;

/// A truncated node hash (0 for an empty node).
pub type NodeHash = u64;

/// The wire hash of a node aggregate: the first 8 bytes of its hash, or 0
/// when the node is empty.
pub fn node_hash(a: &Agg) -> NodeHash {
    if a.is_empty() {
        return 0;
    }
    let h = a.hash();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b).max(1)
}

/// The wire form of an entry digest: its first 8 bytes.
pub fn entry_hash(d: &crate::Digest) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// What the exchange needs to know about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySummary {
    /// The key.
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// True for a tombstone.
    pub tombstone: bool,
    /// [`entry_hash`] of its digest: equal iff the entries are equal. Zero
    /// on the entries a peer lists in a [`LeafReply`]: there the hash says
    /// nothing the listing does not ("differs from every entry I hold in
    /// that bucket"), so it is not sent: the packed encoding of those lists,
    /// a layer up, leaves it out.
    pub hash: u64,
}

/// Read access to the local tree, implemented by the store.
pub trait TreeView {
    /// The range's tree shape.
    fn shape(&self) -> TreeShape;
    /// Hashes of all children (at `level + 1`) of `parents` at `level`,
    /// `fanout` per parent, in order.
    fn child_hashes(&self, level: u32, parents: &[u32]) -> Result<Vec<NodeHash>, ExchangeError>;
    /// The entries of each bucket in `first..first + count`, in bucket order.
    fn entries(
        &self,
        first: u32,
        count: u32,
    ) -> Result<Vec<(u32, Vec<EntrySummary>)>, ExchangeError>;

    /// The bucket `key` falls in, or `None` when the key is outside the
    /// range (the initiator checks what a peer lists against it).
    fn bucket_of(&self, key: &[u8]) -> Option<u32>;

    /// The entries of each of `buckets` (ascending), in bucket order; empty
    /// buckets may be omitted. Views over a store override this to list
    /// them all in one pass.
    fn entries_of(&self, buckets: &[u32]) -> Result<Vec<(u32, Vec<EntrySummary>)>, ExchangeError> {
        let mut out = Vec::with_capacity(buckets.len());
        for b in buckets {
            out.extend(self.entries(*b, 1)?);
        }
        Ok(out)
    }
}

/// Errors of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExchangeError {
    /// The peer sent something that does not fit the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Reading the local tree failed.
    #[error("local store: {message}")]
    Local {
        /// The store's message.
        message: String,
        /// True if the same read may succeed later (the store was busy):
        /// the exchange can be retried.
        retryable: bool,
    },
    /// The exchange found more than its limits allow (`diff_keys_max`, or
    /// the bytes of the keys held): the wrong peer, or a wiped replica.
    #[error("{0}")]
    Limit(String),
}

fn proto(msg: impl Into<String>) -> ExchangeError {
    ExchangeError::Protocol(msg.into())
}

/// The initiator's hashes of the children of `parents` (nodes at `level - 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Level of the hashes sent (1..=depth).
    pub level: u32,
    /// Parent nodes at `level - 1`.
    pub parents: Vec<u32>,
    /// `fanout` hashes per parent.
    pub hashes: Vec<NodeHash>,
}

/// How the responder's node compares with the initiator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Equal hashes.
    Same,
    /// Different hashes, both sides non-empty (or the initiator's empty).
    Differs,
    /// The responder has nothing under this node; the initiator's is not.
    Empty,
}

/// The responder's answer to a [`Probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    /// One status per hash of the probe.
    pub status: Vec<NodeStatus>,
    /// When `level < depth`: for each node with status `Differs` whose
    /// initiator hash is non-zero, in order, the responder's `fanout`
    /// hashes of its children at `level + 1`.
    pub next: Vec<NodeHash>,
}

/// One bucket (or span of buckets) the initiator asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketQuery {
    /// First bucket.
    pub first: u32,
    /// Number of buckets (more than one only when the initiator has no
    /// entries there, so `hashes` is empty).
    pub count: u32,
    /// The initiator's entry hashes in the bucket.
    pub hashes: Vec<u64>,
}

/// The initiator's entry hashes for differing buckets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeafProbe {
    /// The buckets asked about.
    pub queries: Vec<BucketQuery>,
}

/// The responder's answer for one query of a [`LeafProbe`]; a query may get
/// several (continuations carry an empty `lacking`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafReply {
    /// Index of the query answered.
    pub query: u32,
    /// Per hash of the query: true where the responder lacks that entry
    /// (empty in continuation replies).
    pub lacking: Vec<bool>,
    /// The responder's entries the initiator lacks, in key order per bucket,
    /// with `hash` zero (see [`EntrySummary::hash`]).
    pub extra: Vec<EntrySummary>,
}

/// The weight of a probe in a request: the child hashes its reply may
/// carry if every node differs (above the leaves), or its own hashes (at
/// the leaves, whose reply is two bits per hash).
fn probe_weight(shape: TreeShape, p: &Probe) -> usize {
    if p.level < shape.depth {
        p.hashes.len().saturating_mul(shape.fanout as usize)
    } else {
        p.hashes.len()
    }
}

/// Groups consecutive probes into requests of at most
/// [`PROBE_REPLY_HASHES_MAX`] weight ([`probe_weight`]): a request carries
/// at most 8 MiB of hashes and its reply at most 8 MiB of child hashes,
/// whatever the fan-out (each group holds at least one probe). Returns
/// index ranges of `probes`.
pub fn probe_batches(probes: &[Probe], shape: TreeShape) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut load) = (0, 0usize);
    for (i, p) in probes.iter().enumerate() {
        let w = probe_weight(shape, p);
        if i > start && load + w > PROBE_REPLY_HASHES_MAX {
            out.push(start..i);
            (start, load) = (i, 0);
        }
        load += w;
    }
    if start < probes.len() {
        out.push(start..probes.len());
    }
    out
}

/// Checks a whole probe request against [`PROBE_REPLY_HASHES_MAX`] before
/// any probe of it is answered.
pub fn check_probe_request(shape: TreeShape, probes: &[Probe]) -> Result<(), ExchangeError> {
    let weight: usize = probes
        .iter()
        .map(|p| probe_weight(shape, p))
        .fold(0usize, usize::saturating_add);
    if weight > PROBE_REPLY_HASHES_MAX {
        return Err(proto(format!(
            "probe request weighs {weight} hashes (its own at the leaves, its reply's children above), at most {PROBE_REPLY_HASHES_MAX}: split it"
        )));
    }
    Ok(())
}

/// Answers a probe from the local tree.
pub fn respond_probe(view: &dyn TreeView, p: &Probe) -> Result<ProbeReply, ExchangeError> {
    let shape = view.shape();
    let f = shape.fanout as usize;
    if p.level == 0 || p.level > shape.depth {
        return Err(proto(format!(
            "probe level {} outside 1..={}",
            p.level, shape.depth
        )));
    }
    if p.hashes.len() > PROBE_HASHES_MAX || p.hashes.len() != p.parents.len() * f {
        return Err(proto(format!(
            "probe carries {} hashes for {} parents (fanout {f}, at most {PROBE_HASHES_MAX})",
            p.hashes.len(),
            p.parents.len()
        )));
    }
    let parent_nodes = shape.nodes_at(p.level - 1);
    if let Some(bad) = p.parents.iter().find(|x| **x as u64 >= parent_nodes) {
        return Err(proto(format!("parent {bad} outside level {}", p.level - 1)));
    }
    let mine = view.child_hashes(p.level - 1, &p.parents)?;
    let mut status = Vec::with_capacity(mine.len());
    let mut expand = Vec::new();
    for (i, (m, t)) in mine.iter().zip(&p.hashes).enumerate() {
        let s = if m == t {
            NodeStatus::Same
        } else if *m == 0 {
            NodeStatus::Empty
        } else {
            NodeStatus::Differs
        };
        if s == NodeStatus::Differs && *t != 0 {
            expand.push(p.parents[i / f] * shape.fanout + (i % f) as u32);
        }
        status.push(s);
    }
    let next = if p.level < shape.depth && !expand.is_empty() {
        view.child_hashes(p.level, &expand)?
    } else {
        Vec::new()
    };
    Ok(ProbeReply { status, next })
}

/// Checks a leaf probe against the limits and the tree before anything is
/// listed: query count, digests, bucket bounds and the total span.
pub fn check_leaf_probe(view: &dyn TreeView, lp: &LeafProbe) -> Result<(), ExchangeError> {
    let shape = view.shape();
    if lp.queries.len() > LEAF_QUERIES_MAX {
        return Err(proto(format!(
            "{} bucket queries, at most {LEAF_QUERIES_MAX}",
            lp.queries.len()
        )));
    }
    let total: usize = lp.queries.iter().map(|q| q.hashes.len()).sum();
    if total > LEAF_DIGESTS_MAX {
        return Err(proto(format!(
            "{total} entry hashes, at most {LEAF_DIGESTS_MAX}"
        )));
    }
    let mut span = 0u64;
    for q in &lp.queries {
        let end = q.first as u64 + q.count as u64;
        if q.count == 0 || end > shape.buckets() || (q.count > 1 && !q.hashes.is_empty()) {
            return Err(proto(format!("bad bucket query {}+{}", q.first, q.count)));
        }
        span += u64::from(q.count);
    }
    if span > LEAF_SPAN_BUCKETS_MAX {
        return Err(proto(format!(
            "leaf probe spans {span} buckets, at most {LEAF_SPAN_BUCKETS_MAX}"
        )));
    }
    Ok(())
}

/// Answers a leaf probe from the local entries, one reply per query that has
/// something to report.
pub fn respond_leaves(
    view: &dyn TreeView,
    lp: &LeafProbe,
) -> Result<Vec<LeafReply>, ExchangeError> {
    check_leaf_probe(view, lp)?;
    // Single buckets (the usual query) are listed in one pass.
    let mut singles: Vec<u32> = lp
        .queries
        .iter()
        .filter(|q| q.count == 1)
        .map(|q| q.first)
        .collect();
    singles.sort_unstable();
    singles.dedup();
    let listed: HashMap<u32, Vec<EntrySummary>> = view.entries_of(&singles)?.into_iter().collect();
    let mut out = Vec::new();
    for (qi, q) in lp.queries.iter().enumerate() {
        let theirs: HashSet<u64> = q.hashes.iter().copied().collect();
        let mut mine_set = HashSet::new();
        let mut extra = Vec::new();
        let mut visit = |entries: &[EntrySummary]| {
            for e in entries {
                mine_set.insert(e.hash);
                if !theirs.contains(&e.hash) {
                    extra.push(EntrySummary {
                        hash: 0,
                        ..e.clone()
                    });
                }
            }
        };
        if q.count == 1 {
            visit(listed.get(&q.first).map_or(&[][..], |v| v.as_slice()));
        } else {
            for (_, entries) in view.entries(q.first, q.count)? {
                visit(&entries);
            }
        }
        let lacking: Vec<bool> = q.hashes.iter().map(|h| !mine_set.contains(h)).collect();
        if extra.is_empty() && !lacking.iter().any(|x| *x) {
            continue;
        }
        // Split the entries so no reply exceeds LEAF_REPLY_BYTES_MAX.
        let mut first = LeafReply {
            query: qi as u32,
            lacking,
            extra: Vec::new(),
        };
        let mut cur = &mut first;
        let mut rest: Vec<LeafReply> = Vec::new();
        let mut bytes = 0usize;
        for e in extra {
            let size = e.key.len() + LEAF_ENTRY_OVERHEAD_BYTES;
            if bytes + size > LEAF_REPLY_BYTES_MAX && !cur.extra.is_empty() {
                rest.push(LeafReply {
                    query: qi as u32,
                    lacking: Vec::new(),
                    extra: Vec::new(),
                });
                let last = rest.len() - 1;
                cur = &mut rest[last];
                bytes = 0;
            }
            bytes += size;
            cur.extra.push(e);
        }
        out.push(first);
        out.extend(rest);
    }
    Ok(out)
}

/// One key on which the replicas differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The key.
    pub key: Vec<u8>,
    /// The local entry, if any.
    pub local: Option<EntrySummary>,
    /// The peer's entry, if any.
    pub peer: Option<EntrySummary>,
}

/// What the initiator should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these probes (one round; each gets a [`ProbeReply`]).
    Probe(Vec<Probe>),
    /// Send these leaf probes (one round; all replies go to [`Descent::on_leaf_replies`]).
    Leaves(Vec<LeafProbe>),
    /// Finished.
    Done,
}

/// Counters of a descent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DescentStats {
    /// Interior and leaf node hashes compared.
    pub nodes_compared: u64,
    /// Buckets whose entries were compared.
    pub leaves_compared: u64,
}

/// The initiator's side of the exchange for one range.
#[derive(Debug)]
pub struct Descent {
    shape: TreeShape,
    /// Probes in flight, to interpret their replies.
    sent: Vec<Probe>,
    /// Leaf probes in flight.
    sent_leaves: Vec<LeafProbe>,
    /// Differing buckets found so far, with the initiator's entries.
    local_only_spans: Vec<(u32, u32)>,
    peer_only_spans: Vec<(u32, u32)>,
    both_buckets: Vec<u32>,
    /// The entries listed for the leaf probes in flight (bounded by
    /// [`LISTING_CACHE_ENTRIES_MAX`]), so a reply's lacking entries come
    /// from the same listing as the hashes sent, without a second read.
    listed: HashMap<u32, Vec<EntrySummary>>,
    cached_entries: usize,
    found: BTreeMap<Vec<u8>, Divergence>,
    /// Key bytes held in `found`.
    found_key_bytes: usize,
    limits: DescentLimits,
    stats: DescentStats,
    /// Buckets whose hashes differed but whose listings showed no divergent
    /// entry (at most [`QUIET_BUCKETS_MAX`]): a tree out of step with its
    /// data on one side, or an 8-byte entry-hash collision.
    quiet: Vec<u32>,
}

/// Bounds on what one descent holds while it runs, so a hostile or wiped
/// peer cannot make the initiator allocate without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescentLimits {
    /// Most divergent keys (the agent's `diff_keys_max`).
    pub keys_max: usize,
    /// Most bytes of divergent keys.
    pub key_bytes_max: usize,
}

impl Default for DescentLimits {
    fn default() -> Self {
        DescentLimits {
            keys_max: usize::MAX,
            key_bytes_max: usize::MAX,
        }
    }
}

impl Descent {
    /// Starts a descent given both roots. Returns the first step.
    pub fn start(
        view: &dyn TreeView,
        local_root: NodeHash,
        peer_root: NodeHash,
    ) -> Result<(Descent, Step), ExchangeError> {
        Descent::start_with(view, local_root, peer_root, DescentLimits::default())
    }

    /// [`Descent::start`] with bounds on the divergence held.
    pub fn start_with(
        view: &dyn TreeView,
        local_root: NodeHash,
        peer_root: NodeHash,
        limits: DescentLimits,
    ) -> Result<(Descent, Step), ExchangeError> {
        let shape = view.shape();
        let mut d = Descent {
            shape,
            sent: Vec::new(),
            sent_leaves: Vec::new(),
            local_only_spans: Vec::new(),
            peer_only_spans: Vec::new(),
            both_buckets: Vec::new(),
            listed: HashMap::new(),
            cached_entries: 0,
            found: BTreeMap::new(),
            found_key_bytes: 0,
            limits,
            stats: DescentStats {
                nodes_compared: 1,
                leaves_compared: 0,
            },
            quiet: Vec::new(),
        };
        if local_root == peer_root {
            return Ok((d, Step::Done));
        }
        let step = d.after_compare(view, 0, vec![(0, local_root, peer_root)])?;
        Ok((d, step))
    }

    /// The counters so far.
    pub fn stats(&self) -> DescentStats {
        self.stats
    }

    /// Buckets whose node hashes differed while their entries listed no
    /// divergence (the first [`QUIET_BUCKETS_MAX`], ascending). A root
    /// mismatch that finds no divergent key always leaves some here, unless
    /// a concurrent write settled the difference while the descent ran.
    pub fn quiet_buckets(&self) -> Vec<u32> {
        let mut q = self.quiet.clone();
        q.sort_unstable();
        q.dedup();
        q
    }

    fn mark_quiet(&mut self, first: u32, count: u32) {
        let room = QUIET_BUCKETS_MAX.saturating_sub(self.quiet.len());
        self.quiet
            .extend((first..first.saturating_add(count)).take(room));
    }

    /// Classifies compared nodes at `level` (index, local hash, peer hash)
    /// that differ, and decides the next step.
    fn after_compare(
        &mut self,
        view: &dyn TreeView,
        level: u32,
        differing: Vec<(u32, NodeHash, NodeHash)>,
    ) -> Result<Step, ExchangeError> {
        // The descent never goes below the leaves, nor names a node its
        // level does not have: either would be a bug in this state machine
        // (a peer's answers are checked before they get here), and would
        // probe or list buckets outside the range.
        assert!(
            level <= self.shape.depth,
            "descent at level {level}, below the leaves at {}",
            self.shape.depth
        );
        let mut descend = Vec::new();
        for (idx, mine, theirs) in differing {
            assert!(
                u64::from(idx) < self.shape.nodes_at(level),
                "node {idx} at level {level} of a tree with {} nodes there",
                self.shape.nodes_at(level)
            );
            let span = self.shape.leaf_span(level, idx);
            if theirs == 0 {
                self.local_only_spans.push(span);
            } else if mine == 0 {
                self.peer_only_spans.push(span);
            } else if level == self.shape.depth {
                self.both_buckets.push(idx);
            } else {
                descend.push(idx);
            }
        }
        if descend.is_empty() {
            return self.leaf_step(view);
        }
        let hashes = view.child_hashes(level, &descend)?;
        let f = self.shape.fanout as usize;
        // The view's contract: `fanout` child hashes per parent, in order
        // (a short answer would silently drop parents from the probes).
        assert_eq!(hashes.len(), descend.len() * f, "child hashes per parent");
        // Parents per probe: its hashes within PROBE_HASHES_MAX, and the
        // children its reply may list within PROBE_REPLY_HASHES_MAX.
        let per = (PROBE_HASHES_MAX / f)
            .min(PROBE_REPLY_HASHES_MAX / (f * f))
            .max(1);
        self.sent = descend
            .chunks(per)
            .zip(hashes.chunks(per * f))
            .map(|(p, h)| Probe {
                level: level + 1,
                parents: p.to_vec(),
                hashes: h.to_vec(),
            })
            .collect();
        // Every probe is one the responder accepts (`respond_probe`,
        // `check_probe_request`): never an error made on this side.
        for p in &self.sent {
            assert!(p.level <= self.shape.depth);
            assert!(p.hashes.len() == p.parents.len() * f && p.hashes.len() <= PROBE_HASHES_MAX);
            assert!(probe_weight(self.shape, p) <= PROBE_REPLY_HASHES_MAX);
        }
        self.stats.nodes_compared += hashes.len() as u64;
        Ok(Step::Probe(self.sent.clone()))
    }

    /// Feeds the replies to the last [`Step::Probe`], in the same order.
    pub fn on_probe_replies(
        &mut self,
        view: &dyn TreeView,
        replies: Vec<ProbeReply>,
    ) -> Result<Step, ExchangeError> {
        let sent = std::mem::take(&mut self.sent);
        if replies.len() != sent.len() {
            return Err(proto(format!(
                "{} probe replies for {} probes",
                replies.len(),
                sent.len()
            )));
        }
        let f = self.shape.fanout;
        let fu = f as usize;
        let Some(level) = sent.first().map(|p| p.level) else {
            return Ok(Step::Done);
        };
        let interior = level < self.shape.depth;
        let mut expanded = Vec::new();
        let mut peer_next = Vec::new();
        for (p, r) in sent.iter().zip(replies) {
            if r.status.len() != p.hashes.len() {
                return Err(proto("probe reply statuses do not match the probe"));
            }
            let mut expected_next = 0;
            for (i, s) in r.status.iter().enumerate() {
                let idx = p.parents[i / fu] * f + (i % fu) as u32;
                let mine = p.hashes[i];
                match s {
                    NodeStatus::Same => {}
                    NodeStatus::Empty => {
                        if mine == 0 {
                            return Err(proto("peer reports an empty node that is empty here too"));
                        }
                        self.local_only_spans.push(self.shape.leaf_span(level, idx));
                    }
                    NodeStatus::Differs if mine == 0 => {
                        self.peer_only_spans.push(self.shape.leaf_span(level, idx));
                    }
                    NodeStatus::Differs if !interior => self.both_buckets.push(idx),
                    NodeStatus::Differs => {
                        expanded.push(idx);
                        expected_next += fu;
                    }
                }
            }
            if r.next.len() != expected_next {
                return Err(proto(format!(
                    "probe reply carries {} child hashes, expected {expected_next}",
                    r.next.len()
                )));
            }
            peer_next.extend(r.next);
        }
        if !interior || expanded.is_empty() {
            return self.leaf_step(view);
        }
        let mine_children = view.child_hashes(level, &expanded)?;
        self.stats.nodes_compared += mine_children.len() as u64;
        let mut differing = Vec::new();
        for (k, (a, b)) in mine_children.iter().zip(&peer_next).enumerate() {
            if a != b {
                differing.push((expanded[k / fu] * f + (k % fu) as u32, *a, *b));
            }
        }
        self.after_compare(view, level + 1, differing)
    }

    /// Builds the leaf probes for everything found so far.
    fn leaf_step(&mut self, view: &dyn TreeView) -> Result<Step, ExchangeError> {
        // Local-only spans need no messages: list them now, at most
        // LEAF_SPAN_BUCKETS_MAX buckets per listing, so a wiped peer does not
        // make one scan (and one hold of the store's tree lock) cover the
        // whole range.
        for (first, count) in std::mem::take(&mut self.local_only_spans) {
            let end = first + count;
            let mut at = first;
            let mut any = false;
            while at < end {
                let n = (end - at).min(LEAF_SPAN_BUCKETS_MAX as u32);
                for (_, entries) in view.entries(at, n)? {
                    self.stats.leaves_compared += 1;
                    for e in entries {
                        any = true;
                        self.record_local(e)?;
                    }
                }
                at += n;
            }
            // The peer says this subtree is empty, ours is not, yet it
            // lists nothing: our tree is out of step with our data.
            if !any {
                self.mark_quiet(first, count);
            }
        }
        let mut probes = Vec::new();
        let mut cur = LeafProbe::default();
        // (digests, buckets spanned) of `cur`.
        let mut load = (0usize, 0u64);
        let push = |q: BucketQuery,
                    probes: &mut Vec<LeafProbe>,
                    cur: &mut LeafProbe,
                    load: &mut (usize, u64)| {
            if cur.queries.len() >= LEAF_QUERIES_MAX
                || load.0 + q.hashes.len() > LEAF_DIGESTS_MAX
                || load.1 + u64::from(q.count) > LEAF_SPAN_BUCKETS_MAX
            {
                probes.push(std::mem::take(cur));
                *load = (0, 0);
            }
            load.0 += q.hashes.len();
            load.1 += u64::from(q.count);
            cur.queries.push(q);
        };
        for (first, count) in std::mem::take(&mut self.peer_only_spans) {
            self.stats.leaves_compared += count as u64;
            // Spans wider than a probe may cover go out in pieces.
            let mut at = first;
            let end = first + count;
            while at < end {
                let n = (end - at).min(LEAF_SPAN_BUCKETS_MAX as u32);
                push(
                    BucketQuery {
                        first: at,
                        count: n,
                        hashes: Vec::new(),
                    },
                    &mut probes,
                    &mut cur,
                    &mut load,
                );
                at += n;
            }
        }
        let mut buckets = std::mem::take(&mut self.both_buckets);
        buckets.sort_unstable();
        self.stats.leaves_compared += buckets.len() as u64;
        let mut listed = view.entries_of(&buckets)?.into_iter().peekable();
        for b in buckets {
            let mut hashes = Vec::new();
            if let Some((_, entries)) = listed.next_if(|(lb, _)| *lb == b) {
                hashes.extend(entries.iter().map(|e| e.hash));
                // Kept for the lacking entries of the reply, up to a bound;
                // beyond it they are listed again.
                if self.cached_entries + entries.len() <= LISTING_CACHE_ENTRIES_MAX {
                    self.cached_entries += entries.len();
                    self.listed.insert(b, entries);
                }
            }
            push(
                BucketQuery {
                    first: b,
                    count: 1,
                    hashes,
                },
                &mut probes,
                &mut cur,
                &mut load,
            );
        }
        if !cur.queries.is_empty() {
            probes.push(cur);
        }
        if probes.is_empty() {
            return Ok(Step::Done);
        }
        self.sent_leaves = probes.clone();
        Ok(Step::Leaves(probes))
    }

    /// Feeds the replies to the last [`Step::Leaves`]: `replies[i]` answers
    /// probe `i`.
    pub fn on_leaf_replies(
        &mut self,
        view: &dyn TreeView,
        replies: Vec<Vec<LeafReply>>,
    ) -> Result<Step, ExchangeError> {
        let sent = std::mem::take(&mut self.sent_leaves);
        if replies.len() != sent.len() {
            return Err(proto(format!(
                "{} leaf replies for {} leaf probes",
                replies.len(),
                sent.len()
            )));
        }
        for (lp, rs) in sent.iter().zip(replies) {
            let mut noisy = vec![false; lp.queries.len()];
            for r in rs {
                let q = lp
                    .queries
                    .get(r.query as usize)
                    .ok_or_else(|| proto(format!("leaf reply for unknown query {}", r.query)))?;
                if r.lacking.len() != q.hashes.len() && !r.lacking.is_empty() {
                    return Err(proto("leaf reply flags do not match the query"));
                }
                let asked = u64::from(q.first)..u64::from(q.first) + u64::from(q.count);
                if !r.extra.is_empty() || r.lacking.iter().any(|x| *x) {
                    noisy[r.query as usize] = true;
                }
                for e in r.extra {
                    // A peer lists only entries of the buckets it was asked
                    // about: anything else is a lie that would be "repaired"
                    // into this store.
                    match view.bucket_of(&e.key) {
                        Some(b) if asked.contains(&u64::from(b)) => {}
                        Some(b) => {
                            return Err(proto(format!(
                                "peer listed a key of bucket {b} for buckets {}..{}",
                                asked.start, asked.end
                            )));
                        }
                        None => return Err(proto("peer listed a key outside the range")),
                    }
                    self.record_peer(e)?;
                }
                if r.lacking.iter().any(|x| *x) {
                    let lacking: HashSet<u64> = q
                        .hashes
                        .iter()
                        .zip(&r.lacking)
                        .filter(|(_, l)| **l)
                        .map(|(h, _)| *h)
                        .collect();
                    let entries = match self.listed.remove(&q.first) {
                        Some(es) => es,
                        None => view
                            .entries(q.first, 1)?
                            .into_iter()
                            .flat_map(|(_, es)| es)
                            .collect(),
                    };
                    for e in entries {
                        if lacking.contains(&e.hash) {
                            self.record_local(e)?;
                        }
                    }
                }
            }
            for (q, noisy) in lp.queries.iter().zip(noisy) {
                if !noisy {
                    self.mark_quiet(q.first, q.count);
                }
            }
        }
        self.listed.clear();
        self.cached_entries = 0;
        Ok(Step::Done)
    }

    /// The divergence record of `key`, counted against the limits before
    /// anything is allocated for a new key.
    fn slot(&mut self, key: &[u8]) -> Result<&mut Divergence, ExchangeError> {
        if !self.found.contains_key(key) {
            if self.found.len() >= self.limits.keys_max {
                return Err(ExchangeError::Limit(format!(
                    "more than diff_keys_max = {} divergent keys; is this the right peer?",
                    self.limits.keys_max
                )));
            }
            if self.found_key_bytes + key.len() > self.limits.key_bytes_max {
                return Err(ExchangeError::Limit(format!(
                    "divergent keys exceed {} bytes",
                    self.limits.key_bytes_max
                )));
            }
            self.found_key_bytes += key.len();
        }
        Ok(self
            .found
            .entry(key.to_vec())
            .or_insert_with(|| Divergence {
                key: key.to_vec(),
                local: None,
                peer: None,
            }))
    }

    fn record_local(&mut self, e: EntrySummary) -> Result<(), ExchangeError> {
        let key = e.key.clone();
        self.slot(&key)?.local = Some(e);
        Ok(())
    }

    fn record_peer(&mut self, e: EntrySummary) -> Result<(), ExchangeError> {
        let key = e.key.clone();
        self.slot(&key)?.peer = Some(e);
        Ok(())
    }

    /// The divergent keys found, in key order. Keys reported by only one
    /// side's listing where the other side holds the *same* entry cannot
    /// occur: entries are matched by hash within a bucket.
    pub fn finish(self) -> Vec<Divergence> {
        self.found.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree whose every node hash is 1, and which lists nothing.
    struct Ones(TreeShape);

    impl TreeView for Ones {
        fn shape(&self) -> TreeShape {
            self.0
        }
        fn child_hashes(
            &self,
            _level: u32,
            parents: &[u32],
        ) -> Result<Vec<NodeHash>, ExchangeError> {
            Ok(vec![1; parents.len() * self.0.fanout as usize])
        }
        fn entries(
            &self,
            _first: u32,
            _count: u32,
        ) -> Result<Vec<(u32, Vec<EntrySummary>)>, ExchangeError> {
            Ok(Vec::new())
        }
        fn bucket_of(&self, _key: &[u8]) -> Option<u32> {
            None
        }
    }

    /// A descent of a 4^2 tree whose roots differ, past its first probe.
    fn started() -> (Descent, Ones) {
        let view = Ones(TreeShape::new(4, 2).unwrap());
        let (d, step) = Descent::start(&view, 1, 2).unwrap();
        assert!(matches!(step, Step::Probe(_)));
        (d, view)
    }

    /// A state machine that lost track of its level (asked to compare
    /// nodes under the leaves) stops instead of probing outside the tree.
    #[test]
    #[should_panic(expected = "below the leaves")]
    fn a_descent_below_the_leaves_trips_the_assert() {
        let (mut d, view) = started();
        let _ = d.after_compare(&view, 3, vec![(0, 1, 2)]);
    }

    /// A node index its level does not have (level 2 of 4^2 has 16 nodes).
    #[test]
    #[should_panic(expected = "node 16 at level 2")]
    fn a_node_outside_its_level_trips_the_assert() {
        let (mut d, view) = started();
        let _ = d.after_compare(&view, 2, vec![(16, 1, 2)]);
    }
}
