//! Repair: plan from a classified diff, then move exactly the divergent
//! entries to the side that is behind, through the store's apply rule on
//! both ends (so a newer write made meanwhile is never overwritten and a
//! second run changes nothing), paced by byte and key rate limits, and
//! journaled with before-images on both sides for undo. A large plan runs
//! segment by segment (`segment`), pausable, resumable and cancellable
//! between segments (`control`).

pub mod control;
pub mod rows;
pub mod segment;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use mend_core::Decision;
use mend_core::classify::{Category, Side};
use mend_rpc::convert::version_to_pb;
use mend_rpc::{GRPC_FRAME_BYTES, pb};

use crate::error::AgentError;
use crate::exchange::{connect, diff, next_message, peer_err};
use crate::journal::{self, RepairHeader};
use crate::link::Inbound;
use crate::outcome::{DiffOutcome, DivergentKey};
use crate::pace::Pacer;
use crate::runs::{Claim, RunState, Want};
use crate::state::{AgentBackend, AgentState};
use crate::wire::write_from_pb;

/// Entries per push message and per local apply batch.
pub const REPAIR_BATCH_KEYS: usize = 256;

/// Value bytes per push message before it is sent early (1 MiB).
pub const REPAIR_BATCH_BYTES: usize = 1 << 20;

// A push batch must fit one `PushRequest`: at most REPAIR_BATCH_KEYS
// entries (the peer's PUSH_ENTRIES_MAX), and, since a batch is sent once its
// values pass REPAIR_BATCH_BYTES, just under that plus one largest value,
// with every key at its largest.
const _: () = {
    use mend_core::exchange::LEAF_ENTRY_OVERHEAD_BYTES;
    use mend_core::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
    assert!(REPAIR_BATCH_KEYS <= crate::service::peer::PUSH_ENTRIES_MAX);
    assert!(
        REPAIR_BATCH_BYTES
            + VALUE_BYTES_MAX
            + REPAIR_BATCH_KEYS * (KEY_BYTES_MAX + LEAF_ENTRY_OVERHEAD_BYTES)
            <= mend_rpc::MESSAGE_BYTES_MAX
    );
};

pub use mend_core::playbook::DEFAULT_CATEGORIES;
use mend_core::playbook::{Authority, Divergent, Resolution, repair_plan};

/// What a repair should do.
#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Byte rate limit (0 = none).
    pub rate_bytes_per_s: u64,
    /// Key rate limit (0 = none).
    pub rate_keys_per_s: u64,
    /// Categories to repair; empty = [`DEFAULT_CATEGORIES`].
    pub categories: Vec<Category>,
    /// Apply to checkpoints of both stores, not the live ones.
    pub shadow: bool,
}

/// The predicted outcome of a shadow run.
#[derive(Debug, Clone, Default)]
pub struct ShadowOutcome {
    /// Planned keys that would be equal on both sides.
    pub converged: u64,
    /// Planned keys that would still differ, with why.
    pub remaining: Vec<(Vec<u8>, String)>,
}

/// A key planned for repair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    /// The key.
    pub key: Vec<u8>,
    /// Its category.
    pub category: Category,
    /// Who receives the winning entry.
    pub behind: Side,
    /// Newer-wins, or toward the range's authority.
    pub resolution: Resolution,
}

/// The outcome of a repair (or its plan, for a dry run).
#[derive(Debug, Clone, Default)]
pub struct RepairSummary {
    /// Journal id (empty for dry runs).
    pub repair_id: String,
    /// True for a dry run.
    pub dry_run: bool,
    /// Keys written on either side.
    pub keys_repaired: u64,
    /// Keys written locally.
    pub keys_to_local: u64,
    /// Keys written at the peer.
    pub keys_to_peer: u64,
    /// Keys resolved toward their range's authority: its content re-stamped
    /// here (newer than both sides' versions) and pushed.
    pub keys_toward_authority: u64,
    /// Entry bytes streamed (protobuf entries plus gRPC framing).
    pub bytes_streamed: u64,
    /// Keys not repaired, with why.
    pub skipped: Vec<(Vec<u8>, String)>,
    /// The plan.
    pub plan: Vec<Planned>,
    /// Wall time.
    pub elapsed: Duration,
    /// The prediction, for shadow runs.
    pub shadow: Option<ShadowOutcome>,
    /// Where the run stopped: done, or paused or cancelled between
    /// segments (done for dry and shadow runs).
    pub run: RunState,
    /// Segments finished.
    pub segments_done: u32,
    /// Segments of the run (`segment`).
    pub segments_total: u32,
}

