//! Attribution: turning many classified divergent keys into a few likely causes.
//!
//! This module owns the step after classification (see `PRODUCT.md`,
//! "Taxonomy" / "Attribution"). It groups divergent keys by (category, origin
//! node of the newer write, side holding the newer write), splits each group
//! into time windows wherever consecutive newer writes lie more than
//! [`Options::window_gap_ms`] apart, and describes each window as a
//! [`Source`]: counts, time span, the origin's sequence numbers the side
//! behind lacks, and a one-sentence plain-language hint. It is pure: the
//! caller passes the current time and the node names, so the same input
//! always gives the same report.
//!
//! Times in hints are UTC `HH:MM:SS`; when either end of a window falls on
//! another UTC day than `now_ms`, both ends are written `YYYY-MM-DD HH:MM:SS`.
//! The tiny formatter lives here so the core needs no date crate.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::classify::{Category, Side};
use crate::exchange::{Divergence, EntrySummary};

/// Default for [`Options::window_gap_ms`]: one minute.
pub const WINDOW_GAP_MS_DEFAULT: u64 = 60_000;
/// Default for [`Options::sources_max`].
pub const SOURCES_MAX_DEFAULT: usize = 10;
/// The most contiguous seq runs a [`SeqGaps`] lists; [`SeqGaps::missing`]
/// still counts them all.
pub const SEQ_RANGES_MAX: usize = 5;

const DAY_MS: u64 = 86_400_000;

/// One classified divergent key as attribution sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The key and both sides' entries.
    pub div: &'a Divergence,
    /// Its category, from [`crate::classify::classify`].
    pub category: Category,
    /// The side behind; `None` only for [`Category::Conflict`].
    pub behind: Option<Side>,
}

/// One likely cause: a group of divergent keys sharing a category, the origin
/// of their newer writes and the side holding those writes, within one time window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The category all keys of the group share.
    pub category: Category,
    /// The origin node of the newer writes. For a conflict, the origin both
    /// sides' versions share; for a key present on one side only, the origin
    /// of that side's entry.
    pub origin: String,
    /// The side holding the newer writes; [`Side::Local`] for conflicts, by
    /// the same convention as [`crate::classify::Classified::newer`].
    pub newer_side: Side,
    /// How many divergent keys the group holds.
    pub count: u64,
    /// The earliest newer write's `version.ms` (milliseconds since the Unix epoch).
    pub first_ms: u64,
    /// The latest newer write's `version.ms` (milliseconds since the Unix epoch).
    pub last_ms: u64,
    /// The smallest seq among the newer writes.
    pub seq_min: u64,
    /// The largest seq among the newer writes.
    pub seq_max: u64,
    /// The origin's writes the side behind lacks; only for `missing`,
    /// `stale` and `unpropagated_delete`, `None` otherwise.
    pub seq_gaps: Option<SeqGaps>,
    /// A plain-language explanation, one sentence without a final period.
    pub hint: String,
}

/// The sequence numbers of one origin's writes that the side behind lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqGaps {
    /// The side that lacks the writes.
    pub missing_on: Side,
    /// How many distinct seq numbers it lacks; this equals the group's count
    /// unless several keys carry the same seq (one write touching many keys).
    pub missing: u64,
    /// Contiguous runs of the missing seq numbers as inclusive `(first, last)`,
    /// ascending; at most [`SEQ_RANGES_MAX`], the lowest first.
    pub ranges: Vec<(u64, u64)>,
}

/// What attribution needs besides the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Newer writes in one group further apart than this, in milliseconds,
    /// start a new source. Larger merges separate incidents into one source;
    /// smaller splits one incident with pauses into many.
    pub window_gap_ms: u64,
    /// How many sources to keep, largest first. More gives a longer report.
    pub sources_max: usize,
    /// The wall-clock time classification used, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// The local node's name, used in hints.
    pub local_node: String,
    /// The peer node's name, used in hints.
    pub peer_node: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            window_gap_ms: WINDOW_GAP_MS_DEFAULT,
            sources_max: SOURCES_MAX_DEFAULT,
            now_ms: 0,
            local_node: "local".to_string(),
            peer_node: "peer".to_string(),
        }
    }
}

impl Options {
    /// The node name of `side`.
    fn node(&self, side: Side) -> &str {
        match side {
            Side::Local => &self.local_node,
            Side::Peer => &self.peer_node,
        }
    }
}

