//! Client commands that talk to one agent: put, delete, get, load, undo,
//! status.

use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use mend_rpc::pb;
use serde_json::json;

use super::names::{decision_name, side_name, skip_name, version_json};
use super::{operator, replica, runtime, status_err};
use crate::cli::{DashboardArgs, DeleteArgs, GetArgs, LoadArgs, PutArgs, StatusArgs, VersionArgs};
use crate::output::print_json;

fn version(v: &VersionArgs) -> Option<pb::Version> {
    match (v.version_ms, &v.origin) {
        (Some(ms), Some(o)) => Some(pb::Version {
            ms,
            logical: 0,
            origin: o.clone(),
            seq: v.seq,
        }),
        _ => None,
    }
}

fn print_write(r: &pb::WriteResult, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        print_json(
            &json!({"decision": decision_name(r.decision), "version": version_json(&r.version)}),
        )?;
    } else {
        let v = r
            .version
            .as_ref()
            .map(|v| format!("{}.{}@{}#{}", v.ms, v.logical, v.origin, v.seq))
            .unwrap_or_default();
        println!("{} {v}", decision_name(r.decision));
    }
    Ok(if r.decision == pb::Decision::Conflict as i32 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `mend put`.
pub fn put(a: PutArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = replica(&a.agent).await?;
        let req = pb::PutRequest {
            key: a.key.into_bytes(),
            value: a.value.into_bytes(),
            version: version(&a.version),
        };
        let r = c
            .put(req)
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        print_write(&r, a.json)
    })
}

/// `mend delete`.
pub fn delete(a: DeleteArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = replica(&a.agent).await?;
        let req = pb::DeleteRequest {
            key: a.key.into_bytes(),
            version: version(&a.version),
        };
        let r = c
            .delete(req)
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        print_write(&r, a.json)
    })
}

