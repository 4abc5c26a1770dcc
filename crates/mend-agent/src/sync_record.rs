//! In-sync records: after each diff, for every range where the peer could
//! not resurrect any tombstone this side held, when that was last seen (the
//! input of `gc`'s purge horizons). Meta rows, about one peer incarnation:
//! `agent/sync/ peer 0x00 range` and `agent/sync-clean/ peer 0x00 range` →
//! the diff's start (ms, u64 big-endian); `agent/sync-incarnation/ peer` →
//! the incarnation the records are about (u64 big-endian).

use mend_store::{Cf, Op};

use crate::error::AgentError;
use crate::outcome::DiffOutcome;
use crate::state::{AgentBackend, AgentState};

const SYNC_PREFIX: &[u8] = b"agent/sync/";
const CLEAN_PREFIX: &[u8] = b"agent/sync-clean/";
const INCARNATION_PREFIX: &[u8] = b"agent/sync-incarnation/";

fn incarnation_key(peer: &str) -> Vec<u8> {
    let mut k = INCARNATION_PREFIX.to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

fn sync_key(peer: &str, range: &str) -> Vec<u8> {
    crate::meta::peer_range_key(SYNC_PREFIX, peer, range)
}

fn clean_key(peer: &str, range: &str) -> Vec<u8> {
    crate::meta::peer_range_key(CLEAN_PREFIX, peer, range)
}

/// Records, for each range of `out` that is purge-safe, that the peer
/// could not resurrect any tombstone this side held when the diff started.
/// Only a configured peer's record moves a purge horizon; the peer is named
/// by the node id its handshake proved, and its records are about the
/// incarnation that handshake carried: a new one replaces (in the same
/// batch) everything recorded about the old. A peer that sends none (0, an
/// older agent) vouches for nothing.
pub async fn record_sync<B: AgentBackend>(
    state: &AgentState<B>,
    out: &DiffOutcome,
) -> Result<(), AgentError> {
    if !state.peers().iter().any(|p| p.id == out.peer_node) || out.peer_incarnation == 0 {
        return Ok(());
    }
    let peer = out.peer_node.clone();
    let incarnation = out.peer_incarnation;
    let at = out.started_ms.to_be_bytes().to_vec();
    let mut puts: Vec<Op> = out
        .purge_safe_ranges()
        .map(|r| Op::Put(Cf::Meta, sync_key(&peer, r), at.clone()))
        .collect();
    puts.extend(
        out.purge_clean_ranges()
            .map(|r| Op::Put(Cf::Meta, clean_key(&peer, r), at.clone())),
    );
    // Rows of a former incarnation that this diff does not overwrite: gone
    // in the same batch when the peer turns out to have a new one.
    let forget: Vec<Vec<u8>> = state
        .store
        .ranges()
        .specs()
        .iter()
        .flat_map(|spec| [sync_key(&peer, &spec.name), clean_key(&peer, &spec.name)])
        .filter(|k| {
            !puts
                .iter()
                .any(|p| matches!(p, Op::Put(_, pk, _) if pk == k))
        })
        .collect();
    let inc_key = incarnation_key(&peer);
    let inc_row = incarnation.to_be_bytes().to_vec();
    let _records = state.sync_records.lock().await;
    state
        .blocking(move |s| {
            if s.backend().get(Cf::Meta, &inc_key)?.as_ref() != Some(&inc_row) {
                tracing::info!(peer = %peer, incarnation, "peer has a new store incarnation; its purge records start afresh");
                puts.extend(forget.into_iter().map(|k| Op::Delete(Cf::Meta, k)));
                puts.push(Op::Put(Cf::Meta, inc_key, inc_row));
            }
            if puts.is_empty() {
                return Ok(());
            }
            s.backend().write(puts, false)
        })
        .await
}

/// When `peer` was last seen in sync on `range` (ms), if ever.
pub fn last_sync<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &str,
    range: &str,
) -> Result<Option<u64>, mend_store::StoreError> {
    read_u64(state, &sync_key(peer, range))
}

/// When `peer` was last seen in sync on `range` holding every tombstone of
/// this side's (or newer), if ever.
pub fn last_clean_sync<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &str,
    range: &str,
) -> Result<Option<u64>, mend_store::StoreError> {
    read_u64(state, &clean_key(peer, range))
}

/// The incarnation of `peer` its records here are about, if any.
pub fn recorded_incarnation<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &str,
) -> Result<Option<u64>, mend_store::StoreError> {
    read_u64(state, &incarnation_key(peer))
}

fn read_u64<B: AgentBackend>(
    state: &AgentState<B>,
    key: &[u8],
) -> Result<Option<u64>, mend_store::StoreError> {
    let raw = state.store.backend().get(Cf::Meta, key)?;
    Ok(raw.and_then(|v| {
        <[u8; 8]>::try_from(v.as_slice())
            .ok()
            .map(u64::from_be_bytes)
    }))
}