/// A group: (category, origin of the newer writes, whether the peer holds them).
type GroupKey<'a> = (Category, &'a str, bool);

/// Groups the observed keys into sources, largest first: by count descending,
/// ties by category precedence, then `first_ms`, then origin, then newer side
/// (local first). Keeps at most [`Options::sources_max`].
///
/// A key whose newer side (the side not behind; local for a conflict) holds
/// no entry is inconsistent with its category and is skipped.
pub fn attribute(observed: &[Observed<'_>], opts: &Options) -> Vec<Source> {
    // The newer writes' (ms, seq), per group.
    let mut groups: BTreeMap<GroupKey<'_>, Vec<(u64, u64)>> = BTreeMap::new();
    let mut totals: BTreeMap<Category, u64> = BTreeMap::new();
    for o in observed {
        let Some((side, e)) = newer_write(o) else {
            continue;
        };
        *totals.entry(o.category).or_default() += 1;
        let group = (o.category, e.version.origin.as_str(), side == Side::Peer);
        groups
            .entry(group)
            .or_default()
            .push((e.version.ms, e.version.seq));
    }

    // Each source with the number of seq runs left out of its `ranges`.
    let mut sources: Vec<(Source, usize)> = Vec::new();
    for ((category, origin, on_peer), mut writes) in groups {
        writes.sort_unstable();
        let newer_side = if on_peer { Side::Peer } else { Side::Local };
        let mut start = 0;
        for i in 1..=writes.len() {
            if i == writes.len() || writes[i].0 - writes[i - 1].0 > opts.window_gap_ms {
                sources.push(summarize(category, origin, newer_side, &writes[start..i]));
                start = i;
            }
        }
    }
    sources.sort_by(|(a, _), (b, _)| {
        (b.count.cmp(&a.count))
            .then(a.category.cmp(&b.category))
            .then(a.first_ms.cmp(&b.first_ms))
            .then_with(|| a.origin.cmp(&b.origin))
            .then((a.newer_side == Side::Peer).cmp(&(b.newer_side == Side::Peer)))
    });
    sources.truncate(opts.sources_max);
    // Hints last, so only the kept sources pay for their strings.
    for (s, runs_left_out) in &mut sources {
        s.hint = hint(s, *runs_left_out, totals[&s.category], opts);
    }
    sources.into_iter().map(|(s, _)| s).collect()
}

/// The side holding the newer write of an observed key, and that write.
fn newer_write<'d>(o: &Observed<'d>) -> Option<(Side, &'d EntrySummary)> {
    let side = o.behind.map_or(Side::Local, Side::other);
    let entry = match side {
        Side::Local => o.div.local.as_ref(),
        Side::Peer => o.div.peer.as_ref(),
    };
    entry.map(|e| (side, e))
}

/// Describes one window of one group (non-empty, sorted by ms); the hint is
/// filled in later. Also returns how many seq runs `ranges` leaves out.
fn summarize(category: Category, origin: &str, newer: Side, w: &[(u64, u64)]) -> (Source, usize) {
    let seqs = || w.iter().map(|&(_, seq)| seq);
    let gapped = matches!(
        category,
        Category::Missing | Category::Stale | Category::UnpropagatedDelete
    );
    let mut runs_left_out = 0;
    let seq_gaps = gapped.then(|| {
        let mut ranges = seq_runs(seqs());
        let missing = ranges.iter().map(|(a, b)| b - a + 1).sum();
        runs_left_out = ranges.len().saturating_sub(SEQ_RANGES_MAX);
        ranges.truncate(SEQ_RANGES_MAX);
        SeqGaps {
            missing_on: newer.other(),
            missing,
            ranges,
        }
    });
    let source = Source {
        category,
        origin: origin.to_string(),
        newer_side: newer,
        count: w.len() as u64,
        first_ms: w[0].0,
        last_ms: w[w.len() - 1].0,
        seq_min: seqs().min().unwrap_or(0),
        seq_max: seqs().max().unwrap_or(0),
        seq_gaps,
        hint: String::new(),
    };
    (source, runs_left_out)
}

/// Contiguous runs of the distinct seq numbers, ascending, as inclusive ranges.
fn seq_runs(seqs: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut seqs: Vec<u64> = seqs.collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match runs.last_mut() {
            Some(run) if run.1.checked_add(1) == Some(s) => run.1 = s,
            _ => runs.push((s, s)),
        }
    }
    runs
}

