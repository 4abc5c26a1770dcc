//! The initiator's side of the exchange over gRPC: handshake, then the
//! sans-I/O [`Descent`] of `mend_core::exchange` driven range by range, with
//! every wire byte and round trip counted. Results are classified with the
//! taxonomy of `mend_core::classify`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;

use mend_core::exchange::{Descent, Divergence, ExchangeError, Step};
use mend_rpc::convert::{leaf_probe_to_pb, leaf_reply_from_pb, probe_reply_from_pb, probe_to_pb};
use mend_rpc::{GRPC_FRAME_BYTES, PROTOCOL_VERSION, pb};
use mend_store::RangeView;

use crate::error::AgentError;
use crate::link::PeerLink;
pub use crate::link::{error_chain, next_message, peer_err};
use crate::outcome::{Cost, DiffOutcome, DivergentKey, TreeMismatch, classify_in};
use crate::state::{AgentBackend, AgentState};

/// A link to a connected peer.
pub type Peer = Arc<dyn PeerLink>;

/// Dials the peer at `addr` through the agent's dialer (gRPC over mutual
/// TLS in production), reusing an open connection when there is one.
pub async fn connect<B: AgentBackend>(
    state: &AgentState<B>,
    addr: &str,
) -> Result<Peer, AgentError> {
    state.dialer.dial(addr).await
}

/// Forgets the cached connection to `addr` (after a transport failure, so
/// the next exchange dials afresh).
pub fn forget<B: AgentBackend>(state: &AgentState<B>, addr: &str) {
    state.dialer.forget(addr);
}

/// Refuses a peer's answer in another protocol version.
fn same_protocol(addr: &str, version: u32) -> Result<(), AgentError> {
    if version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(AgentError::precondition(format!(
        "peer {addr} answered with protocol {version}, this agent speaks {PROTOCOL_VERSION}"
    )))
}

/// A handshake alone with the peer at `addr` asking for the shared ranges
/// of `wanted` (none: just its node id, clock and incarnation), the cached
/// connection forgotten on failure.
pub async fn ask_handshake<B: AgentBackend>(
    state: &AgentState<B>,
    addr: &str,
    wanted: &[mend_core::RangeSpec],
) -> Result<pb::HandshakeResponse, AgentError> {
    let answer = async {
        let peer = connect(state, addr).await?;
        handshake(state, &peer, addr, wanted, true, &mut Cost::default()).await
    }
    .await;
    forget_on_error(state, addr, answer)
}

