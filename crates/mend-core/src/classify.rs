//! Divergence classification: the taxonomy that names why one key differs
//! between two replicas.
//!
//! This module owns the rule that turns a pair of entries (the local one and
//! the peer's, either possibly absent) into exactly one [`Category`] plus the
//! side that is behind. It is pure: the caller passes the current time and the
//! [`Policy`], so the same inputs always give the same answer, in tests, in the
//! simulator and in the agent.
//!
//! The rules, first match wins (see `PRODUCT.md`, "Taxonomy"):
//!
//! 1. `future_version`: a version is stamped beyond `now_ms + clock_skew_ms`.
//!    (The same future-stamped version with different content on both sides
//!    has no older side to call behind, so it falls to `conflict`.)
//! 2. `in_flight`: the newer version is younger than the settle window.
//! 3. `conflict`: the same version (by [`crate::version::Version::same_as`])
//!    with different content (seq, tombstone flag or value hash).
//! 4. `unpropagated_delete`: the newer entry is a tombstone and the other side
//!    holds an older live value or nothing.
//! 5. `missing`: the newer entry is live and the other side holds nothing.
//! 6. `stale`: both present, one older; this includes an older tombstone
//!    against a newer live value and two tombstones of different versions.
//!
//! Classification only names the divergence; deciding what may be repaired
//! (a future-stamped entry must never be copied automatically) belongs to the
//! repair layer.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::EntryMeta;

/// Why a key differs between two replicas. The variants are listed, and
/// ordered, by precedence: when several apply, the first one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A version is stamped beyond now plus the allowed clock skew; this usually
    /// means clock drift at the origin node.
    FutureVersion,
    /// The newer version is younger than the settle window; this is usually
    /// replication lag rather than divergence.
    InFlight,
    /// Both sides hold the same version with different content; this means
    /// non-deterministic apply, corruption or a writer reusing versions.
    Conflict,
    /// One side holds a tombstone and the other an older live value or
    /// nothing; the deleted value risks resurrection once the tombstone is purged.
    UnpropagatedDelete,
    /// One side holds a live value and the other nothing; a write was lost or
    /// never delivered.
    Missing,
    /// Both sides hold an entry and one is older; an update was dropped or delayed.
    Stale,
    /// A versionless range: both sides hold a live entry with different
    /// content, and no version says which is newer.
    Differs,
    /// A versionless range: one side deleted the key, the other holds it
    /// live or not at all; which happened last is unknown.
    Deleted,
}

impl Category {
    /// Every category, in precedence order.
    pub const ALL: [Category; 8] = [
        Category::FutureVersion,
        Category::InFlight,
        Category::Conflict,
        Category::UnpropagatedDelete,
        Category::Missing,
        Category::Stale,
        Category::Differs,
        Category::Deleted,
    ];

    /// The categories a versionless range's keys can have: what can be
    /// known without versions ([`classify_versionless`]).
    pub const VERSIONLESS: [Category; 3] =
        [Category::Missing, Category::Differs, Category::Deleted];

