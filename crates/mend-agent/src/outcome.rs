//! What a diff found: the outcome of one exchange against one peer (the
//! classified divergent keys, tree mismatches and wire cost), and the
//! classification of a divergent key. Plain data, below every module that
//! runs, records or reports an exchange.

use std::time::Duration;

use serde::Serialize;

use mend_core::EntryMeta;
use mend_core::classify::{Category, Classified, Side, classify, classify_versionless};
use mend_core::exchange::{Divergence, EntrySummary};

/// Wire cost counters.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cost {
    /// Sequential request/response round trips.
    pub rounds: u32,
    /// Request payload bytes (protobuf plus 5-byte gRPC frame per message).
    pub bytes_sent: u64,
    /// Response payload bytes, likewise.
    pub bytes_received: u64,
    /// Node hashes compared.
    pub nodes_compared: u64,
    /// Buckets whose entries were compared.
    pub leaves_compared: u64,
}

impl Cost {
    /// Adds the bytes and comparisons of `other`, which ran alongside this
    /// exchange's other work: its rounds overlap theirs, so the caller
    /// adds the most rounds of any of them, not each one's.
    pub fn add_parallel(&mut self, other: &Cost) {
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.nodes_compared += other.nodes_compared;
        self.leaves_compared += other.leaves_compared;
    }
}

/// One classified divergent key.
#[derive(Debug, Clone)]
pub struct DivergentKey {
    /// Range name.
    pub range: String,
    /// The divergence with both sides' entries.
    pub div: Divergence,
    /// Its category.
    pub category: Category,
    /// The side that is behind (`None` for conflicts).
    pub behind: Option<Side>,
}

/// A range whose roots differed while some buckets' entries did not: a
/// tree out of step with its data on one side (a torn or corrupt leaf, a
/// bug), or an 8-byte entry-hash collision. Never reported as in sync.
pub use mend_core::report::TreeMismatch;

/// The result of a diff against one peer.
#[derive(Debug, Clone)]
pub struct DiffOutcome {
    /// This node.
    pub local_node: String,
    /// The peer's node id.
    pub peer_node: String,
    /// The peer's store incarnation from its handshake (0: unknown).
    pub peer_incarnation: u64,
    /// Ranges compared.
    pub ranges: Vec<String>,
    /// Of those, the versionless ones (keys classified without versions).
    pub versionless_ranges: Vec<String>,
    /// Classified divergent keys.
    pub keys: Vec<DivergentKey>,
    /// Ranges whose trees disagreed where their entries did not.
    pub tree_mismatches: Vec<TreeMismatch>,
    /// This agent's wall clock (ms) when the diff started: every entry it
    /// held then was compared.
    pub started_ms: u64,
    /// The peer's clock minus this agent's, in ms, from the handshake
    /// (the peer's `now_ms` against the midpoint of the round trip).
    pub peer_clock_skew_ms: i64,
    /// Entries under the compared ranges' roots here when the diff started.
    pub entries_local: u64,
    /// Entries under the compared ranges' roots at the peer, from its
    /// handshake.
    pub entries_peer: u64,
    /// Wire cost.
    pub cost: Cost,
    /// Wall time.
    pub elapsed: Duration,
}

impl DiffOutcome {
    /// The divergent keys as attribution observes them.
    pub fn observed(&self) -> Vec<mend_core::attribution::Observed<'_>> {
        self.keys
            .iter()
            .map(|k| mend_core::attribution::Observed {
                div: &k.div,
                category: k.category,
                behind: k.behind,
            })
            .collect()
    }

    /// Ranges compared where the peer holds, for every tombstone this side
    /// held when the diff started, the same tombstone, something newer, or
    /// nothing at all: no tree mismatch, and no key where this side's
    /// tombstone meets an older (or equally old) entry at the peer, live or
    /// tombstone.
    /// Only those move the purge horizon (see `gc`): a peer holding
    /// nothing cannot resurrect anything, and one side's purge must not
    /// keep the other from purging in turn.
    pub fn purge_safe_ranges(&self) -> impl Iterator<Item = &str> {
        self.ranges.iter().map(String::as_str).filter(|r| {
            !self.tree_mismatches.iter().any(|m| m.range == *r)
                && !self.keys.iter().any(|k| {
                    k.range == *r
                        && match (&k.div.local, &k.div.peer) {
                            // An older tombstone at the peer blocks too: it
                            // does not hold *this* delete, and a write
                            // between the two versions reaching it later
                            // would come back as `missing` here.
                            (Some(l), Some(p)) => {
                                l.tombstone
                                    && p.version.order(&l.version) != std::cmp::Ordering::Greater
                            }
                            _ => false,
                        }
                })
        })
    }

    /// The purge-safe ranges where the peer also held every tombstone of
    /// this side's, or something newer: no tombstone here met nothing
    /// there. Only such a diff proves the peer cannot pass an older value
    /// on to a third replica that holds nothing (see `gc::horizons`).
    pub fn purge_clean_ranges(&self) -> impl Iterator<Item = &str> {
        self.purge_safe_ranges().filter(|r| {
            !self.keys.iter().any(|k| {
                k.range == *r
                    && matches!((&k.div.local, &k.div.peer), (Some(l), None) if l.tombstone)
            })
        })
    }

    /// No divergent key and no tree mismatch in any range compared.
    pub fn in_sync(&self) -> bool {
        self.keys.is_empty() && self.tree_mismatches.is_empty()
    }
}

/// The meta the classifier sees for a summary: the 8-byte entry hash stands
/// in for the value hash, so "same content" means "same entry digest" on
/// both sides alike.
pub fn meta_of(e: &EntrySummary) -> EntryMeta {
    let mut value_hash = [0u8; 32];
    value_hash[..8].copy_from_slice(&e.hash.to_le_bytes());
    EntryMeta {
        version: e.version.clone(),
        tombstone: e.tombstone,
        value_hash,
    }
}

/// Classifies a divergent key of a range: by the taxonomy, or, in a
/// versionless range, by what can be known without versions
/// (`classify_versionless`).
pub fn classify_in(
    versionless: bool,
    local: Option<&EntrySummary>,
    peer: Option<&EntrySummary>,
    now_ms: u64,
    policy: &mend_core::classify::Policy,
) -> Option<Classified> {
    let (l, p) = (local.map(meta_of), peer.map(meta_of));
    if versionless {
        classify_versionless(l.as_ref(), p.as_ref())
    } else {
        classify(l.as_ref(), p.as_ref(), now_ms, policy)
    }
}
