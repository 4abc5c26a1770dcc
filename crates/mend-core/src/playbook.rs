//! What to do about classified divergence, as pure functions beside the
//! taxonomy: which keys a repair moves and in which direction
//! ([`repair_plan`]), why the others are left alone ([`Skip`]), and whether
//! a scheduled exchange may repair automatically at all ([`verdict`]). The
//! agent's repair and playbook call these; `tests/playbook_cases.rs` pins
//! them with a table of cases.
//!
//! A range may name an [`Authority`] (e.g. the primary): its conflicts, and
//! with [`AuthorityScope::All`] every category, resolve toward that node's
//! content ([`Resolution::Authority`]) instead of toward the newer version.
//! A repair between two nodes neither of which is the authority leaves such
//! keys alone ([`Skip::AuthorityElsewhere`]): the exchanges with the
//! authority settle them.

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
    /// The range's authority is neither side of this exchange: its own
    /// exchanges decide the key.
    AuthorityElsewhere,
}

impl Skip {
    /// The kind of this skip, as reports and the wire name it.
    pub fn reason(&self) -> SkipReason {
        match self {
            Skip::NotSelected(_) => SkipReason::NotSelected,
            Skip::Conflict => SkipReason::Conflict,
            Skip::FutureVersion(_) => SkipReason::FutureVersion,
            Skip::InFlight => SkipReason::InFlight,
            Skip::NoSideBehind(_) => SkipReason::NoSideBehind,
            Skip::Purged => SkipReason::Purged,
            Skip::AuthorityElsewhere => SkipReason::AuthorityElsewhere,
        }
    }
}

/// Why a repair, a shadow run or an undo left a key alone: the kind a
/// program reads (the wire's `SkipReason`, the snake_case name in JSON),
/// beside the sentence a person reads ([`SkipNote::text`]). The first seven
/// are the playbook's own ([`Skip`]); the rest arise while the agent moves
/// or restores keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// [`Skip::NotSelected`].
    NotSelected,
    /// [`Skip::Conflict`].
    Conflict,
    /// [`Skip::FutureVersion`].
    FutureVersion,
    /// [`Skip::InFlight`].
    InFlight,
    /// [`Skip::NoSideBehind`].
    NoSideBehind,
    /// [`Skip::Purged`].
    Purged,
    /// [`Skip::AuthorityElsewhere`].
    AuthorityElsewhere,
    /// A versionless range: no version says which side is newer.
    Versionless,
    /// A digest-only range without an adapter on this agent: no value to move.
    DigestOnly,
    /// A digest-only range's key that only a resolution toward an authority
    /// (a re-stamp) would move.
    DigestOnlyAuthority,
    /// An entry changed since the diff (or may have: a resumed run).
    ChangedSinceDiff,
    /// The receiving side's apply rule kept its own entry.
    Kept,
    /// Purged on one side since the diff.
    Gone,
    /// Undo: the entry changed since the repair wrote it.
    ChangedSinceRepair,
    /// Undo: a repaired delete stays (peers may have purged the tombstone).
    RepairedDelete,
    /// Undo: the change feed has not delivered the repair's write yet.
    FeedPending,
    /// Shadow run: the key's outcome cannot be predicted on a checkpoint.
    NotPredicted,
}

impl SkipReason {
    /// The snake_case name used in JSON (serde gives the same).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotSelected => "not_selected",
            SkipReason::Conflict => "conflict",
            SkipReason::FutureVersion => "future_version",
            SkipReason::InFlight => "in_flight",
            SkipReason::NoSideBehind => "no_side_behind",
            SkipReason::Purged => "purged",
            SkipReason::AuthorityElsewhere => "authority_elsewhere",
            SkipReason::Versionless => "versionless",
            SkipReason::DigestOnly => "digest_only",
            SkipReason::DigestOnlyAuthority => "digest_only_authority",
            SkipReason::ChangedSinceDiff => "changed_since_diff",
            SkipReason::Kept => "kept",
            SkipReason::Gone => "gone",
            SkipReason::ChangedSinceRepair => "changed_since_repair",
            SkipReason::RepairedDelete => "repaired_delete",
            SkipReason::FeedPending => "feed_pending",
            SkipReason::NotPredicted => "not_predicted",
        }
    }

    /// Every reason, in wire order.
    pub const ALL: [SkipReason; 17] = [
        SkipReason::NotSelected,
        SkipReason::Conflict,
        SkipReason::FutureVersion,
        SkipReason::InFlight,
        SkipReason::NoSideBehind,
        SkipReason::Purged,
        SkipReason::AuthorityElsewhere,
        SkipReason::Versionless,
        SkipReason::DigestOnly,
        SkipReason::DigestOnlyAuthority,
        SkipReason::ChangedSinceDiff,
        SkipReason::Kept,
        SkipReason::Gone,
        SkipReason::ChangedSinceRepair,
        SkipReason::RepairedDelete,
        SkipReason::FeedPending,
        SkipReason::NotPredicted,
    ];
}

