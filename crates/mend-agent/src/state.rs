//! Shared agent state: the store, configuration, secret, metrics and drift monitor.

use std::sync::Arc;
use std::time::Instant;

use mend_core::{NodeId, Secret};
use mend_rocks::RocksBackend;
use mend_store::Store;

pub use crate::backend::AgentBackend;
use crate::config::AgentConfig;
use crate::error::AgentError;

/// The store type agents run on: RocksDB in production, any
/// [`AgentBackend`] in tests and the simulator.
pub type AgentStore<B = RocksBackend> = Store<B>;

/// Everything the services share.
pub struct AgentState<B: AgentBackend = RocksBackend> {
    /// The store.
    pub store: Arc<AgentStore<B>>,
    /// The configuration.
    pub config: AgentConfig,
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster secret.
    pub secret: Secret,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Drift history and budgets.
    pub monitor: crate::monitor::Monitor,
    /// Start time.
    pub started: Instant,
    /// The TLS set in use (hot-reloaded); `None` when running plaintext.
    pub tls: Option<Arc<mend_tls::TlsSource>>,
    /// Handshake challenges this agent issued and not yet seen answered.
    pub challenges: crate::auth::Challenges,
    /// Slots of streamed replies (Leaves, Fetch) in production at once:
    /// `limits.server_streams_max`.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// How this agent reaches its peers: gRPC in production, in-memory
    /// links in the benchmarks and the simulator.
    pub dialer: Arc<dyn crate::link::Dialer>,
    /// Run blocking store calls on the calling task instead of tokio's
    /// blocking pool: only for the single-threaded deterministic simulator,
    /// where there are no other tasks to starve and threads would make
    /// runs irreproducible.
    pub inline_blocking: bool,
    /// Random, fixed for the life of this store (persisted in its meta
    /// column family, [`INCARNATION_KEY`]): a replica that loses its disk
    /// and rejoins under the same node id has a new one, so its peers
    /// stop trusting what they recorded about its old disk (`gc`).
    pub incarnation: u64,
    /// Serialises the purge records' read-modify-write (`gc`).
    pub sync_records: tokio::sync::Mutex<()>,
    /// Repair runs in flight and recently finished, for the dashboard.
    pub runs: crate::runs::RunBoard,
    /// The repair runs in flight, for pause, resume and cancel.
    pub controls: crate::runs::Controls,
    /// Exchange slots (`schedule.exchanges_max`), as initiator or responder.
    pub slots: crate::slots::Slots,
    /// The dashboard's last cluster view and when it was taken.
    pub cluster_view: tokio::sync::Mutex<Option<(Instant, Vec<crate::cluster::ClusterPeer>)>>,
    /// The gRPC address the agent is bound to, once it is (for the
    /// commands the dashboard shows).
    pub grpc_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// The HTTP address the agent is bound to, once it is (for the URL of
    /// a dashboard session).
    pub http_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Operator sessions of the dashboard page (key drawn at start).
    pub sessions: crate::session::Sessions,
    /// What operators did from the dashboard page, newest last.
    pub actions: crate::action_log::ActionLog,
    /// The adapters that serve repairs of digest-only ranges (`rows`).
    pub rows: crate::rows::RowAdapters,
    /// Peers found in DNS (`[discovery]`), shared with the dialer.
    pub discovered: Arc<crate::peers::Discovered>,
    /// Set when the agent stops: a deepening in progress gives up at its
    /// next step (`deepen`).
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Held while a deepening runs; stopping waits for it, so the store is
    /// closed when `stop` returns.
    pub deepening: tokio::sync::Mutex<()>,
}

/// Meta row of this store's incarnation (u64 big-endian, never 0).
pub const INCARNATION_KEY: &[u8] = b"agent/incarnation";