/// The handshake, initiator's side: a fresh challenge from the peer, our
/// proof over it, and a check of everything the peer answers (protocol
/// version, its proof over our nonce, one root per requested range).
pub async fn handshake<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &Peer,
    addr: &str,
    wanted: &[mend_core::RangeSpec],
    only_shared: bool,
    cost: &mut Cost,
) -> Result<pb::HandshakeResponse, AgentError> {
    let creq = pb::ChallengeRequest {};
    cost.rounds += 1;
    cost.bytes_sent += wire(&creq);
    let ch = peer.challenge(creq).await.map_err(|s| peer_err(addr, s))?;
    cost.bytes_received += wire(&ch);
    same_protocol(addr, ch.protocol_version)?;
    let nonce = crate::auth::nonce();
    let me = state.node_id.to_string();
    let req = pb::HandshakeRequest {
        protocol_version: PROTOCOL_VERSION,
        node_id: me.clone(),
        ranges: wanted
            .iter()
            .map(|spec| {
                let mut pb = mend_rpc::convert::range_shape_to_pb(spec);
                // The tree's depth now, not the created one (informational:
                // the responder checks the fan-out, and answers its own
                // depth).
                if let Some(shape) = state
                    .store
                    .ranges()
                    .by_name(&spec.name)
                    .and_then(|id| state.store.shape(id).ok())
                {
                    pb.depth = shape.depth;
                }
                pb
            })
            .collect(),
        only_shared,
        proof: crate::auth::initiator_proof(&state.secret, &ch.challenge, &nonce, &me).to_vec(),
        challenge: ch.challenge.clone(),
        nonce: nonce.to_vec(),
    };
    cost.rounds += 1;
    cost.bytes_sent += wire(&req);
    let resp = peer.handshake(req).await.map_err(|s| peer_err(addr, s))?;
    cost.bytes_received += wire(&resp);
    same_protocol(addr, resp.protocol_version)?;
    // A configured peer is known by its id: its certificate carries it (TLS
    // checked that) and so must its handshake.
    if let Some(id) = state.server_name(addr)
        && resp.node_id != id
    {
        return Err(AgentError::denied(format!(
            "peer {addr} is configured as {id:?} but answered as {:?}",
            resp.node_id
        )));
    }
    let want = crate::auth::responder_proof(&state.secret, &ch.challenge, &nonce, &resp.node_id);
    if !crate::auth::proof_eq(&resp.proof, &want) {
        return Err(AgentError::denied(format!(
            "peer {addr} does not prove this cluster's secret: both agents must use the same secret"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for rr in &resp.ranges {
        if !wanted.iter().any(|w| w.name == rr.name) {
            return Err(AgentError::internal(format!(
                "peer {addr} answered for range {:?}, which was not asked for",
                rr.name
            )));
        }
        if !seen.insert(rr.name.as_str()) {
            return Err(AgentError::internal(format!(
                "peer {addr} answered twice for range {:?}",
                rr.name
            )));
        }
    }
    Ok(resp)
}

fn wire<M: Message>(m: &M) -> u64 {
    m.encoded_len() as u64 + GRPC_FRAME_BYTES
}

/// Handshakes with `peer` and diffs `range` (or every range both serve).
pub async fn diff<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    range: Option<&str>,
) -> Result<DiffOutcome, AgentError> {
    forget_on_error(state, addr, diff_once(state, addr, range).await)
}

/// Passes `out` through, forgetting the cached channel to `addr` when it
/// is an error (the next exchange then dials afresh).
pub fn forget_on_error<B: AgentBackend, T>(
    state: &AgentState<B>,
    addr: &str,
    out: Result<T, AgentError>,
) -> Result<T, AgentError> {
    if out.is_err() {
        forget(state, addr);
    }
    out
}

async fn diff_once<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    range: Option<&str>,
) -> Result<DiffOutcome, AgentError> {
    let started = Instant::now();
    let started_ms = state.store.now_ms();
    let peer = connect(state, addr).await?;
    let mut cost = Cost::default();
    let wanted = wanted_ranges(state, range)?;
    let sent_ms = state.store.now_ms();
    let resp = handshake(state, &peer, addr, &wanted, range.is_none(), &mut cost).await?;
    let mid_ms = sent_ms / 2 + state.store.now_ms() / 2;
    let peer_clock_skew_ms = clock_skew_ms(resp.now_ms, mid_ms);
    if resp.ranges.is_empty() {
        return Err(AgentError::precondition(format!(
            "peer {addr} serves none of this agent's ranges"
        )));
    }
    let found = diff_ranges(state, &peer, addr, resp.ranges, &mut cost).await?;
    let out = DiffOutcome {
        local_node: state.node_id.to_string(),
        peer_node: resp.node_id,
        peer_incarnation: resp.incarnation,
        versionless_ranges: versionless_ranges(state, &found.names),
        ranges: found.names,
        keys: found.keys,
        tree_mismatches: found.tree_mismatches,
        started_ms,
        peer_clock_skew_ms,
        entries_local: found.entries_local,
        entries_peer: found.entries_peer,
        cost,
        elapsed: started.elapsed(),
    };
    publish_clock_skew(state, &out);
    crate::sync_record::record_sync(state, &out).await?;
    Ok(out)
}

/// The ranges to ask the peer for: `range`, or every range this agent
/// serves.
fn wanted_ranges<B: AgentBackend>(
    state: &AgentState<B>,
    range: Option<&str>,
) -> Result<Vec<mend_core::RangeSpec>, AgentError> {
    let specs = state.store.ranges().specs().to_vec();
    let wanted: Vec<_> = match range {
        Some(r) => {
            let s = specs.iter().find(|s| s.name == r).ok_or_else(|| {
                AgentError::not_found(format!("this agent serves no range {r:?}"))
            })?;
            vec![s.clone()]
        }
        None => specs.clone(),
    };
    Ok(wanted)
}

/// The peer's clock (`peer_now_ms`, 0 = not told) minus ours at the middle
/// of the handshake, ms.
fn clock_skew_ms(peer_now_ms: u64, mid_ms: u64) -> i64 {
    if peer_now_ms == 0 {
        0
    } else {
        (i128::from(peer_now_ms) - i128::from(mid_ms)).clamp(i64::MIN.into(), i64::MAX.into())
            as i64
    }
}

/// Ranges of one exchange descended at once. Their round trips overlap
/// (an exchange of R ranges takes the rounds of its deepest range, not
/// their sum) and their local steps run on blocking threads side by side.
/// Each holds up to `diff_keys_max` divergent keys until the results are
/// joined, so an exchange holds at most this many times that.
pub const RANGES_IN_FLIGHT: usize = 4;

/// What the descents of every range found.
struct RangesDiffed {
    names: Vec<String>,
    keys: Vec<DivergentKey>,
    tree_mismatches: Vec<TreeMismatch>,
    entries_local: u64,
    entries_peer: u64,
}

/// What the descent of one range found, with its own cost.
struct RangeDiffed {
    name: String,
    keys: Vec<DivergentKey>,
    tree_mismatch: Option<TreeMismatch>,
    entries_local: u64,
    entries_peer: u64,
    cost: Cost,
}

/// Descends each range the peer answered for, up to [`RANGES_IN_FLIGHT`]
/// at once, classifying what differs and checking this side's tree where
/// the roots differ but the entries agree. Results join in the peer's
/// range order; the first range to fail (in that order) fails the
/// exchange, and more than `diff_keys_max` keys over all ranges is the
/// descent's own limit error.
async fn diff_ranges<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    peer: &Peer,
    addr: &str,
    ranges: Vec<pb::RangeRoot>,
    cost: &mut Cost,
) -> Result<RangesDiffed, AgentError> {
    use futures::{StreamExt, TryStreamExt};
    let per_range: Vec<RangeDiffed> = futures::stream::iter(ranges)
        .map(|rr| diff_range(state, peer, addr, rr))
        .buffered(RANGES_IN_FLIGHT)
        .try_collect()
        .await?;
    let keys_max = state.config.limits.diff_keys_max;
    let mut out = RangesDiffed {
        names: Vec::with_capacity(per_range.len()),
        keys: Vec::new(),
        tree_mismatches: Vec::new(),
        entries_local: 0,
        entries_peer: 0,
    };
    let mut rounds = 0;
    for r in per_range {
        if out.keys.len() + r.keys.len() > keys_max {
            return Err(AgentError::from(ExchangeError::Limit(format!(
                "more than diff_keys_max = {keys_max} divergent keys; is this the right peer?"
            ))));
        }
        rounds = rounds.max(r.cost.rounds);
        cost.add_parallel(&r.cost);
        out.names.push(r.name);
        out.keys.extend(r.keys);
        out.tree_mismatches.extend(r.tree_mismatch);
        out.entries_local += r.entries_local;
        out.entries_peer = out.entries_peer.saturating_add(r.entries_peer);
    }
    cost.rounds += rounds;
    Ok(out)
}

/// Descends one range and classifies what differs.
async fn diff_range<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    peer: &Peer,
    addr: &str,
    rr: pb::RangeRoot,
) -> Result<RangeDiffed, AgentError> {
    let id = state.store.ranges().by_name(&rr.name).ok_or_else(|| {
        AgentError::invalid(format!(
            "peer {addr} answered for unknown range {:?}",
            rr.name
        ))
    })?;
    let mut cost = Cost::default();
    let entries_local = state.store.root(id).map_err(AgentError::from)?.count;
    let keys_max = state.config.limits.diff_keys_max;
    // Trees of one fan-out compare at the smaller depth (protocol 5).
    let local_depth = state.store.shape(id).map_err(AgentError::from)?.depth;
    if rr.depth == 0 {
        return Err(AgentError::internal(format!(
            "peer {addr} answered range {:?} without its tree depth",
            rr.name
        )));
    }
    let depth = local_depth.min(rr.depth);
    let (divs, quiet, roots_differ) = descend(
        state, peer, addr, id, &rr.name, rr.root, depth, &mut cost, keys_max,
    )
    .await?;
    let tree_mismatch = if !quiet.is_empty() || (roots_differ && divs.is_empty()) {
        Some(tree_mismatch(state, addr, id, &rr.name, depth, quiet).await?)
    } else {
        None
    };
    let now = state.store.now_ms();
    let policy = state.config.policy();
    let versionless = state.store.ranges().get(id).is_some_and(|s| s.versionless);
    let keys = divs
        .into_iter()
        .filter_map(|d| {
            let c = classify_in(versionless, d.local.as_ref(), d.peer.as_ref(), now, &policy)?;
            Some(DivergentKey {
                range: rr.name.clone(),
                div: d,
                category: c.category,
                behind: c.behind,
            })
        })
        .collect();
    Ok(RangeDiffed {
        name: rr.name,
        keys,
        tree_mismatch,
        entries_local,
        entries_peer: rr.entries,
        cost,
    })
}