    /// The snake_case name used in reports, test files and serde.
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::FutureVersion => "future_version",
            Category::InFlight => "in_flight",
            Category::Conflict => "conflict",
            Category::UnpropagatedDelete => "unpropagated_delete",
            Category::Missing => "missing",
            Category::Stale => "stale",
            Category::Differs => "differs",
            Category::Deleted => "deleted",
        }
    }

    /// Parses the snake_case name produced by [`Category::as_str`].
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the two replicas being compared. Serialized as `"local"` or `"peer"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The replica doing the comparison.
    Local,
    /// The replica it is compared against.
    Peer,
}

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Peer,
            Side::Peer => Side::Local,
        }
    }

    /// The lowercase name used in reports and test files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Peer => "peer",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The time windows classification depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// How long, in milliseconds, a write may take to reach every replica
    /// before a difference it causes counts as divergence. A larger window
    /// hides real divergence for longer; a smaller one reports replication lag
    /// as missing or stale keys.
    pub settle_ms: u64,
    /// How far, in milliseconds, a version's wall-clock part may lie beyond
    /// the local clock before it counts as future-stamped. A larger allowance
    /// lets drifting clocks write unnoticed; a smaller one flags ordinary skew.
    /// It must be the same bound the store's clock follows replicated
    /// versions up to (see [`CLOCK_SKEW_MS_DEFAULT`]).
    pub clock_skew_ms: u64,
}

/// The allowed clock skew between any two nodes, in ms: one notion for the
/// whole system. A store's clock follows a replicated version only up to
/// this far ahead of its wall clock, the agent refuses replicated writes
/// stamped further ahead, and classification calls them `future_version`.
/// Because a hybrid logical clock only ever moves to a wall time some node
/// read (or one it observed within the bound), every version a node stamps
/// is within the bound of the fastest node's wall clock; if every pair of
/// wall clocks is within the bound, no node's own writes are ever
/// `future_version` elsewhere.
pub const CLOCK_SKEW_MS_DEFAULT: u64 = 1_000;

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            settle_ms: 5_000,
            clock_skew_ms: CLOCK_SKEW_MS_DEFAULT,
        }
    }
}

/// The classification of one divergent key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// Why the key differs.
    pub category: Category,
    /// The side that would receive the newer entry on repair; `None` only for
    /// [`Category::Conflict`], where neither side is newer.
    pub behind: Option<Side>,
    /// The side that holds the newer (or the only) entry; [`Side::Local`] for
    /// [`Category::Conflict`], by convention.
    pub newer: Side,
}

/// Classifies the divergence between the `local` and `peer` entries of one
/// key, at wall-clock time `now_ms` (milliseconds since the Unix epoch).
///
/// Returns `None` when the two sides agree: both absent, or the same version
/// with the same content. Otherwise returns exactly one category, chosen by
/// the precedence documented on this module.
///
/// One corner the taxonomy leaves open: when both sides hold the same
/// future-stamped version with different content, there is no older side to
/// call behind, so the pair is classified as a conflict. Conflicts are never
/// repaired automatically either, so the future-stamped entry stays put.
pub fn classify(
    local: Option<&EntryMeta>,
    peer: Option<&EntryMeta>,
    now_ms: u64,
    policy: &Policy,
) -> Option<Classified> {
    // The side holding the strictly newer entry, that entry, and the other
    // side's entry. A tie by version is rule 3 and needs no newer side.
    let (newer, newest, other) = match (local, peer) {
        (None, None) => return None,
        (Some(l), None) => (Side::Local, l, None),
        (None, Some(p)) => (Side::Peer, p, None),
        (Some(l), Some(p)) => match l.version.order(&p.version) {
            Ordering::Greater => (Side::Local, l, Some(p)),
            Ordering::Less => (Side::Peer, p, Some(l)),
            Ordering::Equal if l == p => return None,
            Ordering::Equal => {
                // Same version, different content: a conflict, even when
                // future-stamped, since neither side is older (see above).
                return Some(Classified {
                    category: Category::Conflict,
                    behind: None,
                    newer: Side::Local,
                });
            }
        },
    };
    let divergent = |category| Classified {
        category,
        behind: Some(newer.other()),
        newer,
    };

    // Rule 1. Versions order by `ms` first, so if either entry is
    // future-stamped the newer one is: checking it alone suffices, and the
    // side behind is the one without a future stamp, or the older one.
    if newest.version.ms > now_ms.saturating_add(policy.clock_skew_ms) {
        return Some(divergent(Category::FutureVersion));
    }

    // Rule 2. The window is half-open: an entry exactly `settle_ms` old has settled.
    if newest.version.ms.saturating_add(policy.settle_ms) > now_ms {
        return Some(divergent(Category::InFlight));
    }

    // Rules 4 to 6; rule 3 was settled with the tie above.
    let category = match (newest.tombstone, other) {
        (true, Some(o)) if o.tombstone => Category::Stale,
        (true, _) => Category::UnpropagatedDelete,
        (false, None) => Category::Missing,
        (false, Some(_)) => Category::Stale,
    };
    Some(divergent(category))
}

/// Classifies a divergent key of a versionless range, whose entries all
/// carry the same version (the store orders them by its change feed, not by
/// version): `Missing` (live on one side, nothing on the other), `Deleted`
/// (a tombstone on one side) or `Differs` (live on both, other content).
/// No side is known to be newer, so none is called behind; `newer` names
/// the side holding the entry (the tombstone for `Deleted`).
pub fn classify_versionless(
    local: Option<&EntryMeta>,
    peer: Option<&EntryMeta>,
) -> Option<Classified> {
    let (category, newer) = match (local, peer) {
        (None, None) => return None,
        (Some(l), Some(p)) if l == p => return None,
        (Some(l), _) if l.tombstone => (Category::Deleted, Side::Local),
        (_, Some(p)) if p.tombstone => (Category::Deleted, Side::Peer),
        (Some(_), None) => (Category::Missing, Side::Local),
        (None, Some(_)) => (Category::Missing, Side::Peer),
        (Some(_), Some(_)) => (Category::Differs, Side::Local),
    };
    Some(Classified {
        category,
        behind: None,
        newer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::value_hash;
    use crate::version::{NodeId, Version};
    use proptest::prelude::*;

    #[test]
    fn names_round_trip_in_precedence_order() {
        for (i, c) in Category::ALL.into_iter().enumerate() {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
            if i > 0 {
                assert!(Category::ALL[i - 1] < c, "ALL is in precedence order");
            }
        }
        assert_eq!(Category::parse("Missing"), None);
        assert_eq!(Side::Local.other(), Side::Peer);
        assert_eq!(Side::Peer.as_str(), "peer");
    }

    #[test]
    fn default_policy() {
        let p = Policy::default();
        assert_eq!((p.settle_ms, p.clock_skew_ms), (5_000, 1_000));
    }

    /// Entries drawn from a small domain, so ties, equal entries and both
    /// window boundaries (now is 20) come up often.
    fn entry() -> impl Strategy<Value = EntryMeta> {
        (
            0u64..32,
            0u32..2,
            prop::sample::select(vec!["a", "b"]),
            0u64..2,
            any::<bool>(),
            0u8..2,
        )
            .prop_map(|(ms, logical, origin, seq, tombstone, value)| {
                let value: &[u8] = if tombstone { b"" } else { &[value] };
                EntryMeta {
                    version: Version {
                        ms,
                        logical,
                        origin: NodeId::new(origin).expect("valid node id"),
                        seq,
                    },
                    tombstone,
                    value_hash: value_hash(value),
                }
            })
    }

    proptest! {
        #[test]
        fn symmetric_and_none_iff_equal(
            a in prop::option::of(entry()),
            b in prop::option::of(entry()),
            settle_ms in 0u64..8,
            clock_skew_ms in 0u64..8,
        ) {
            let policy = Policy { settle_ms, clock_skew_ms };
            let ab = classify(a.as_ref(), b.as_ref(), 20, &policy);
            let ba = classify(b.as_ref(), a.as_ref(), 20, &policy);
            prop_assert_eq!(ab.is_none(), a == b);
            prop_assert_eq!(ab.map(|c| c.category), ba.map(|c| c.category));
            prop_assert_eq!(
                ab.map(|c| c.behind.map(Side::other)),
                ba.map(|c| c.behind)
            );
            if let Some(c) = ab {
                prop_assert_eq!(c.behind.is_none(), c.category == Category::Conflict);
                prop_assert_ne!(c.behind, Some(c.newer));
                // Rule 1 checks only the newer entry; this confirms that sees
                // every future stamp.
                let horizon_ms = 20 + clock_skew_ms;
                let future = [&a, &b]
                    .iter()
                    .any(|e| e.as_ref().is_some_and(|e| e.version.ms > horizon_ms));
                if future && c.category != Category::Conflict {
                    prop_assert_eq!(c.category, Category::FutureVersion);
                }
            }
        }
    }
}