/// A skipped key's why: its kind and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkipNote {
    /// The kind.
    pub reason: SkipReason,
    /// The sentence.
    pub text: String,
}

impl SkipNote {
    /// A note of `reason` saying `text`.
    pub fn new(reason: SkipReason, text: impl Into<String>) -> SkipNote {
        SkipNote {
            reason,
            text: text.into(),
        }
    }
}

impl From<Skip> for SkipNote {
    fn from(s: Skip) -> SkipNote {
        SkipNote::new(s.reason(), s.to_string())
    }
}

impl fmt::Display for SkipNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
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
            Skip::AuthorityElsewhere => f.write_str(
                "the range's authority is neither side of this exchange; its own exchanges decide the key",
            ),
        }
    }
}

/// Which divergence an authority decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityScope {
    /// Only conflicts (same version, different content), which have no
    /// newer side.
    #[default]
    Conflicts,
    /// Every selected category: the authority's content wins even over a
    /// newer version (a primary/replica store where replicas never write).
    All,
}

impl AuthorityScope {
    /// The name used in configuration and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityScope::Conflicts => "conflicts",
            AuthorityScope::All => "all",
        }
    }

    /// Parses [`AuthorityScope::as_str`].
    pub fn parse(s: &str) -> Option<AuthorityScope> {
        match s {
            "conflicts" => Some(AuthorityScope::Conflicts),
            "all" => Some(AuthorityScope::All),
            _ => None,
        }
    }

    /// Whether this scope decides `category`.
    pub fn covers(self, category: Category) -> bool {
        match self {
            AuthorityScope::Conflicts => category == Category::Conflict,
            AuthorityScope::All => true,
        }
    }
}

/// A range's authority as seen from one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority {
    /// The side that is the authority; `None` when it is a third node.
    pub side: Option<Side>,
    /// What it decides.
    pub scope: AuthorityScope,
}

/// Why a key moves the way it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The newer version moves to the side behind (the apply rule's own
    /// direction).
    Newer,
    /// The authority's content moves to the other side against the apply
    /// rule's direction (a conflict, or an older authority version under
    /// [`AuthorityScope::All`]): the agent re-stamps it with a version newer
    /// than both so every replica takes it, and journals the winner.
    Authority,
}

impl Resolution {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Newer => "newer",
            Resolution::Authority => "authority",
        }
    }
}

/// One key a repair moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The key.
    pub key: Vec<u8>,
    /// Its category.
    pub category: Category,
    /// The side that receives the winning entry.
    pub behind: Side,
    /// Why that side.
    pub resolution: Resolution,
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
    /// The authority of the key's range, if it has one.
    pub authority: Option<Authority>,
}

/// What a repair does with each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// Keys to move, in input order.
    pub planned: Vec<Move>,
    /// Keys left alone, with why.
    pub skipped: Vec<(Vec<u8>, Skip)>,
}

