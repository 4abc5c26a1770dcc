//! The agent's status as the `Status` RPC and the HTTP `/status` page report
//! it: ranges, purge horizons, the journal's repairs (paged), unfinished
//! runs, peers and drift.

use std::sync::Arc;

use tonic::Status;

use mend_rpc::pb;

use crate::state::AgentState;

/// Repairs per status page when the request names no limit.
pub const REPAIRS_PAGE_DEFAULT: usize = 20;
/// Most repairs per status page.
pub const REPAIRS_PAGE_MAX: usize = 1_000;

// A request naming no page size gets one the agent serves.
const _: () = assert!(REPAIRS_PAGE_DEFAULT <= REPAIRS_PAGE_MAX);

/// The status message.
pub async fn status(
    state: &Arc<AgentState>,
    req: pb::StatusRequest,
) -> Result<pb::StatusResponse, Status> {
    let ranges = range_statuses(state).await?;
    let all = state.blocking(crate::journal::list).await?;
    let holds = undo_holds(state, &all).await?;
    let undo_in_progress = all
        .iter()
        .filter(|h| h.undo_in_progress())
        .map(|h| h.id.clone())
        .collect();
    let runs = crate::repair::control::unfinished(state, &all);
    let mine: Vec<_> = all.into_iter().rev().filter(|h| h.initiator).collect();
    let (page, repairs_next) = repairs_page(&mine, &req)?;
    Ok(pb::StatusResponse {
        node_id: state.node_id.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        ranges,
        peers: state
            .peers()
            .iter()
            .map(|p| pb::PeerInfo {
                id: p.id.clone(),
                address: p.address.clone(),
            })
            .collect(),
        repairs: page,
        repairs_total: mine.len() as u64,
        repairs_next,
        holds,
        undo_in_progress,
        exchange_slots_in_use: state.slots.in_use().0,
        exchange_slots_max: state.slots.in_use().1,
        exchange_slot_holders: state.slots.holders(),
        runs: runs.into_iter().map(run_pb).collect(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        budgets: budgets(state),
    })
}

/// Each range: its shape, root, entries and purge horizon.
async fn range_statuses(state: &Arc<AgentState>) -> Result<Vec<pb::RangeStatus>, Status> {
    // Store calls run on the blocking pool, never on an async worker.
    let st = state.clone();
    let ranges = state
        .blocking(move |store| {
            let horizons = crate::gc::horizons(&st)?;
            let mut ranges = Vec::new();
            for ((id, spec), h) in store.ranges().specs().iter().enumerate().zip(horizons) {
                let root = store.root(id as u16)?;
                let shape = store.shape(id as u16)?;
                let purged = st
                    .metrics
                    .tombstones_purged
                    .get_or_create(&crate::metrics::RangeLabel::of(&spec.name))
                    .get();
                ranges.push(pb::RangeStatus {
                    name: spec.name.clone(),
                    fanout: shape.fanout,
                    depth: shape.depth,
                    root: mend_core::exchange::node_hash(&root),
                    entries: root.count,
                    purge_horizon_ms: h.before_ms,
                    purge_held_by: h.held_by.unwrap_or_default(),
                    tombstones_purged: purged,
                });
            }
            Ok(ranges)
        })
        .await?;
    Ok(ranges)
}

/// The journaled repairs whose undo hold has not expired, with the keys
/// each holds.
async fn undo_holds(
    state: &Arc<AgentState>,
    all: &[crate::journal::RepairHeader],
) -> Result<Vec<pb::UndoHold>, Status> {
    let now = state.store.now_ms();
    let holds: Vec<_> = all
        .iter()
        .filter(|h| h.hold_until_ms > now)
        .cloned()
        .collect();
    let hold_ids: Vec<String> = holds.iter().map(|h| h.id.clone()).collect();
    let held = state
        .blocking(move |s| {
            hold_ids
                .iter()
                .map(|id| crate::journal::entry_count(s, id))
                .collect::<Result<Vec<u64>, _>>()
        })
        .await?;
    Ok(holds
        .iter()
        .zip(held)
        .map(|(h, keys)| pb::UndoHold {
            repair_id: h.id.clone(),
            until_ms: h.hold_until_ms,
            keys,
        })
        .collect())
}

/// The page of `mine` (this agent's repairs, newest first) that `req`
/// asks for, and the id to ask the next page after (empty: the last page).
fn repairs_page(
    mine: &[crate::journal::RepairHeader],
    req: &pb::StatusRequest,
) -> Result<(Vec<String>, String), Status> {
    let limit = match req.repairs_limit {
        0 => REPAIRS_PAGE_DEFAULT,
        n => (n as usize).min(REPAIRS_PAGE_MAX),
    };
    let from = if req.repairs_after.is_empty() {
        0
    } else {
        mine.iter()
            .position(|h| h.id == req.repairs_after)
            .map(|i| i + 1)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "repairs_after {:?} names no journaled repair (pruned since?)",
                    req.repairs_after
                ))
            })?
    };
    let page: Vec<String> = mine
        .iter()
        .skip(from)
        .take(limit)
        .map(|h| h.id.clone())
        .collect();
    let repairs_next = if from + page.len() < mine.len() {
        page.last().cloned().unwrap_or_default()
    } else {
        String::new()
    };
    Ok((page, repairs_next))
}

/// The drift budget of each (peer, range) that has one, and its state.
fn budgets(state: &Arc<AgentState>) -> Vec<pb::BudgetStatus> {
    state
        .monitor
        .view(None)
        .into_iter()
        .filter_map(|v| {
            let b = state.peer(&v.peer)?.budget?;
            let last = v.records.last();
            Some(pb::BudgetStatus {
                peer: v.peer.clone(),
                range: v.range.clone(),
                exceeded: v.budget_exceeded,
                since_ms: v.budget_since_ms,
                divergent_keys: last.map(|r| r.divergent_keys).unwrap_or(0),
                oldest_divergence_ms: last.map(|r| r.oldest_divergence_ms).unwrap_or(0),
                divergent_keys_max: b.divergent_keys_max,
                oldest_divergence_ms_max: b.oldest_divergence_ms_max,
            })
        })
        .collect()
}

/// A run state on the wire.
pub fn run_state_pb(s: crate::runs::RunState) -> pb::RepairRunState {
    use crate::runs::RunState;
    match s {
        RunState::Running => pb::RepairRunState::Running,
        RunState::Paused => pb::RepairRunState::Paused,
        RunState::Cancelled => pb::RepairRunState::Cancelled,
        RunState::Done => pb::RepairRunState::Done,
        RunState::Failed => pb::RepairRunState::Failed,
    }
}

/// A run on the wire.
pub fn run_pb(r: crate::repair::control::RunInfo) -> pb::RepairRun {
    pb::RepairRun {
        repair_id: r.id,
        peer: r.peer,
        state: run_state_pb(r.state) as i32,
        live: r.live,
        segments_done: r.segments_done,
        segments_total: r.segments_total,
        keys_done: r.keys_done,
        keys_total: r.keys_total,
        error: r.error,
    }
}
