//! Push: the current local entries of the keys the peer lacks, streamed to
//! the peer, which applies them through its apply rule and journals its
//! before-images.

use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use mend_core::playbook::{SkipNote, SkipReason};
use mend_rpc::convert::version_to_pb;
use mend_rpc::enums::decision_from_pb;
use mend_rpc::{GRPC_FRAME_BYTES, pb};

use crate::error::AgentError;
use crate::exchange::peer_err;
use crate::journal;
use crate::link::Inbound;
use crate::pace::Pacer;
use crate::state::{AgentBackend, AgentState};

use super::run::Run;
use super::{REPAIR_BATCH_BYTES, REPAIR_BATCH_KEYS, RepairSummary};

/// Streams the current local entries of `to_peer` to the peer, which
/// applies them through its apply rule and journals its before-images.
#[allow(clippy::too_many_arguments)]
pub(super) async fn push_planned<B: AgentBackend>(
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
        let decision =
            decision_from_pb(o.decision, "not_applied.decision").map_err(|s| peer_err(addr, s))?;
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
