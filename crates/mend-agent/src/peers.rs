//! Peers this agent knows besides those listed in its config: found in DNS
//! (`discovery`), each with the node id its handshake proved, its address
//! and the name its certificate was checked against. Persisted in the
//! store's `meta` ([`DISCOVERED_KEY`]) and never forgotten while the store
//! lives, so a peer missing from DNS for a while, or at a restart, still
//! holds back the tombstone purge (`gc`) as a listed one does.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use mend_store::{Backend, Cf, Op, Store};

/// Meta row of the discovered peers (JSON list of [`Found`]).
pub const DISCOVERED_KEY: &[u8] = b"agent/discovered-peers";

/// Most peers discovery keeps; further addresses in DNS are ignored with
/// a warning.
pub const DISCOVERED_MAX: usize = 1024;

/// A peer found in DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// The node id its handshake proved.
    pub id: String,
    /// Where it answered, `ip:port`.
    pub address: String,
    /// The name its certificate must carry (the SRV target, or the A/AAAA
    /// name).
    pub tls_name: String,
}

/// The discovered peers, shared by the agent's state and its dialer.
#[derive(Debug, Default)]
pub struct Discovered {
    found: RwLock<Vec<Found>>,
    /// TLS names of every address DNS gave, peer or not yet.
    names: RwLock<HashMap<String, String>>,
    /// A resolution finished since start: before it, the purge waits when
    /// discovery is on.
    pub resolved: AtomicBool,
}

impl Discovered {
    /// The peers persisted in `store` (none if the row is missing or
    /// unreadable, with a warning).
    pub fn load<B: Backend>(store: &Store<B>) -> Discovered {
        let found: Vec<Found> = match store.backend().get(Cf::Meta, DISCOVERED_KEY) {
            Ok(Some(raw)) => serde_json::from_slice(&raw).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "discovered peers row unreadable; starting afresh");
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "discovered peers row unreadable; starting afresh");
                Vec::new()
            }
        };
        let names = found
            .iter()
            .map(|f| (f.address.clone(), f.tls_name.clone()))
            .collect();
        Discovered {
            found: RwLock::new(found),
            names: RwLock::new(names),
            resolved: AtomicBool::new(false),
        }
    }

    /// Every discovered peer.
    pub fn found(&self) -> Vec<Found> {
        self.found.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The TLS name DNS gave for `addr` (`host:port`).
    pub fn tls_name(&self, addr: &str) -> Option<String> {
        let n = self.names.read().unwrap_or_else(|p| p.into_inner());
        n.get(addr).cloned()
    }

    /// Records the TLS name of an address DNS gave.
    pub fn name(&self, addr: &str, tls_name: &str) {
        let mut n = self.names.write().unwrap_or_else(|p| p.into_inner());
        if n.len() < 4 * DISCOVERED_MAX || n.contains_key(addr) {
            n.insert(addr.to_string(), tls_name.to_string());
        }
    }

    /// Adds or moves a peer (same id at a new address). Returns the whole
    /// list when it changed (to persist), and whether the id is new.
    pub fn add(&self, f: Found) -> Option<(Vec<Found>, bool)> {
        let mut all = self.found.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = all.iter().position(|x| x.id == f.id) {
            if all[i] == f {
                return None;
            }
            all[i] = f;
            return Some((all.clone(), false));
        }
        if all.len() >= DISCOVERED_MAX {
            tracing::warn!(peer = %f.id, "discovery.peers names more than DISCOVERED_MAX peers; ignored");
            return None;
        }
        all.push(f);
        Some((all.clone(), true))
    }

    /// The write persisting `all`.
    pub fn persist_op(all: &[Found]) -> Op {
        Op::Put(
            Cf::Meta,
            DISCOVERED_KEY.to_vec(),
            serde_json::to_vec(all).unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_store::MemBackend;

    #[test]
    fn peers_are_added_moved_and_persisted() {
        let s = Store::open(MemBackend::new(), mend_store::conformance::config("n", 1)).unwrap();
        let d = Discovered::load(&s);
        assert!(d.found().is_empty());
        let b = Found {
            id: "node-b".into(),
            address: "10.0.0.2:7400".into(),
            tls_name: "mend-1.mend".into(),
        };
        let (all, new) = d.add(b.clone()).unwrap();
        assert!(new);
        assert!(d.add(b.clone()).is_none(), "unchanged");
        let moved = Found {
            address: "10.0.0.9:7400".into(),
            ..b.clone()
        };
        let (all2, new) = d.add(moved.clone()).unwrap();
        assert!(!new, "same id at a new address");
        assert_eq!(all2, vec![moved.clone()]);
        assert_eq!(all.len(), 1);
        s.backend()
            .write(vec![Discovered::persist_op(&all2)], false)
            .unwrap();
        let again = Discovered::load(&s);
        assert_eq!(again.found(), vec![moved]);
        assert_eq!(
            again.tls_name("10.0.0.9:7400").as_deref(),
            Some("mend-1.mend")
        );
    }
}
