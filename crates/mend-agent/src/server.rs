//! Starting and stopping an agent: open the store, bind the gRPC (and
//! optional HTTP) listeners, serve until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

use mend_core::{NodeId, Secret};
use mend_rocks::RocksBackend;
use mend_rpc::pb::ingest_server::IngestServer;
use mend_rpc::pb::operator_server::OperatorServer;
use mend_rpc::pb::peer_server::PeerServer;
use mend_rpc::pb::replica_server::ReplicaServer;
use mend_rpc::{FILE_DESCRIPTOR_SET, MESSAGE_BYTES_MAX};
use mend_store::{Store, StoreConfig};

use crate::auth::{Guard, Role, RolePatterns};
use crate::config::AgentConfig;
use crate::service::ingest::IngestService;
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
    /// The TLS files are missing or invalid.
    #[error("TLS: {0}")]
    Tls(#[from] mend_tls::TlsError),
    /// A setting that is only safe on loopback was used elsewhere.
    #[error("{0}")]
    Insecure(String),
    /// The node id in the configuration is not a valid node id.
    #[error("node id: {0}")]
    NodeId(String),
    /// A start-up task on the blocking pool failed (a panic opening the
    /// store or loading TLS files): a bug.
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The reflection service could not be built from the embedded
    /// descriptors: a bug.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Why a running agent did not shut down cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The gRPC server failed while serving.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
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
    pub async fn stop(mut self) -> Result<(), StopError> {
        self.signal_stop();
        let served = match (&mut self.task).await {
            Ok(r) => r.map_err(StopError::from),
            Err(e) => Err(StopError::from(e)),
        };
        // A deepening in progress gives up at its next step; wait for it.
        drop(self.state.deepening.lock().await);
        // Flush memtables so the next start does not replay the whole WAL.
        let store = self.state.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.backend().flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "flush on shutdown failed; the next start replays the WAL");
        }
        served
    }

    /// Waits until the server ends on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> Result<(), StopError> {
        Ok((&mut self.task).await??)
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        self.state
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.stop_schedules.send(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Opens the store and starts serving.
pub async fn start(config: AgentConfig, secret: Secret) -> Result<RunningAgent, StartError> {
    config.validate()?;
    // The HTTPS webhook client builds its config from the default provider.
    mend_tls::install_default_provider();
    refuse_development_secret(&config, &secret)?;
    let tls = load_tls(&config).await?;
    let store = open_store(&config, &secret).await?;
    let state = agent_state(store, &config, &tls);
    let metrics = state.metrics.clone();
    let (listener, addr) = bind(config.listen).await?;
    let _ = state.grpc_addr.set(addr);
    let http_addr = serve_http(&config, &state).await?;
    let (stop_schedules, schedules) = watch::channel(false);
    let mode = accept_mode(&config, &tls, &metrics, &schedules, addr);
    let incoming = accept(listener, mode, &config, &metrics);
    let router = routes(&state, tls.is_some(), schedules.clone()).await?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = serve(router, incoming, &config, rx);
    tracing::info!(node = %state.node_id, %addr, tls = tls.is_some(), "agent serving");
    spawn_background(&state, schedules);
    Ok(RunningAgent {
        addr,
        http_addr,
        state,
        shutdown: Some(tx),
        stop_schedules,
        task,
    })
}

/// Refuses the development secret anywhere but on loopback.
fn refuse_development_secret(config: &AgentConfig, secret: &Secret) -> Result<(), StartError> {
    if secret.fingerprint() == Secret::development().fingerprint()
        && !config.listen.ip().is_loopback()
    {
        return Err(StartError::Insecure(format!(
            "the development secret is refused on {} (not loopback): give --secret-file or MEND_CLUSTER_SECRET",
            config.listen
        )));
    }
    Ok(())
}

/// Loads the TLS files on the blocking pool (none under
/// `insecure_plaintext` or without TLS paths).
async fn load_tls(config: &AgentConfig) -> Result<Option<Arc<mend_tls::TlsSource>>, StartError> {
    let tls = match config.tls.paths() {
        Some(paths) if !config.insecure_plaintext => {
            let src =
                tokio::task::spawn_blocking(move || mend_tls::TlsSource::load(paths)).await??;
            Some(src)
        }
        _ => None,
    };
    Ok(tls)
}

/// Opens (or creates) the RocksDB store of `data_dir` on the blocking pool.
async fn open_store(
    config: &AgentConfig,
    secret: &Secret,
) -> Result<Store<RocksBackend>, StartError> {
    let node_id =
        NodeId::new(config.node_id.clone()).map_err(|e| StartError::NodeId(e.to_string()))?;
    let dir = config.data_dir.clone();
    let mut sc = StoreConfig::new(node_id.clone(), secret.clone(), Some(config.ranges.clone()));
    sc.tombstone_grace_ms = config.tombstone_grace_ms;
    sc.sync_writes = config.sync_writes;
    sc.clock_skew_ms = config.clock_skew_ms;
    let store = tokio::task::spawn_blocking(move || {
        let b = RocksBackend::open_or_create(&dir)?;
        Store::open(b, sc)
    })
    .await?
    .map_err(|source| StartError::Store {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    Ok(store)
}

/// The agent's shared state over `store`, with the gRPC dialer to its
/// peers (configured and discovered).
fn agent_state(
    store: Store<RocksBackend>,
    config: &AgentConfig,
    tls: &Option<Arc<mend_tls::TlsSource>>,
) -> Arc<AgentState> {
    let discovered = Arc::new(crate::peers::Discovered::load(&store));
    let dialer = Arc::new(crate::link::grpc::GrpcDialer::new(
        tls.clone(),
        &config.peers,
        std::time::Duration::from_millis(config.limits.rpc_timeout_ms),
        Some(discovered.clone()),
    ));
    let mut state = AgentState::new(store, config.clone(), dialer.clone(), tls.clone());
    state.discovered = discovered;
    Arc::new(state)
}

/// Binds the gRPC listener; returns it with the address it got.
async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    Ok((listener, addr))
}

/// Serves the HTTP port, if one is configured; returns its bound address.
async fn serve_http(
    config: &AgentConfig,
    state: &Arc<AgentState>,
) -> Result<Option<SocketAddr>, StartError> {
    let http_addr = match config.http {
        Some(h) => Some(
            crate::http::serve(h, state.clone())
                .await
                .map_err(|source| StartError::Bind { addr: h, source })?,
        ),
        None => None,
    };
    if let Some(h) = http_addr {
        let _ = state.http_addr.set(h);
    }
    Ok(http_addr)
}

/// How connections are accepted: TLS (its files polled for hot reload
/// until `schedules` says stop, each reload counted) or plaintext.
fn accept_mode(
    config: &AgentConfig,
    tls: &Option<Arc<mend_tls::TlsSource>>,
    metrics: &Arc<crate::metrics::Metrics>,
    schedules: &watch::Receiver<bool>,
    addr: SocketAddr,
) -> mend_tls::accept::Mode {
    match tls {
        Some(src) => {
            let m = metrics.clone();
            m.tls_cert_expiry_timestamp_seconds
                .set(src.current().material.not_after_unix as i64);
            let src2 = src.clone();
            src.spawn_poll(
                Duration::from_millis(config.tls.reload_poll_ms),
                schedules.clone(),
                move |o| match o {
                    mend_tls::reload::ReloadOutcome::Reloaded => {
                        m.tls_reloads.inc();
                        m.tls_cert_expiry_timestamp_seconds
                            .set(src2.current().material.not_after_unix as i64);
                    }
                    mend_tls::reload::ReloadOutcome::Rejected(_) => {
                        m.tls_reload_failures.inc();
                    }
                    mend_tls::reload::ReloadOutcome::Unchanged => {}
                },
            );
            mend_tls::accept::Mode::Tls(src.clone())
        }
        None => {
            tracing::warn!(%addr, "serving PLAINTEXT (--insecure-plaintext): no encryption, no caller identity, every role granted");
            mend_tls::accept::Mode::Plaintext
        }
    }
}

/// The accepted connections of `listener`, within the connection and
/// handshake limits; each refusal counted by reason.
fn accept(
    listener: TcpListener,
    mode: mend_tls::accept::Mode,
    config: &AgentConfig,
    metrics: &Arc<crate::metrics::Metrics>,
) -> mend_tls::accept::Incoming {
    let limits = &config.limits;
    let m = metrics.clone();
    mend_tls::accept::incoming(
        listener,
        mode,
        mend_tls::accept::AcceptLimits {
            connections_max: limits.connections_max,
            handshake_timeout: Duration::from_millis(limits.tls_handshake_timeout_ms),
        },
        move |r| {
            m.connections_refused
                .get_or_create(&crate::metrics::Reason {
                    reason: r.as_str().into(),
                })
                .inc();
        },
    )
}

/// Serves `router` on `incoming` until `rx` fires, on its own task.
fn serve(
    router: tonic::service::Routes,
    incoming: mend_tls::accept::Incoming,
    config: &AgentConfig,
    rx: oneshot::Receiver<()>,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let limits = &config.limits;
    let keepalive = Duration::from_millis(limits.http2_keepalive_ms);
    let server = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(limits.request_timeout_ms))
        .max_concurrent_streams(limits.streams_per_connection_max)
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive))
        .tcp_nodelay(true)
        .add_routes(router);
    tokio::spawn(server.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }))
}

