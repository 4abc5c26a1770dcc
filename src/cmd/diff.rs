//! `mend diff`: the agent at `--agent` runs the exchange against `--peer`;
//! prints a verdict, a table by category, then the keys (human), or all of
//! it as JSON. Exit 1 when the replicas diverge.

use std::collections::BTreeMap;
use std::process::ExitCode;

use mend_rpc::pb;
use serde_json::{Value, json};

use super::client::{category_name, side_name, version_json};
use super::operator;
use super::{runtime, status_err};
use crate::cli::DiffArgs;
use crate::output::{human_bytes, print_json};

/// A diff's keys and summary as received.
pub struct Received {
    /// Divergent keys.
    pub keys: Vec<pb::DivergentKey>,
    /// The summary.
    pub summary: pb::DiffSummary,
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
    Ok(Received { keys, summary })
}

fn side_json(e: &Option<pb::EntryVersion>) -> Value {
    match e {
        Some(e) if e.present => {
            let mut v = version_json(&e.version);
            if let Value::Object(m) = &mut v {
                m.insert("tombstone".into(), json!(e.tombstone));
            }
            v
        }
        _ => Value::Null,
    }
}

/// The JSON report of a diff.
pub fn to_json(r: &Received) -> Value {
    let s = &r.summary;
    let by_category: BTreeMap<_, _> = s
        .by_category
        .iter()
        .map(|c| (category_name(c.category), c.count))
        .collect();
    let keys: Vec<Value> = r
        .keys
        .iter()
        .map(|k| {
            json!({
                "range": k.range,
                "key": String::from_utf8_lossy(&k.key),
                "key_hex": hex::encode(&k.key),
                "category": category_name(k.category),
                "behind": side_name(k.behind),
                "local": side_json(&k.local),
                "peer": side_json(&k.peer),
            })
        })
        .collect();
    json!({
        "in_sync": s.in_sync,
        "tree_mismatches": s.tree_mismatches.iter().map(|m| json!({
            "range": m.range, "buckets": m.buckets, "fixed": m.fixed,
        })).collect::<Vec<_>>(),
        "peer_clock_skew_ms": s.peer_clock_skew_ms,
        "divergent_keys": s.divergent_keys,
        "by_category": by_category,
        "keys": keys,
        "rounds": s.rounds,
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "nodes_compared": s.nodes_compared,
        "leaves_compared": s.leaves_compared,
        "elapsed_ms": s.elapsed_ms,
        "local_node": s.local_node,
        "peer_node": s.peer_node,
        "ranges": s.ranges,
        "versionless_ranges": s.versionless_ranges,
        "cause": if s.cause_kind.is_empty() { Value::Null } else { json!({"kind": s.cause_kind, "hint": s.cause}) },
        "sources": s.sources.iter().map(|x| json!({
            "category": category_name(x.category), "origin": x.origin, "newer_side": side_name(x.newer_side), "count": x.count,
            "first_ms": x.first_ms, "last_ms": x.last_ms, "seq_min": x.seq_min, "seq_max": x.seq_max,
            "seq_missing_on": side_name(x.seq_missing_on),
            "seq_missing": x.seq_missing,
            "seq_gaps": x.seq_gaps.iter().map(|g| json!([g.first, g.last])).collect::<Vec<_>>(),
            "hint": x.hint,
        })).collect::<Vec<_>>(),
    })
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
    if !s.cause.is_empty() {
        println!();
        println!("  one cause explains it all: {}", s.cause);
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
