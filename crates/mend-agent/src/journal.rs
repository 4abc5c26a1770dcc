//! The repair journal, in the store's `journal` column family. Before-images
//! commit in the same batch as the repair writes they describe, so undo
//! always has what it needs.
//!
//! Rows:
//! * `h` + repair id → JSON [`RepairHeader`];
//! * `e` + repair id + `0x00` + key → `[has_before u8][before_len u32 BE]
//!   [before record][after record]` (records in `mend_core::record` layout;
//!   the after record carries no value).

use serde::{Deserialize, Serialize};

use mend_core::Record;
use mend_store::{Applied, Backend, Cf, Op, Store, StoreError};

/// Most bytes of a repair id: a node id (up to 64), a timestamp (20) and
/// 16 hex digits of randomness, with separators, fit.
pub const REPAIR_ID_BYTES_MAX: usize = 128;

/// Summary row of one journaled repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairHeader {
    /// The repair id.
    pub id: String,
    /// On the initiator: the peer's address (where undo pushes go). On the
    /// receiving peer: the certificate identity (primary name) of the agent
    /// that pushed, the only identity allowed to add to or undo the repair
    /// (empty on a plaintext agent).
    pub peer: String,
    /// True on the agent that ran the repair; false on the peer that received pushes.
    pub initiator: bool,
    /// When the repair started, ms since the epoch.
    pub created_ms: u64,
    /// Keys written on this side.
    pub keys_here: u64,
    /// Keys pushed to the peer.
    pub keys_pushed: u64,
    /// Set once undone.
    pub undone: bool,
}

/// Checks a repair id received from the network.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= REPAIR_ID_BYTES_MAX && id.bytes().all(|b| b.is_ascii_graphic())
}

fn header_key(id: &str) -> Vec<u8> {
    let mut k = b"h".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn entry_prefix(id: &str) -> Vec<u8> {
    let mut k = b"e".to_vec();
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

/// The journal rows for the applied outcomes of a repair batch.
pub fn entry_ops(id: &str, keys: &[Vec<u8>], outcomes: &[Applied]) -> Vec<Op> {
    let mut ops = Vec::new();
    for (key, a) in keys.iter().zip(outcomes) {
        if a.decision != mend_core::Decision::Apply {
            continue;
        }
        let mut row = Vec::new();
        match &a.before {
            Some(b) => {
                let enc = b.encode();
                row.push(1);
                row.extend_from_slice(&(enc.len() as u32).to_be_bytes());
                row.extend_from_slice(&enc);
            }
            None => {
                row.push(0);
                row.extend_from_slice(&0u32.to_be_bytes());
            }
        }
        // The after-image: meta only (the value hash identifies the value).
        let after = Record {
            meta: a.meta.clone(),
            value: Vec::new(),
        };
        row.extend_from_slice(&after.encode());
        let mut k = entry_prefix(id);
        k.extend_from_slice(key);
        ops.push(Op::Put(Cf::Journal, k, row));
    }
    ops
}

/// Writes a header row.
pub fn put_header<B: Backend>(store: &Store<B>, h: &RepairHeader) -> Result<(), StoreError> {
    let raw = serde_json::to_vec(h).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store
        .backend()
        .write(vec![Op::Put(Cf::Journal, header_key(&h.id), raw)], false)
}

/// Reads a header row.
pub fn get_header<B: Backend>(
    store: &Store<B>,
    id: &str,
) -> Result<Option<RepairHeader>, StoreError> {
    match store.backend().get(Cf::Journal, &header_key(id))? {
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("journal header {id}: {e}"))),
        None => Ok(None),
    }
}

/// Every header, oldest first by id order.
pub fn list<B: Backend>(store: &Store<B>) -> Result<Vec<RepairHeader>, StoreError> {
    let mut out = Vec::new();
    let mut bad = None;
    store.backend().scan(
        Cf::Journal,
        b"h",
        Some(b"i"),
        &mut |_, v| match serde_json::from_slice(v) {
            Ok(h) => {
                out.push(h);
                true
            }
            Err(e) => {
                bad = Some(e.to_string());
                false
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(StoreError::Corrupt(format!("journal header: {e}")));
    }
    out.sort_by_key(|h: &RepairHeader| h.created_ms);
    Ok(out)
}

/// The outcome of undoing one side of a repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UndoOutcome {
    /// Keys restored to their before-image.
    pub restored: u64,
    /// Keys left alone, with why.
    pub skipped: Vec<(Vec<u8>, String)>,
}

/// Restores this side's before-images of repair `id`, skipping keys whose
/// entry changed since the repair wrote it.
pub fn undo_here<B: Backend>(store: &Store<B>, id: &str) -> Result<UndoOutcome, StoreError> {
    let prefix = entry_prefix(id);
    let mut end = prefix.clone();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    let mut rows = Vec::new();
    store
        .backend()
        .scan(Cf::Journal, &prefix, Some(&end), &mut |k, v| {
            rows.push((k[prefix.len()..].to_vec(), v.to_vec()));
            true
        })?;
    let mut out = UndoOutcome::default();
    for (key, row) in rows {
        let (before, after) =
            decode_row(&row).map_err(|e| StoreError::Corrupt(format!("journal row: {e}")))?;
        if store.compare_and_restore(&key, Some(&after), before.as_ref())? {
            out.restored += 1;
        } else {
            out.skipped.push((key, "changed since the repair".into()));
        }
    }
    Ok(out)
}

fn decode_row(row: &[u8]) -> Result<(Option<Record>, mend_core::EntryMeta), &'static str> {
    if row.len() < 5 {
        return Err("short row");
    }
    let has = row[0] == 1;
    let len = u32::from_be_bytes([row[1], row[2], row[3], row[4]]) as usize;
    let rest = &row[5..];
    if rest.len() < len {
        return Err("short before-image");
    }
    let before = if has {
        Some(Record::decode(&rest[..len]).map_err(|_| "before-image")?)
    } else {
        None
    };
    let (after, _) = Record::decode_meta(&rest[len..]).map_err(|_| "after-image")?;
    Ok((before, after))
}