/// Plans a repair from a diff (`mend_core::playbook::repair_plan`): what
/// moves where, and what is skipped. `grace_ms` is the tombstone grace
/// period: a tombstone past it against nothing was purged by the other
/// side and does not move. `authorities` are the configured per-range
/// authorities (`[[authority]]`), placed on this exchange's two sides.
pub fn plan(
    d: &DiffOutcome,
    categories: &[Category],
    grace_ms: u64,
    authorities: &[mend_config::AuthorityConfig],
) -> (Vec<Planned>, Vec<(Vec<u8>, String)>) {
    fn origin(e: &Option<mend_core::exchange::EntrySummary>) -> Option<&mend_core::NodeId> {
        e.as_ref().map(|e| &e.version.origin)
    }
    let horizon = d.started_ms.saturating_sub(grace_ms);
    let purged = |k: &DivergentKey| match (&k.div.local, &k.div.peer) {
        (Some(e), None) | (None, Some(e)) => e.tombstone && e.version.ms < horizon,
        _ => false,
    };
    // Causal order: keys move in the order of their newer entry's version
    // (HLC order), and each side applies its batches in that order, so a
    // reader of the behind replica never sees a write while an earlier
    // missing write is still absent.
    let mut ordered: Vec<&DivergentKey> = d.keys.iter().collect();
    ordered.sort_by(|a, b| newer_version(a).cmp(&newer_version(b)));
    let authority = |range: &str| {
        authorities
            .iter()
            .find(|a| a.range == range)
            .map(|a| Authority {
                side: if a.node == d.local_node {
                    Some(Side::Local)
                } else if a.node == d.peer_node {
                    Some(Side::Peer)
                } else {
                    None
                },
                scope: a.scope,
            })
    };
    let keys = ordered.into_iter().map(|k: &DivergentKey| Divergent {
        key: &k.div.key,
        category: k.category,
        behind: k.behind,
        origin: origin(&k.div.local).or(origin(&k.div.peer)),
        purged: purged(k),
        authority: authority(&k.range),
    });
    let p = repair_plan(keys, categories);
    let planned = p
        .planned
        .into_iter()
        .map(|m| Planned {
            key: m.key,
            category: m.category,
            behind: m.behind,
            resolution: m.resolution,
        })
        .collect();
    let skipped = p
        .skipped
        .into_iter()
        .map(|(k, why)| (k, why.to_string()))
        .collect();
    (planned, skipped)
}

/// [`plan`] with this agent's tombstone grace and authorities.
pub fn plan_for<B: AgentBackend>(
    state: &AgentState<B>,
    d: &DiffOutcome,
    categories: &[Category],
) -> (Vec<Planned>, Vec<(Vec<u8>, String)>) {
    // Only where tombstones are purged can "past its grace against nothing"
    // mean the other side purged it; else the tombstone is copied as usual.
    let grace = if state.config.gc.enabled {
        state.store.config().tombstone_grace_ms
    } else {
        u64::MAX
    };
    let (planned, mut skipped) = plan(d, categories, grace, &state.config.authority);
    // A digest-only range's values live behind its adapter: its keys move
    // through the adapters of both sides (`rows`), newer-wins only (a
    // resolution toward an authority re-stamps a value here, which a store
    // behind an adapter does not take); without an adapter here they are
    // reported and left alone.
    let ranges = state.store.ranges();
    let mut why: std::collections::HashMap<&str, &'static str> = Default::default();
    for s in ranges.specs() {
        if s.versionless {
            why.insert(s.name.as_str(), VERSIONLESS_SKIP);
        } else if s.mode == mend_core::RangeMode::Digests && state.rows.get(&s.name).is_none() {
            why.insert(s.name.as_str(), DIGEST_ONLY_SKIP);
        }
    }
    // A versionless key has no side behind, so the playbook skipped it
    // already: say why in the range's own words.
    let versionless: std::collections::HashSet<&[u8]> = d
        .keys
        .iter()
        .filter(|k| why.get(k.range.as_str()) == Some(&VERSIONLESS_SKIP))
        .map(|k| k.div.key.as_slice())
        .collect();
    for (k, reason) in skipped.iter_mut() {
        if versionless.contains(k.as_slice()) {
            *reason = VERSIONLESS_SKIP.to_string();
        }
    }
    let digest_only: std::collections::HashSet<&str> = ranges
        .specs()
        .iter()
        .filter(|s| s.mode == mend_core::RangeMode::Digests)
        .map(|s| s.name.as_str())
        .collect();
    if digest_only.is_empty() {
        return (planned, skipped);
    }
    let range_of: std::collections::HashMap<&[u8], &str> = d
        .keys
        .iter()
        .filter(|k| digest_only.contains(k.range.as_str()))
        .map(|k| (k.div.key.as_slice(), k.range.as_str()))
        .collect();
    let mut kept = Vec::with_capacity(planned.len());
    for p in planned {
        let reason = match range_of.get(p.key.as_slice()) {
            None => None,
            Some(r) => why
                .get(r)
                .copied()
                .or((p.resolution == Resolution::Authority).then_some(DIGEST_ONLY_AUTHORITY_SKIP)),
        };
        match reason {
            Some(r) => skipped.push((p.key, r.to_string())),
            None => kept.push(p),
        }
    }
    (kept, skipped)
}

/// Why a key of a digest-only range is not repaired by this agent.
pub const DIGEST_ONLY_SKIP: &str = "digest-only range without an adapter here: mend holds \
     no value to move; repair through the source's adapter (mend attach serves repairs)";

/// Why a key of a versionless range is not repaired.
pub const VERSIONLESS_SKIP: &str = "versionless range: no version says which side is \
     newer, so mend does not choose; compare the rows and repair by hand";

/// Why a key of a digest-only range is not resolved toward an authority.
pub const DIGEST_ONLY_AUTHORITY_SKIP: &str = "digest-only range: resolving toward an \
     authority re-stamps the value, which a store behind an adapter does not take; \
     repair it newer-wins or by hand";

