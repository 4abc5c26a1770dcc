//! How an agent talks to a peer: [`PeerLink`], one method per call of the
//! `mend.v1.Peer` service, in protobuf messages. The exchange, repair,
//! undo and playbook drivers are written against it once; [`grpc`] carries
//! the calls over (mutual-TLS) gRPC, [`mem`] in memory to a peer's real
//! service, encoding every message on the way (so sizes and validation are
//! those of the wire) and letting a [`mem::Wire`] drop, delay, duplicate,
//! reorder or cut them per directed link.

pub mod grpc;
pub mod mem;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::Status;

use mend_rpc::pb;

use crate::error::AgentError;

/// A stream of messages from the other side (a server stream's replies, or
/// a client stream's requests).
pub type Inbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The calls an initiator makes to one peer. Every error is the `Status`
/// the peer (or the transport) returned, not yet attributed to the peer's
/// address (the drivers do that with [`peer_err`]).
#[tonic::async_trait]
pub trait PeerLink: Send + Sync {
    /// A fresh handshake challenge.
    async fn challenge(&self, r: pb::ChallengeRequest) -> Result<pb::ChallengeResponse, Status>;
    /// The handshake.
    async fn handshake(&self, r: pb::HandshakeRequest) -> Result<pb::HandshakeResponse, Status>;
    /// One batch of probes.
    async fn probe(&self, r: pb::ProbeRequest) -> Result<pb::ProbeResponse, Status>;
    /// One leaf probe, answered as a stream.
    async fn leaves(&self, r: pb::LeavesRequest) -> Result<Inbound<pb::LeafReply>, Status>;
    /// Current entries of keys, streamed.
    async fn fetch(&self, r: pb::FetchRequest) -> Result<Inbound<pb::FetchedEntry>, Status>;
    /// A repair's entries for the peer to apply.
    async fn push(&self, msgs: Inbound<pb::PushRequest>) -> Result<pb::PushResponse, Status>;
    /// A uniform sample of the peer's entries of a range.
    async fn sample(&self, r: pb::PeerSampleRequest) -> Result<pb::EntrySummaries, Status>;
    /// Entry summaries of keys.
    async fn lookup(&self, r: pb::FetchRequest) -> Result<pb::LookupResponse, Status>;
    /// A repair's entries applied to a checkpoint of the peer.
    async fn shadow_push(&self, msgs: Vec<pb::PushRequest>) -> Result<pb::LookupResponse, Status>;
    /// Undo of the peer's side of a repair.
    async fn undo_push(&self, r: pb::UndoPushRequest) -> Result<pb::UndoResponse, Status>;
    /// The peer's own health for serving exchanges (store writable, reply
    /// streams free): true when SERVING.
    async fn healthy(&self) -> Result<bool, Status>;
    /// One of the peer's exchange slots for a scheduled exchange.
    async fn reserve(&self, r: pb::ReserveRequest) -> Result<pb::ReserveResponse, Status>;
    /// Frees a slot `reserve` granted.
    async fn release(&self, r: pb::ReleaseRequest) -> Result<pb::ReleaseResponse, Status>;
}

/// Opens links to peers by address (`host:port`, or a node id in memory).
#[tonic::async_trait]
pub trait Dialer: Send + Sync {
    /// A link to the peer at `addr`, reusing an open one when there is one.
    async fn dial(&self, addr: &str) -> Result<Arc<dyn PeerLink>, AgentError>;
    /// Drops a cached link after a failure, so the next dial starts afresh.
    fn forget(&self, addr: &str);
}

/// A peer's error (or the transport's), attributed to its address, by kind
/// ([`AgentError::from_peer`]).
pub fn peer_err(addr: &str, s: Status) -> AgentError {
    AgentError::from_peer(addr, &s)
}

/// Reads the next message of a streamed reply within `timeout` (tonic's
/// request timeout covers only the response headers of a stream).
pub async fn next_message<T>(
    stream: &mut Inbound<T>,
    timeout: Duration,
    addr: &str,
) -> Result<Option<T>, AgentError> {
    match tokio::time::timeout(timeout, stream.next()).await {
        Ok(Some(r)) => r.map(Some).map_err(|s| peer_err(addr, s)),
        Ok(None) => Ok(None),
        Err(_) => Err(AgentError::timeout(format!(
            "peer {addr}: no message of the stream within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// An error with its sources, on one line (TLS failures hide the reason
/// two levels down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
