//! `mend report --format markdown|json`: a per-incident summary for a
//! postmortem, from the agent's persisted drift history with one peer and
//! its latest report: what diverged, since when, why (the single cause when
//! one explains it, else the attribution sources), what was repaired, and
//! what is left.
//!
//! The incident of a (peer, range) is the latest run of consecutive
//! exchanges that found divergence, up to the first exchange after it that
//! found none (then it is resolved). Pure: [`incident`] and [`markdown`]
//! take what the agent answered and the time.

use std::collections::BTreeMap;

use mend_rpc::pb;
use serde::Serialize;

/// Timeline rows a report keeps per range (the newest).
pub const TIMELINE_MAX: usize = 50;

/// Keys a report lists.
pub const KEYS_MAX: usize = 50;

/// One incident with one peer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Incident {
    /// This agent's node.
    pub local_node: String,
    /// The peer.
    pub peer: String,
    /// When the report was made, ms.
    pub generated_ms: u64,
    /// `ongoing`, `resolved`, or `none` (no divergence in the history).
    pub status: String,
    /// Earliest estimate of when the divergence began: the first exchange
    /// that saw it minus its oldest divergence, ms (0 = none).
    pub since_ms: u64,
    /// First exchange that saw it.
    pub first_seen_ms: u64,
    /// The exchange that found it gone (0 while ongoing).
    pub resolved_ms: u64,
    /// Most divergent keys in one exchange of the incident.
    pub peak_keys: u64,
    /// When the peak was seen.
    pub peak_ms: u64,
    /// The single cause, when one explains the latest report.
    pub cause: Option<String>,
    /// Otherwise the sources' hints, largest first.
    pub why: Vec<String>,
    /// What the playbook did during the incident (repairs with their ids).
    pub repaired: Vec<String>,
    /// Divergent keys now, by category (the latest report).
    pub left: BTreeMap<String, u64>,
    /// The latest report's divergent keys (at most [`KEYS_MAX`]).
    pub keys: Vec<KeyRow>,
    /// Keys not listed.
    pub keys_not_listed: u64,
    /// The exchanges of the incident per range, oldest first.
    pub timeline: Vec<Row>,
}

/// One exchange in the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Range.
    pub range: String,
    /// When.
    pub at_ms: u64,
    /// Divergent keys.
    pub divergent_keys: u64,
    /// By category (non-zero).
    pub by_category: BTreeMap<String, u64>,
    /// What the playbook did.
    pub action: String,
}

/// A key left divergent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyRow {
    /// Range.
    pub range: String,
    /// The key (lossy UTF-8).
    pub key: String,
    /// Category.
    pub category: String,
    /// The side behind.
    pub behind: String,
}

/// When a repair id says it started: ids are `node-MS-RANDOM`
/// (`repair::new_repair_id`).
fn repair_started_ms(id: &str) -> Option<u64> {
    let mut parts = id.rsplitn(3, '-');
    let _random = parts.next()?;
    parts.next()?.parse().ok()
}

