//! Shared agent state: the store, configuration, secret and counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tonic::Status;

use mend_core::{NodeId, Secret};
use mend_rocks::RocksBackend;
use mend_store::Store;

use crate::config::AgentConfig;
use crate::status::{from_join, from_store};

/// The store type agents run on.
pub type AgentStore = Store<RocksBackend>;

/// Counters exported on /metrics and /status.
#[derive(Debug, Default)]
pub struct Counters {
    /// Writes applied through the Replica service.
    pub writes_total: AtomicU64,
    /// Exchanges initiated.
    pub exchanges_total: AtomicU64,
    /// Divergent keys found by the last exchange.
    pub last_divergent_keys: AtomicU64,
    /// Keys repaired (both directions).
    pub repaired_keys_total: AtomicU64,
    /// Bytes streamed by repairs.
    pub repaired_bytes_total: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Everything the services share.
pub struct AgentState {
    /// The store.
    pub store: Arc<AgentStore>,
    /// The configuration.
    pub config: AgentConfig,
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster secret.
    pub secret: Secret,
    /// Counters.
    pub counters: Counters,
    /// Start time.
    pub started: Instant,
}

impl AgentState {
    /// Runs a blocking store call on the blocking pool, mapping errors to a
    /// gRPC status.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&AgentStore) -> Result<T, mend_store::StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(from_join)?
            .map_err(from_store)
    }

    /// The address of a peer given its configured id or an address.
    pub fn resolve_peer(&self, peer: &str) -> String {
        let addr = self
            .config
            .peers
            .iter()
            .find(|p| p.id == peer)
            .map(|p| p.address.clone())
            .unwrap_or_else(|| peer.to_string());
        if addr.starts_with("http://") || addr.starts_with("https://") {
            addr
        } else {
            format!("http://{addr}")
        }
    }
}
