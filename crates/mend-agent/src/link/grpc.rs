//! [`PeerLink`] over gRPC: one cached channel per peer address (mutual TLS
//! with the agent's current certificate, or plaintext), re-dialled after a
//! failure or a certificate reload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;
use tonic::transport::Channel;

use mend_rpc::MESSAGE_BYTES_MAX;
use mend_rpc::pb;
use mend_rpc::pb::peer_client::PeerClient;

use crate::error::AgentError;

use super::{Dialer, Inbound, PeerLink, error_chain};

/// Most cached peer channels (an address pattern may allow many).
pub const CHANNELS_MAX: usize = 256;

/// Dials peers over gRPC.
pub struct GrpcDialer {
    tls: Option<Arc<mend_tls::TlsSource>>,
    /// Configured peers: `host:port` → the node id its certificate must name.
    names: HashMap<String, String>,
    timeout: Duration,
    /// Open channels by address, with the TLS generation they were made
    /// with: exchanges reuse a connection (one TLS handshake per peer, not
    /// per diff) until the certificates are reloaded.
    channels: Mutex<HashMap<String, (u64, Channel)>>,
    /// TLS names of addresses found in DNS (`discovery`).
    discovered: Option<Arc<crate::peers::Discovered>>,
}

impl GrpcDialer {
    /// A dialer with the agent's TLS source (`None`: plaintext), its
    /// configured peers and the per-call timeout.
    pub fn new(
        tls: Option<Arc<mend_tls::TlsSource>>,
        peers: &[crate::config::PeerConfig],
        timeout: Duration,
        discovered: Option<Arc<crate::peers::Discovered>>,
    ) -> GrpcDialer {
        GrpcDialer {
            tls,
            names: peers
                .iter()
                .map(|p| {
                    (
                        mend_tls::client::host_port(&p.address).to_string(),
                        p.id.clone(),
                    )
                })
                .collect(),
            timeout,
            channels: Mutex::new(HashMap::new()),
            discovered,
        }
    }

    fn generation(&self) -> u64 {
        self.tls
            .as_ref()
            .map(|t| t.reloads.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0)
    }

    fn client_tls(&self) -> mend_tls::client::ClientTls {
        match &self.tls {
            Some(src) => mend_tls::client::ClientTls::Tls(src.current().material.clone()),
            None => mend_tls::client::ClientTls::Plaintext,
        }
    }

    async fn channel(&self, addr: &str) -> Result<Channel, AgentError> {
        let key = mend_tls::client::host_port(addr).to_string();
        let generation = self.generation();
        let cached = {
            let c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            c.get(&key)
                .filter(|(g, _)| *g == generation)
                .map(|(_, ch)| ch.clone())
        };
        if let Some(ch) = cached {
            return Ok(ch);
        }
        // A configured peer must present a certificate naming its id; an
        // address allowed by pattern, one naming the address's host.
        let found = self.discovered.as_ref().and_then(|d| d.tls_name(&key));
        let name = self
            .names
            .get(&key)
            .map(String::as_str)
            .or(found.as_deref());
        let ep = mend_tls::client::endpoint(addr, name, &self.client_tls())
            .map_err(AgentError::invalid)?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let ch = ep.connect().await.map_err(|e| {
            AgentError::unavailable(format!("cannot reach peer at {addr}: {}", error_chain(&e)))
        })?;
        let mut c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= CHANNELS_MAX {
            c.clear();
        }
        c.insert(key, (generation, ch.clone()));
        Ok(ch)
    }
}

#[tonic::async_trait]
impl Dialer for GrpcDialer {
    async fn dial(&self, addr: &str) -> Result<Arc<dyn PeerLink>, AgentError> {
        let ch = self.channel(addr).await?;
        Ok(Arc::new(GrpcLink {
            peer: PeerClient::new(ch.clone())
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            health: tonic_health::pb::health_client::HealthClient::new(ch),
        }))
    }

    fn forget(&self, addr: &str) {
        let key = mend_tls::client::host_port(addr);
        let mut c = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        c.remove(key);
    }
}

/// A peer over one gRPC channel.
pub struct GrpcLink {
    peer: PeerClient<Channel>,
    health: tonic_health::pb::health_client::HealthClient<Channel>,
}

fn boxed<T: Send + 'static>(s: tonic::Streaming<T>) -> Inbound<T> {
    Box::pin(s)
}

#[tonic::async_trait]
impl PeerLink for GrpcLink {
    async fn challenge(&self, r: pb::ChallengeRequest) -> Result<pb::ChallengeResponse, Status> {
        Ok(self.peer.clone().challenge(r).await?.into_inner())
    }
    async fn handshake(&self, r: pb::HandshakeRequest) -> Result<pb::HandshakeResponse, Status> {
        Ok(self.peer.clone().handshake(r).await?.into_inner())
    }
    async fn probe(&self, r: pb::ProbeRequest) -> Result<pb::ProbeResponse, Status> {
        Ok(self.peer.clone().probe(r).await?.into_inner())
    }
    async fn leaves(&self, r: pb::LeavesRequest) -> Result<Inbound<pb::LeafReply>, Status> {
        Ok(boxed(self.peer.clone().leaves(r).await?.into_inner()))
    }
    async fn fetch(&self, r: pb::FetchRequest) -> Result<Inbound<pb::FetchedEntry>, Status> {
        Ok(boxed(self.peer.clone().fetch(r).await?.into_inner()))
    }
    async fn push(&self, msgs: Inbound<pb::PushRequest>) -> Result<pb::PushResponse, Status> {
        // The request stream ends at the first error the driver produced
        // (none: the driver only yields Ok messages).
        use futures::StreamExt;
        let mut msgs = msgs;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            while let Some(Ok(m)) = msgs.next().await {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(self.peer.clone().push(rx).await?.into_inner())
    }
    async fn sample(&self, r: pb::PeerSampleRequest) -> Result<pb::EntrySummaries, Status> {
        Ok(self.peer.clone().sample(r).await?.into_inner())
    }
    async fn lookup(&self, r: pb::FetchRequest) -> Result<pb::LookupResponse, Status> {
        Ok(self.peer.clone().lookup(r).await?.into_inner())
    }
    async fn shadow_push(&self, msgs: Vec<pb::PushRequest>) -> Result<pb::LookupResponse, Status> {
        Ok(self
            .peer
            .clone()
            .shadow_push(tokio_stream::iter(msgs))
            .await?
            .into_inner())
    }
    async fn undo_push(&self, r: pb::UndoPushRequest) -> Result<pb::UndoResponse, Status> {
        Ok(self.peer.clone().undo_push(r).await?.into_inner())
    }
    async fn healthy(&self) -> Result<bool, Status> {
        let r = self
            .health
            .clone()
            .check(tonic_health::pb::HealthCheckRequest {
                service: "mend.v1.Peer".into(),
            })
            .await?;
        Ok(r.get_ref().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    }
    async fn reserve(&self, r: pb::ReserveRequest) -> Result<pb::ReserveResponse, Status> {
        Ok(self.peer.clone().reserve(r).await?.into_inner())
    }
    async fn release(&self, r: pb::ReleaseRequest) -> Result<pb::ReleaseResponse, Status> {
        Ok(self.peer.clone().release(r).await?.into_inner())
    }
}
