//! Undo of a repair on both sides: local before-images restored, then the
//! peer asked to restore its own.

use std::sync::Arc;

use serde::Serialize;

use mend_core::classify::Side;
use mend_core::playbook::SkipNote;
use mend_rpc::enums::skip_reason_from_pb;
use mend_rpc::pb;

use crate::error::AgentError;
use crate::exchange::{connect, peer_err};
use crate::journal;
use crate::runs::RunState;
use crate::state::{AgentBackend, AgentState};

use super::control;
use super::segment;

/// The outcome of undoing a repair on both sides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UndoSummary {
    /// Keys restored here.
    pub restored_local: u64,
    /// Keys restored at the peer.
    pub restored_peer: u64,
    /// Keys left alone (changed since the repair), with the side.
    pub skipped: Vec<(Side, Vec<u8>, SkipNote)>,
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
    for s in resp.skipped {
        let reason =
            skip_reason_from_pb(s.kind, "skipped.kind").map_err(|e| peer_err(&header.peer, e))?;
        out.skipped
            .push((Side::Peer, s.key, SkipNote::new(reason, s.reason)));
    }
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
    out.skipped
        .extend(local.skipped.into_iter().map(|(k, r)| (Side::Local, k, r)));
    Ok(out)
}