/// The sort key of a divergent key in causal order: its newer entry's
/// (ms, logical, origin, seq); keys with no entry on either side sort first.
fn newer_version(k: &DivergentKey) -> Option<(u64, u32, &str, u64)> {
    [&k.div.local, &k.div.peer]
        .into_iter()
        .flatten()
        .map(|e| {
            let v = &e.version;
            (v.ms, v.logical, v.origin.as_str(), v.seq)
        })
        .max()
}

/// The planned keys whose `behind` side is `side` by newer-wins, in plan
/// (causal) order.
fn keys_behind(planned: &[Planned], side: Side) -> Vec<Vec<u8>> {
    planned
        .iter()
        .filter(|p| p.behind == side && p.resolution == Resolution::Newer)
        .map(|p| p.key.clone())
        .collect()
}

/// Progress callback: (keys done, keys total, bytes streamed).
pub type Progress = mpsc::Sender<(u64, u64, u64)>;

/// Diffs against `addr` and repairs what the plan selects.
pub async fn repair<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    range: Option<&str>,
    opts: RepairOptions,
    progress: Option<Progress>,
) -> Result<RepairSummary, AgentError> {
    let out = repair_once(state, addr, range, opts, progress).await;
    crate::exchange::forget_on_error(state, addr, out)
}

async fn repair_once<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    range: Option<&str>,
    opts: RepairOptions,
    progress: Option<Progress>,
) -> Result<RepairSummary, AgentError> {
    let started = Instant::now();
    let d = diff(state, addr, range).await?;
    repair_planned(state, addr, &d, opts, progress, started).await
}

/// Repairs exactly what `d` plans (no fresh diff): the scheduled playbook
/// repairs the key set that passed its blast-radius check, not whatever a
/// later diff finds. Entries are still read fresh and written through both
/// sides' apply rule, so a key changed since `d` is never set back.
pub async fn repair_outcome<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    d: &DiffOutcome,
    opts: RepairOptions,
) -> Result<RepairSummary, AgentError> {
    let out = repair_planned(state, addr, d, opts, None, Instant::now()).await;
    crate::exchange::forget_on_error(state, addr, out)
}

async fn repair_planned<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    d: &DiffOutcome,
    opts: RepairOptions,
    progress: Option<Progress>,
    started: Instant,
) -> Result<RepairSummary, AgentError> {
    let (planned, skipped) = plan_for(state, d, &opts.categories);
    let mut sum = RepairSummary {
        dry_run: opts.dry_run,
        skipped,
        plan: planned.clone(),
        ..Default::default()
    };
    if opts.dry_run || planned.is_empty() {
        sum.elapsed = started.elapsed();
        return Ok(sum);
    }
    if opts.shadow {
        sum.shadow = Some(shadow_run(state, addr, &planned).await?);
        sum.elapsed = started.elapsed();
        return Ok(sum);
    }
    let now = state.store.now_ms();
    let id = new_repair_id(&state.node_id, now);
    sum.repair_id = id.clone();
    let mut header = RepairHeader::new(id.clone(), addr.to_string(), true, now);
    header.peer_node = d.peer_node.clone();
    header.keys_total = planned.len() as u64;
    header.rate_bytes_per_s = opts.rate_bytes_per_s;
    header.rate_keys_per_s = opts.rate_keys_per_s;
    let min = state.config.limits.repair_segment_keys_min;
    // The header and every segment's plan in one batch: from here on the
    // run can be resumed from the journal alone.
    let (header, segments) = state
        .blocking(move |s| {
            let segs = segment::split(s, planned, min)?;
            header.segments_total = segs.len() as u32;
            let mut ops = segment::rows(&header.id, &segs);
            ops.push(journal::header_op(&header)?);
            s.backend().write(ops, false)?;
            Ok((header, segs))
        })
        .await?;
    let claim = state
        .controls
        .claim(&id)
        .ok_or_else(|| AgentError::internal(format!("repair {id} is already running")))?;
    state.runs.start(
        &id,
        &d.peer_node,
        header.keys_total,
        opts.rate_bytes_per_s,
        now,
    );
    let segments = (0..).zip(segments).collect();
    run_segments(state, Some(d), header, segments, &claim, progress, &mut sum).await?;
    sum.elapsed = started.elapsed();
    Ok(sum)
}

