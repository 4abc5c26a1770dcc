//! Resolution toward a range's authority: the authority's content re-stamped
//! here past both sides' versions, journaled with the winner, then pushed.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use mend_core::Decision;
use mend_core::classify::Side;
use mend_core::playbook::{SkipNote, SkipReason};
use mend_rpc::{GRPC_FRAME_BYTES, pb};

use crate::error::AgentError;
use crate::exchange::{next_message, peer_err};
use crate::journal;
use crate::outcome::{DiffOutcome, DivergentKey};
use crate::pace::Pacer;
use crate::state::{AgentBackend, AgentState};
use crate::wire::write_from_pb;

use super::fetch::FetchCheck;
use super::{Planned, REPAIR_BATCH_KEYS, RepairSummary, rpc_timeout};

/// Resolves `moves` toward their range's authority: checks that neither
/// side changed since the diff `d` (a key that did is left to the next
/// exchange), then writes the authority's content here as a local write
/// stamped newer than both sides' versions, journaled with its
/// before-image and the winner (`journal::winner_ops`). Returns the keys
/// re-stamped, for the caller to push to the peer; the others are skipped
/// with why.
#[allow(clippy::too_many_arguments)]
pub(super) async fn restamp<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    d: &DiffOutcome,
    moves: &[&Planned],
    id: &str,
    sum: &mut RepairSummary,
    pacer: &mut Pacer,
) -> Result<Vec<Vec<u8>>, AgentError> {
    let seen: HashMap<&[u8], &DivergentKey> =
        d.keys.iter().map(|k| (k.div.key.as_slice(), k)).collect();
    let mut out = Vec::new();
    for chunk in moves.chunks(state.config.limits.fetch_keys_max.min(REPAIR_BATCH_KEYS)) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|p| p.key.clone()).collect();
        let theirs = fetch_theirs(state, addr, peer, &keys, sum, pacer).await?;
        let ks = keys.clone();
        let ours = state.blocking(move |s| s.get_many(&ks)).await?;
        let now = Current { ours, theirs };
        let w = authority_writes(chunk, &keys, now, &seen, d, addr, sum)?;
        if w.writes.is_empty() {
            continue;
        }
        let done = commit(state, id, w).await?;
        out.extend(applied_or_skipped(done, sum));
    }
    Ok(out)
}

/// The current entries of a chunk's keys: this side's (in key order) and
/// the peer's (by key; absent where it holds none).
struct Current {
    ours: Vec<Option<mend_core::Record>>,
    theirs: HashMap<Vec<u8>, pb::Entry>,
}

/// The local writes that re-stamp a chunk's authority content, with the
/// node that won each and the peer versions to stamp past.
#[derive(Default)]
struct AuthorityWrites {
    writes: Vec<mend_store::Write>,
    winners: Vec<String>,
    floors: Vec<mend_core::version::Version>,
}

/// Decides the re-stamp of each key of `chunk` (`keys` in the same order):
/// the authority's current content, if neither side changed since `d`
/// (else the key is skipped for the next exchange).
fn authority_writes(
    chunk: &[&Planned],
    keys: &[Vec<u8>],
    mut now: Current,
    seen: &HashMap<&[u8], &DivergentKey>,
    d: &DiffOutcome,
    addr: &str,
    sum: &mut RepairSummary,
) -> Result<AuthorityWrites, AgentError> {
    let mut w = AuthorityWrites::default();
    for ((p, key), mine) in chunk.iter().zip(keys).zip(now.ours) {
        let Some(k) = seen.get(key.as_slice()) else {
            continue;
        };
        let peer_now = match now.theirs.remove(key) {
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
                SkipNote::new(
                    SkipReason::ChangedSinceDiff,
                    "not resolved toward the authority: an entry changed since the diff",
                ),
            ));
            continue;
        }
        // The authority's content: this side's when the peer is behind.
        let value = if p.behind == Side::Peer {
            mine.filter(|r| !r.meta.tombstone).map(|r| r.value)
        } else {
            peer_now.and_then(|w| w.value)
        };
        w.winners.push(match p.behind {
            Side::Peer => d.local_node.clone(),
            Side::Local => d.peer_node.clone(),
        });
        w.writes.push(match value {
            Some(v) => mend_store::Write::put(key.clone(), v),
            None => mend_store::Write::delete(key.clone()),
        });
        w.floors
            .extend(k.div.peer.as_ref().map(|e| e.version.clone()));
    }
    Ok(w)
}

/// Writes the re-stamps locally, past the peer's versions, journaled with
/// their before-images and (for those applied) the winner; returns each
/// key with the apply rule's outcome.
async fn commit<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    id: &str,
    w: AuthorityWrites,
) -> Result<Vec<(Vec<u8>, mend_store::Applied)>, AgentError> {
    let rid = id.to_string();
    let AuthorityWrites {
        writes,
        winners,
        floors,
    } = w;
    state
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
            Ok(ks.into_iter().zip(outs).collect())
        })
        .await
}

/// The keys re-stamped; the others are skipped with the apply rule's
/// decision.
fn applied_or_skipped(
    done: Vec<(Vec<u8>, mend_store::Applied)>,
    sum: &mut RepairSummary,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (k, a) in done {
        if a.decision == Decision::Apply {
            out.push(k);
        } else {
            sum.skipped.push((
                k,
                SkipNote::new(
                    SkipReason::Kept,
                    format!(
                        "not resolved toward the authority: the local write was {}",
                        a.decision
                    ),
                ),
            ));
        }
    }
    out
}

/// The peer's current entries of `keys` (to check against the diff),
/// paced; keys it no longer holds are absent.
async fn fetch_theirs<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    keys: &[Vec<u8>],
    sum: &mut RepairSummary,
    pacer: &mut Pacer,
) -> Result<HashMap<Vec<u8>, pb::Entry>, AgentError> {
    let mut theirs = HashMap::new();
    let mut stream = peer
        .fetch(pb::FetchRequest {
            keys: keys.to_vec(),
        })
        .await
        .map_err(|s| peer_err(addr, s))?;
    let mut check = FetchCheck::new(keys);
    while let Some(m) = next_message(&mut stream, rpc_timeout(state), addr).await? {
        let bytes = m.encoded_len() as u64 + GRPC_FRAME_BYTES;
        pacer.take(bytes, 1).await;
        sum.bytes_streamed += bytes;
        if let Some(e) = check.entry(m, addr)? {
            theirs.insert(e.key.clone(), e);
        }
    }
    Ok(theirs)
}
