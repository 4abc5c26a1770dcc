//! Starting and stopping an agent: open the store, bind the gRPC (and
//! optional HTTP) listeners, serve until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::Status;

use mend_core::{NodeId, Secret};
use mend_rocks::RocksBackend;
use mend_rpc::pb::operator_server::OperatorServer;
use mend_rpc::pb::peer_server::PeerServer;
use mend_rpc::pb::replica_server::ReplicaServer;
use mend_rpc::{FILE_DESCRIPTOR_SET, MESSAGE_BYTES_MAX, pb};
use mend_store::{Store, StoreConfig};

use crate::config::AgentConfig;
use crate::service::operator::OperatorService;
use crate::service::peer::PeerService;
use crate::service::replica::ReplicaService;
use crate::state::AgentState;

/// Errors starting an agent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("data directory {path}: {source}")]
    Store {
        /// The directory.
        path: String,
        /// Why.
        source: mend_store::StoreError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Something else (reflection setup).
    #[error("{0}")]
    Other(String),
}

/// A running agent.
pub struct RunningAgent {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound HTTP address, if any.
    pub http_addr: Option<SocketAddr>,
    /// Shared state (tests and the demo read the store through it).
    pub state: Arc<AgentState>,
    shutdown: Option<oneshot::Sender<()>>,
    stop_schedules: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningAgent {
    /// Stops serving and waits until the server has shut down and released
    /// the store.
    pub async fn stop(mut self) -> Result<(), String> {
        let _ = self.stop_schedules.send(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // Flush memtables so the next start does not replay the whole WAL.
        let store = self.state.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.backend().flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "flush on shutdown failed; the next start replays the WAL");
        }
        served
    }

    /// Waits until the server ends on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> Result<(), String> {
        match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        let _ = self.stop_schedules.send(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Opens the store and starts serving.
pub async fn start(config: AgentConfig, secret: Secret) -> Result<RunningAgent, StartError> {
    config.validate()?;
    let node_id =
        NodeId::new(config.node_id.clone()).map_err(|e| StartError::Other(e.to_string()))?;
    let dir = config.data_dir.clone();
    let mut sc = StoreConfig::new(node_id.clone(), secret.clone(), Some(config.ranges.clone()));
    sc.tombstone_grace_ms = config.tombstone_grace_ms;
    sc.sync_writes = config.sync_writes;
    let store = tokio::task::spawn_blocking(move || {
        let b = RocksBackend::open_or_create(&dir)?;
        Store::open(b, sc)
    })
    .await
    .map_err(|e| StartError::Other(e.to_string()))?
    .map_err(|source| StartError::Store {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let state = Arc::new(AgentState {
        store: Arc::new(store),
        node_id,
        secret,
        metrics: crate::metrics::Metrics::default(),
        monitor: crate::monitor::Monitor::default(),
        started: Instant::now(),
        config: config.clone(),
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let http_addr = match config.http {
        Some(h) => Some(
            crate::http::serve(h, state.clone())
                .await
                .map_err(|source| StartError::Bind { addr: h, source })?,
        ),
        None => None,
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ReplicaServer<ReplicaService>>()
        .await;
    health_reporter
        .set_serving::<PeerServer<PeerService>>()
        .await;
    health_reporter
        .set_serving::<OperatorServer<OperatorService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let (tx, rx) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            ReplicaServer::new(ReplicaService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(
            PeerServer::new(PeerService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(
            OperatorServer::new(OperatorService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        );
    // Nagle off: the exchange is a chain of small request/response messages,
    // and delayed ACKs would add ~40 ms to each round trip.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(server.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    tracing::info!(node = %state.node_id, %addr, "agent serving");
    let (stop_schedules, schedules) = watch::channel(false);
    crate::schedule::spawn(state.clone(), schedules);
    Ok(RunningAgent {
        addr,
        http_addr,
        state,
        shutdown: Some(tx),
        stop_schedules,
        task,
    })
}

/// The status message.
pub async fn status(state: &Arc<AgentState>) -> Result<pb::StatusResponse, Status> {
    let mut ranges = Vec::new();
    for (id, spec) in state.store.ranges().specs().iter().enumerate() {
        let root = state
            .store
            .root(id as u16)
            .map_err(crate::status::from_store)?;
        ranges.push(pb::RangeStatus {
            name: spec.name.clone(),
            fanout: spec.shape.fanout,
            depth: spec.shape.depth,
            root: mend_core::exchange::node_hash(&root),
            entries: root.count,
        });
    }
    let repairs = state.blocking(crate::journal::list).await?;
    Ok(pb::StatusResponse {
        node_id: state.node_id.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        ranges,
        peers: state
            .config
            .peers
            .iter()
            .map(|p| pb::PeerInfo {
                id: p.id.clone(),
                address: p.address.clone(),
            })
            .collect(),
        repairs: repairs
            .into_iter()
            .filter(|h| h.initiator)
            .map(|h| h.id)
            .collect(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        budgets: state
            .monitor
            .view(None)
            .into_iter()
            .filter_map(|v| {
                let b = state.config.peers.iter().find(|p| p.id == v.peer)?.budget?;
                let last = v.records.last();
                Some(pb::BudgetStatus {
                    peer: v.peer.clone(),
                    range: v.range.clone(),
                    exceeded: v.budget_exceeded,
                    since_ms: v.budget_since_ms,
                    divergent_keys: last.map(|r| r.divergent_keys).unwrap_or(0),
                    oldest_divergence_ms: last.map(|r| r.oldest_divergence_ms).unwrap_or(0),
                    divergent_keys_max: b.divergent_keys_max,
                    oldest_divergence_ms_max: b.oldest_divergence_ms_max,
                })
            })
            .collect(),
    })
}