/// Runs the unfinished `segments` of run `header` in order against the
/// peer at `header.peer`, looking between segments at what the operator
/// wants (`claim`), and records each finished segment in the journal in
/// the batch that deletes its plan. `d` is the diff the plan came from
/// (`None` on a resume: keys planned toward an authority are then left to
/// the next exchange, since their unchanged-since-the-diff check needs it).
/// Returns where the run stopped; the header and the board say so too.
async fn run_segments<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    d: Option<&DiffOutcome>,
    mut header: RepairHeader,
    segments: Vec<(u32, segment::Segment)>,
    claim: &Claim,
    progress: Option<Progress>,
    sum: &mut RepairSummary,
) -> Result<RunState, AgentError> {
    let run = Run {
        state,
        id: header.id.clone(),
        progress,
        finished: std::sync::atomic::AtomicBool::new(false),
    };
    sum.keys_to_local = header.keys_here;
    sum.keys_to_peer = header.keys_pushed;
    sum.keys_toward_authority = header.keys_toward_authority;
    sum.segments_total = header.segments_total;
    let mut pacer = Pacer::new(header.rate_bytes_per_s, header.rate_keys_per_s);
    let addr = header.peer.clone();
    let out: Result<RunState, AgentError> = async {
        let peer = connect(state, &addr).await?;
        for (index, seg) in segments {
            match claim.want() {
                Want::Run => {}
                Want::Pause => return Ok(RunState::Paused),
                Want::Cancel => return Ok(RunState::Cancelled),
            }
            state.runs.segment(
                &header.id,
                header.segments_done,
                header.segments_total,
                &seg.label,
            );
            if header.segments_total > 1 {
                run.event(format!(
                    "segment {} of {} ({}): {} keys",
                    index + 1,
                    header.segments_total,
                    seg.label,
                    seg.planned.len()
                ));
            }
            let at = Position {
                done: header.keys_done,
                total: header.keys_total,
            };
            move_planned(
                state,
                &addr,
                &peer,
                d,
                &seg.planned,
                &run,
                &mut pacer,
                at,
                sum,
            )
            .await?;
            header.segments_done += 1;
            header.keys_done += seg.planned.len() as u64;
            header.keys_here = sum.keys_to_local;
            header.keys_pushed = sum.keys_to_peer;
            header.keys_toward_authority = sum.keys_toward_authority;
            let h = header.clone();
            state
                .blocking(move |s| {
                    let ops = vec![segment::done_op(&h.id, index), journal::header_op(&h)?];
                    s.backend().write(ops, false)
                })
                .await?;
            state
                .runs
                .segment(&header.id, header.segments_done, header.segments_total, "");
        }
        pacer.finish().await;
        Ok(RunState::Done)
    }
    .await;
    sum.keys_repaired = sum.keys_to_local + sum.keys_to_peer;
    sum.segments_done = header.segments_done;
    let counts = format!(
        "{} keys here, {} pushed, {} skipped",
        sum.keys_to_local,
        sum.keys_to_peer,
        sum.skipped.len()
    );
    let left = header.segments_total - header.segments_done;
    let (end, what) = match &out {
        Ok(RunState::Paused) => (
            RunState::Paused,
            format!("paused with {left} segments left: {counts}"),
        ),
        Ok(RunState::Cancelled) => (
            RunState::Cancelled,
            format!("cancelled with {left} segments left: {counts}"),
        ),
        Ok(_) => (RunState::Done, format!("done: {counts}")),
        Err(e) => (RunState::Failed, format!("failed: {}", e.message())),
    };
    header.run = end;
    header.error = match &out {
        Err(e) => e.message().to_string(),
        Ok(_) => String::new(),
    };
    sum.run = end;
    let h = header;
    let recorded = state
        .blocking(move |s| {
            if end == RunState::Cancelled {
                segment::clear(s, &h.id)?;
            }
            journal::put_header(s, &h)
        })
        .await;
    run.stop(end, what);
    recorded?;
    out
}

/// Where a segment's keys fall in the whole run, for progress.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Keys of the segments finished before it.
    done: u64,
    /// Keys of the whole run.
    total: u64,
}

/// A repair run as it goes: progress to the caller's stream and to the
/// dashboard's board, and the steps of its timeline.
struct Run<'a, B: AgentBackend> {
    state: &'a AgentState<B>,
    id: String,
    progress: Option<Progress>,
    finished: std::sync::atomic::AtomicBool,
}

impl<B: AgentBackend> Drop for Run<'_, B> {
    /// A run dropped before it finished (its call was cancelled) does not
    /// stay "running" on the board.
    fn drop(&mut self) {
        if !self.finished.load(std::sync::atomic::Ordering::Relaxed) {
            self.finish(Err(
                "stopped before it finished: the call was cancelled".into()
            ));
        }
    }
}

impl<B: AgentBackend> Run<'_, B> {
    async fn progress(&self, done: u64, total: u64, bytes: u64) {
        self.state.runs.progress(&self.id, done, bytes);
        report(&self.progress, done, total, bytes).await;
    }

    fn event(&self, what: String) {
        self.state
            .runs
            .event(&self.id, self.state.store.now_ms(), what);
    }

    fn finish(&self, outcome: Result<String, String>) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.state
            .runs
            .finish(&self.id, self.state.store.now_ms(), outcome);
    }

    fn stop(&self, end: RunState, what: String) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.state
            .runs
            .stop(&self.id, self.state.store.now_ms(), end, what);
    }
}

/// Moves the planned entries of one segment both ways, journaled under
/// the run's id, adding the counts to `sum`.
#[allow(clippy::too_many_arguments)]
async fn move_planned<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    d: Option<&DiffOutcome>,
    planned: &[Planned],
    run: &Run<'_, B>,
    pacer: &mut Pacer,
    at: Position,
    sum: &mut RepairSummary,
) -> Result<(), AgentError> {
    let mut to_peer = keys_behind(planned, Side::Peer);
    let to_local = keys_behind(planned, Side::Local);

    // Toward the authority: its content re-stamped here, newer than both
    // sides, then pushed with the rest (last: the newest versions).
    let toward: Vec<&Planned> = planned
        .iter()
        .filter(|p| p.resolution == Resolution::Authority)
        .collect();
    match d {
        _ if toward.is_empty() => {}
        Some(d) => {
            let restamped = restamp(state, addr, peer, d, &toward, &run.id, sum, pacer).await?;
            sum.keys_toward_authority += restamped.len() as u64;
            run.event(format!(
                "{} keys re-stamped toward the range's authority",
                restamped.len()
            ));
            to_peer.extend(restamped);
        }
        None => {
            for p in &toward {
                sum.skipped.push((
                    p.key.clone(),
                    "not resolved toward the authority: the run was resumed, and whether \
                     an entry changed since the diff is unknown; the next exchange resolves it"
                        .into(),
                ));
            }
        }
    }

    let mut done = at.done;
    if !to_peer.is_empty() {
        push_planned(
            state,
            addr,
            peer,
            &to_peer,
            run,
            pacer,
            (&mut done, at.total),
            sum,
        )
        .await?;
    }
    if !to_local.is_empty() {
        fetch_planned(
            state,
            addr,
            peer,
            &to_local,
            run,
            pacer,
            (&mut done, at.total),
            sum,
        )
        .await?;
    }
    Ok(())
}