/// `mend get`: exit 0 when a live value exists, 1 when absent or deleted.
pub fn get(a: GetArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = replica(&a.agent).await?;
        let r = c
            .get(pb::GetRequest {
                key: a.key.clone().into_bytes(),
            })
            .await
            .map_err(|s| status_err(&a.agent, s))?
            .into_inner();
        if a.json {
            print_json(&json!({
                "key": a.key, "found": r.found, "tombstone": r.tombstone,
                "value": String::from_utf8_lossy(&r.value), "value_hex": hex::encode(&r.value),
                "version": version_json(&r.version),
            }))?;
        } else if !r.found {
            println!("(not found)");
        } else if r.tombstone {
            let v = r
                .version
                .as_ref()
                .map(|v| format!("{}@{}", v.ms, v.origin))
                .unwrap_or_default();
            println!("(deleted at {v})");
        } else {
            println!("{}", String::from_utf8_lossy(&r.value));
        }
        Ok(if r.found && !r.tombstone {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Writes per `WriteBatch` request of `mend load`.
pub const LOAD_BATCH_KEYS: u64 = 1000;

/// The deterministic value of key `i` for `seed`.
pub fn load_value(seed: u64, i: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// `mend load`: the same versioned writes to every agent.
pub fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.value_bytes <= mend_core::limits::VALUE_BYTES_MAX,
        "--value-bytes exceeds {}",
        mend_core::limits::VALUE_BYTES_MAX
    );
    runtime()?.block_on(async {
        let mut clients = Vec::new();
        for ag in &a.agents {
            clients.push((ag.clone(), replica(ag).await?));
        }
        let pb_bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(a.keys) };
        pb_bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} keys {per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let start = Instant::now();
        let base_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
        let origin = "mend-load".to_string();
        let mut i = 0u64;
        while i < a.keys {
            let n = LOAD_BATCH_KEYS.min(a.keys - i);
            let writes: Vec<pb::BatchWrite> = (i..i + n)
                .map(|k| pb::BatchWrite {
                    key: format!("{}{k:09}", a.prefix).into_bytes(),
                    value: load_value(a.seed, k, a.value_bytes),
                    delete: false,
                    version: Some(pb::Version { ms: base_ms, logical: k as u32, origin: origin.clone(), seq: k + 1 }),
                })
                .collect();
            for (addr, c) in clients.iter_mut() {
                c.write_batch(pb::WriteBatchRequest { writes: writes.clone() }).await.map_err(|s| status_err(addr, s))?;
            }
            i += n;
            pb_bar.set_position(i);
        }
        pb_bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        if a.json {
            print_json(&json!({"keys": a.keys, "agents": a.agents.len(), "elapsed_ms": (secs * 1000.0) as u64}))?;
        } else {
            println!("loaded {} keys into {} agents in {:.1}s", a.keys, a.agents.len(), secs);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `mend undo`.
pub fn undo(a: crate::cli::RepairControlArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let r = c.undo(pb::UndoRequest { repair_id: a.repair_id.clone() }).await.map_err(|s| status_err(&a.agent, s))?.into_inner();
        if a.json {
            let skipped: Vec<_> = r
                .skipped
                .iter()
                .map(|s| json!({"key": String::from_utf8_lossy(&s.key), "key_hex": hex::encode(&s.key), "reason": s.reason, "kind": skip_name(s.kind), "side": side_name(s.side)}))
                .collect();
            print_json(&json!({"repair_id": a.repair_id, "restored": r.restored, "skipped": skipped}))?;
        } else {
            println!("undid {}: {} keys restored, {} skipped", a.repair_id, r.restored, r.skipped.len());
            for s in &r.skipped {
                println!("  skipped {}: {}", String::from_utf8_lossy(&s.key), s.reason);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `mend dashboard`: an operator session of the agent's page.
pub fn dashboard(a: DashboardArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let req = pb::DashboardSessionRequest { ttl_ms: a.minutes * 60_000 };
        let r = c.dashboard_session(req).await.map_err(|s| status_err(&a.agent, s))?.into_inner();
        let url = session_url(&a.agent, &r.http_address, &r.token);
        if a.json {
            print_json(&json!({"url": url, "operator": r.operator, "expires_at_ms": r.expires_at_ms}))?;
        } else {
            println!("Operator session of {} as {}, for {} min (until the agent restarts at the latest):", a.agent, r.operator, a.minutes);
            println!("  {url}");
            println!("Whoever holds this URL can repair and undo as {} until then. The HTTP port has no TLS:", r.operator);
            println!("open it on this host or through a tunnel (ssh -L, kubectl port-forward).");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The page's URL with the token in its fragment (never sent to the server
/// or written to its logs; the page moves it to session storage). An
/// agent bound to every interface is reached at the host `--agent` names.
fn session_url(agent: &str, http: &str, token: &str) -> String {
    let http: Option<std::net::SocketAddr> = http.parse().ok();
    let host = match http {
        Some(h) if h.ip().is_unspecified() => {
            let agent = agent
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = agent.rsplit_once(':').map(|(h, _)| h).unwrap_or(agent);
            format!("{host}:{}", h.port())
        }
        Some(h) => h.to_string(),
        None => agent.to_string(),
    };
    format!("http://{host}/#session={token}")
}

/// `mend status`.
pub fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut c = operator(&a.agent).await?;
        let req = pb::StatusRequest { repairs_limit: a.repairs, repairs_after: a.repairs_after.clone() };
        let s = c.status(req).await.map_err(|s| status_err(&a.agent, s))?.into_inner();
        if a.json {
            let ranges: Vec<_> = s
                .ranges
                .iter()
                .map(|r| json!({"name": r.name, "fanout": r.fanout, "depth": r.depth, "root": format!("{:016x}", r.root), "entries": r.entries,
                    "purge_horizon_ms": r.purge_horizon_ms, "purge_held_by": r.purge_held_by, "tombstones_purged": r.tombstones_purged}))
                .collect();
            let peers: Vec<_> = s.peers.iter().map(|p| json!({"id": p.id, "address": p.address})).collect();
            let holds: Vec<_> = s.holds.iter().map(|h| json!({"repair_id": h.repair_id, "until_ms": h.until_ms, "keys": h.keys})).collect();
            print_json(&json!({"node_id": s.node_id, "version": s.version, "uptime_ms": s.uptime_ms, "ranges": ranges, "peers": peers,
                "repairs": s.repairs, "repairs_total": s.repairs_total, "repairs_next": s.repairs_next,
                "holds": holds, "undo_in_progress": s.undo_in_progress,
                "runs": s.runs.iter().map(super::names::run_json).collect::<Vec<_>>(),
                "exchange_slots": {"in_use": s.exchange_slots_in_use, "max": s.exchange_slots_max, "holders": s.exchange_slot_holders}}))?;
        } else {
            println!("node {} (mend {}), up {}s", s.node_id, s.version, s.uptime_ms / 1000);
            for r in &s.ranges {
                println!("  range {:<16} {}^{}  entries {:>10}  root {:016x}", r.name, r.fanout, r.depth, r.entries, r.root);
                let held = if r.purge_held_by.is_empty() { String::new() } else { format!(", held by {}", r.purge_held_by) };
                if r.purge_horizon_ms == 0 {
                    println!("        tombstone purge: waiting for an in-sync exchange with every peer{held}");
                } else {
                    println!("        tombstone purge: up to arrivals before {} ms{held}; {} purged", r.purge_horizon_ms, r.tombstones_purged);
                }
            }
            for p in &s.peers {
                println!("  peer  {:<16} {}", p.id, p.address);
            }
            println!("  exchange slots: {} of {} in use{}", s.exchange_slots_in_use, s.exchange_slots_max,
                if s.exchange_slot_holders.is_empty() { String::new() } else { format!(" ({})", s.exchange_slot_holders.join(", ")) });
            if let Some(latest) = s.repairs.first() {
                println!("  {} journaled repairs, latest {latest}", s.repairs_total);
            }
            for h in &s.holds {
                println!("  hold  {} keys of {} left alone by scheduled repairs until {} ms (undone)", h.keys, h.repair_id, h.until_ms);
            }
            for r in &s.runs {
                let state = super::names::run_state(r.state);
                let how = match (state, r.live) {
                    ("running", false) => " (interrupted: resumes at the next start, or mend repair resume)".to_string(),
                    ("failed", _) => format!(": {}; mend repair resume retries", r.error),
                    ("paused", _) => "; mend repair resume goes on".to_string(),
                    _ => String::new(),
                };
                println!("  run   {} with {}: {state}, {}/{} segments done, {}/{} keys{how}",
                    r.repair_id, r.peer, r.segments_done, r.segments_total, r.keys_done, r.keys_total);
            }
            for id in &s.undo_in_progress {
                println!("  UNDO IN PROGRESS {id}: it started and did not finish; run `mend undo {id}` again to finish it");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