/// Those of `names` that are versionless ranges here.
fn versionless_ranges<B: AgentBackend>(state: &AgentState<B>, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            let r = state.store.ranges();
            r.by_name(n)
                .and_then(|id| r.get(id))
                .is_some_and(|s| s.versionless)
        })
        .cloned()
        .collect()
}

/// Publishes the peer's clock skew, warning when it is outside the
/// allowed skew.
fn publish_clock_skew<B: AgentBackend>(state: &AgentState<B>, out: &DiffOutcome) {
    let peer_clock_skew_ms = out.peer_clock_skew_ms;
    state
        .metrics
        .peer_clock_skew_seconds
        .get_or_create(&crate::metrics::PeerLabel::of(&out.peer_node))
        .set(peer_clock_skew_ms as f64 / 1000.0);
    if peer_clock_skew_ms.unsigned_abs() > state.config.clock_skew_ms {
        tracing::warn!(
            peer = %out.peer_node, skew_ms = peer_clock_skew_ms, allowed_ms = state.config.clock_skew_ms,
            "peer clock outside the allowed skew: its writes are future_version here, or ours there"
        );
    }
}

/// Buckets `tree_mismatch` verifies under one hold of the writer lock.
const TREE_MISMATCH_STEP_BUCKETS: u32 = 256;