/// The one-sentence hint for a source; `total` counts all keys of its category.
fn hint(s: &Source, runs_left_out: usize, total: u64, opts: &Options) -> String {
    let (n, o) = (s.count, s.origin.as_str());
    let behind = opts.node(s.newer_side.other());
    let dated = [s.first_ms, s.last_ms]
        .iter()
        .any(|ms| ms / DAY_MS != opts.now_ms / DAY_MS);
    let (t1, t2) = (utc(s.first_ms, dated), utc(s.last_ms, dated));
    let when = if t1 == t2 {
        format!("at {t1}")
    } else {
        format!("between {t1} and {t2}")
    };
    let seq = s.seq_gaps.as_ref().map_or(String::new(), |g| {
        let run = |&(a, b): &(u64, u64)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        };
        let runs: Vec<String> = g.ranges.iter().map(run).collect();
        let more = match runs_left_out {
            0 => String::new(),
            k => format!(" and {k} more {}", word(k as u64, "run", "runs")),
        };
        format!("seq {}{more}", runs.join(", "))
    });
    let are = word(n, "is", "are");
    match s.category {
        // The behind node lacks writes it originated itself: no propagation
        // failed, it lost them (an old backup restored, a disk fault).
        Category::Missing | Category::Stale | Category::UnpropagatedDelete if o == behind => {
            let noun = match s.category {
                Category::Missing => ("key", "keys"),
                Category::Stale => ("update", "updates"),
                _ => ("delete", "deletes"),
            };
            format!(
                "{} written via {o} {when} ({seq}) {are} missing on {o} itself: \
                 it lost its own writes, e.g. restored from an older backup or a disk fault",
                count(n, noun.0, noun.1)
            )
        }
        Category::Missing => {
            let lead = match (n == total, n == 1) {
                (true, true) => "the only missing key was".to_string(),
                (true, false) => format!("all {n} missing keys were"),
                (false, _) => format!("{n} of {total} missing keys {}", word(n, "was", "were")),
            };
            format!(
                "{lead} written via {o} {when} ({seq}); \
                 {o}'s propagation to {behind} likely stopped in that window"
            )
        }
        Category::Stale => format!(
            "{} from {o} {when} never reached {behind} ({seq}): \
             dropped or delayed update propagation",
            count(n, "update", "updates")
        ),
        Category::UnpropagatedDelete => format!(
            "{} from {o} {when} did not reach {behind} ({seq}): \
             resurrection risk once the {} purged",
            count(n, "delete", "deletes"),
            word(n, "tombstone is", "tombstones are")
        ),
        Category::FutureVersion => format!(
            "{} from {o} {are} stamped up to {} s in the future: clock drift on {o}",
            count(n, "version", "versions"),
            // Rounded up: "up to" promises a bound, and never reads "0 s".
            s.last_ms.saturating_sub(opts.now_ms).div_ceil(1000)
        ),
        Category::Differs => format!(
            "{} different content and no versions to say which is newer \
             (a versionless range): compare the rows and repair by hand",
            count(n, "key has", "keys have")
        ),
        Category::Deleted => format!(
            "{} deleted on one side and not the other, in a versionless range: \
             which happened last is unknown; compare the rows and repair by hand",
            count(n, "key is", "keys are")
        ),
        Category::Conflict => format!(
            "{} the same version from {o} with different content: \
             non-deterministic apply, corruption, or a writer reusing versions",
            count(n, "key has", "keys have")
        ),
        Category::InFlight => format!(
            "{} from {o} in the last {} s {are} still replicating \
             (younger than the settle window); re-check before acting",
            count(n, "write", "writes"),
            opts.now_ms.saturating_sub(s.first_ms).div_ceil(1000).max(1)
        ),
    }
}

/// `one` when `n` is 1, else `many`.
fn word<'w>(n: u64, one: &'w str, many: &'w str) -> &'w str {
    if n == 1 { one } else { many }
}

/// `n` followed by the singular or plural noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", word(n, one, many))
}

