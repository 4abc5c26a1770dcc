//! [`PeerLink`] in memory: calls go straight to a peer's real
//! [`PeerService`], every message encoded to protobuf bytes and decoded on
//! the other side (so sizes, limits and validation are those of the wire),
//! and every message first shown to a [`Wire`], which counts it and decides
//! its fate: delivered, lost, delayed, duplicated, reordered, or the stream
//! cut the stream. The benchmarks count bytes with it; the simulator injects faults
//! with it, per directed link.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use mend_rpc::pb;

use super::{Dialer, Inbound, PeerLink};
use crate::error::AgentError;
use crate::service::peer::PeerService;
use crate::state::AgentBackend;

/// The calls of `mend.v1.Peer` (and the health check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    /// `Challenge`.
    Challenge,
    /// `Handshake`.
    Handshake,
    /// `Probe`.
    Probe,
    /// `Leaves`.
    Leaves,
    /// `Fetch`.
    Fetch,
    /// `Push`.
    Push,
    /// `Sample`.
    Sample,
    /// `Lookup`.
    Lookup,
    /// `ShadowPush`.
    ShadowPush,
    /// `UndoPush`.
    UndoPush,
    /// `grpc.health.v1.Health/Check`.
    Health,
    /// `Reserve`.
    Reserve,
    /// `Release`.
    Release,
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Arrives.
    Deliver,
    /// Lost: the call (or the stream it belongs to) fails as on a reset
    /// connection; over HTTP/2 on TCP a message is never silently missing
    /// from the middle of a stream.
    Drop,
    /// Arrives twice (a retried request; a repeated stream message).
    Duplicate,
    /// Arrives after this long (the caller's timeout still applies).
    Delay(Duration),
    /// Arrives after the next message of its stream (single messages:
    /// delivered).
    Reorder,
}

/// One message crossing a directed link.
#[derive(Debug, Clone, Copy)]
pub struct Crossing<'a> {
    /// The sending node.
    pub from: &'a str,
    /// The receiving node.
    pub to: &'a str,
    /// The call.
    pub rpc: Rpc,
    /// True for a reply (peer → initiator).
    pub reply: bool,
    /// Encoded protobuf bytes (the gRPC frame adds 5).
    pub bytes: usize,
}