/// This store's incarnation, created (and persisted) on its first open by
/// an agent. A row that cannot be read or written leaves a fresh one for
/// this run only: peers then treat each restart as a new disk, which only
/// delays purges.
fn load_incarnation<B: AgentBackend>(store: &AgentStore<B>) -> u64 {
    use mend_store::{Cf, Op};
    match store.backend().get(Cf::Meta, INCARNATION_KEY) {
        Ok(Some(raw)) => {
            if let Ok(b) = <[u8; 8]>::try_from(raw.as_slice())
                && u64::from_be_bytes(b) != 0
            {
                return u64::from_be_bytes(b);
            }
            tracing::warn!("incarnation row malformed; writing a new one");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "incarnation row unreadable; writing a new one"),
    }
    let fresh = rand::random::<u64>().max(1);
    let op = Op::Put(
        Cf::Meta,
        INCARNATION_KEY.to_vec(),
        fresh.to_be_bytes().to_vec(),
    );
    if let Err(e) = store.backend().write(vec![op], true) {
        tracing::warn!(error = %e, "incarnation not persisted; peers will see a new one on restart");
    }
    fresh
}

impl<B: AgentBackend> AgentState<B> {
    /// The state of an agent over `store` with `config`, reaching its peers
    /// through `dialer`; `tls` is the agent's certificate source (`None`:
    /// plaintext or in memory).
    pub fn new(
        store: Store<B>,
        config: AgentConfig,
        dialer: Arc<dyn crate::link::Dialer>,
        tls: Option<Arc<mend_tls::TlsSource>>,
    ) -> AgentState<B> {
        AgentState::new_shared(Arc::new(store), config, dialer, tls)
    }