/// UTC `HH:MM:SS` of epoch milliseconds, prefixed by `YYYY-MM-DD ` when `dated`.
pub fn utc(ms: u64, dated: bool) -> String {
    let secs = ms / 1000 % 86_400;
    let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if !dated {
        return time;
    }
    let (y, m, d) = civil_from_days(ms / DAY_MS);
    format!("{y:04}-{m:02}-{d:02} {time}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01, after
/// Howard Hinnant's `civil_from_days` (restricted to days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// One cause that explains a whole diff, when there is one: named instead
/// of one "propagation stopped" hint per origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// `node` holds (almost) nothing the other side has: a wiped disk or a
    /// new replica. Every divergent key is missing there.
    Empty {
        /// The empty side's node.
        node: String,
        /// Keys missing there.
        keys: u64,
        /// Distinct origins of those keys.
        origins: u64,
    },
    /// `node` lacks every divergent write, from two or more origins, and all
    /// of them were made at or after `after_ms`: restored from a backup
    /// taken about then, or cut off from every peer since.
    LostAfter {
        /// The side behind.
        node: String,
        /// The earliest write it lacks.
        after_ms: u64,
        /// Keys behind.
        keys: u64,
        /// Distinct origins of the writes it lacks.
        origins: u64,
    },
    /// Every divergent key is a write of `node` stamped ahead of the clock:
    /// its clock jumped.
    ClockJump {
        /// The node whose writes are ahead.
        node: String,
        /// Keys.
        keys: u64,
        /// How far the furthest is ahead of now, ms.
        ahead_ms: u64,
    },
}

/// Share of the other side's entries at or under which a side counts as
/// empty (1%): a wiped replica that took a few new writes since is still
/// wiped.
pub const EMPTY_SHARE_PERCENT: u64 = 1;

/// The single cause of `observed` (keys in flight set aside), with its
/// hint, or `None` when no one cause explains every key.
/// `entries_local` and `entries_peer` are the sides' entry counts.
pub fn single_cause(
    observed: &[Observed<'_>],
    opts: &Options,
    entries_local: u64,
    entries_peer: u64,
) -> Option<(Cause, String)> {
    let settled: Vec<&Observed<'_>> = observed
        .iter()
        .filter(|o| o.category != Category::InFlight)
        .collect();
    let first = settled.first()?;
    let newer: Vec<(Side, &EntrySummary)> = settled.iter().filter_map(|o| newer_write(o)).collect();
    if newer.len() != settled.len() {
        return None;
    }
    let origins: BTreeSet<&str> = newer
        .iter()
        .map(|(_, e)| e.version.origin.as_str())
        .collect();
    if let Some(found) = clock_jump(&settled, &newer, &origins, opts.now_ms) {
        return Some(found);
    }
    let behind = first.behind?;
    let lagging = |o: &&Observed<'_>| {
        o.behind == Some(behind)
            && matches!(
                o.category,
                Category::Missing | Category::Stale | Category::UnpropagatedDelete
            )
    };
    if !settled.iter().all(lagging) {
        return None;
    }
    let node = opts.node(behind).to_string();
    let (mine, other) = match behind {
        Side::Local => (entries_local, entries_peer),
        Side::Peer => (entries_peer, entries_local),
    };
    let (n, k) = (settled.len() as u64, origins.len() as u64);
    if settled.iter().all(|o| o.category == Category::Missing)
        && mine.saturating_mul(100) <= other.saturating_mul(EMPTY_SHARE_PERCENT)
        && other > 0
    {
        return Some(empty(node, (mine, other), n, k));
    }
    if k >= 2 {
        return Some(lost_after(node, &newer, n, k, opts.now_ms));
    }
    None
}

/// [`Cause::ClockJump`] when every settled key is a future version of one
/// origin, with its hint.
fn clock_jump(
    settled: &[&Observed<'_>],
    newer: &[(Side, &EntrySummary)],
    origins: &BTreeSet<&str>,
    now_ms: u64,
) -> Option<(Cause, String)> {
    if origins.len() != 1
        || !settled
            .iter()
            .all(|o| o.category == Category::FutureVersion)
    {
        return None;
    }
    let node = origins.first()?.to_string();
    let n = settled.len() as u64;
    let ahead_ms = newer
        .iter()
        .map(|(_, e)| e.version.ms.saturating_sub(now_ms))
        .max()
        .unwrap_or(0);
    let hint = format!(
        "all {} stamped by {node}, up to {} s ahead of this clock: {node}'s clock jumped ahead; \
         fix its clock, then repair",
        count(n, "divergent key is a write", "divergent keys are writes"),
        ahead_ms / 1000
    );
    Some((
        Cause::ClockJump {
            node,
            keys: n,
            ahead_ms,
        },
        hint,
    ))
}

/// [`Cause::Empty`] of `node`, which holds `mine` of the `other` side's
/// entries and lacks all `n` divergent keys, from `k` origins, with its hint.
fn empty(node: String, (mine, other): (u64, u64), n: u64, k: u64) -> (Cause, String) {
    let hint = format!(
        "{node} holds {mine} of {other} entries: it is empty (a wiped disk or a new replica), \
         so all {n} divergent keys from {} are missing there; not a propagation fault: \
         bootstrap or repair {node} from this side",
        count(k, "origin", "origins")
    );
    (
        Cause::Empty {
            node,
            keys: n,
            origins: k,
        },
        hint,
    )
}

/// [`Cause::LostAfter`] of `node`, which lacks all `n` divergent writes
/// (`newer`), from `k` origins, with its hint.
fn lost_after(
    node: String,
    newer: &[(Side, &EntrySummary)],
    n: u64,
    k: u64,
    now_ms: u64,
) -> (Cause, String) {
    let after_ms = newer.iter().map(|(_, e)| e.version.ms).min().unwrap_or(0);
    let dated = after_ms / DAY_MS != now_ms / DAY_MS;
    let hint = format!(
        "{node} lacks all {n} divergent writes, from {k} origins, every one made at or after {}: \
         {node} was likely restored from a backup taken about then, or cut off from every peer since",
        utc(after_ms, dated)
    );
    (
        Cause::LostAfter {
            node,
            after_ms,
            keys: n,
            origins: k,
        },
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{NodeId, Version};

    /// 2024-05-01 13:10:00 UTC.
    const NOW_MS: u64 = 1_714_569_000_000;

    /// Keys present only on the peer (missing on local), one per (ms, seq).
    fn missing(writes: &[(u64, u64)], origin: &str) -> Vec<Divergence> {
        let origin = NodeId::new(origin).expect("valid node id");
        let divs = writes.iter().map(|&(ms, seq)| {
            let key = seq.to_be_bytes().to_vec();
            let (logical, origin) = (0, origin.clone());
            let version = Version {
                ms,
                logical,
                origin,
                seq,
            };
            let (tombstone, hash) = (false, 1);
            let peer = Some(EntrySummary {
                key: key.clone(),
                version,
                tombstone,
                hash,
            });
            Divergence {
                key,
                local: None,
                peer,
            }
        });
        divs.collect()
    }

    fn observe(divs: &[Divergence], category: Category, behind: Option<Side>) -> Vec<Observed<'_>> {
        let observed = |div| Observed {
            div,
            category,
            behind,
        };
        divs.iter().map(observed).collect()
    }

    fn opts() -> Options {
        let (local_node, peer_node) = ("node-a".to_string(), "node-b".to_string());
        let now_ms = NOW_MS;
        Options {
            now_ms,
            local_node,
            peer_node,
            ..Options::default()
        }
    }

    fn two_origins() -> Vec<Divergence> {
        let mut divs = missing(&[(NOW_MS - 600_000, 1), (NOW_MS - 590_000, 2)], "node-b");
        divs.extend(missing(&[(NOW_MS - 400_000, 3)], "node-c"));
        divs
    }

    #[test]
    fn a_wiped_side_is_one_cause_not_one_hint_per_origin() {
        let divs = two_origins();
        let obs = observe(&divs, Category::Missing, Some(Side::Local));
        // Per origin, attribution alone reads as two propagation faults.
        let per_origin = attribute(&obs, &opts());
        assert_eq!(per_origin.len(), 2);
        assert!(per_origin.iter().all(|s| s.hint.contains("propagation")));
        let (cause, hint) = single_cause(&obs, &opts(), 0, 1000).expect("one cause");
        assert_eq!(
            cause,
            Cause::Empty {
                node: "node-a".into(),
                keys: 3,
                origins: 2
            }
        );
        assert!(
            hint.starts_with("node-a holds 0 of 1000 entries: it is empty"),
            "{hint}"
        );
        // A few writes taken since the wipe (at most 1%) do not hide it.
        assert!(matches!(
            single_cause(&obs, &opts(), 10, 1000),
            Some((Cause::Empty { .. }, _))
        ));
    }

    #[test]
    fn a_side_behind_on_every_origin_since_a_time_is_one_cause() {
        let divs = two_origins();
        let obs = observe(&divs, Category::Missing, Some(Side::Local));
        let (cause, hint) = single_cause(&obs, &opts(), 900, 1000).expect("one cause");
        assert_eq!(
            cause,
            Cause::LostAfter {
                node: "node-a".into(),
                after_ms: NOW_MS - 600_000,
                keys: 3,
                origins: 2
            }
        );
        assert!(hint.contains("at or after 13:00:00"), "{hint}");
        assert!(hint.contains("restored from a backup"), "{hint}");
    }

    #[test]
    fn no_single_cause_when_one_origin_or_both_sides_lag() {
        let one = missing(&[(NOW_MS - 600_000, 1), (NOW_MS - 500_000, 2)], "node-b");
        let obs = observe(&one, Category::Missing, Some(Side::Local));
        assert_eq!(
            single_cause(&obs, &opts(), 900, 1000),
            None,
            "one origin: its propagation"
        );
        let divs = two_origins();
        let mut obs = observe(&divs, Category::Missing, Some(Side::Local));
        obs[0].behind = Some(Side::Peer);
        assert_eq!(
            single_cause(&obs, &opts(), 0, 1000),
            None,
            "both sides behind somewhere"
        );
        assert_eq!(single_cause(&[], &opts(), 0, 0), None);
    }

    #[test]
    fn writes_of_one_node_ahead_of_the_clock_are_a_clock_jump() {
        let divs = missing(&[(NOW_MS + 60_000, 1), (NOW_MS + 90_000, 2)], "node-b");
        let obs = observe(&divs, Category::FutureVersion, Some(Side::Local));
        let (cause, hint) = single_cause(&obs, &opts(), 1000, 1000).expect("one cause");
        assert_eq!(
            cause,
            Cause::ClockJump {
                node: "node-b".into(),
                keys: 2,
                ahead_ms: 90_000
            }
        );
        assert!(hint.contains("node-b's clock jumped ahead"), "{hint}");
    }

    #[test]
    fn formats_utc_dates_and_times() {
        assert_eq!(utc(0, true), "1970-01-01 00:00:00");
        assert_eq!(utc(951_786_123_000, true), "2000-02-29 01:02:03");
        assert_eq!(utc(1_709_251_199_000, true), "2024-02-29 23:59:59");
        assert_eq!(utc(NOW_MS, false), "13:10:00");
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    }

    #[test]
    fn seq_runs_merge_contiguous_distinct_numbers() {
        let runs = seq_runs([7, 3, 4, 5, 9, 4, u64::MAX].into_iter());
        assert_eq!(runs, vec![(3, 5), (7, 7), (9, 9), (u64::MAX, u64::MAX)]);
    }

    /// The hints `attribute` gives for `divs`, all in `category`, behind local.
    fn hints(divs: &[Divergence], category: Category) -> Vec<String> {
        let got = attribute(&observe(divs, category, Some(Side::Local)), &opts());
        got.into_iter().map(|s| s.hint).collect()
    }

    #[test]
    fn gaps_show_five_runs_but_count_all() {
        let writes: Vec<(u64, u64)> = (0..7).map(|i| (NOW_MS - 600_000 + i, 10 * i)).collect();
        let divs = missing(&writes, "node-c");
        let got = attribute(
            &observe(&divs, Category::Missing, Some(Side::Local)),
            &opts(),
        );
        let gaps = got[0].seq_gaps.clone().expect("missing keys have gaps");
        assert_eq!(
            (gaps.missing_on, gaps.missing, gaps.ranges.len()),
            (Side::Local, 7, 5)
        );
        let want = "(seq 0, 10, 20, 30, 40 and 2 more runs)";
        assert!(got[0].hint.contains(want), "{}", got[0].hint);
    }

    #[test]
    fn a_single_key_reads_in_the_singular_and_dated() {
        let divs = missing(&[(NOW_MS - DAY_MS, 5)], "node-c");
        let want = "the only missing key was written via node-c at 2024-04-30 13:10:00 \
                    (seq 5); node-c's propagation to node-a likely stopped in that window";
        assert_eq!(hints(&divs, Category::Missing), [want]);
        let got = hints(&divs, Category::UnpropagatedDelete);
        assert!(
            got[0].ends_with("once the tombstone is purged"),
            "{}",
            got[0]
        );
    }

    #[test]
    fn keys_without_a_newer_entry_are_skipped() {
        // Behind peer, yet local holds nothing: no newer write to attribute.
        let divs = missing(&[(NOW_MS, 1)], "node-c");
        let observed = observe(&divs, Category::Missing, Some(Side::Peer));
        assert!(attribute(&observed, &opts()).is_empty());
        assert!(attribute(&[], &opts()).is_empty());
    }
}