/// The incident of `peer` from its history, its latest report, and the
/// ids of journaled repairs this agent ran (newest first: those started
/// during the incident are listed as repaired, on demand or scheduled).
pub fn incident(
    history: &[pb::PeerHistory],
    summary: &pb::DiffSummary,
    keys: &[pb::DivergentKey],
    repairs: &[String],
    now_ms: u64,
) -> Incident {
    let mut inc = Incident {
        local_node: summary.local_node.clone(),
        peer: summary.peer_node.clone(),
        generated_ms: now_ms,
        status: "none".into(),
        since_ms: 0,
        first_seen_ms: 0,
        resolved_ms: 0,
        peak_keys: 0,
        peak_ms: 0,
        cause: (!summary.cause.is_empty()).then(|| summary.cause.clone()),
        why: Vec::new(),
        repaired: Vec::new(),
        left: summary
            .by_category
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| (c.category.clone(), c.count))
            .collect(),
        keys: keys
            .iter()
            .take(KEYS_MAX)
            .map(|k| KeyRow {
                range: k.range.clone(),
                key: String::from_utf8_lossy(&k.key).into_owned(),
                category: k.category.clone(),
                behind: k.behind.clone(),
            })
            .collect(),
        keys_not_listed: keys.len().saturating_sub(KEYS_MAX) as u64,
        timeline: Vec::new(),
    };
    if inc.cause.is_none() {
        inc.why = summary.sources.iter().map(|s| s.hint.clone()).collect();
    }
    let mut ongoing = false;
    let mut resolved_ms = 0u64;
    for h in history.iter().filter(|h| h.peer == summary.peer_node) {
        let recs = &h.records;
        // The latest exchange that found divergence ends the incident's run.
        let Some(end) = recs.iter().rposition(|r| r.divergent_keys > 0) else {
            continue;
        };
        let start = recs[..end]
            .iter()
            .rposition(|r| r.divergent_keys == 0)
            .map_or(0, |i| i + 1);
        let run = &recs[start..=end];
        let first = &run[0];
        let began = first.at_ms.saturating_sub(first.oldest_divergence_ms);
        if inc.since_ms == 0 || began < inc.since_ms {
            inc.since_ms = began;
        }
        if inc.first_seen_ms == 0 || first.at_ms < inc.first_seen_ms {
            inc.first_seen_ms = first.at_ms;
        }
        for r in run {
            if r.divergent_keys > inc.peak_keys {
                inc.peak_keys = r.divergent_keys;
                inc.peak_ms = r.at_ms;
            }
            if r.action.starts_with("repair") && !inc.repaired.contains(&r.action) {
                inc.repaired.push(r.action.clone());
            }
        }
        match recs.get(end + 1) {
            Some(after) => resolved_ms = resolved_ms.max(after.at_ms),
            None => ongoing = true,
        }
        let upto = (end + 2).min(recs.len());
        let from = upto.saturating_sub(TIMELINE_MAX).max(start);
        inc.timeline.extend(recs[from..upto].iter().map(|r| {
            Row {
                range: h.range.clone(),
                at_ms: r.at_ms,
                divergent_keys: r.divergent_keys,
                by_category: r
                    .by_category
                    .iter()
                    .filter(|c| c.count > 0)
                    .map(|c| (c.category.clone(), c.count))
                    .collect(),
                action: r.action.clone(),
            }
        }));
    }
    if inc.first_seen_ms > 0 {
        inc.status = if ongoing || !summary.in_sync {
            "ongoing"
        } else {
            "resolved"
        }
        .into();
        if inc.status == "resolved" {
            inc.resolved_ms = resolved_ms;
        }
    } else if !summary.in_sync {
        // Divergence in the report, none in the history yet.
        inc.status = "ongoing".into();
    }
    if inc.first_seen_ms > 0 {
        let until = if inc.resolved_ms > 0 {
            inc.resolved_ms
        } else {
            now_ms
        };
        for id in repairs.iter().rev() {
            let during =
                repair_started_ms(id).is_some_and(|ms| ms >= inc.first_seen_ms && ms <= until);
            if during && !inc.repaired.iter().any(|r| r.contains(id.as_str())) {
                inc.repaired.push(format!(
                    "repair {id} (journal; `mend undo --agent AGENT {id}` takes it back)"
                ));
            }
        }
    }
    inc.timeline.sort_by_key(|r| r.at_ms);
    inc
}

/// `YYYY-MM-DD HH:MM:SS UTC`, by the formatter the attribution hints use.
pub fn utc(ms: u64) -> String {
    format!("{} UTC", mend_core::attribution::utc(ms, true))
}

fn cell(s: &str) -> String {
    // A table cell: no row breaks, no column breaks.
    s.replace('|', "\\|").replace('\n', " ")
}

