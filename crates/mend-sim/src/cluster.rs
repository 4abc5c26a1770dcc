//! The simulated cluster: three in-process replicas (`node-a`, `node-b`,
//! `node-c`), each a [`Store`] over a [`MemBackend`], sharing one simulated
//! wall clock that the drill moves forward event by event.
//!
//! Every write is made the way a real cluster makes it: the origin node's
//! store stamps it with its own hybrid logical clock (the simulated time plus
//! that node's skew), and replication then delivers the stamped entry, with
//! its explicit version, to the nodes the scenario says it reaches. Faults
//! are therefore only ever *missing deliveries*, *altered deliveries*, a
//! skewed clock or a wiped store: the stores' own apply rule and trees do
//! the rest, exactly as in production.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mend_core::{Decision, NodeId, RangeSpec, Secret, TreeShape, Version};
use mend_store::{MemBackend, Store, StoreConfig, Write};

use crate::SimError;

/// The replicas' names, by index.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Index of `node-a`, the local side (the exchange's initiator).
pub const A: usize = 0;
/// Index of `node-b`, the peer side.
pub const B: usize = 1;
/// Index of `node-c`, the third replica (not part of the exchange).
pub const C: usize = 2;

/// The one range every replica serves.
const RANGE: &str = "sim";

/// Three replicas and the simulated clock.
pub(crate) struct Cluster {
    ids: [NodeId; 3],
    secret: Secret,
    /// The simulated wall clock, ms since the Unix epoch.
    time_ms: Arc<AtomicU64>,
    /// How far each node's clock runs ahead of the simulated one, in ms.
    skew_ms: [Arc<AtomicU64>; 3],
    stores: Vec<Arc<Store<MemBackend>>>,
    /// The model: the latest version written of every key, anywhere.
    latest: BTreeMap<Vec<u8>, Version>,
}

impl Cluster {
    /// Three empty replicas whose digests are keyed by a secret derived
    /// from `seed`, with the clock at `start_ms`.
    pub(crate) fn new(seed: u64, start_ms: u64) -> Result<Cluster, SimError> {
        let ids = [
            NodeId::new(NODES[A])?,
            NodeId::new(NODES[B])?,
            NodeId::new(NODES[C])?,
        ];
        let mut c = Cluster {
            ids,
            secret: Secret::from_bytes(format!("mend-sim seed {seed}").as_bytes()),
            time_ms: Arc::new(AtomicU64::new(start_ms)),
            skew_ms: Default::default(),
            stores: Vec::with_capacity(NODES.len()),
            latest: BTreeMap::new(),
        };
        for node in 0..NODES.len() {
            let store = c.open(node)?;
            c.stores.push(Arc::new(store));
        }
        Ok(c)
    }

    /// A fresh, empty store for `node`, reading the simulated clock.
    fn open(&self, node: usize) -> Result<Store<MemBackend>, SimError> {
        let range = RangeSpec::whole(RANGE, TreeShape::default());
        let mut cfg = StoreConfig::new(
            self.ids[node].clone(),
            self.secret.clone(),
            Some(vec![range]),
        );
        let (time, skew) = (self.time_ms.clone(), self.skew_ms[node].clone());
        cfg.clock = Arc::new(move || time.load(Ordering::Relaxed) + skew.load(Ordering::Relaxed));
        Ok(Store::open(MemBackend::new(), cfg)?)
    }

    /// Moves the simulated clock to `ms`.
    pub(crate) fn set_time(&self, ms: u64) {
        self.time_ms.store(ms, Ordering::Relaxed);
    }

    /// Makes `node`'s clock run `ms` ahead of the simulated one.
    pub(crate) fn set_skew(&self, node: usize, ms: u64) {
        self.skew_ms[node].store(ms, Ordering::Relaxed);
    }

    /// Replaces `node`'s store with an empty one (a wiped disk); its clock
    /// and sequence counter start over, as a freshly provisioned node's would.
    pub(crate) fn wipe(&mut self, node: usize) -> Result<(), SimError> {
        self.stores[node] = Arc::new(self.open(node)?);
        Ok(())
    }

    /// `origin` writes `key` (a put of `value`, or a delete when `None`),
    /// stamped by its own clock; replication delivers the same entry to each
    /// node of `to`, and `altered` delivers the same *version* with another
    /// value to one node. Returns the stamped version.
    pub(crate) fn write(
        &mut self,
        origin: usize,
        key: &[u8],
        value: Option<Vec<u8>>,
        to: &[usize],
        altered: Option<(usize, Vec<u8>)>,
    ) -> Result<Version, SimError> {
        let w = match value.clone() {
            Some(v) => Write::put(key, v),
            None => Write::delete(key),
        };
        let version = self.apply(origin, w)?;
        for &node in to.iter().filter(|n| **n != origin) {
            let w = Write {
                key: key.to_vec(),
                value: value.clone(),
                version: Some(version.clone()),
            };
            self.apply(node, w)?;
        }
        if let Some((node, v)) = altered {
            self.apply(node, Write::put(key, v).at(version.clone()))?;
        }
        self.latest.insert(key.to_vec(), version.clone());
        Ok(version)
    }

    /// Applies one write on `node`; the simulator only ever sends writes that
    /// are newer than what the node holds, so anything but `Apply` is a bug
    /// in a scenario.
    fn apply(&self, node: usize, w: Write) -> Result<Version, SimError> {
        let key = String::from_utf8_lossy(&w.key).into_owned();
        let applied = self.stores[node].write(vec![w])?;
        match applied.into_iter().next() {
            Some(a) if a.decision == Decision::Apply => Ok(a.version),
            other => Err(SimError::Invariant(format!(
                "write of {key:?} on {}: {:?} instead of Apply",
                NODES[node],
                other.map(|a| a.decision)
            ))),
        }
    }

    /// The latest version written of every key, anywhere.
    pub(crate) fn latest(&self) -> &BTreeMap<Vec<u8>, Version> {
        &self.latest
    }

    /// `node`'s range as a tree view for the exchange.
    /// Node `node`'s store, shared (for an agent over it).
    pub(crate) fn store(&self, node: usize) -> Arc<Store<MemBackend>> {
        self.stores[node].clone()
    }
}
