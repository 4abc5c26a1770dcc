//! A repair run, segment by segment: between segments it looks at what the
//! operator wants (pause, cancel), moves each segment's keys both ways and
//! journals the segment done.

use std::sync::Arc;

use mend_core::classify::Side;

use crate::error::AgentError;
use crate::exchange::connect;
use crate::journal::{self, RepairHeader};
use crate::outcome::DiffOutcome;
use crate::pace::Pacer;
use crate::runs::{Claim, RunState, Want};
use crate::state::{AgentBackend, AgentState};

use super::fetch::fetch_planned;
use super::plan::keys_behind;
use super::progress::{Mover, Position, Run};
use super::push::push_planned;
use super::restamp::restamp;
use super::segment;
use super::{Planned, Progress, RepairSummary};
use mend_core::playbook::Resolution;
use mend_core::playbook::{SkipNote, SkipReason};

/// Runs the unfinished `segments` of run `header` in order against the
/// peer at `header.peer`, looking between segments at what the operator
/// wants (`claim`), and records each finished segment in the journal in
/// the batch that deletes its plan. `d` is the diff the plan came from
/// (`None` on a resume: keys planned toward an authority are then left to
/// the next exchange, since their unchanged-since-the-diff check needs it).
/// Returns where the run stopped; the header and the board say so too.
pub(super) async fn run_segments<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    d: Option<&DiffOutcome>,
    mut header: RepairHeader,
    segments: Vec<(u32, segment::Segment)>,
    claim: &Claim,
    progress: Option<Progress>,
    sum: &mut RepairSummary,
) -> Result<RunState, AgentError> {
    let run = Run::new(state, header.id.clone(), progress);
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
            segment_done(state, &mut header, index, seg.planned.len() as u64, sum).await?;
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
    let (end, what) = ending(&out, &header, sum);
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

/// Records segment `index` of the run done: the run's counts in its
/// header, in the batch that deletes the segment's plan.
async fn segment_done<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    header: &mut RepairHeader,
    index: u32,
    keys: u64,
    sum: &RepairSummary,
) -> Result<(), AgentError> {
    header.segments_done += 1;
    header.keys_done += keys;
    header.keys_here = sum.keys_to_local;
    header.keys_pushed = sum.keys_to_peer;
    header.keys_toward_authority = sum.keys_toward_authority;
    let h = header.clone();
    state
        .blocking(move |s| {
            let ops = vec![segment::done_op(&h.id, index), journal::header_op(&h)?];
            s.backend().write(ops, false)
        })
        .await
}

/// Where a run ended and what its timeline says of it.
fn ending(
    out: &Result<RunState, AgentError>,
    header: &RepairHeader,
    sum: &RepairSummary,
) -> (RunState, String) {
    let counts = format!(
        "{} keys here, {} pushed, {} skipped",
        sum.keys_to_local,
        sum.keys_to_peer,
        sum.skipped.len()
    );
    let left = header.segments_total - header.segments_done;
    match out {
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
    }
}

/// Moves the planned entries of one segment both ways, journaled under
/// the run's id, adding the counts to `sum`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn move_planned<B: AgentBackend>(
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
                    SkipNote::new(
                        SkipReason::ChangedSinceDiff,
                        "not resolved toward the authority: the run was resumed, and whether \
                         an entry changed since the diff is unknown; the next exchange resolves it",
                    ),
                ));
            }
        }
    }

    let mut mover = Mover {
        state,
        addr,
        peer,
        run,
        pacer,
        done: at.done,
        total: at.total,
    };
    if !to_peer.is_empty() {
        push_planned(&mut mover, &to_peer, sum).await?;
    }
    if !to_local.is_empty() {
        fetch_planned(&mut mover, &to_local, sum).await?;
    }
    Ok(())
}
