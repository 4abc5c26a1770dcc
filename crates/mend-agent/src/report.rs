//! Reports: a diff outcome with its attribution, as the one report type
//! ([`DiffReport`]) that the wire (`mend_rpc::report`), `mend diff --json`,
//! the webhook body, `/status` and the dashboard all show.

use mend_core::attribution::{Cause, Options, Source, attribute, single_cause};
use mend_core::report::{CauseReport, DiffReport, EntryReport, KeyReport};

use crate::outcome::{DiffOutcome, DivergentKey};

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
    let observed = o.observed();
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

/// The report of `d` with its attribution `a` and its first `keys_max`
/// keys (the rest counted in `keys_omitted`).
pub fn build(d: &DiffOutcome, a: &Attribution, keys_max: usize) -> DiffReport {
    DiffReport {
        in_sync: d.in_sync(),
        local_node: d.local_node.clone(),
        peer_node: d.peer_node.clone(),
        ranges: d.ranges.clone(),
        versionless_ranges: d.versionless_ranges.clone(),
        tree_mismatches: d.tree_mismatches.clone(),
        peer_clock_skew_ms: d.peer_clock_skew_ms,
        divergent_keys: d.keys.len() as u64,
        by_category: DiffReport::count_categories(d.keys.iter().map(|k| k.category)),
        cause: a.cause.as_ref().map(|(cause, hint)| CauseReport {
            cause: cause.clone(),
            hint: hint.clone(),
        }),
        sources: a.sources.clone(),
        keys: d.keys.iter().take(keys_max).map(key_report).collect(),
        keys_omitted: d.keys.len().saturating_sub(keys_max) as u64,
        rounds: d.cost.rounds,
        bytes_sent: d.cost.bytes_sent,
        bytes_received: d.cost.bytes_received,
        nodes_compared: d.cost.nodes_compared,
        leaves_compared: d.cost.leaves_compared,
        elapsed_ms: d.elapsed.as_millis() as u64,
    }
}

/// One divergent key's report.
pub fn key_report(k: &DivergentKey) -> KeyReport {
    KeyReport::new(
        k.range.clone(),
        &k.div.key,
        k.category,
        k.behind,
        k.div.local.as_ref().map(EntryReport::from),
        k.div.peer.as_ref().map(EntryReport::from),
    )
}