/// Streams the current local entries of `to_peer` to the peer, which
/// applies them through its apply rule and journals its before-images.
#[allow(clippy::too_many_arguments)]
async fn push_planned<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    to_peer: &[Vec<u8>],
    run: &Run<'_, B>,
    pacer: &mut Pacer,
    (done, total): (&mut u64, u64),
    sum: &mut RepairSummary,
) -> Result<(), AgentError> {
    let id = run.id.clone();
    // Local → peer: stream current local entries; the peer applies them
    // through its apply rule and journals its before-images.
    run.event(format!("pushing {} keys to the peer", to_peer.len()));
    let (tx, rx) = mpsc::channel::<pb::PushRequest>(4);
    let call = {
        let p = peer.clone();
        let msgs: Inbound<pb::PushRequest> = Box::pin(ReceiverStream::new(rx).map(Ok));
        tokio::spawn(async move { p.push(msgs).await })
    };
    let mut first = true;
    for chunk in to_peer.chunks(REPAIR_BATCH_KEYS) {
        let keys = chunk.to_vec();
        let rid = id.clone();
        // Recorded before the push: an undo holds these keys on this side
        // too.
        let ops = journal::pushed_ops(&rid, &keys);
        state
            .blocking(move |s| s.backend().write(ops, false))
            .await?;
        let got = crate::repair::rows::read_records(state, keys.clone()).await?;
        let recs = keys.into_iter().zip(got);
        let mut msg = pb::PushRequest {
            repair_id: if first { id.clone() } else { String::new() },
            entries: Vec::new(),
        };
        first = false;
        for (key, rec) in recs {
            let Some(rec) = rec else {
                sum.skipped
                    .push((key, "gone locally since the diff (purged)".into()));
                continue;
            };
            msg.entries.push(pb::Entry {
                key,
                version: Some(version_to_pb(&rec.meta.version)),
                tombstone: rec.meta.tombstone,
                value: rec.value,
            });
            let size = msg.encoded_len();
            if size >= REPAIR_BATCH_BYTES || msg.entries.len() >= REPAIR_BATCH_KEYS {
                let n = msg.entries.len() as u64;
                let out = std::mem::replace(
                    &mut msg,
                    pb::PushRequest {
                        repair_id: String::new(),
                        entries: Vec::new(),
                    },
                );
                let bytes = out.encoded_len() as u64 + GRPC_FRAME_BYTES;
                pacer.take(bytes, n).await;
                sum.bytes_streamed += bytes;
                if tx.send(out).await.is_err() {
                    break;
                }
                *done += n;
                run.progress(*done, total, sum.bytes_streamed).await;
            }
        }
        if !msg.entries.is_empty() || !msg.repair_id.is_empty() {
            let n = msg.entries.len() as u64;
            let bytes = msg.encoded_len() as u64 + GRPC_FRAME_BYTES;
            pacer.take(bytes, n).await;
            sum.bytes_streamed += bytes;
            if tx.send(msg).await.is_err() {
                break;
            }
            *done += n;
            run.progress(*done, total, sum.bytes_streamed).await;
        }
    }
    drop(tx);
    let resp = call
        .await
        .map_err(AgentError::from)?
        .map_err(|s| peer_err(addr, s))?;
    sum.keys_to_peer += resp.applied;
    run.event(format!(
        "peer applied {} keys, kept {} of its own",
        resp.applied,
        resp.not_applied.len()
    ));
    for o in resp.not_applied {
        sum.skipped.push((
            o.key,
            format!(
                "peer kept its entry ({}): it changed since the diff",
                o.decision
            ),
        ));
    }
    Ok(())
}

