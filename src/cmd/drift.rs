//! `mend history`, `mend report` and `mend sample`: drift over time, the
//! latest scheduled report, and random spot checks.

use std::process::ExitCode;

use mend_rpc::pb;
use serde_json::json;

use super::diff::{Received, print_human, to_json};
use super::operator;
use super::{runtime, status_err};
use crate::cli::{HistoryArgs, ReportArgs, ReportFormat, SampleArgs};
use crate::output::print_json;

fn ago(now: u64, at: u64) -> String {
    let s = now.saturating_sub(at) / 1000;
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else {
        format!("{}h ago", s / 3600)
    }
}

/// `mend history`.
pub fn history(a: HistoryArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let r = c
            .history(pb::HistoryRequest { peer: a.peer.clone().unwrap_or_default() })
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        if a.json {
            let peers: Vec<_> = r
                .peers
                .iter()
                .map(|p| {
                    json!({
                        "peer": p.peer, "range": p.range, "budget_exceeded": p.budget_exceeded, "budget_since_ms": p.budget_since_ms,
                        "converged_keys": p.converged_keys, "convergence_ms_mean": p.convergence_ms_mean,
                        "records": p.records.iter().map(|x| json!({
                            "at_ms": x.at_ms, "divergent_keys": x.divergent_keys,
                            "by_category": x.by_category.iter().map(|c| (super::names::category_name(c.category).to_string(), json!(c.count))).collect::<serde_json::Map<_, _>>(),
                            "oldest_divergence_ms": x.oldest_divergence_ms, "persistent": x.persistent, "transient": x.transient,
                            "converged": x.converged, "rounds": x.rounds, "bytes_sent": x.bytes_sent, "bytes_received": x.bytes_received,
                            "elapsed_ms": x.elapsed_ms, "action": x.action,
                            "action_kind": mend_rpc::enums::playbook_action_from_pb(x.action_kind, "action_kind").ok().flatten(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&json!({ "peers": peers }))?;
            return Ok(ExitCode::SUCCESS);
        }
        if r.peers.is_empty() {
            println!("no scheduled exchanges yet (set interval_ms on a peer in the agent's config)");
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
        for p in &r.peers {
            println!(
                "peer {} range {}: budget {}{}; {} keys converged so far (mean {} ms)",
                p.peer,
                p.range,
                if p.budget_exceeded { "EXCEEDED" } else { "within" },
                if p.budget_since_ms > 0 { format!(" since {}", ago(now, p.budget_since_ms)) } else { String::new() },
                p.converged_keys,
                p.convergence_ms_mean
            );
            println!("  {:<10} {:>9} {:>10} {:>9} {:>9} {:>12} {:>6} {:>9}  action", "when", "divergent", "persistent", "transient", "converged", "oldest", "rounds", "bytes");
            for x in p.records.iter().rev().take(20) {
                println!(
                    "  {:<10} {:>9} {:>10} {:>9} {:>9} {:>10}ms {:>6} {:>9}  {}",
                    ago(now, x.at_ms),
                    x.divergent_keys,
                    x.persistent,
                    x.transient,
                    x.converged,
                    x.oldest_divergence_ms,
                    x.rounds,
                    x.bytes_sent + x.bytes_received,
                    x.action
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `mend report`: exit 1 when the latest exchange found divergence.
pub fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let mut stream = c
            .report(pb::ReportRequest {
                peer: a.peer.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        let mut keys = Vec::new();
        let mut summary = None;
        while let Some(ev) = stream
            .message()
            .await
            .map_err(|s| status_err(&a.agent, s))?
        {
            match ev.event {
                Some(pb::diff_event::Event::Key(k)) => keys.push(k),
                Some(pb::diff_event::Event::Summary(s)) => summary = Some(s),
                None => {}
            }
        }
        let summary = summary
            .ok_or_else(|| anyhow::anyhow!("agent {}: report ended without a summary", a.agent))?;
        let r = Received::new(&a.agent, keys, summary)?;
        let format = if a.json { ReportFormat::Json } else { a.format };
        if format == ReportFormat::Text {
            print_human(&r, a.show);
        } else {
            let h = c
                .history(pb::HistoryRequest {
                    peer: r.summary.peer_node.clone(),
                })
                .await
                .map_err(|s| status_err(&a.agent, s))?
                .into_inner();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            let st = c
                .status(pb::StatusRequest {
                    repairs_limit: 100,
                    repairs_after: String::new(),
                })
                .await
                .map_err(|s| status_err(&a.agent, s))?
                .into_inner();
            let inc = super::incident::incident(&h.peers, &r.summary, &r.keys, &st.repairs, now);
            if format == ReportFormat::Markdown {
                print!("{}", super::incident::markdown(&inc));
            } else {
                print_json(&json!({"incident": inc, "report": to_json(&r)}))?;
            }
        }
        Ok(if r.summary.in_sync {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// `mend sample`: exit 1 when a sampled key differs.
pub fn sample(a: SampleArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let r = c
            .sample(pb::SampleRequest { peer: a.peer.clone(), keys: a.keys, seed: a.seed })
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        if a.json {
            let keys: Vec<_> = r
                .keys
                .iter()
                .map(|k| json!({"key": String::from_utf8_lossy(&k.key), "key_hex": hex::encode(&k.key), "category": super::names::category_name(k.category), "behind": super::names::side_name(k.behind)}))
                .collect();
            print_json(&json!({
                "sampled": r.sampled, "divergent": r.divergent, "share": r.share,
                "ci_low": r.ci_low, "ci_high": r.ci_high, "keys": keys,
            }))?;
        } else {
            println!(
                "sampled {} keys: {} differ; divergent share {:.3}% (95% CI {:.3}%–{:.3}%)",
                r.sampled,
                r.divergent,
                r.share * 100.0,
                r.ci_low * 100.0,
                r.ci_high * 100.0
            );
            for k in r.keys.iter().take(20) {
                println!("  {:<28} {:<20} behind {}", String::from_utf8_lossy(&k.key), super::names::category_name(k.category), super::names::side_name(k.behind).unwrap_or("-"));
            }
        }
        Ok(if r.divergent == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}
