//! The Ingest service: a change feed's batches into digest-only ranges.
//!
//! Batches are taken one at a time: each is converted (limits checked by
//! `mend_rpc::ingest`), committed by the store with its source's position
//! in one synced batch on the blocking pool, and only then acknowledged.
//! The next batch is read only after the acknowledgement is queued, so an
//! adapter that sends faster than the store commits is held back by HTTP/2
//! flow control, and at most [`INGEST_ACK_DEPTH`] acknowledgements wait for
//! a slow reader (each for at most `stream_send_timeout_ms`).
//!
//! A stream may live as long as its feed: it holds one task, at most one
//! batch (bounded by `MESSAGE_BYTES_MAX` and `INGEST_BATCH_ENTRIES_MAX`) and
//! those acknowledgements; how many streams exist is bounded by
//! `limits.connections_max` × `limits.streams_per_connection_max`. Two
//! streams of one source are serialised by the store's writer lock, and the
//! position only moves forward.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use mend_core::Decision;
use mend_rpc::ingest::{batch_from_pb, position_request_from_pb};
use mend_rpc::pb;
use mend_store::Ingested;

use crate::state::AgentState;

/// Acknowledgements queued for a slow reader before the service stops
/// reading batches (each is a few dozen bytes).
pub const INGEST_ACK_DEPTH: usize = 4;

/// Implementation of `mend.v1.Ingest`.
pub struct IngestService {
    state: Arc<AgentState>,
}

impl IngestService {
    /// A service over `state`.
    pub fn new(state: Arc<AgentState>) -> IngestService {
        IngestService { state }
    }
}

/// Commits one batch and builds its acknowledgement.
async fn ingest_one(state: &Arc<AgentState>, b: pb::IngestBatch) -> Result<pb::IngestAck, Status> {
    let range_name = b.range.clone();
    let batch = batch_from_pb(b, state.store.ranges())?;
    state.check_future_versions(batch.entries.iter().map(|e| (e.key.as_slice(), &e.version)))?;
    let source = batch.source.clone();
    let n = batch.entries.len() as u64;
    let done = state.blocking(move |s| s.ingest(batch)).await?;
    state.metrics.ingest_batches.inc();
    state.metrics.ingest_entries.inc_by(n);
    let applied = done
        .applied
        .iter()
        .filter(|a| a.decision == Decision::Apply)
        .count() as u64;
    state.metrics.tree_updates.inc_by(applied);
    Ok(ack(source, range_name, &done))
}

fn ack(source: String, range: String, done: &Ingested) -> pb::IngestAck {
    let count = |d: Decision| done.applied.iter().filter(|a| a.decision == d).count() as u32;
    pb::IngestAck {
        source,
        range,
        position: done.position.clone(),
        advanced: done.advanced,
        applied: count(Decision::Apply),
        duplicates: count(Decision::Duplicate),
        stale: count(Decision::Stale),
        conflicts: count(Decision::Conflict),
    }
}

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type IngestStream = ReceiverStream<Result<pb::IngestAck, Status>>;

    async fn ingest(
        &self,
        req: Request<Streaming<pb::IngestBatch>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(INGEST_ACK_DEPTH);
        let state = self.state.clone();
        let send_timeout = Duration::from_millis(state.config.limits.stream_send_timeout_ms);
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let reply = ingest_one(&state, batch).await;
                let failed = reply.is_err();
                // An acknowledgement that cannot be delivered is not lost:
                // the batch is durable, and the adapter that reconnects
                // reads the position with `Position`.
                let sent = matches!(
                    tokio::time::timeout(send_timeout, tx.send(reply)).await,
                    Ok(Ok(()))
                );
                if failed || !sent {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn position(
        &self,
        req: Request<pb::IngestPositionRequest>,
    ) -> Result<Response<pb::IngestPositionResponse>, Status> {
        let r = req.into_inner();
        let range = position_request_from_pb(&r, self.state.store.ranges())?;
        let source = r.source;
        let got = self
            .state
            .blocking(move |s| s.ingest_position(range, &source))
            .await?;
        Ok(Response::new(match got {
            Some(position) => pb::IngestPositionResponse {
                found: true,
                position,
            },
            None => pb::IngestPositionResponse::default(),
        }))
    }
}