/// Why `k` is not repaired with `selected` categories, if it is not.
/// `default` says `selected` is the default set, which in a range with an
/// authority includes conflicts.
fn skip(k: &Divergent<'_>, selected: &[Category], default: bool) -> Option<Skip> {
    let chosen = selected.contains(&k.category)
        || (default && k.authority.is_some() && k.category == Category::Conflict);
    let decided = k.authority.filter(|a| a.scope.covers(k.category));
    match k.category {
        Category::InFlight => Some(Skip::InFlight),
        Category::UnpropagatedDelete if k.purged => Some(Skip::Purged),
        Category::Conflict if !chosen => Some(Skip::Conflict),
        Category::FutureVersion if !chosen => Some(Skip::FutureVersion(k.origin.cloned())),
        c if !chosen => Some(Skip::NotSelected(c)),
        _ if decided.is_some_and(|a| a.side.is_none()) => Some(Skip::AuthorityElsewhere),
        _ if decided.is_some() => None,
        Category::Conflict if k.behind.is_none() => Some(Skip::Conflict),
        c if k.behind.is_none() => Some(Skip::NoSideBehind(c)),
        _ => None,
    }
}

/// Where `k` moves, once [`skip`] let it: toward the side behind, unless
/// the range's authority decides the key and is that side.
fn direction(k: &Divergent<'_>) -> Option<(Side, Resolution)> {
    match k.authority.filter(|a| a.scope.covers(k.category)) {
        Some(Authority {
            side: Some(winner), ..
        }) => {
            let behind = winner.other();
            if k.behind == Some(behind) {
                Some((behind, Resolution::Newer))
            } else {
                Some((behind, Resolution::Authority))
            }
        }
        _ => k.behind.map(|b| (b, Resolution::Newer)),
    }
}

/// The plan for `keys` with `selected` categories ([`DEFAULT_CATEGORIES`]
/// when empty, plus conflicts in ranges with an authority): every key of a
/// selected category with a side behind moves to that side; a key its
/// range's authority decides moves away from the authority; in-flight keys
/// never move (they settle by themselves).
pub fn repair_plan<'a>(
    keys: impl IntoIterator<Item = Divergent<'a>>,
    selected: &[Category],
) -> RepairPlan {
    let default = selected.is_empty();
    let selected: &[Category] = if default {
        &DEFAULT_CATEGORIES
    } else {
        selected
    };
    let mut plan = RepairPlan::default();
    for k in keys {
        match (skip(&k, selected, default), direction(&k)) {
            (None, Some((behind, resolution))) => plan.planned.push(Move {
                key: k.key.to_vec(),
                category: k.category,
                behind,
                resolution,
            }),
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

/// What a scheduled exchange's playbook did (the wire's `PlaybookAction`,
/// the snake_case name in JSON), beside the sentence the drift history
/// keeps for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaybookAction {
    /// An operator's diff on demand: no playbook ran.
    OnDemand,
    /// Nothing the playbook repairs ([`Verdict::Report`]).
    Report,
    /// Repaired, and a re-diff found none of the repaired keys divergent.
    Repaired,
    /// [`Verdict::RefusedBlastRadius`].
    RefusedBlastRadius,
    /// [`Verdict::RefusedUnhealthyPeer`].
    RefusedUnhealthyPeer,
    /// Repair not attempted: what it needed to read first was unreadable.
    NotAttempted,
    /// The repair failed.
    RepairFailed,
    /// Repaired keys still differ after the repair.
    PostconditionFailed,
    /// Repaired, but the re-diff that checks it failed.
    NotVerified,
}

impl PlaybookAction {
    /// Every action, in wire order.
    pub const ALL: [PlaybookAction; 9] = [
        PlaybookAction::OnDemand,
        PlaybookAction::Report,
        PlaybookAction::Repaired,
        PlaybookAction::RefusedBlastRadius,
        PlaybookAction::RefusedUnhealthyPeer,
        PlaybookAction::NotAttempted,
        PlaybookAction::RepairFailed,
        PlaybookAction::PostconditionFailed,
        PlaybookAction::NotVerified,
    ];
}

impl Verdict {
    /// The action this verdict takes when it stops the playbook (every
    /// verdict but [`Verdict::Repair`], which is [`PlaybookAction::Repaired`]
    /// only once the repair checks out).
    pub fn action(&self) -> PlaybookAction {
        match self {
            Verdict::Report => PlaybookAction::Report,
            Verdict::RefusedBlastRadius { .. } => PlaybookAction::RefusedBlastRadius,
            Verdict::RefusedUnhealthyPeer => PlaybookAction::RefusedUnhealthyPeer,
            Verdict::Repair => PlaybookAction::Repaired,
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