/// Verifies this agent's side of a range's quiet buckets (at the compared
/// `depth`) against its data and rebuilds any that are out of step,
/// online; counts and logs the mismatch. A tree deeper than the compared
/// depth checks every bucket under each quiet one.
async fn tree_mismatch<B: AgentBackend>(
    state: &AgentState<B>,
    addr: &str,
    id: u16,
    range: &str,
    depth: u32,
    buckets: Vec<u32>,
) -> Result<TreeMismatch, AgentError> {
    let quiet = buckets.clone();
    let fixed = state
        .blocking(move |s| {
            let shape = s.shape(id)?;
            let below = shape.fanout_bits() * shape.depth.saturating_sub(depth);
            let mut fixed = Vec::new();
            for b in quiet {
                // A step at a time, so writers wait for one step's
                // recompute only (a peer comparing at depth 1 makes each
                // quiet bucket a sixteenth of the range).
                let (first, count) = (b << below, 1u32 << below);
                let mut at = 0;
                while at < count {
                    let n = (count - at).min(TREE_MISMATCH_STEP_BUCKETS);
                    fixed.extend(s.repair_buckets(id, first + at, n)?);
                    at += n;
                }
            }
            Ok(fixed)
        })
        .await?;
    state
        .metrics
        .tree_mismatch(range, "exchange", fixed.len() as u64);
    tracing::warn!(
        peer = %addr, range, buckets = buckets.len(), first = ?&buckets[..buckets.len().min(8)], fixed = ?fixed,
        "tree_mismatch: roots differ where entries agree; {}",
        if fixed.is_empty() {
            "this side's tree verifies against its data, so the peer's does not (or a write raced the descent)"
        } else {
            "rebuilt this side's out-of-step buckets from the data"
        }
    );
    Ok(TreeMismatch {
        range: range.to_string(),
        buckets,
        fixed,
    })
}

