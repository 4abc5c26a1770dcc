//! `mend repair`: runs a repair on the agent at `--agent` against `--peer`,
//! with a progress bar, and prints the repair id, what moved and what was
//! skipped and why; `mend repair pause|resume|cancel ID` controls a run
//! between its segments.

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use mend_rpc::pb;
use serde_json::json;

use super::names::{run_json, run_state};
use super::{operator, runtime, status_err};
use crate::cli::{RepairArgs, RepairControl, RepairControlArgs};
use crate::output::{human_bytes, print_json};

/// Runs a repair and returns its summary.
pub async fn fetch(a: &RepairArgs, bar: &ProgressBar) -> anyhow::Result<pb::RepairSummary> {
    let agent = a
        .agent
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--agent is required"))?;
    let peer = a
        .peer
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--peer is required"))?;
    let mut c = operator(agent).await?;
    let req = pb::RepairRequest {
        peer: peer.to_string(),
        range: a.range.clone().unwrap_or_default(),
        dry_run: a.dry_run,
        rate_bytes_per_s: a.rate.unwrap_or(0),
        rate_keys_per_s: a.rate_keys.unwrap_or(0),
        categories: super::names::categories_pb(&a.categories)?,
        shadow: a.shadow,
    };
    let mut stream = c
        .repair(req)
        .await
        .map_err(|s| status_err(agent, s))?
        .into_inner();
    let mut summary = None;
    while let Some(ev) = stream.message().await.map_err(|s| status_err(agent, s))? {
        match ev.event {
            Some(pb::repair_event::Event::Progress(p)) => {
                bar.set_length(p.keys_total);
                bar.set_position(p.keys_done);
            }
            Some(pb::repair_event::Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    bar.finish_and_clear();
    summary.ok_or_else(|| anyhow::anyhow!("agent {agent}: repair stream ended without a summary"))
}

/// `mend repair pause|resume|cancel`.
fn control(c: RepairControl) -> anyhow::Result<ExitCode> {
    let (action, a, verb): (_, RepairControlArgs, _) = match c {
        RepairControl::Pause(a) => (pb::RepairAction::Pause, a, "pause"),
        RepairControl::Resume(a) => (pb::RepairAction::Resume, a, "resume"),
        RepairControl::Cancel(a) => (pb::RepairAction::Cancel, a, "cancel"),
    };
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let r = c
            .control_repair(pb::RepairControlRequest {
                repair_id: a.repair_id.clone(),
                action: action as i32,
            })
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        if a.json {
            print_json(&run_json(&r))?;
            return Ok(ExitCode::SUCCESS);
        }
        let at = format!("{} of {} segments done", r.segments_done, r.segments_total);
        match (verb, r.live) {
            ("resume", _) => println!("repair {}: resumed ({at}); watch it with mend status --agent {}", r.repair_id, a.agent),
            (_, true) => println!("repair {}: will {verb} after its current segment ({at}); watch it with mend status --agent {}", r.repair_id, a.agent),
            _ => println!("repair {}: {} ({at})", r.repair_id, run_state(r.state)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `mend repair`.
pub fn run(a: RepairArgs) -> anyhow::Result<ExitCode> {
    if let Some(c) = a.control {
        return control(c);
    }
    runtime()?.block_on(async {
        let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
        bar.set_style(ProgressStyle::with_template("repairing {bar:40} {pos}/{len} keys").unwrap_or_else(|_| ProgressStyle::default_bar()));
        let s = fetch(&a, &bar).await?;
        let skipped: Vec<_> = s
            .skipped
            .iter()
            .map(|k| json!({"key": String::from_utf8_lossy(&k.key), "key_hex": hex::encode(&k.key), "reason": k.reason, "kind": super::names::skip_name(k.kind)}))
            .collect();
        let plan: Vec<_> = s
            .plan
            .iter()
            .map(|k| json!({"key": String::from_utf8_lossy(&k.key), "key_hex": hex::encode(&k.key), "category": super::names::category_name(k.category), "behind": super::names::side_name(k.behind), "toward_authority": k.toward_authority}))
            .collect();
        if a.json {
            print_json(&json!({
                "repair_id": if s.repair_id.is_empty() { serde_json::Value::Null } else { json!(s.repair_id) },
                "dry_run": s.dry_run,
                "keys_repaired": s.keys_repaired,
                "keys_to_local": s.keys_to_local,
                "keys_to_peer": s.keys_to_peer,
                "keys_toward_authority": s.keys_toward_authority,
                "bytes_streamed": s.bytes_streamed,
                "skipped": skipped,
                "plan": plan,
                "elapsed_ms": s.elapsed_ms,
                "state": run_state(s.state),
                "segments_done": s.segments_done,
                "segments_total": s.segments_total,
                "shadow": s.shadow.as_ref().map(|o| json!({
                    "predicted_converged": o.predicted_converged,
                    "predicted_remaining": o.predicted_remaining.iter().map(|k| json!({"key": String::from_utf8_lossy(&k.key), "key_hex": hex::encode(&k.key), "reason": k.reason, "kind": super::names::skip_name(k.kind)})).collect::<Vec<_>>(),
                })),
            }))?;
        } else if let Some(o) = &s.shadow {
            println!(
                "SHADOW RUN: applied the plan of {} keys to checkpoints; {} would converge, {} would still differ; live stores untouched, checkpoints removed",
                s.plan.len(),
                o.predicted_converged,
                o.predicted_remaining.len()
            );
            for k in o.predicted_remaining.iter().take(20) {
                println!("  {:<28} {}", String::from_utf8_lossy(&k.key), k.reason);
            }
        } else if s.dry_run {
            println!("DRY RUN: would repair {} keys; nothing written", s.plan.len());
            for k in s.plan.iter().take(20) {
                let why = if k.toward_authority { " (toward the range's authority)" } else { "" };
                println!("  {:<28} {:<20} -> {}{why}", String::from_utf8_lossy(&k.key), super::names::category_name(k.category), super::names::side_name(k.behind).unwrap_or("-"));
            }
            if s.plan.len() > 20 {
                println!("  … and {} more", s.plan.len() - 20);
            }
        } else if s.repair_id.is_empty() {
            println!("nothing to repair");
        } else {
            println!(
                "repair {}: {} keys repaired ({} here, {} at the peer), {} streamed in {} ms",
                s.repair_id,
                s.keys_repaired,
                s.keys_to_local,
                s.keys_to_peer,
                human_bytes(s.bytes_streamed),
                s.elapsed_ms
            );
            if s.keys_toward_authority > 0 {
                println!("{} keys resolved toward their range's authority (winner in the journal)", s.keys_toward_authority);
            }
            let agent = a.agent.as_deref().unwrap_or_default();
            if s.segments_total > 1 || s.state != pb::RepairRunState::Done as i32 {
                println!("{}: {} of {} segments done", run_state(s.state), s.segments_done, s.segments_total);
            }
            if s.state == pb::RepairRunState::Paused as i32 {
                println!("resume with: mend repair resume --agent {agent} {}", s.repair_id);
            }
            println!("undo with: mend undo --agent {agent} {}", s.repair_id);
        }
        if !a.json && !s.skipped.is_empty() {
            println!("skipped {} keys:", s.skipped.len());
            for k in s.skipped.iter().take(20) {
                println!("  {:<28} {}", String::from_utf8_lossy(&k.key), k.reason);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