/// Sees every message and decides its fate.
pub trait Wire: Send + Sync {
    /// The fate of one message.
    fn fate(&self, c: Crossing<'_>) -> Fate;
}

/// A wire that delivers everything and counts bytes per call and
/// direction.
#[derive(Debug, Default)]
pub struct Counting {
    counts: Mutex<HashMap<(Rpc, bool), (u64, u64)>>,
    largest: std::sync::atomic::AtomicU64,
}

impl Counting {
    /// (messages, encoded bytes) of `rpc` in one direction so far.
    pub fn get(&self, rpc: Rpc, reply: bool) -> (u64, u64) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(rpc, reply)).copied().unwrap_or((0, 0))
    }

    /// The largest single message so far, encoded bytes.
    pub fn largest(&self) -> u64 {
        self.largest.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.largest.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Wire for Counting {
    fn fate(&self, c: Crossing<'_>) -> Fate {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((c.rpc, c.reply)).or_default();
        e.0 += 1;
        e.1 += c.bytes as u64;
        self.largest
            .fetch_max(c.bytes as u64, std::sync::atomic::Ordering::Relaxed);
        Fate::Deliver
    }
}

/// A peer's service as seen from one initiator, through a [`Wire`].
pub struct MemLink<B: AgentBackend> {
    peer: Arc<PeerService<B>>,
    from: String,
    to: String,
    wire: Arc<dyn Wire>,
    timeout: Duration,
}

/// How many times a message arrives, and after what.
enum Arrival<M> {
    Lost,
    Arrives { msg: M, times: u8, reorder: bool },
}

impl<B: AgentBackend> MemLink<B> {
    /// A link from node `from` to the service `peer` of node `to`; every
    /// call fails after `timeout`.
    pub fn new(
        from: impl Into<String>,
        to: impl Into<String>,
        peer: Arc<PeerService<B>>,
        wire: Arc<dyn Wire>,
        timeout: Duration,
    ) -> MemLink<B> {
        MemLink {
            peer,
            from: from.into(),
            to: to.into(),
            wire,
            timeout,
        }
    }

    /// Encodes `m`, shows it to the wire, and decodes what arrives.
    async fn cross<M: Message + Default>(&self, rpc: Rpc, reply: bool, m: &M) -> Arrival<M> {
        let bytes = m.encode_to_vec();
        let (from, to) = if reply {
            (self.to.as_str(), self.from.as_str())
        } else {
            (self.from.as_str(), self.to.as_str())
        };
        let fate = self.wire.fate(Crossing {
            from,
            to,
            rpc,
            reply,
            bytes: bytes.len(),
        });
        let (times, reorder) = match fate {
            Fate::Drop => return Arrival::Lost,
            Fate::Delay(d) => {
                tokio::time::sleep(d).await;
                (1, false)
            }
            Fate::Duplicate => (2, false),
            Fate::Reorder => (1, true),
            Fate::Deliver => (1, false),
        };
        match M::decode(bytes.as_slice()) {
            Ok(msg) => Arrival::Arrives {
                msg,
                times,
                reorder,
            },
            // An encoding of ours that does not decode is a bug, not a
            // fault of the wire; say so loudly.
            Err(e) => {
                tracing::error!(error = %e, "in-memory link: message did not decode");
                Arrival::Lost
            }
        }
    }

    fn lost(&self, rpc: Rpc) -> Status {
        Status::unavailable(format!(
            "transport error: link {} → {}: {rpc:?} message lost",
            self.from, self.to
        ))
    }

    /// A unary call: the request crosses (perhaps twice: the handler then
    /// runs twice, as for a retried request), the handler runs, its reply
    /// crosses back; all within the link's timeout.
    async fn unary<Q, R, F, Fut>(&self, rpc: Rpc, req: Q, handler: F) -> Result<R, Status>
    where
        Q: Message + Default + Clone,
        R: Message + Default,
        F: Fn(Q) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let call = async {
            let (q, times) = match self.cross(rpc, false, &req).await {
                Arrival::Lost => return Err(self.lost(rpc)),
                Arrival::Arrives { msg, times, .. } => (msg, times),
            };
            let mut out = handler(q.clone()).await;
            if times > 1 {
                out = handler(q).await;
            }
            match self.cross(rpc, true, &out?).await {
                Arrival::Lost => Err(self.lost(rpc)),
                Arrival::Arrives { msg, .. } => Ok(msg),
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "link {} → {}: {rpc:?} timed out after {} ms",
                self.from,
                self.to,
                self.timeout.as_millis()
            ))),
        }
    }

    /// A server-streaming call: the request crosses, the handler answers
    /// with a stream, and the stream crosses back message by message.
    async fn server_stream<Q, R, F, Fut>(
        self: &Arc<Self>,
        rpc: Rpc,
        req: Q,
        handler: F,
    ) -> Result<Inbound<R>, Status>
    where
        Q: Message + Default,
        R: Message + Default + Send + 'static,
        F: FnOnce(Q) -> Fut,
        Fut: Future<Output = Result<Inbound<R>, Status>>,
        B: 'static,
    {
        let q = match self.cross(rpc, false, &req).await {
            Arrival::Lost => return Err(self.lost(rpc)),
            Arrival::Arrives { msg, .. } => msg,
        };
        let s = handler(q).await?;
        Ok(self.relay(rpc, true, s))
    }

    /// Carries a stream across the wire message by message, on a task of
    /// its own (so the producer and the consumer run as they would on two
    /// machines).
    fn relay<M>(self: &Arc<Self>, rpc: Rpc, reply: bool, mut input: Inbound<M>) -> Inbound<M>
    where
        M: Message + Default + Send + 'static,
        B: 'static,
    {
        let (tx, rx) = mpsc::channel::<Result<M, Status>>(2);
        let link = self.clone();
        tokio::spawn(async move {
            let mut held: Option<M> = None;
            while let Some(item) = input.next().await {
                let m = match item {
                    Ok(m) => m,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                match link.cross(rpc, reply, &m).await {
                    Arrival::Lost => {
                        let _ = tx.send(Err(link.lost(rpc))).await;
                        return;
                    }
                    Arrival::Arrives {
                        msg,
                        times,
                        reorder,
                    } => {
                        if reorder && held.is_none() {
                            held = Some(msg);
                            continue;
                        }
                        let dup = (times > 1).then(|| msg.encode_to_vec());
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                        if let Some(d) = dup
                            && let Ok(again) = M::decode(d.as_slice())
                            && tx.send(Ok(again)).await.is_err()
                        {
                            return;
                        }
                        if let Some(h) = held.take()
                            && tx.send(Ok(h)).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
            if let Some(h) = held.take() {
                let _ = tx.send(Ok(h)).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// The `Arc` a link is used through (streams relay on tasks that hold it).
struct Shared<B: AgentBackend>(Arc<MemLink<B>>);

#[tonic::async_trait]
impl<B: AgentBackend> PeerLink for Shared<B> {
    async fn challenge(&self, r: pb::ChallengeRequest) -> Result<pb::ChallengeResponse, Status> {
        let p = &self.0.peer;
        self.0
            .unary(Rpc::Challenge, r, |_| async { Ok(p.on_challenge()) })
            .await
    }
    async fn handshake(&self, r: pb::HandshakeRequest) -> Result<pb::HandshakeResponse, Status> {
        let p = &self.0.peer;
        self.0
            .unary(Rpc::Handshake, r, |q| p.on_handshake(None, q))
            .await
    }
    async fn probe(&self, r: pb::ProbeRequest) -> Result<pb::ProbeResponse, Status> {
        let p = &self.0.peer;
        self.0.unary(Rpc::Probe, r, |q| p.on_probe(q)).await
    }
    async fn leaves(&self, r: pb::LeavesRequest) -> Result<Inbound<pb::LeafReply>, Status> {
        let p = &self.0.peer;
        self.0
            .server_stream(Rpc::Leaves, r, |q| p.on_leaves(q))
            .await
    }
    async fn fetch(&self, r: pb::FetchRequest) -> Result<Inbound<pb::FetchedEntry>, Status> {
        let p = &self.0.peer;
        self.0.server_stream(Rpc::Fetch, r, |q| p.on_fetch(q)).await
    }
    async fn push(&self, msgs: Inbound<pb::PushRequest>) -> Result<pb::PushResponse, Status> {
        let carried = self.0.relay(Rpc::Push, false, msgs);
        let out = self.0.peer.on_push(String::new(), carried).await?;
        match self.0.cross(Rpc::Push, true, &out).await {
            Arrival::Lost => Err(self.0.lost(Rpc::Push)),
            Arrival::Arrives { msg, .. } => Ok(msg),
        }
    }
    async fn sample(&self, r: pb::PeerSampleRequest) -> Result<pb::EntrySummaries, Status> {
        let p = &self.0.peer;
        self.0.unary(Rpc::Sample, r, |q| p.on_sample(q)).await
    }
    async fn lookup(&self, r: pb::FetchRequest) -> Result<pb::LookupResponse, Status> {
        let p = &self.0.peer;
        self.0.unary(Rpc::Lookup, r, |q| p.on_lookup(q)).await
    }
    async fn shadow_push(&self, msgs: Vec<pb::PushRequest>) -> Result<pb::LookupResponse, Status> {
        let input: Inbound<pb::PushRequest> =
            Box::pin(futures::stream::iter(msgs.into_iter().map(Ok)));
        let carried = self.0.relay(Rpc::ShadowPush, false, input);
        let out = self.0.peer.on_shadow_push(carried).await?;
        match self.0.cross(Rpc::ShadowPush, true, &out).await {
            Arrival::Lost => Err(self.0.lost(Rpc::ShadowPush)),
            Arrival::Arrives { msg, .. } => Ok(msg),
        }
    }
    async fn undo_push(&self, r: pb::UndoPushRequest) -> Result<pb::UndoResponse, Status> {
        let p = &self.0.peer;
        self.0
            .unary(Rpc::UndoPush, r, |q| p.on_undo_push(None, q))
            .await
    }
    async fn reserve(&self, r: pb::ReserveRequest) -> Result<pb::ReserveResponse, Status> {
        let p = &self.0.peer;
        let me = &self.0.from;
        self.0
            .unary(Rpc::Reserve, r, |q| async move { Ok(p.on_reserve(me, q)) })
            .await
    }
    async fn release(&self, r: pb::ReleaseRequest) -> Result<pb::ReleaseResponse, Status> {
        let p = &self.0.peer;
        self.0
            .unary(Rpc::Release, r, |q| async move { p.on_release(q) })
            .await
    }
    async fn healthy(&self) -> Result<bool, Status> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
        let p = &self.0.peer;
        let req = HealthCheckRequest {
            service: "mend.v1.Peer".into(),
        };
        let r = self
            .0
            .unary(Rpc::Health, req, |_| async {
                let serving = crate::health::check(p.state()).await.peer_serving();
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                Ok(HealthCheckResponse {
                    status: status as i32,
                })
            })
            .await?;
        Ok(r.status == ServingStatus::Serving as i32)
    }
}

/// The in-memory services of a set of agents, by address (node id): what
/// their [`MemDialer`]s reach.
pub struct Registry<B: AgentBackend> {
    peers: Mutex<HashMap<String, Arc<PeerService<B>>>>,
}

impl<B: AgentBackend> Default for Registry<B> {
    fn default() -> Self {
        Registry {
            peers: Mutex::new(HashMap::new()),
        }
    }
}

impl<B: AgentBackend> Registry<B> {
    /// Makes (or replaces) the service reachable as `addr`; `None` makes
    /// it unreachable (a stopped process).
    pub fn set(&self, addr: &str, peer: Option<Arc<PeerService<B>>>) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peer {
            Some(s) => p.insert(addr.to_string(), s),
            None => p.remove(addr),
        };
    }

    fn get(&self, addr: &str) -> Option<Arc<PeerService<B>>> {
        let p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        p.get(addr).cloned()
    }
}

/// Dials the in-memory services of a [`Registry`] from one node.
pub struct MemDialer<B: AgentBackend> {
    from: String,
    registry: Arc<Registry<B>>,
    wire: Arc<dyn Wire>,
    timeout: Duration,
}

impl<B: AgentBackend> MemDialer<B> {
    /// A dialer for node `from` into `registry` over `wire`, every call
    /// bounded by `timeout`.
    pub fn new(
        from: impl Into<String>,
        registry: Arc<Registry<B>>,
        wire: Arc<dyn Wire>,
        timeout: Duration,
    ) -> MemDialer<B> {
        MemDialer {
            from: from.into(),
            registry,
            wire,
            timeout,
        }
    }
}

#[tonic::async_trait]
impl<B: AgentBackend> Dialer for MemDialer<B> {
    async fn dial(&self, addr: &str) -> Result<Arc<dyn PeerLink>, AgentError> {
        let peer = self.registry.get(addr).ok_or_else(|| {
            AgentError::unavailable(format!("cannot reach peer at {addr}: connection refused"))
        })?;
        Ok(Arc::new(Shared(Arc::new(MemLink::new(
            self.from.clone(),
            addr,
            peer,
            self.wire.clone(),
            self.timeout,
        )))))
    }

    fn forget(&self, _addr: &str) {}
}

/// An agent over `local` that reaches a second agent over `peer` (by the
/// peer store's node id) through `wire`: the exchange and repair drivers run
/// against the peer's real service, in memory. Both agents serve every
/// range of their store and run store calls inline. For benchmarks, drills
/// and tests.
pub fn pair<B: AgentBackend>(
    local: Arc<mend_store::Store<B>>,
    peer: Arc<mend_store::Store<B>>,
    wire: Arc<dyn Wire>,
) -> Arc<crate::state::AgentState<B>> {
    pair_with(local, peer, wire, |_| {})
}

/// [`pair`] with both agents' configuration adjusted by `configure`.
pub fn pair_with<B: AgentBackend>(
    local: Arc<mend_store::Store<B>>,
    peer: Arc<mend_store::Store<B>>,
    wire: Arc<dyn Wire>,
    configure: impl Fn(&mut crate::config::AgentConfig),
) -> Arc<crate::state::AgentState<B>> {
    pair_both(local, peer, wire, configure).0
}

/// [`pair_with`], returning the peer's agent too (to reach its state: its
/// row adapters, its journal).
pub fn pair_both<B: AgentBackend>(
    local: Arc<mend_store::Store<B>>,
    peer: Arc<mend_store::Store<B>>,
    wire: Arc<dyn Wire>,
    configure: impl Fn(&mut crate::config::AgentConfig),
) -> (
    Arc<crate::state::AgentState<B>>,
    Arc<crate::state::AgentState<B>>,
) {
    let registry = Arc::new(Registry::default());
    let timeout = Duration::from_secs(600);
    let (local_id, peer_id) = (local.node_id().to_string(), peer.node_id().to_string());
    let agent = |store: Arc<mend_store::Store<B>>, other: &str, dialer: MemDialer<B>| {
        let mut config = crate::config::AgentConfig {
            node_id: store.node_id().to_string(),
            ranges: store.ranges().specs().to_vec(),
            peers: vec![crate::config::PeerConfig {
                id: other.to_string(),
                address: other.to_string(),
                interval_ms: 0,
                budget: None,
            }],
            insecure_plaintext: true,
            clock_skew_ms: store.config().clock_skew_ms,
            tombstone_grace_ms: store.config().tombstone_grace_ms,
            ..crate::config::AgentConfig::default()
        };
        // A wiped replica's diff lists every key.
        config.limits.diff_keys_max = 100_000_000;
        config.limits.diff_key_bytes_max = 1 << 34;
        configure(&mut config);
        let mut a = crate::state::AgentState::new_shared(store, config, Arc::new(dialer), None);
        a.inline_blocking = true;
        Arc::new(a)
    };
    let far = agent(
        peer,
        &local_id,
        MemDialer::new(peer_id.clone(), registry.clone(), wire.clone(), timeout),
    );
    registry.set(&peer_id, Some(Arc::new(PeerService::new(far.clone()))));
    let near = agent(
        local,
        &peer_id,
        MemDialer::new(local_id, registry, wire, timeout),
    );
    (near, far)
}