/// A peer's breach of the protocol, seen by the initiator: the peer's
/// fault, so INTERNAL with its address, never INVALID_ARGUMENT (which would
/// blame the operator's request).
fn peer_breach(addr: &str, e: ExchangeError) -> AgentError {
    match e {
        ExchangeError::Protocol(m) => AgentError::internal(format!("peer {addr}: {m}")),
        ExchangeError::Limit(m) => AgentError::exhausted(format!("peer {addr}: {m}")),
        local @ ExchangeError::Local { .. } => AgentError::from(local),
    }
}

/// What one leaf step may still receive before the diff's limits are hit:
/// entries and key bytes, shared by the step's concurrent streams and
/// charged as each reply is decoded (before the next is read).
struct Budget {
    entries: std::sync::atomic::AtomicUsize,
    key_bytes: std::sync::atomic::AtomicUsize,
}

impl Budget {
    fn charge(&self, r: &mend_core::exchange::LeafReply, addr: &str) -> Result<(), AgentError> {
        use std::sync::atomic::Ordering;
        let n = r.extra.len();
        let b: usize = r.extra.iter().map(|e| e.key.len()).sum();
        let ok_n = self
            .entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(n))
            .is_ok();
        let ok_b = self
            .key_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(b))
            .is_ok();
        if ok_n && ok_b {
            return Ok(());
        }
        Err(AgentError::exhausted(format!(
            "peer {addr} lists more divergent entries than diff_keys_max / diff_key_bytes_max allow; is this the right peer?"
        )))
    }
}

/// Feeds a step's replies to the descent with `feed`, on the blocking pool
/// (the descent reads the local tree); a reply the descent refuses is the
/// peer's breach.
async fn advance<B: AgentBackend, R: Send + 'static>(
    state: &AgentState<B>,
    mut d: Descent,
    (id, depth): (u16, u32),
    addr: &str,
    replies: R,
    feed: fn(&mut Descent, &dyn mend_core::exchange::TreeView, R) -> Result<Step, ExchangeError>,
) -> Result<(Descent, Step), AgentError> {
    let store = state.store.clone();
    let addr = addr.to_string();
    state
        .run(move || {
            let view = RangeView::at_depth(&store, id, depth).map_err(AgentError::from)?;
            let s = feed(&mut d, &view, replies).map_err(|e| peer_breach(&addr, e))?;
            Ok((d, s))
        })
        .await
}

#[allow(clippy::too_many_arguments)]
async fn descend<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    peer: &Peer,
    addr: &str,
    id: u16,
    name: &str,
    peer_root: u64,
    depth: u32,
    cost: &mut Cost,
    keys_left: usize,
) -> Result<(Vec<Divergence>, Vec<u32>, bool), AgentError> {
    let limits = mend_core::exchange::DescentLimits {
        keys_max: keys_left,
        key_bytes_max: state.config.limits.diff_key_bytes_max,
    };
    let timeout = Duration::from_millis(state.config.limits.rpc_timeout_ms);
    let store = state.store.clone();
    let (mut d, mut step, roots_differ) = state
        .run(move || {
            let view = RangeView::at_depth(&store, id, depth).map_err(AgentError::from)?;
            let root = view.root_hash().map_err(AgentError::from)?;
            let (d, step) =
                Descent::start_with(&view, root, peer_root, limits).map_err(AgentError::from)?;
            Ok((d, step, root != peer_root))
        })
        .await?;
    let shape = state.store.shape_at(id, depth).map_err(AgentError::from)?;
    loop {
        match step {
            Step::Done => break,
            Step::Probe(ps) => {
                let replies = probe_round(peer, addr, name, &ps, shape, cost).await?;
                (d, step) = advance(
                    state,
                    d,
                    (id, depth),
                    addr,
                    replies,
                    Descent::on_probe_replies,
                )
                .await?;
            }
            Step::Leaves(lps) => {
                let budget = Budget {
                    entries: keys_left.into(),
                    key_bytes: state.config.limits.diff_key_bytes_max.into(),
                };
                let all =
                    leaf_round(peer, addr, (name, depth), &lps, &budget, timeout, cost).await?;
                (d, step) =
                    advance(state, d, (id, depth), addr, all, Descent::on_leaf_replies).await?;
            }
        }
    }
    let st = d.stats();
    cost.nodes_compared += st.nodes_compared;
    cost.leaves_compared += st.leaves_compared;
    let quiet = d.quiet_buckets();
    Ok((d.finish(), quiet, roots_differ))
}

