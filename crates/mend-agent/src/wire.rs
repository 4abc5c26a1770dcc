//! Conversions between the wire and the agent's domain that both the
//! services and the repair driver need (the rest live in `mend_rpc::convert`,
//! or beside the one service that uses them).

use tonic::Status;

use mend_core::Decision;
use mend_rpc::convert::{key_from_pb, value_from_pb, version_from_pb};
use mend_rpc::pb;
use mend_store::Write;

/// Most entries one `PushRequest` message may carry (the peer service
/// refuses more; a repair's push batch fits it).
pub const PUSH_ENTRIES_MAX: usize = 10_000;

/// A replicated entry from the wire as a versioned write, validated: key and
/// value within limits, a version present and well formed.
pub fn write_from_pb(e: pb::Entry) -> Result<Write, Status> {
    key_from_pb(&e.key)?;
    if !e.tombstone {
        value_from_pb(&e.value)?;
    }
    let v = version_from_pb(
        e.version
            .ok_or_else(|| Status::invalid_argument("entry.version: missing"))?,
    )?;
    Ok(Write {
        key: e.key,
        value: (!e.tombstone).then_some(e.value),
        version: Some(v),
    })
}

/// The wire name of an apply decision.
pub fn decision_str(d: Decision) -> &'static str {
    match d {
        Decision::Apply => "apply",
        Decision::Stale => "stale",
        Decision::Duplicate => "duplicate",
        Decision::Conflict => "conflict",
    }
}