/// Starts the background work (purge, scrub, discovery, schedules, until
/// `schedules` says stop) and resumes repairs a restart interrupted.
fn spawn_background(state: &Arc<AgentState>, schedules: watch::Receiver<bool>) {
    crate::gc::spawn(state.clone(), schedules.clone());
    crate::scrub::spawn(state.clone(), schedules.clone());
    crate::deepen::spawn(state.clone(), schedules.clone());
    crate::discovery::spawn(state.clone(), schedules.clone());
    crate::schedule::spawn(state.clone(), schedules);
    crate::repair::control::resume_interrupted(state);
}

/// The services, each behind the guard of its role; health and reflection
/// open to any caller the TLS layer let in.
async fn routes(
    state: &Arc<AgentState>,
    tls: bool,
    stop: watch::Receiver<bool>,
) -> Result<tonic::service::Routes, StartError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // The first report before serving, then one per change of state.
    crate::health::report(&health_reporter, crate::health::check(state).await).await;
    crate::health::spawn(state.clone(), health_reporter, stop);
    // Reflection in both versions: grpcurl speaks v1, while grpcui, Postman,
    // older grpcurl and Python's grpcio-reflection speak only v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let patterns = Arc::new(RolePatterns::new(&state.config));
    let guard = |r: Role| Guard::new(r, patterns.clone(), tls, state.metrics.clone());
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(
            ReplicaServer::new(ReplicaService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            guard(Role::Replica),
        ))
        .add_service(InterceptedService::new(
            IngestServer::new(IngestService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            guard(Role::Ingest),
        ))
        .add_service(InterceptedService::new(
            PeerServer::new(PeerService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            guard(Role::Peer),
        ))
        .add_service(InterceptedService::new(
            OperatorServer::new(OperatorService::new(state.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            guard(Role::Operator),
        ));
    Ok(routes.routes())
}
