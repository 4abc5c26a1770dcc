//! The report of one diff: what an exchange found, why (attribution), and
//! what it cost. One type for every place a report is shown: `mend diff
//! --json` (built from the wire by `mend_rpc::report::report_from_pb`),
//! the webhook body (under `"report"`), the agent's `/status` and its
//! dashboard (each peer's last report, keys cut to a page). Its JSON field
//! names are documented once, by example, in `docs/REPORT.md`; a test
//! holds the example and this type to the same fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attribution::{Cause, Source};
use crate::classify::{Category, Side};
use crate::exchange::EntrySummary;

/// A diff's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffReport {
    /// No key differs and no tree is out of step with its data.
    pub in_sync: bool,
    /// The initiator's node id.
    pub local_node: String,
    /// The peer's node id.
    pub peer_node: String,
    /// Ranges compared.
    pub ranges: Vec<String>,
    /// Compared ranges without versions (keys only missing, differs or
    /// deleted; none repaired automatically).
    pub versionless_ranges: Vec<String>,
    /// Ranges whose roots differed where their entries agreed.
    pub tree_mismatches: Vec<TreeMismatch>,
    /// The peer's clock minus the initiator's, ms (from the handshake).
    pub peer_clock_skew_ms: i64,
    /// Divergent keys found.
    pub divergent_keys: u64,
    /// Divergent keys by category; every category, zeros included.
    pub by_category: BTreeMap<Category, u64>,
    /// The one cause that explains the whole diff, when there is one.
    pub cause: Option<CauseReport>,
    /// Attribution: the largest groups of divergent keys, largest first.
    pub sources: Vec<Source>,
    /// Divergent keys, at most the page the shower chose (`keys_omitted`
    /// counts the rest).
    pub keys: Vec<KeyReport>,
    /// Divergent keys left out of `keys`.
    pub keys_omitted: u64,
    /// Round trips of the exchange.
    pub rounds: u32,
    /// Bytes sent by the initiator.
    pub bytes_sent: u64,
    /// Bytes received by the initiator.
    pub bytes_received: u64,
    /// Tree nodes compared.
    pub nodes_compared: u64,
    /// Leaves compared.
    pub leaves_compared: u64,
    /// Wall time of the exchange, ms.
    pub elapsed_ms: u64,
}

impl DiffReport {
    /// Counts `categories` (each divergent key's) into a map holding every
    /// category.
    pub fn count_categories(categories: impl Iterator<Item = Category>) -> BTreeMap<Category, u64> {
        let mut by: BTreeMap<Category, u64> = Category::ALL.iter().map(|c| (*c, 0)).collect();
        for c in categories {
            *by.entry(c).or_default() += 1;
        }
        by
    }
}

/// A range whose roots differed where the entries agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeMismatch {
    /// Range name.
    pub range: String,
    /// The quiet buckets (hashes differ, entries agree), at most
    /// [`crate::exchange::QUIET_BUCKETS_MAX`].
    pub buckets: Vec<u32>,
    /// Those of them the initiator found out of step with its own data and
    /// rebuilt, online. Empty: the initiator's tree is right, so the
    /// peer's is not (its scrub or its own exchanges fix it), or a
    /// concurrent write settled the difference mid-descent.
    pub fixed: Vec<u32>,
}

/// The single cause of a diff with its hint: `{"kind": ..., <the kind's
/// fields>, "hint": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CauseReport {
    /// The cause (`kind` and its fields).
    #[serde(flatten)]
    pub cause: Cause,
    /// What it means, for a person.
    pub hint: String,
}

/// One divergent key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyReport {
    /// Range.
    pub range: String,
    /// The key as text (invalid UTF-8 replaced; `key_hex` is exact).
    pub key: String,
    /// The key's bytes in hex.
    pub key_hex: String,
    /// Category.
    pub category: Category,
    /// The side behind; `None` for a conflict (no side is).
    pub behind: Option<Side>,
    /// The initiator's entry; `None` where it has none.
    pub local: Option<EntryReport>,
    /// The peer's entry; `None` where it has none.
    pub peer: Option<EntryReport>,
}

impl KeyReport {
    /// A key's report from its bytes.
    pub fn new(
        range: String,
        key: &[u8],
        category: Category,
        behind: Option<Side>,
        local: Option<EntryReport>,
        peer: Option<EntryReport>,
    ) -> KeyReport {
        KeyReport {
            range,
            key: String::from_utf8_lossy(key).into_owned(),
            key_hex: crate::record::hex(key),
            category,
            behind,
            local,
            peer,
        }
    }
}

/// One side's entry of a divergent key: its version and whether it is a
/// tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryReport {
    /// Version: wall-clock ms.
    pub ms: u64,
    /// Version: logical counter.
    pub logical: u32,
    /// Version: origin node.
    pub origin: String,
    /// Version: the origin's sequence number.
    pub seq: u64,
    /// A delete.
    pub tombstone: bool,
}

impl From<&EntrySummary> for EntryReport {
    fn from(e: &EntrySummary) -> EntryReport {
        EntryReport {
            ms: e.version.ms,
            logical: e.version.logical,
            origin: e.version.origin.to_string(),
            seq: e.version.seq,
            tombstone: e.tombstone,
        }
    }
}
