//! Conversions between the wire and the agent's domain that both the
//! services and the repair driver need (the rest live in `mend_rpc::convert`,
//! or beside the one service that uses them).

use tonic::Status;

use mend_core::classify::Side;
use mend_core::playbook::SkipNote;
use mend_rpc::convert::{key_from_pb, value_from_pb, version_from_pb};
use mend_rpc::enums::{side_to_pb, skip_reason_to_pb};
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

/// A key a repair, shadow run or undo left alone, as a wire message;
/// `side` names the side that left it (undo), else `None`.
pub fn skipped_pb(key: Vec<u8>, note: SkipNote, side: Option<Side>) -> pb::SkippedKey {
    pb::SkippedKey {
        key,
        reason: note.text,
        kind: skip_reason_to_pb(note.reason),
        side: side_to_pb(side),
    }
}