    /// [`AgentState::new`] over a store shared with its caller.
    pub fn new_shared(
        store: Arc<Store<B>>,
        config: AgentConfig,
        dialer: Arc<dyn crate::link::Dialer>,
        tls: Option<Arc<mend_tls::TlsSource>>,
    ) -> AgentState<B> {
        let monitor = crate::monitor::Monitor::load(&store, config.history_max).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "persisted drift history unreadable; starting it afresh");
            crate::monitor::Monitor::default()
        });
        let incarnation = load_incarnation(&store);
        let discovered = Arc::new(crate::peers::Discovered::load(&store));
        AgentState {
            discovered,
            stopping: Arc::default(),
            deepening: tokio::sync::Mutex::new(()),
            incarnation,
            sync_records: tokio::sync::Mutex::new(()),
            runs: crate::runs::RunBoard::default(),
            controls: crate::runs::Controls::default(),
            slots: crate::slots::Slots::new(config.schedule.exchanges_max),
            cluster_view: tokio::sync::Mutex::new(None),
            grpc_addr: std::sync::OnceLock::new(),
            http_addr: std::sync::OnceLock::new(),
            sessions: Default::default(),
            actions: Default::default(),
            rows: Default::default(),
            node_id: store.node_id().clone(),
            secret: store.secret().clone(),
            store,
            metrics: Arc::new(crate::metrics::Metrics::default()),
            monitor,
            started: Instant::now(),
            tls,
            challenges: crate::auth::Challenges::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(
                config.limits.server_streams_max,
            )),
            config,
            dialer,
            inline_blocking: false,
        }
    }

    /// Runs a blocking store call on the blocking pool, mapping errors to a
    /// gRPC status.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnOnce(&AgentStore<B>) -> Result<T, mend_store::StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        self.run(move || f(&store).map_err(AgentError::from)).await
    }

    /// Runs blocking work `f` on the blocking pool (inline when
    /// `inline_blocking`).
    pub async fn run<T, F>(&self, f: F) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, AgentError> + Send + 'static,
    {
        if self.inline_blocking {
            return f();
        }
        tokio::task::spawn_blocking(f)
            .await
            .map_err(AgentError::from)?
    }

    /// Refuses (by policy `future_writes`) replicated or pushed writes whose
    /// version is stamped more than `clock_skew_ms` ahead of this agent's
    /// clock: stored, such a version would win every later comparison, and
    /// it could only come from a clock outside the allowed skew. The whole
    /// request is refused; nothing is written.
    pub fn check_future(&self, writes: &[mend_store::Write]) -> Result<(), AgentError> {
        self.check_future_versions(
            writes
                .iter()
                .filter_map(|w| w.version.as_ref().map(|v| (w.key.as_slice(), v))),
        )
    }

    /// [`AgentState::check_future`] over (key, version) pairs (ingested
    /// entries carry their source's versions).
    pub fn check_future_versions<'a>(
        &self,
        mut versions: impl Iterator<Item = (&'a [u8], &'a mend_core::Version)>,
    ) -> Result<(), AgentError> {
        if self.config.future_writes == crate::config::FutureWrites::Accept {
            return Ok(());
        }
        let max = self.config.clock_skew_ms;
        let limit = self.store.now_ms().saturating_add(max);
        let Some((key, v)) = versions.find(|(_, v)| v.ms > limit) else {
            return Ok(());
        };
        self.metrics.future_writes_refused.inc();
        Err(AgentError::invalid(format!(
            "version {}.{}@{} of key {:?} is stamped {} ms ahead of this agent's clock \
             (allowed skew clock_skew_ms = {max} ms): fix the origin's clock; nothing written",
            v.ms,
            v.logical,
            v.origin,
            String::from_utf8_lossy(key),
            v.ms.saturating_sub(self.store.now_ms()),
        )))
    }

    /// The address (`host:port`) of a peer named in a request: a
    /// configured peer's id or address, or an address allowed by
    /// `roles.peer_addresses`. Anything else is `PERMISSION_DENIED`: the
    /// agent never dials an address just because a request names it.
    pub fn resolve_peer(&self, peer: &str) -> Result<String, AgentError> {
        if let Some(p) = self.peer(peer) {
            return Ok(mend_tls::client::host_port(&p.address).to_string());
        }
        let hp = mend_tls::client::host_port(peer);
        let configured = self
            .peers()
            .iter()
            .any(|p| mend_tls::client::host_port(&p.address) == hp);
        let allowed = self
            .config
            .roles
            .peer_addresses
            .iter()
            .any(|pat| mend_tls::Pattern::new(pat.as_str()).matches(hp));
        if configured || allowed {
            return Ok(hp.to_string());
        }
        self.metrics.auth_denied("Operator", "peer_not_allowed");
        Err(AgentError::denied(format!(
            "peer {peer:?} is neither a configured peer nor allowed by roles.peer_addresses"
        )))
    }

    /// Every peer: those listed in the config, then those found in DNS
    /// (scheduled every `discovery.interval_ms`, no budget), a listed id
    /// taking precedence.
    pub fn peers(&self) -> Vec<crate::config::PeerConfig> {
        let mut all = self.config.peers.clone();
        for f in self.discovered.found() {
            if f.id != self.node_id.as_str() && !all.iter().any(|p| p.id == f.id) {
                all.push(crate::config::PeerConfig {
                    id: f.id,
                    address: f.address,
                    interval_ms: self.config.discovery.interval_ms,
                    budget: None,
                });
            }
        }
        all
    }

    /// The peer with node id `id`, listed or discovered.
    pub fn peer(&self, id: &str) -> Option<crate::config::PeerConfig> {
        if let Some(p) = self.config.peer(id) {
            return Some(p.clone());
        }
        self.peers().into_iter().find(|p| p.id == id)
    }

    /// Discovery is on and has not finished a resolution since start: the
    /// set of peers may be incomplete, so the purge waits.
    pub fn discovery_pending(&self) -> bool {
        !self.config.discovery.peers.is_empty()
            && !self
                .discovered
                .resolved
                .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The TLS name a peer at `addr` must present: the configured peer's
    /// id; for an address allowed by pattern, the address's host.
    pub fn server_name(&self, addr: &str) -> Option<String> {
        let hp = mend_tls::client::host_port(addr);
        self.config
            .peers
            .iter()
            .find(|p| mend_tls::client::host_port(&p.address) == hp)
            .map(|p| p.id.clone())
    }
}