fn categories(m: &BTreeMap<String, u64>) -> String {
    let v: Vec<String> = m.iter().map(|(c, n)| format!("{c} {n}")).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// The incident as Markdown, for a postmortem document.
pub fn markdown(i: &Incident) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!(
        "# Divergence between {} and {}",
        i.local_node, i.peer
    ));
    line(String::new());
    line(format!(
        "Generated {} by mend {}.",
        utc(i.generated_ms),
        env!("CARGO_PKG_VERSION")
    ));
    line(String::new());
    line("## Summary".into());
    line(String::new());
    let left: u64 = i.left.values().sum();
    line(match i.status.as_str() {
        "ongoing" => format!("- Status: **ongoing**, {left} keys divergent at the latest exchange"),
        "resolved" => format!("- Status: **resolved** at {}", utc(i.resolved_ms)),
        _ => "- Status: **no divergence** in the kept history".into(),
    });
    if i.first_seen_ms > 0 {
        line(format!(
            "- Since: about {} (first seen by an exchange at {})",
            utc(i.since_ms),
            utc(i.first_seen_ms)
        ));
        line(format!(
            "- Peak: {} keys at {}",
            i.peak_keys,
            utc(i.peak_ms)
        ));
    }
    match &i.cause {
        Some(c) => line(format!("- Cause: {}", cell(c))),
        None if !i.why.is_empty() => line(format!("- Cause: {} sources, below", i.why.len())),
        None => {}
    }
    line(String::new());
    if !i.why.is_empty() {
        line("## Why".into());
        line(String::new());
        for w in &i.why {
            line(format!("- {}", cell(w)));
        }
        line(String::new());
    }
    line("## What was repaired".into());
    line(String::new());
    if i.repaired.is_empty() {
        line("- nothing by the playbook during the incident".into());
    }
    for r in &i.repaired {
        line(format!("- {}", cell(r)));
    }
    line(String::new());
    line("## What is left".into());
    line(String::new());
    if i.left.is_empty() {
        line("- nothing: the latest exchange found the replicas in sync".into());
    } else {
        line("| category | keys |".into());
        line("|---|---:|".into());
        for (c, n) in &i.left {
            line(format!("| {c} | {n} |"));
        }
        line(String::new());
        line("| range | key | category | behind |".into());
        line("|---|---|---|---|".into());
        for k in &i.keys {
            line(format!(
                "| {} | `{}` | {} | {} |",
                cell(&k.range),
                cell(&k.key).replace('`', "'"),
                k.category,
                if k.behind.is_empty() { "-" } else { &k.behind }
            ));
        }
        if i.keys_not_listed > 0 {
            line(format!("\n{} more keys not listed.", i.keys_not_listed));
        }
    }
    line(String::new());
    if !i.timeline.is_empty() {
        line("## Timeline".into());
        line(String::new());
        line("| time | range | divergent | by category | action |".into());
        line("|---|---|---:|---|---|".into());
        for r in &i.timeline {
            line(format!(
                "| {} | {} | {} | {} | {} |",
                utc(r.at_ms),
                cell(&r.range),
                r.divergent_keys,
                categories(&r.by_category),
                cell(&r.action)
            ));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at_ms: u64, keys: u64, action: &str) -> pb::ExchangeRecord {
        pb::ExchangeRecord {
            at_ms,
            divergent_keys: keys,
            by_category: vec![pb::CategoryCount {
                category: "missing".into(),
                count: keys,
            }],
            oldest_divergence_ms: if keys > 0 { 5_000 } else { 0 },
            action: action.into(),
            ..Default::default()
        }
    }

    fn history(recs: Vec<pb::ExchangeRecord>) -> Vec<pb::PeerHistory> {
        vec![pb::PeerHistory {
            peer: "node-b".into(),
            range: "default".into(),
            records: recs,
            ..Default::default()
        }]
    }

    fn summary(in_sync: bool, left: u64) -> pb::DiffSummary {
        pb::DiffSummary {
            in_sync,
            local_node: "node-a".into(),
            peer_node: "node-b".into(),
            by_category: vec![pb::CategoryCount {
                category: "missing".into(),
                count: left,
            }],
            sources: vec![pb::Source {
                hint: "all 3 missing keys were written via node-a".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_resolved_incident_has_its_window_peak_and_repair() {
        let h = history(vec![
            rec(1_000_000, 0, "report"),
            rec(1_060_000, 2, "report"),
            rec(1_120_000, 3, "repaired 3 keys (node-a-1-ab)"),
            rec(1_180_000, 0, "report"),
        ]);
        let journal = [
            "node-a-1150000-00ff".to_string(),
            "node-a-900000-0001".to_string(),
        ];
        let i = incident(&h, &summary(true, 0), &[], &journal, 2_000_000);
        assert_eq!(i.status, "resolved");
        assert_eq!((i.first_seen_ms, i.since_ms), (1_060_000, 1_055_000));
        assert_eq!((i.peak_keys, i.peak_ms), (3, 1_120_000));
        assert_eq!(i.resolved_ms, 1_180_000);
        assert_eq!(
            i.repaired,
            [
                "repaired 3 keys (node-a-1-ab)",
                "repair node-a-1150000-00ff (journal; `mend undo --agent AGENT node-a-1150000-00ff` takes it back)"
            ],
            "the playbook's repair, and the journal's repair made during the incident (not the older one)"
        );
        assert_eq!(
            i.timeline.len(),
            3,
            "the incident's exchanges and the one that found it gone"
        );
        let md = markdown(&i);
        assert!(
            md.contains("- Status: **resolved** at 1970-01-01 00:19:40 UTC"),
            "{md}"
        );
        assert!(
            md.contains("- Peak: 3 keys at 1970-01-01 00:18:40 UTC"),
            "{md}"
        );
        assert!(md.contains("- repaired 3 keys (node-a-1-ab)"), "{md}");
        assert!(md.contains("nothing: the latest exchange found the replicas in sync"));
    }

    #[test]
    fn an_ongoing_incident_names_its_cause_and_what_is_left() {
        let h = history(vec![
            rec(1_000_000, 0, "report"),
            rec(1_060_000, 3, "report"),
        ]);
        let mut s = summary(false, 3);
        s.cause = "node-b holds 0 of 300 entries: it is empty | wiped".into();
        let keys = vec![pb::DivergentKey {
            range: "default".into(),
            key: b"k|1".to_vec(),
            category: "missing".into(),
            behind: "peer".into(),
            ..Default::default()
        }];
        let i = incident(&h, &s, &keys, &[], 2_000_000);
        assert_eq!(i.status, "ongoing");
        assert!(
            i.why.is_empty(),
            "a single cause replaces the per-source hints"
        );
        let md = markdown(&i);
        assert!(
            md.contains("- Status: **ongoing**, 3 keys divergent"),
            "{md}"
        );
        assert!(
            md.contains("- Cause: node-b holds 0 of 300 entries: it is empty \\| wiped"),
            "{md}"
        );
        assert!(
            md.contains("| default | `k\\|1` | missing | peer |"),
            "{md}"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_786_123_000), "2000-02-29 01:02:03 UTC");
        assert_eq!(utc(1_796_305_241_691), "2026-12-03 13:40:41 UTC");
    }
}
