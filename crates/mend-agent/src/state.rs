//! Shared agent state: the store, configuration, secret, metrics and drift monitor.

use std::sync::Arc;
use std::time::Instant;

use tonic::Status;

use mend_core::{NodeId, Secret};
use mend_rocks::RocksBackend;
use mend_store::Store;

use crate::config::AgentConfig;
use crate::status::{from_join, from_store};

/// The store type agents run on.
pub type AgentStore = Store<RocksBackend>;

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
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Drift history and budgets.
    pub monitor: crate::monitor::Monitor,
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
