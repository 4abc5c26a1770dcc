//! Fetch: the peer's entries of the keys this side lacks, checked against
//! the request ([`FetchCheck`]) and applied here through the apply rule,
//! journaled.

use prost::Message;

use mend_core::playbook::{SkipNote, SkipReason};
use mend_rpc::{GRPC_FRAME_BYTES, pb};

use crate::error::AgentError;
use crate::exchange::{next_message, peer_err};
use crate::state::AgentBackend;
use crate::wire::write_from_pb;

use super::progress::Mover;
use super::{REPAIR_BATCH_BYTES, REPAIR_BATCH_KEYS, RepairSummary, rpc_timeout};

/// Fetches the peer's entries of `to_local` and applies them here through
/// the apply rule, journaled.
pub(super) async fn fetch_planned<B: AgentBackend>(
    mv: &mut Mover<'_, '_, B>,
    to_local: &[Vec<u8>],
    sum: &mut RepairSummary,
) -> Result<(), AgentError> {
    let (state, addr, peer, run) = (mv.state, mv.addr, mv.peer, mv.run);
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
            let got = next_message(&mut stream, rpc_timeout(state), addr).await?;
            let end = got.is_none();
            if let Some(msg) = got {
                let key = msg.key.clone();
                mv.pace(msg.encoded_len() as u64 + GRPC_FRAME_BYTES, 1, sum)
                    .await;
                match check.entry(msg, addr)? {
                    Some(e) => {
                        batch_bytes += e.value.len();
                        batch.push(write_from_pb(e).map_err(|s| peer_err(addr, s))?);
                    }
                    None => sum.skipped.push((
                        key,
                        SkipNote::new(SkipReason::Gone, "gone at the peer since the diff (purged)"),
                    )),
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
                            SkipNote::new(
                                SkipReason::Kept,
                                format!(
                                    "kept the local entry ({decision}): it changed since the diff"
                                ),
                            ),
                        )),
                    }
                }
                mv.advance(n, sum).await;
            }
            if end {
                break;
            }
        }
    }
    run.event(format!("applied {} keys here", sum.keys_to_local - before));
    Ok(())
}

/// Checks a `Fetch` stream against its request: every message answers a
/// key that was asked for, at most once, and carries an entry of that very
/// key. A peer that answers anything else would make the repair write
/// entries nobody planned.
pub(super) struct FetchCheck {
    asked: std::collections::HashSet<Vec<u8>>,
}

impl FetchCheck {
    pub(super) fn new(keys: &[Vec<u8>]) -> FetchCheck {
        FetchCheck {
            asked: keys.iter().cloned().collect(),
        }
    }

    /// The entry of a checked message (`None` when the peer no longer has
    /// the key).
    pub(super) fn entry(
        &mut self,
        m: pb::FetchedEntry,
        addr: &str,
    ) -> Result<Option<pb::Entry>, AgentError> {
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
