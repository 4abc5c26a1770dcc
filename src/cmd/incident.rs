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
    let mut inc = from_report(summary, keys, now_ms);
    let mut ongoing = false;
    let mut resolved_ms = 0u64;
    for h in history.iter().filter(|h| h.peer == summary.peer_node) {
        match add_run(&mut inc, h) {
            Some(RunEnd::Resolved(at_ms)) => resolved_ms = resolved_ms.max(at_ms),
            Some(RunEnd::Ongoing) => ongoing = true,
            None => {}
        }
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
        add_journaled_repairs(&mut inc, repairs, now_ms);
    } else if !summary.in_sync {
        // Divergence in the report, none in the history yet.
        inc.status = "ongoing".into();
    }
    inc.timeline.sort_by_key(|r| r.at_ms);
    inc
}

/// What the latest report says: the cause or the sources' hints, what is
/// left, the keys. No history yet (status `none`).
fn from_report(summary: &pb::DiffSummary, keys: &[pb::DivergentKey], now_ms: u64) -> Incident {
    let cause = summary.cause.as_ref().map(|c| c.hint.clone());
    let why = match cause {
        None => summary.sources.iter().map(|s| s.hint.clone()).collect(),
        Some(_) => Vec::new(),
    };
    Incident {
        local_node: summary.local_node.clone(),
        peer: summary.peer_node.clone(),
        generated_ms: now_ms,
        status: "none".into(),
        since_ms: 0,
        first_seen_ms: 0,
        resolved_ms: 0,
        peak_keys: 0,
        peak_ms: 0,
        cause,
        why,
        repaired: Vec::new(),
        left: nonzero(&summary.by_category),
        keys: keys
            .iter()
            .take(KEYS_MAX)
            .map(|k| KeyRow {
                range: k.range.clone(),
                key: String::from_utf8_lossy(&k.key).into_owned(),
                category: super::names::category_name(k.category).to_string(),
                behind: super::names::side_name(k.behind)
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect(),
        keys_not_listed: keys.len().saturating_sub(KEYS_MAX) as u64,
        timeline: Vec::new(),
    }
}

/// The non-zero counts of `by_category`.
fn nonzero(by_category: &[pb::CategoryCount]) -> BTreeMap<String, u64> {
    by_category
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| (super::names::category_name(c.category).to_string(), c.count))
        .collect()
}

/// How one range's run of divergent exchanges ended.
enum RunEnd {
    /// An exchange at this time found none.
    Resolved(u64),
    /// The latest exchange still found some.
    Ongoing,
}

/// Adds the latest run of divergent exchanges of one range's history to
/// `inc` (its start, peak, the playbook's repairs, its timeline); `None`
/// when the range never diverged.
fn add_run(inc: &mut Incident, h: &pb::PeerHistory) -> Option<RunEnd> {
    let recs = &h.records;
    // The latest exchange that found divergence ends the incident's run.
    let end = recs.iter().rposition(|r| r.divergent_keys > 0)?;
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
    let upto = (end + 2).min(recs.len());
    let from = upto.saturating_sub(TIMELINE_MAX).max(start);
    inc.timeline.extend(recs[from..upto].iter().map(|r| Row {
        range: h.range.clone(),
        at_ms: r.at_ms,
        divergent_keys: r.divergent_keys,
        by_category: nonzero(&r.by_category),
        action: r.action.clone(),
    }));
    Some(match recs.get(end + 1) {
        Some(after) => RunEnd::Resolved(after.at_ms),
        None => RunEnd::Ongoing,
    })
}

/// Lists the journaled repairs (`repairs`, newest first) that started
/// during the incident and are not listed yet.
fn add_journaled_repairs(inc: &mut Incident, repairs: &[String], now_ms: u64) {
    let until = if inc.resolved_ms > 0 {
        inc.resolved_ms
    } else {
        now_ms
    };
    for id in repairs.iter().rev() {
        let during = repair_started_ms(id).is_some_and(|ms| ms >= inc.first_seen_ms && ms <= until);
        if during && !inc.repaired.iter().any(|r| r.contains(id.as_str())) {
            inc.repaired.push(format!(
                "repair {id} (journal; `mend undo --agent AGENT {id}` takes it back)"
            ));
        }
    }
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

/// Appends `s` and a line break.
fn line(o: &mut String, s: &str) {
    o.push_str(s);
    o.push('\n');
}

/// The incident as Markdown, for a postmortem document.
pub fn markdown(i: &Incident) -> String {
    let mut o = String::new();
    md_summary(&mut o, i);
    if !i.why.is_empty() {
        line(&mut o, "## Why");
        line(&mut o, "");
        for w in &i.why {
            line(&mut o, &format!("- {}", cell(w)));
        }
        line(&mut o, "");
    }
    line(&mut o, "## What was repaired");
    line(&mut o, "");
    if i.repaired.is_empty() {
        line(&mut o, "- nothing by the playbook during the incident");
    }
    for r in &i.repaired {
        line(&mut o, &format!("- {}", cell(r)));
    }
    line(&mut o, "");
    md_left(&mut o, i);
    md_timeline(&mut o, i);
    o
}

/// The title and the summary: status, since when, peak, cause.
fn md_summary(o: &mut String, i: &Incident) {
    line(
        o,
        &format!("# Divergence between {} and {}", i.local_node, i.peer),
    );
    line(o, "");
    line(
        o,
        &format!(
            "Generated {} by mend {}.",
            utc(i.generated_ms),
            env!("CARGO_PKG_VERSION")
        ),
    );
    line(o, "");
    line(o, "## Summary");
    line(o, "");
    let left: u64 = i.left.values().sum();
    line(
        o,
        &match i.status.as_str() {
            "ongoing" => {
                format!("- Status: **ongoing**, {left} keys divergent at the latest exchange")
            }
            "resolved" => format!("- Status: **resolved** at {}", utc(i.resolved_ms)),
            _ => "- Status: **no divergence** in the kept history".into(),
        },
    );
    if i.first_seen_ms > 0 {
        line(
            o,
            &format!(
                "- Since: about {} (first seen by an exchange at {})",
                utc(i.since_ms),
                utc(i.first_seen_ms)
            ),
        );
        line(
            o,
            &format!("- Peak: {} keys at {}", i.peak_keys, utc(i.peak_ms)),
        );
    }
    match &i.cause {
        Some(c) => line(o, &format!("- Cause: {}", cell(c))),
        None if !i.why.is_empty() => line(o, &format!("- Cause: {} sources, below", i.why.len())),
        None => {}
    }
    line(o, "");
}

/// What is left: counts by category and the keys.
fn md_left(o: &mut String, i: &Incident) {
    line(o, "## What is left");
    line(o, "");
    if i.left.is_empty() {
        line(
            o,
            "- nothing: the latest exchange found the replicas in sync",
        );
    } else {
        line(o, "| category | keys |");
        line(o, "|---|---:|");
        for (c, n) in &i.left {
            line(o, &format!("| {c} | {n} |"));
        }
        line(o, "");
        line(o, "| range | key | category | behind |");
        line(o, "|---|---|---|---|");
        for k in &i.keys {
            line(
                o,
                &format!(
                    "| {} | `{}` | {} | {} |",
                    cell(&k.range),
                    cell(&k.key).replace('`', "'"),
                    k.category,
                    if k.behind.is_empty() { "-" } else { &k.behind }
                ),
            );
        }
        if i.keys_not_listed > 0 {
            line(o, &format!("\n{} more keys not listed.", i.keys_not_listed));
        }
    }
    line(o, "");
}

/// The timeline of exchanges, when there is one.
fn md_timeline(o: &mut String, i: &Incident) {
    if i.timeline.is_empty() {
        return;
    }
    line(o, "## Timeline");
    line(o, "");
    line(o, "| time | range | divergent | by category | action |");
    line(o, "|---|---|---:|---|---|");
    for r in &i.timeline {
        line(
            o,
            &format!(
                "| {} | {} | {} | {} | {} |",
                utc(r.at_ms),
                cell(&r.range),
                r.divergent_keys,
                categories(&r.by_category),
                cell(&r.action)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at_ms: u64, keys: u64, action: &str) -> pb::ExchangeRecord {
        pb::ExchangeRecord {
            at_ms,
            divergent_keys: keys,
            by_category: vec![pb::CategoryCount {
                category: pb::Category::Missing as i32,
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
                category: pb::Category::Missing as i32,
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
        s.cause = Some(pb::Cause {
            kind: pb::CauseKind::Empty as i32,
            node: "node-b".into(),
            hint: "node-b holds 0 of 300 entries: it is empty | wiped".into(),
            ..Default::default()
        });
        let keys = vec![pb::DivergentKey {
            range: "default".into(),
            key: b"k|1".to_vec(),
            category: pb::Category::Missing as i32,
            behind: pb::Side::Peer as i32,
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