/// Fetches the peer's entries of `to_local` and applies them here through
/// the apply rule, journaled.
#[allow(clippy::too_many_arguments)]
async fn fetch_planned<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    to_local: &[Vec<u8>],
    run: &Run<'_, B>,
    pacer: &mut Pacer,
    (done, total): (&mut u64, u64),
    sum: &mut RepairSummary,
) -> Result<(), AgentError> {
    let id = run.id.clone();
    // Peer → local: fetch the peer's entries and apply them here, journaled.
    run.event(format!("fetching {} keys from the peer", to_local.len()));
    let before = sum.keys_to_local;
    for chunk in to_local.chunks(
        state
            .config
            .limits
            .fetch_keys_max
            .min(REPAIR_BATCH_KEYS * 16),
    ) {
        let mut stream = peer
            .fetch(pb::FetchRequest {
                keys: chunk.to_vec(),
            })
            .await
            .map_err(|s| peer_err(addr, s))?;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let mut check = FetchCheck::new(chunk);
        loop {
            let m = next_message(&mut stream, rpc_timeout(state), addr).await?;
            let end = m.is_none();
            if let Some(m) = m {
                let bytes = m.encoded_len() as u64 + GRPC_FRAME_BYTES;
                pacer.take(bytes, 1).await;
                sum.bytes_streamed += bytes;
                let key = m.key.clone();
                match check.entry(m, addr)? {
                    Some(e) => {
                        batch_bytes += e.value.len();
                        batch.push(write_from_pb(e).map_err(|s| peer_err(addr, s))?);
                    }
                    None => sum
                        .skipped
                        .push((key, "gone at the peer since the diff (purged)".into())),
                }
            }
            if (end && !batch.is_empty())
                || batch.len() >= REPAIR_BATCH_KEYS
                || batch_bytes >= REPAIR_BATCH_BYTES
            {
                let writes = std::mem::take(&mut batch);
                batch_bytes = 0;
                let n = writes.len() as u64;
                for (k, a) in crate::repair::rows::apply_writes(state, &id, writes).await? {
                    match a {
                        crate::repair::rows::Applied::Applied => sum.keys_to_local += 1,
                        crate::repair::rows::Applied::Kept(decision) => sum.skipped.push((
                            k,
                            format!("kept the local entry ({decision}): it changed since the diff"),
                        )),
                    }
                }
                *done += n;
                run.progress(*done, total, sum.bytes_streamed).await;
            }
            if end {
                break;
            }
        }
    }
    run.event(format!("applied {} keys here", sum.keys_to_local - before));
    Ok(())
}

