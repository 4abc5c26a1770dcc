//! Reports: a diff outcome with its attribution (`sources`), as wire
//! messages and as the JSON posted to webhooks.

use serde_json::{Value, json};

use mend_core::attribution::{Cause, Observed, Options, Source, attribute, single_cause};
use mend_core::classify::Category;
use mend_core::exchange::EntrySummary;
use mend_rpc::enums::{category_to_pb, side_to_pb};
use mend_rpc::pb;

use crate::outcome::DiffOutcome;

/// Sources shown per report.
pub const SOURCES_MAX: usize = 10;

/// Window gap that splits attribution sources, ms.
pub const SOURCE_WINDOW_GAP_MS: u64 = 60_000;

/// Attribution of a diff: the largest groups of divergent keys with
/// hints, and the single cause when one explains the whole diff.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// Largest first, at most [`SOURCES_MAX`].
    pub sources: Vec<Source>,
    /// One cause of everything, with its hint.
    pub cause: Option<(Cause, String)>,
}

/// Attributes `o` at `now_ms`.
pub fn attribution(o: &DiffOutcome, now_ms: u64, window_gap_ms: u64) -> Attribution {
    let observed: Vec<Observed<'_>> = o
        .keys
        .iter()
        .map(|k| Observed {
            div: &k.div,
            category: k.category,
            behind: k.behind,
        })
        .collect();
    let opts = Options {
        window_gap_ms,
        sources_max: SOURCES_MAX,
        now_ms,
        local_node: o.local_node.clone(),
        peer_node: o.peer_node.clone(),
    };
    Attribution {
        sources: attribute(&observed, &opts),
        cause: single_cause(&observed, &opts, o.entries_local, o.entries_peer),
    }
}

/// The wire name of a cause's kind (`DiffSummary.cause_kind`).
pub fn cause_kind(c: &Cause) -> &'static str {
    match c {
        Cause::Empty { .. } => "empty",
        Cause::LostAfter { .. } => "lost_after",
        Cause::ClockJump { .. } => "clock_jump",
    }
}

/// The cause as JSON, as `mend diff --json` prints it from the wire:
/// `{"kind": ..., "hint": ...}`, or null.
pub fn cause_json(c: &Option<(Cause, String)>) -> Value {
    match c {
        Some((cause, hint)) => json!({"kind": cause_kind(cause), "hint": hint}),
        None => Value::Null,
    }
}

/// A source as a wire message.
pub fn source_pb(s: &Source) -> pb::Source {
    pb::Source {
        category: category_to_pb(s.category),
        origin: s.origin.clone(),
        newer_side: side_to_pb(Some(s.newer_side)),
        count: s.count,
        first_ms: s.first_ms,
        last_ms: s.last_ms,
        seq_min: s.seq_min,
        seq_max: s.seq_max,
        seq_missing_on: side_to_pb(s.seq_gaps.as_ref().map(|g| g.missing_on)),
        seq_missing: s.seq_gaps.as_ref().map(|g| g.missing).unwrap_or(0),
        seq_gaps: s
            .seq_gaps
            .as_ref()
            .map(|g| {
                g.ranges
                    .iter()
                    .map(|(a, b)| pb::SeqRange {
                        first: *a,
                        last: *b,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        hint: s.hint.clone(),
    }
}

/// The summary message of a diff, with its attribution.
pub fn summary_pb(d: &DiffOutcome, a: &Attribution) -> pb::DiffSummary {
    let sources = &a.sources;
    let by_category = Category::ALL
        .iter()
        .map(|c| pb::CategoryCount {
            category: category_to_pb(*c),
            count: d.keys.iter().filter(|k| k.category == *c).count() as u64,
        })
        .collect();
    pb::DiffSummary {
        in_sync: d.in_sync(),
        tree_mismatches: d
            .tree_mismatches
            .iter()
            .map(|m| pb::TreeMismatch {
                range: m.range.clone(),
                buckets: m.buckets.clone(),
                fixed: m.fixed.clone(),
            })
            .collect(),
        peer_clock_skew_ms: d.peer_clock_skew_ms,
        divergent_keys: d.keys.len() as u64,
        by_category,
        rounds: d.cost.rounds,
        bytes_sent: d.cost.bytes_sent,
        bytes_received: d.cost.bytes_received,
        nodes_compared: d.cost.nodes_compared,
        leaves_compared: d.cost.leaves_compared,
        elapsed_ms: d.elapsed.as_millis() as u64,
        local_node: d.local_node.clone(),
        peer_node: d.peer_node.clone(),
        ranges: d.ranges.clone(),
        versionless_ranges: d.versionless_ranges.clone(),
        sources: sources.iter().map(source_pb).collect(),
        cause: a
            .cause
            .as_ref()
            .map(|(_, hint)| hint.clone())
            .unwrap_or_default(),
        cause_kind: a
            .cause
            .as_ref()
            .map(|(c, _)| cause_kind(c).to_string())
            .unwrap_or_default(),
    }
}

fn side_json(e: &Option<EntrySummary>) -> Value {
    match e {
        Some(e) => {
            json!({"ms": e.version.ms, "logical": e.version.logical, "origin": e.version.origin.as_str(), "seq": e.version.seq, "tombstone": e.tombstone})
        }
        None => Value::Null,
    }
}

/// The report as JSON (webhooks, under `"report"`). Built here from the
/// outcome, while `mend diff --json` is built by hand from the wire summary
/// (`src/cmd/diff.rs`), and the two differ:
///
/// - `nodes_compared` and `leaves_compared` are in `mend diff --json` only;
/// - each source's sequence gaps: here `seq_gaps` is `null` or one object
///   `{"missing_on", "missing", "ranges": [[first, last], ...]}` (the
///   serde form of `mend_core::attribution::SeqGaps`); `mend diff --json`
///   has three flat fields, `seq_missing_on` (`null` when none),
///   `seq_missing` (0 when none) and `seq_gaps` (the `[first, last]`
///   pairs alone, `[]` when none).
///
/// Every other field has the same name and shape in both.
pub fn to_json(d: &DiffOutcome, a: &Attribution) -> Value {
    let sources = &a.sources;
    let mut by_category = serde_json::Map::new();
    for c in Category::ALL {
        by_category.insert(
            c.as_str().into(),
            json!(d.keys.iter().filter(|k| k.category == c).count()),
        );
    }
    json!({
        "in_sync": d.in_sync(),
        "tree_mismatches": d.tree_mismatches,
        "peer_clock_skew_ms": d.peer_clock_skew_ms,
        "divergent_keys": d.keys.len(),
        "by_category": by_category,
        "sources": sources,
        "cause": cause_json(&a.cause),
        "keys": d.keys.iter().map(|k| json!({
            "range": k.range,
            "key": String::from_utf8_lossy(&k.div.key),
            "key_hex": mend_core::record::hex(&k.div.key),
            "category": k.category.as_str(),
            "behind": k.behind.map(|s| s.as_str()),
            "local": side_json(&k.div.local),
            "peer": side_json(&k.div.peer),
        })).collect::<Vec<_>>(),
        "rounds": d.cost.rounds,
        "bytes_sent": d.cost.bytes_sent,
        "bytes_received": d.cost.bytes_received,
        "elapsed_ms": d.elapsed.as_millis() as u64,
        "local_node": d.local_node,
        "peer_node": d.peer_node,
        "ranges": d.ranges,
        "versionless_ranges": d.versionless_ranges,
    })
}