/// Sends the probes of a step and returns the peer's replies, in order.
async fn probe_round(
    peer: &Peer,
    addr: &str,
    name: &str,
    ps: &[mend_core::exchange::Probe],
    shape: mend_core::TreeShape,
    cost: &mut Cost,
) -> Result<Vec<mend_core::exchange::ProbeReply>, AgentError> {
    // The probes of a step go out at once (one round trip), in
    // requests sized so that every reply fits the message limit.
    cost.rounds += 1;
    let calls = mend_core::exchange::probe_batches(ps, shape)
        .into_iter()
        .map(|r| {
            let peer = peer.clone();
            let probes = &ps[r];
            let req = pb::ProbeRequest {
                range: name.to_string(),
                probes: probes.iter().map(probe_to_pb).collect(),
                depth: shape.depth,
            };
            async move {
                let sent = wire(&req);
                let resp = peer.probe(req).await.map_err(|s| peer_err(addr, s))?;
                let received = wire(&resp);
                if resp.replies.len() != probes.len() {
                    return Err(AgentError::internal(format!(
                        "peer {addr} answered {} of {} probes",
                        resp.replies.len(),
                        probes.len()
                    )));
                }
                let replies = resp
                    .replies
                    .into_iter()
                    .zip(probes)
                    .map(|(r, p)| probe_reply_from_pb(r, p.hashes.len()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|s| peer_err(addr, s))?;
                Ok::<_, AgentError>((sent, received, replies))
            }
        });
    Ok(gather(calls, cost).await?.into_iter().flatten().collect())
}

/// Sends the leaf probes of a step and returns the peer's replies to
/// each, charging them to `budget` as they arrive.
async fn leaf_round(
    peer: &Peer,
    addr: &str,
    (name, depth): (&str, u32),
    lps: &[mend_core::exchange::LeafProbe],
    budget: &Budget,
    timeout: Duration,
    cost: &mut Cost,
) -> Result<Vec<Vec<mend_core::exchange::LeafReply>>, AgentError> {
    // All leaf probes of the step go out at once (one round
    // trip), each on its own HTTP/2 stream of the connection.
    cost.rounds += 1;
    let calls = lps.iter().map(|lp| {
        let peer = peer.clone();
        let req = leaf_probe_to_pb(name, depth, lp);
        async move {
            let sent = wire(&req);
            let mut received = 0;
            let mut stream = peer.leaves(req).await.map_err(|s| peer_err(addr, s))?;
            let mut replies = Vec::new();
            while let Some(m) = next_message(&mut stream, timeout, addr).await? {
                received += wire(&m);
                let r = leaf_reply_from_pb(m, lp).map_err(|s| peer_err(addr, s))?;
                budget.charge(&r, addr)?;
                replies.push(r);
            }
            Ok::<_, AgentError>((sent, received, replies))
        }
    });
    gather(calls, cost).await
}

/// Awaits the calls of one round trip together; counts the bytes each sent
/// and received in `cost` and returns each one's replies, in order.
async fn gather<T, F>(
    calls: impl IntoIterator<Item = F>,
    cost: &mut Cost,
) -> Result<Vec<T>, AgentError>
where
    F: std::future::Future<Output = Result<(u64, u64, T), AgentError>>,
{
    let mut all = Vec::new();
    for (sent, received, replies) in futures::future::try_join_all(calls).await? {
        cost.bytes_sent += sent;
        cost.bytes_received += received;
        all.push(replies);
    }
    Ok(all)
}
