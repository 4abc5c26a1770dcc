//! How the CLI names wire values in its output: the snake_case names of
//! the wire enums (the domain's `as_str`), versions and repair runs as
//! JSON. Commands call these; this module calls no command.

use mend_rpc::pb;
use serde_json::json;

/// The snake_case name of a wire category (`"?"`: a value this CLI does
/// not know, from a newer agent; the agent itself refuses such values).
pub fn category_name(v: i32) -> &'static str {
    mend_rpc::enums::category_from_pb(v, "category").map_or("?", |c| c.as_str())
}

/// The name of a wire side, `None` when unspecified (or unknown).
pub fn side_name(v: i32) -> Option<&'static str> {
    mend_rpc::enums::side_from_pb(v, "side")
        .ok()
        .flatten()
        .map(|s| s.as_str())
}

/// The snake_case name of a wire skip reason (`"?"` when unknown).
pub fn skip_name(v: i32) -> &'static str {
    mend_rpc::enums::skip_reason_from_pb(v, "kind").map_or("?", |r| r.as_str())
}

/// The name of a wire apply decision (`"?"` when unknown).
pub fn decision_name(v: i32) -> &'static str {
    mend_rpc::enums::decision_from_pb(v, "decision").map_or("?", |d| d.as_str())
}

/// Category names from the command line as wire values.
pub fn categories_pb(names: &[String]) -> anyhow::Result<Vec<i32>> {
    names
        .iter()
        .map(|c| {
            mend_core::Category::parse(c)
                .map(mend_rpc::enums::category_to_pb)
                .ok_or_else(|| anyhow::anyhow!("unknown category {c:?}"))
        })
        .collect()
}

/// JSON of a wire version.
pub fn version_json(v: &Option<pb::Version>) -> serde_json::Value {
    match v {
        Some(v) => json!({"ms": v.ms, "logical": v.logical, "origin": v.origin, "seq": v.seq}),
        None => serde_json::Value::Null,
    }
}

/// The state of a run, for a person and in JSON.
pub fn run_state(s: i32) -> &'static str {
    match pb::RepairRunState::try_from(s) {
        Ok(pb::RepairRunState::Running) => "running",
        Ok(pb::RepairRunState::Paused) => "paused",
        Ok(pb::RepairRunState::Cancelled) => "cancelled",
        Ok(pb::RepairRunState::Done) => "done",
        Ok(pb::RepairRunState::Failed) => "failed",
        _ => "unknown",
    }
}

/// A run as JSON (`mend repair pause|resume|cancel --json`, `mend status --json`).
pub fn run_json(r: &pb::RepairRun) -> serde_json::Value {
    json!({
        "repair_id": r.repair_id,
        "peer": r.peer,
        "state": run_state(r.state),
        "live": r.live,
        "segments_done": r.segments_done,
        "segments_total": r.segments_total,
        "keys_done": r.keys_done,
        "keys_total": r.keys_total,
        "error": r.error,
    })
}
