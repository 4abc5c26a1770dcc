//! `mend diff`: the agent at `--agent` runs the exchange against `--peer`;
//! prints a verdict, a table by category, then the keys (human), or all of
//! it as JSON. Exit 1 when the replicas diverge.

use std::process::ExitCode;

use mend_core::report::DiffReport;
use mend_rpc::pb;
use serde_json::Value;

use super::names::{category_name, side_name};
use super::operator;
use super::{runtime, status_err};
use crate::cli::DiffArgs;
use crate::output::{human_bytes, print_json};

/// A diff's keys and summary as received, and the report they make.
pub struct Received {
    /// Divergent keys.
    pub keys: Vec<pb::DivergentKey>,
    /// The summary.
    pub summary: pb::DiffSummary,
    /// The report (what `--json` prints).
    pub report: DiffReport,
}

impl Received {
    /// The report a `Diff` stream carried; an enum value this CLI does not
    /// know (a newer agent) is an error naming the field.
    pub fn new(
        agent: &str,
        keys: Vec<pb::DivergentKey>,
        summary: pb::DiffSummary,
    ) -> anyhow::Result<Received> {
        let report =
            mend_rpc::report::report_from_pb(&keys, &summary).map_err(|s| status_err(agent, s))?;
        Ok(Received {
            keys,
            summary,
            report,
        })
    }
}

/// Runs a diff through the agent's Operator service.
pub async fn fetch(agent: &str, peer: &str, range: Option<String>) -> anyhow::Result<Received> {
    let mut c = operator(agent).await?;
    let mut stream = c
        .diff(pb::DiffRequest {
            peer: peer.to_string(),
            range: range.unwrap_or_default(),
        })
        .await
        .map_err(|s| status_err(agent, s))?
        .into_inner();
    let mut keys = Vec::new();
    let mut summary = None;
    while let Some(ev) = stream.message().await.map_err(|s| status_err(agent, s))? {
        match ev.event {
            Some(pb::diff_event::Event::Key(k)) => keys.push(k),
            Some(pb::diff_event::Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    let summary = summary
        .ok_or_else(|| anyhow::anyhow!("agent {agent}: diff stream ended without a summary"))?;
    Received::new(agent, keys, summary)
}

/// The JSON report of a diff ([`DiffReport`]: its fields are documented in
/// `docs/REPORT.md`).
pub fn to_json(r: &Received) -> Value {
    serde_json::to_value(&r.report).unwrap_or(Value::Null)
}

fn short_version(e: &Option<pb::EntryVersion>) -> String {
    match e {
        Some(e) if e.present => {
            let v = e.version.clone().unwrap_or_default();
            format!(
                "{}{}@{}#{}",
                if e.tombstone { "DEL " } else { "" },
                v.ms,
                v.origin,
                v.seq
            )
        }
        _ => "-".into(),
    }
}

/// Peer clock skew the human report mentions (always in `--json`), ms.
const SKEW_SHOWN_MS: u64 = 500;

/// Prints the human report.
pub fn print_human(r: &Received, show: usize) {
    let s = &r.summary;
    for m in &s.tree_mismatches {
        println!(
            "TREE MISMATCH in range {}: roots differ where entries agree, {} bucket(s) {:?}; {}",
            m.range,
            m.buckets.len(),
            &m.buckets[..m.buckets.len().min(8)],
            if m.fixed.is_empty() {
                "this side's tree verifies against its data: the peer's tree is out of step (its scrub fixes it)".to_string()
            } else {
                format!("{} rebuilt here from the data", m.fixed.len())
            }
        );
    }
    if s.peer_clock_skew_ms.unsigned_abs() >= SKEW_SHOWN_MS {
        println!(
            "CLOCK SKEW: {}'s clock is {:+} ms from {}'s",
            s.peer_node, s.peer_clock_skew_ms, s.local_node
        );
    }
    for r in &s.versionless_ranges {
        println!(
            "VERSIONLESS range {r}: its store keeps no versions, so keys are only missing, \
             differs or deleted (no side is known to be newer) and none is repaired automatically"
        );
    }
    if s.in_sync {
        println!(
            "IN SYNC: {} and {} agree on {} range(s) ({} rounds, {} sent, {} received, {} ms)",
            s.local_node,
            s.peer_node,
            s.ranges.len(),
            s.rounds,
            human_bytes(s.bytes_sent),
            human_bytes(s.bytes_received),
            s.elapsed_ms
        );
        return;
    }
    if s.divergent_keys == 0 {
        return;
    }
    println!(
        "DIVERGED: {} keys differ between {} (local) and {} (peer) ({} rounds, {} sent, {} received, {} ms)",
        s.divergent_keys,
        s.local_node,
        s.peer_node,
        s.rounds,
        human_bytes(s.bytes_sent),
        human_bytes(s.bytes_received),
        s.elapsed_ms
    );
    println!();
    println!("  {:<22} {:>8}", "category", "keys");
    for c in &s.by_category {
        if c.count > 0 {
            println!("  {:<22} {:>8}", category_name(c.category), c.count);
        }
    }
    if let Some(c) = &s.cause {
        println!();
        println!("  one cause explains it all: {}", c.hint);
    }
    if !s.sources.is_empty() {
        println!();
        println!("  likely sources:");
        for x in s.sources.iter().take(5) {
            println!("  - {}", x.hint);
        }
    }
    println!();
    println!(
        "  {:<28} {:<20} {:<7} {:<32} {:<32}",
        "key", "category", "behind", "local", "peer"
    );
    for k in r.keys.iter().take(show) {
        let key = String::from_utf8_lossy(&k.key);
        let key: String = if key.chars().count() > 28 {
            key.chars().take(27).chain(['…']).collect()
        } else {
            key.into()
        };
        println!(
            "  {:<28} {:<20} {:<7} {:<32} {:<32}",
            key,
            category_name(k.category),
            side_name(k.behind).unwrap_or("-"),
            short_version(&k.local),
            short_version(&k.peer)
        );
    }
    if r.keys.len() > show {
        println!("  … and {} more (use --json for all)", r.keys.len() - show);
    }
}

/// `mend diff`.
pub fn run(a: DiffArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let r = fetch(&a.agent, &a.peer, a.range.clone()).await?;
        if a.json {
            print_json(&to_json(&r))?;
        } else {
            print_human(&r, a.show);
        }
        Ok(if r.summary.in_sync {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