/// Resolves `moves` toward their range's authority: checks that neither
/// side changed since the diff `d` (a key that did is left to the next
/// exchange), then writes the authority's content here as a local write
/// stamped newer than both sides' versions, journaled with its
/// before-image and the winner (`journal::winner_ops`). Returns the keys
/// re-stamped, for the caller to push to the peer; the others are skipped
/// with why.
#[allow(clippy::too_many_arguments)]
async fn restamp<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    d: &DiffOutcome,
    moves: &[&Planned],
    id: &str,
    sum: &mut RepairSummary,
    pacer: &mut Pacer,
) -> Result<Vec<Vec<u8>>, AgentError> {
    use std::collections::HashMap;
    let seen: HashMap<&[u8], &DivergentKey> =
        d.keys.iter().map(|k| (k.div.key.as_slice(), k)).collect();
    let mut out = Vec::new();
    for chunk in moves.chunks(state.config.limits.fetch_keys_max.min(REPAIR_BATCH_KEYS)) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|p| p.key.clone()).collect();
        // The peer's current entries, checked against the diff.
        let mut theirs: HashMap<Vec<u8>, pb::Entry> = HashMap::new();
        let mut stream = peer
            .fetch(pb::FetchRequest { keys: keys.clone() })
            .await
            .map_err(|s| peer_err(addr, s))?;
        let mut check = FetchCheck::new(&keys);
        while let Some(m) = next_message(&mut stream, rpc_timeout(state), addr).await? {
            let bytes = m.encoded_len() as u64 + GRPC_FRAME_BYTES;
            pacer.take(bytes, 1).await;
            sum.bytes_streamed += bytes;
            if let Some(e) = check.entry(m, addr)? {
                theirs.insert(e.key.clone(), e);
            }
        }
        let ks = keys.clone();
        let ours = state.blocking(move |s| s.get_many(&ks)).await?;
        let mut writes = Vec::new();
        let mut winners = Vec::new();
        let mut floors = Vec::new();
        for ((p, key), mine) in chunk.iter().zip(&keys).zip(ours) {
            let Some(k) = seen.get(key.as_slice()) else {
                continue;
            };
            let peer_now = match theirs.remove(key) {
                Some(e) => Some(write_from_pb(e).map_err(|s| peer_err(addr, s))?),
                None => None,
            };
            let unchanged = mine.as_ref().map(|r| &r.meta.version)
                == k.div.local.as_ref().map(|e| &e.version)
                && peer_now.as_ref().and_then(|w| w.version.as_ref())
                    == k.div.peer.as_ref().map(|e| &e.version);
            if !unchanged {
                sum.skipped.push((
                    key.clone(),
                    "not resolved toward the authority: an entry changed since the diff".into(),
                ));
                continue;
            }
            // The authority's content: this side's when the peer is behind.
            let value = if p.behind == Side::Peer {
                mine.filter(|r| !r.meta.tombstone).map(|r| r.value)
            } else {
                peer_now.and_then(|w| w.value)
            };
            winners.push(match p.behind {
                Side::Peer => d.local_node.clone(),
                Side::Local => d.peer_node.clone(),
            });
            writes.push(match value {
                Some(v) => mend_store::Write::put(key.clone(), v),
                None => mend_store::Write::delete(key.clone()),
            });
            floors.extend(k.div.peer.as_ref().map(|e| e.version.clone()));
        }
        if writes.is_empty() {
            continue;
        }
        let rid = id.to_string();
        let (keys, outs) = state
            .blocking(move |s| {
                for v in &floors {
                    s.observe(v)?;
                }
                let ks: Vec<Vec<u8>> = writes.iter().map(|w| w.key.clone()).collect();
                let outs = s.write_with_extra(writes, &|o| {
                    let mut ops = journal::entry_ops(&rid, &ks, o);
                    for ((k, w), a) in ks.iter().zip(&winners).zip(o) {
                        if a.decision == Decision::Apply {
                            ops.extend(journal::winner_ops(&rid, std::slice::from_ref(k), w));
                        }
                    }
                    ops
                })?;
                Ok((ks, outs))
            })
            .await?;
        for (k, a) in keys.into_iter().zip(outs) {
            if a.decision == Decision::Apply {
                out.push(k);
            } else {
                sum.skipped.push((
                    k,
                    format!(
                        "not resolved toward the authority: the local write was {}",
                        crate::wire::decision_str(a.decision)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Applies the plan to checkpoints of both stores (the peer's through
/// `ShadowPush`) and compares the planned keys afterwards.
async fn shadow_run<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    planned: &[Planned],
) -> Result<ShadowOutcome, AgentError> {
    use mend_core::exchange::EntrySummary;
    use mend_rpc::convert::summary_from_pb;
    use std::collections::HashMap;
    let peer = connect(state, addr).await?;
    // Rows behind an adapter have no checkpoint to apply to.
    let (rows, planned): (Vec<&Planned>, Vec<&Planned>) = planned
        .iter()
        .partition(|p| crate::repair::rows::digest_range(state, &p.key).is_some());
    let planned: Vec<Planned> = planned.into_iter().cloned().collect();
    let planned = planned.as_slice();
    let to_peer = keys_behind(planned, Side::Peer);
    let to_local = keys_behind(planned, Side::Local);
    let mut peer_after: HashMap<Vec<u8>, Option<EntrySummary>> = HashMap::new();
    let mut local_after: HashMap<Vec<u8>, Option<EntrySummary>> = HashMap::new();
    let summarize = |r: pb::LookupResponse,
                     into: &mut HashMap<Vec<u8>, Option<EntrySummary>>|
     -> Result<(), AgentError> {
        for x in r.results {
            let e = match x.entry {
                Some(e) if x.found => Some(summary_from_pb(e).map_err(|s| peer_err(addr, s))?),
                _ => None,
            };
            into.insert(x.key, e);
        }
        Ok(())
    };
    // Peer side: push the local entries to a checkpoint of the peer.
    if !to_peer.is_empty() {
        let keys = to_peer.clone();
        let recs = state
            .blocking(move |s| {
                Ok(keys
                    .iter()
                    .cloned()
                    .zip(s.get_many(&keys)?)
                    .collect::<Vec<_>>())
            })
            .await?;
        let entries: Vec<pb::Entry> = recs
            .into_iter()
            .filter_map(|(key, r)| {
                r.map(|r| pb::Entry {
                    key,
                    version: Some(version_to_pb(&r.meta.version)),
                    tombstone: r.meta.tombstone,
                    value: r.value,
                })
            })
            .collect();
        let msgs: Vec<pb::PushRequest> = entries
            .chunks(REPAIR_BATCH_KEYS)
            .map(|c| pb::PushRequest {
                repair_id: String::new(),
                entries: c.to_vec(),
            })
            .collect();
        let r = peer
            .shadow_push(msgs)
            .await
            .map_err(|s| peer_err(addr, s))?;
        summarize(r, &mut peer_after)?;
    }
    // Local side: fetch the peer's entries and apply them to a local checkpoint.
    if !to_local.is_empty() {
        let mut writes = Vec::new();
        for chunk in to_local.chunks(state.config.limits.fetch_keys_max) {
            let mut stream = peer
                .fetch(pb::FetchRequest {
                    keys: chunk.to_vec(),
                })
                .await
                .map_err(|s| peer_err(addr, s))?;
            let mut check = FetchCheck::new(chunk);
            while let Some(m) = next_message(&mut stream, rpc_timeout(state), addr).await? {
                if let Some(e) = check.entry(m, addr)? {
                    writes.push(write_from_pb(e).map_err(|s| peer_err(addr, s))?);
                }
            }
        }
        let st = state.clone();
        let after = state
            .run(move || {
                B::shadow_apply(&st.store, &st.config.data_dir, "local", writes)
                    .map_err(AgentError::from)
            })
            .await?;
        local_after.extend(after);
    }
    // The other side of each planned key is its live entry (unchanged).
    let keys: Vec<Vec<u8>> = to_peer.clone();
    let live_local = state
        .blocking(move |s| {
            keys.iter()
                .map(|k| s.summary(k).map(|e| (k.clone(), e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    local_after.extend(live_local);
    for chunk in to_local.chunks(state.config.limits.fetch_keys_max) {
        let r = peer
            .lookup(pb::FetchRequest {
                keys: chunk.to_vec(),
            })
            .await
            .map_err(|s| peer_err(addr, s))?;
        summarize(r, &mut peer_after)?;
    }
    let mut out = ShadowOutcome::default();
    for p in rows {
        out.remaining.push((
            p.key.clone(),
            "not predicted: a digest-only range's rows live behind its adapter, \
             which a shadow run does not write to"
                .into(),
        ));
    }
    for p in planned {
        if p.resolution == Resolution::Authority {
            out.remaining.push((
                p.key.clone(),
                "not predicted: resolving toward the authority re-stamps the entry, \
                 which a shadow run does not do"
                    .into(),
            ));
            continue;
        }
        let l = local_after.get(&p.key).cloned().flatten();
        let r = peer_after.get(&p.key).cloned().flatten();
        if l.as_ref().map(|e| e.hash) == r.as_ref().map(|e| e.hash) {
            out.converged += 1;
        } else {
            out.remaining.push((
                p.key.clone(),
                format!(
                    "{} would still differ: the {} side's apply rule kept its entry",
                    p.category.as_str(),
                    p.behind.as_str()
                ),
            ));
        }
    }
    Ok(out)
}

async fn report(p: &Option<Progress>, done: u64, total: u64, bytes: u64) {
    if let Some(tx) = p {
        let _ = tx.try_send((done, total, bytes));
    }
}

/// A repair id: node, start time, and 64 random bits, so ids of repairs
/// started in the same millisecond differ too. At most
/// `journal::REPAIR_ID_BYTES_MAX` bytes for any node id.
pub fn new_repair_id(node: &mend_core::NodeId, now_ms: u64) -> String {
    format!("{node}-{now_ms}-{:016x}", rand::random::<u64>())
}

/// The outcome of undoing a repair on both sides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UndoSummary {
    /// Keys restored here.
    pub restored_local: u64,
    /// Keys restored at the peer.
    pub restored_peer: u64,
    /// Keys left alone (changed since the repair), with the side.
    pub skipped: Vec<(String, Vec<u8>, String)>,
}

/// Undoes repair `id` (run on the agent that ran it): restores local
/// before-images, then asks the peer to restore its own.
pub async fn undo<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    id: String,
) -> Result<UndoSummary, AgentError> {
    let header = control::initiated(state, &id, "undo").await?;
    if header.undone {
        return Err(AgentError::precondition(format!(
            "repair {id} was already undone"
        )));
    }
    if state.controls.wanted(&id).is_some() {
        return Err(AgentError::precondition(format!(
            "repair {id} is running; pause or cancel it first (mend repair pause {id})"
        )));
    }
    // Recorded before either side restores anything: a crash from here on
    // leaves an undo in progress, which running undo again finishes.
    let mut header = header;
    if header.undo_started_ms.is_none() {
        header.undo_started_ms = Some(state.store.now_ms());
        let h = header.clone();
        state.blocking(move |s| journal::put_header(s, &h)).await?;
    }
    let mut out = UndoSummary::default();
    let peer = connect(state, &header.peer).await?;
    let resp = peer
        .undo_push(pb::UndoPushRequest {
            repair_id: id.clone(),
        })
        .await
        .map_err(|s| peer_err(&header.peer, s))?;
    out.restored_peer = resp.restored;
    out.skipped.extend(
        resp.skipped
            .into_iter()
            .map(|s| ("peer".to_string(), s.key, s.reason)),
    );
    let id2 = id.clone();
    let hold_until = state
        .store
        .now_ms()
        .saturating_add(state.config.journal.undo_hold_ms);
    let keep_deletes = state.config.gc.enabled;
    let st = state.clone();
    let (mut local, images) = state
        .blocking(move |s| {
            journal::undo_here(s, &id2, keep_deletes, &|k| {
                crate::repair::rows::digest_range(&st, k).is_some()
            })
        })
        .await?;
    let rows = crate::repair::rows::undo(state, images).await?;
    local.restored += rows.restored;
    local.skipped.extend(rows.skipped);
    let id2 = id.clone();
    state
        .blocking(move |s| {
            let mut h = header;
            h.undone = true;
            h.hold_until_ms = hold_until;
            if h.unfinished() {
                // An undone run does not go on.
                segment::clear(s, &id2)?;
                h.run = RunState::Cancelled;
            }
            journal::put_header(s, &h)
        })
        .await?;
    out.restored_local = local.restored;
    out.skipped.extend(
        local
            .skipped
            .into_iter()
            .map(|(k, r)| ("local".to_string(), k, r)),
    );
    Ok(out)
}

fn rpc_timeout<B: AgentBackend>(state: &AgentState<B>) -> std::time::Duration {
    std::time::Duration::from_millis(state.config.limits.rpc_timeout_ms)
}

/// Checks a `Fetch` stream against its request: every message answers a
/// key that was asked for, at most once, and carries an entry of that very
/// key. A peer that answers anything else would make the repair write
/// entries nobody planned.
struct FetchCheck {
    asked: std::collections::HashSet<Vec<u8>>,
}

impl FetchCheck {
    fn new(keys: &[Vec<u8>]) -> FetchCheck {
        FetchCheck {
            asked: keys.iter().cloned().collect(),
        }
    }

    /// The entry of a checked message (`None` when the peer no longer has
    /// the key).
    fn entry(&mut self, m: pb::FetchedEntry, addr: &str) -> Result<Option<pb::Entry>, AgentError> {
        if !self.asked.remove(&m.key) {
            return Err(AgentError::internal(format!(
                "peer {addr} fetched a key that was not asked for, or one twice"
            )));
        }
        match m.entry {
            Some(e) if m.found => {
                if e.key != m.key {
                    return Err(AgentError::internal(format!(
                        "peer {addr} answered a fetched key with another key's entry"
                    )));
                }
                Ok(Some(e))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_ids_do_not_collide_even_within_one_millisecond() {
        // Ids of repairs started in the same millisecond by the same node
        // must still differ: a collision would mix two journals.
        let node = mend_core::NodeId::new("n".repeat(64)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let id = new_repair_id(&node, 1_796_000_000_000);
            assert!(crate::journal::valid_id(&id), "{id}");
            assert!(seen.insert(id), "repair id collision");
        }
    }
}
