//! What to do about classified divergence, as pure functions beside the
//! taxonomy: which keys a repair moves and in which direction
//! ([`repair_plan`]), why the others are left alone ([`Skip`]), and whether
//! a scheduled exchange may repair automatically at all ([`verdict`]). The
//! agent's repair and playbook call these; `tests/playbook_cases.rs` pins
//! them with a table of cases.

use std::fmt;

use crate::NodeId;
use crate::classify::{Category, Side};

/// Categories repaired when a request names none.
pub const DEFAULT_CATEGORIES: [Category; 3] = [
    Category::Missing,
    Category::Stale,
    Category::UnpropagatedDelete,
];

/// Why a divergent key is not repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its category is not among those selected.
    NotSelected(Category),
    /// Same version, different content, and no policy names a winner.
    Conflict,
    /// Stamped ahead of the clock, by this origin (if known).
    FutureVersion(Option<NodeId>),
    /// Newer than the settle window.
    InFlight,
    /// No side is behind.
    NoSideBehind(Category),
    /// A tombstone past the grace period against nothing: the other side
    /// has purged it (only ever after both held it, see the agent's `gc`).
    /// Copying it back would undo the purge and keep the two sides
    /// differing forever; this side purges it in turn.
    Purged,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotSelected(c) => write!(f, "{}: category not selected for repair", c.as_str()),
            Skip::Conflict => f.write_str(
                "conflict: same version, different content; not repaired without a policy naming a winner",
            ),
            Skip::FutureVersion(o) => write!(
                f,
                "future_version: stamped ahead of the clock by {}; fix that node's clock first",
                o.as_ref().map(NodeId::as_str).unwrap_or_default()
            ),
            Skip::InFlight => f.write_str("in_flight: newer than the settle window; re-check later"),
            Skip::NoSideBehind(c) => write!(f, "{}: no side is behind", c.as_str()),
            Skip::Purged => f.write_str(
                "unpropagated_delete: tombstone past its grace period against nothing; \
                 the other side purged it, this side's purge follows",
            ),
        }
    }
}

/// One classified divergent key, as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct Divergent<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Its category.
    pub category: Category,
    /// The side that is behind (`None` for conflicts).
    pub behind: Option<Side>,
    /// The origin of the newer entry's version, if any (named in skips).
    pub origin: Option<&'a NodeId>,
    /// The newer entry is a tombstone older than the grace period and the
    /// other side holds nothing (see [`Skip::Purged`]).
    pub purged: bool,
}

/// What a repair does with each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// Keys to move, with their category and the side that receives the
    /// newer entry.
    pub planned: Vec<(Vec<u8>, Category, Side)>,
    /// Keys left alone, with why.
    pub skipped: Vec<(Vec<u8>, Skip)>,
}

/// Why `k` is not repaired with `selected` categories, if it is not.
pub fn skip(k: &Divergent<'_>, selected: &[Category]) -> Option<Skip> {
    let chosen = selected.contains(&k.category);
    match k.category {
        Category::Conflict if !chosen || k.behind.is_none() => Some(Skip::Conflict),
        Category::FutureVersion if !chosen => Some(Skip::FutureVersion(k.origin.cloned())),
        Category::InFlight => Some(Skip::InFlight),
        Category::UnpropagatedDelete if k.purged => Some(Skip::Purged),
        c if !chosen => Some(Skip::NotSelected(c)),
        c if k.behind.is_none() => Some(Skip::NoSideBehind(c)),
        _ => None,
    }
}

/// The plan for `keys` with `selected` categories ([`DEFAULT_CATEGORIES`]
/// when empty): every key of a selected category with a side behind moves
/// to that side; in-flight keys never move (they settle by themselves).
pub fn repair_plan<'a>(
    keys: impl IntoIterator<Item = Divergent<'a>>,
    selected: &[Category],
) -> RepairPlan {
    let selected: &[Category] = if selected.is_empty() {
        &DEFAULT_CATEGORIES
    } else {
        selected
    };
    let mut plan = RepairPlan::default();
    for k in keys {
        match (skip(&k, selected), k.behind) {
            (None, Some(side)) => plan.planned.push((k.key.to_vec(), k.category, side)),
            (Some(why), _) => plan.skipped.push((k.key.to_vec(), why)),
            (None, None) => plan
                .skipped
                .push((k.key.to_vec(), Skip::NoSideBehind(k.category))),
        }
    }
    plan
}

/// What a scheduled exchange's playbook does with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing the playbook repairs: report only.
    Report,
    /// Too much divergence to repair without a human: the divergent keys
    /// are `share` of the range's entries, above `max`.
    RefusedBlastRadius {
        /// Divergent keys.
        divergent: u64,
        /// Entries of the range(s).
        entries: u64,
        /// `divergent / entries`.
        share: f64,
        /// The configured maximum share.
        max: f64,
    },
    /// The peer does not report itself healthy.
    RefusedUnhealthyPeer,
    /// Repair the playbook's categories.
    Repair,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Report => f.write_str("report"),
            Verdict::RefusedBlastRadius {
                divergent,
                entries,
                share,
                max,
            } => write!(
                f,
                "refused: {divergent} divergent keys are {:.1}% of {entries} entries, above the blast radius of {:.1}%; needs a human (wrong peer or wiped replica?)",
                share * 100.0,
                max * 100.0
            ),
            Verdict::RefusedUnhealthyPeer => f.write_str("refused: peer is not healthy"),
            Verdict::Repair => f.write_str("repair"),
        }
    }
}

/// The playbook's decision: `repairable` keys of the categories it
/// repairs among `divergent` divergent keys, against a range of `entries`
/// entries (the larger side's), with the blast radius `blast_max` and the
/// peer's health (`true` when not required).
pub fn verdict(
    repairable: u64,
    divergent: u64,
    entries: u64,
    blast_max: f64,
    peer_healthy: bool,
) -> Verdict {
    if repairable == 0 {
        return Verdict::Report;
    }
    let share = divergent as f64 / entries.max(1) as f64;
    if share > blast_max {
        return Verdict::RefusedBlastRadius {
            divergent,
            entries: entries.max(1),
            share,
            max: blast_max,
        };
    }
    if !peer_healthy {
        return Verdict::RefusedUnhealthyPeer;
    }
    Verdict::Repair
}
