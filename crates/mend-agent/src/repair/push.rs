//! Push: the current local entries of the keys the peer lacks, streamed to
//! the peer, which applies them through its apply rule and journals its
//! before-images.

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use mend_core::Record;
use mend_core::playbook::{SkipNote, SkipReason};
use mend_rpc::convert::version_to_pb;
use mend_rpc::enums::decision_from_pb;
use mend_rpc::{GRPC_FRAME_BYTES, pb};

use crate::error::AgentError;
use crate::exchange::peer_err;
use crate::journal;
use crate::link::Inbound;
use crate::state::AgentBackend;

use super::progress::Mover;
use super::{REPAIR_BATCH_BYTES, REPAIR_BATCH_KEYS, RepairSummary};

/// Streams the current local entries of `to_peer` to the peer, which
/// applies them through its apply rule and journals its before-images.
pub(super) async fn push_planned<B: AgentBackend>(
    m: &mut Mover<'_, '_, B>,
    to_peer: &[Vec<u8>],
    sum: &mut RepairSummary,
) -> Result<(), AgentError> {
    let id = m.run.id.clone();
    m.run
        .event(format!("pushing {} keys to the peer", to_peer.len()));
    let (tx, rx) = mpsc::channel::<pb::PushRequest>(4);
    let call = {
        let p = m.peer.clone();
        let msgs: Inbound<pb::PushRequest> = Box::pin(ReceiverStream::new(rx).map(Ok));
        tokio::spawn(async move { p.push(msgs).await })
    };
    let mut first = true;
    for chunk in to_peer.chunks(REPAIR_BATCH_KEYS) {
        let keys = chunk.to_vec();
        // Recorded before the push: an undo holds these keys on this side
        // too.
        let ops = journal::pushed_ops(&id, &keys);
        m.state
            .blocking(move |s| s.backend().write(ops, false))
            .await?;
        let got = crate::repair::rows::read_records(m.state, keys.clone()).await?;
        let repair_id = if first { id.clone() } else { String::new() };
        first = false;
        if !send_chunk(m, &tx, repair_id, keys.into_iter().zip(got), sum).await {
            break;
        }
    }
    drop(tx);
    let resp = call
        .await
        .map_err(AgentError::from)?
        .map_err(|s| peer_err(m.addr, s))?;
    count_applied(m, resp, sum)
}

/// Sends the records of one chunk in messages of at most
/// [`REPAIR_BATCH_KEYS`] entries and about [`REPAIR_BATCH_BYTES`]; the
/// first carries `repair_id` (the call's first message names the repair).
/// False when the call has ended (its error is the call's result).
async fn send_chunk<B: AgentBackend>(
    m: &mut Mover<'_, '_, B>,
    tx: &mpsc::Sender<pb::PushRequest>,
    repair_id: String,
    recs: impl Iterator<Item = (Vec<u8>, Option<Record>)>,
    sum: &mut RepairSummary,
) -> bool {
    let mut msg = pb::PushRequest {
        repair_id,
        entries: Vec::new(),
    };
    for (key, rec) in recs {
        let Some(rec) = rec else {
            sum.skipped.push((
                key,
                SkipNote::new(SkipReason::Gone, "gone locally since the diff (purged)"),
            ));
            continue;
        };
        msg.entries.push(pb::Entry {
            key,
            version: Some(version_to_pb(&rec.meta.version)),
            tombstone: rec.meta.tombstone,
            value: rec.value,
        });
        if msg.encoded_len() >= REPAIR_BATCH_BYTES || msg.entries.len() >= REPAIR_BATCH_KEYS {
            let out = std::mem::take(&mut msg);
            if !send(m, tx, out, sum).await {
                return false;
            }
        }
    }
    if msg.entries.is_empty() && msg.repair_id.is_empty() {
        return true;
    }
    send(m, tx, msg, sum).await
}

/// Sends one message, paced and counted.
async fn send<B: AgentBackend>(
    m: &mut Mover<'_, '_, B>,
    tx: &mpsc::Sender<pb::PushRequest>,
    msg: pb::PushRequest,
    sum: &mut RepairSummary,
) -> bool {
    let n = msg.entries.len() as u64;
    m.pace(msg.encoded_len() as u64 + GRPC_FRAME_BYTES, n, sum)
        .await;
    if tx.send(msg).await.is_err() {
        return false;
    }
    m.advance(n, sum).await;
    true
}

/// Counts what the peer applied, and the keys it kept as skipped.
fn count_applied<B: AgentBackend>(
    m: &Mover<'_, '_, B>,
    resp: pb::PushResponse,
    sum: &mut RepairSummary,
) -> Result<(), AgentError> {
    sum.keys_to_peer += resp.applied;
    m.run.event(format!(
        "peer applied {} keys, kept {} of its own",
        resp.applied,
        resp.not_applied.len()
    ));
    for o in resp.not_applied {
        let decision = decision_from_pb(o.decision, "not_applied.decision")
            .map_err(|s| peer_err(m.addr, s))?;
        sum.skipped.push((
            o.key,
            SkipNote::new(
                SkipReason::Kept,
                format!("peer kept its entry ({decision}): it changed since the diff"),
            ),
        ));
    }
    Ok(())
}
