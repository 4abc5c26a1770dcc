//! The repair journal, in the store's `journal` column family. Before-images
//! commit in the same batch as the repair writes they describe, so undo
//! always has what it needs.
//!
//! Rows:
//! * `h` + repair id → JSON [`RepairHeader`];
//! * `e` + repair id + `0x00` + key → `[has_before u8][before_len u32 BE]
//!   [before record][after record]` (records in `mend_core::record` layout;
//!   the after record carries no value);
//! * `q` + repair id + `0x00` + key → empty: a key the initiator pushed to
//!   the peer (its before-image is in the peer's journal), so an undo can
//!   hold every key of the repair on this side too;
//! * `a` + repair id + `0x00` + key → the winning node id: a key resolved
//!   toward its range's authority (re-stamped here, then pushed);
//! * `s` + repair id + `0x00` + segment index (u32 BE) → the plan of one
//!   unfinished segment of the run (`segment`), deleted in the batch that
//!   records the segment finished;
//! * `p` → the newest creation time (ms, u64 BE) of a pruned repair, so an
//!   undo of a pruned repair says so.
//!
//! Retention: [`prune`] (run with the background purge) removes repairs
//! older than `journal.retention_ms` and all but the newest
//! `journal.repairs_max`, never one whose undo is in progress or whose
//! undo hold is still running. An undo marks the repair's keys *held* until
//! `journal.undo_hold_ms` from then ([`held_keys`]): scheduled repairs leave
//! them alone, so the next exchange does not silently re-repair what the
//! operator just restored. Undo is resumable: it records that it started,
//! and restoring a key that already holds its before-image counts as
//! restored, so running it again after a crash finishes the job.

use serde::{Deserialize, Serialize};

use mend_core::playbook::{SkipNote, SkipReason};
use mend_core::{EntryMeta, Record};
use mend_store::{Applied, Backend, Cf, Op, Store, StoreError};

use crate::runs::RunState;

/// Most bytes of a repair id: a node id (up to 64), a timestamp (20) and
/// 16 hex digits of randomness, with separators, fit.
pub const REPAIR_ID_BYTES_MAX: usize = 128;

/// The row kind of a run's unfinished segment plans (`repair::segment`).
pub const SEGMENT_ROW: u8 = b's';

/// Summary row of one journaled repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairHeader {
    /// The repair id.
    pub id: String,
    /// The other side of the repair as this side knows it (the peer's node
    /// id is `peer_node`, filled on the initiator only).
    ///
    /// On the initiator: the address the run dialled (the `addr` given to
    /// `repair::repair` or `repair::repair_outcome`), dialled again by a
    /// resumed run and by undo (`repair::run_segments`, `repair::undo`):
    /// `AgentState::resolve_peer`'s `host:port` (scheme stripped) for the
    /// Operator RPCs and schedules, a known peer's `host:port` for a
    /// dashboard action, and over `link::mem` the name its `Registry` knows
    /// the peer by (the simulator uses node ids).
    ///
    /// On the receiving side: the primary name of the pushing caller's
    /// certificate (`mend_tls::Identity::primary`), the only caller allowed
    /// to add to the repair (`Push`) or undo it (`UndoPush`). Empty where
    /// callers carry no identity (a plaintext agent, `link::mem`): there no
    /// ownership is checked.
    pub peer: String,
    /// True on the agent that ran the repair; false on the peer that received pushes.
    pub initiator: bool,
    /// When the repair started, ms since the epoch.
    pub created_ms: u64,
    /// Keys written on this side.
    pub keys_here: u64,
    /// Keys pushed to the peer.
    pub keys_pushed: u64,
    /// Keys resolved toward their range's authority (see the `a` rows).
    #[serde(default)]
    pub keys_toward_authority: u64,
    /// Set once undone.
    pub undone: bool,
    /// When an undo started (ms); set before either side restores
    /// anything, so a crash mid-undo shows as an undo in progress.
    #[serde(default)]
    pub undo_started_ms: Option<u64>,
    /// Scheduled repairs leave this repair's keys alone until then (ms; 0 =
    /// no hold). Set by undo.
    #[serde(default)]
    pub hold_until_ms: u64,
    /// Where the run is (initiator only; rows written before segmented
    /// runs read as done). `Running` found at start means the agent died
    /// mid-run: it resumes from `segments_done`.
    #[serde(default = "finished")]
    pub run: RunState,
    /// The run's segments (`segment`), and how many finished. The plan of
    /// each unfinished one is in its `s` row.
    #[serde(default)]
    pub segments_total: u32,
    /// Segments finished (their `s` rows are gone).
    #[serde(default)]
    pub segments_done: u32,
    /// Keys planned, over all segments.
    #[serde(default)]
    pub keys_total: u64,
    /// Keys of finished segments.
    #[serde(default)]
    pub keys_done: u64,
    /// The peer's node id (for the board and `mend status`).
    #[serde(default)]
    pub peer_node: String,
    /// The rate limits the run was started with, kept for a resume.
    #[serde(default)]
    pub rate_bytes_per_s: u64,
    /// See `rate_bytes_per_s`.
    #[serde(default)]
    pub rate_keys_per_s: u64,
    /// Why the run last stopped, if it failed.
    #[serde(default)]
    pub error: String,
}

fn finished() -> RunState {
    RunState::Done
}

impl RepairHeader {
    /// A new header of a repair that has not been undone.
    pub fn new(id: String, peer: String, initiator: bool, created_ms: u64) -> RepairHeader {
        RepairHeader {
            id,
            peer,
            initiator,
            created_ms,
            keys_here: 0,
            keys_pushed: 0,
            keys_toward_authority: 0,
            undone: false,
            undo_started_ms: None,
            hold_until_ms: 0,
            // Only the initiator runs anything; the receiving side's row
            // is a record of what it applied.
            run: if initiator {
                RunState::Running
            } else {
                RunState::Done
            },
            segments_total: 0,
            segments_done: 0,
            keys_total: 0,
            keys_done: 0,
            peer_node: String::new(),
            rate_bytes_per_s: 0,
            rate_keys_per_s: 0,
            error: String::new(),
        }
    }

    /// The run has segments left to move (running, paused, failed or
    /// interrupted): retention keeps it.
    pub fn unfinished(&self) -> bool {
        self.initiator
            && matches!(
                self.run,
                RunState::Running | RunState::Paused | RunState::Failed
            )
    }

    /// An undo started and did not finish (a crash, a lost peer): run undo
    /// again to finish it.
    pub fn undo_in_progress(&self) -> bool {
        self.undo_started_ms.is_some() && !self.undone
    }
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
    row_prefix(b'e', id)
}

pub(crate) fn row_prefix(kind: u8, id: &str) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

/// The exclusive end of the rows under `prefix` (which ends in `0x00`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    end
}

/// The rows recording that the initiator of repair `id` pushed `keys`.
pub fn pushed_ops(id: &str, keys: &[Vec<u8>]) -> Vec<Op> {
    keys.iter()
        .map(|key| {
            let mut k = row_prefix(b'q', id);
            k.extend_from_slice(key);
            Op::Put(Cf::Journal, k, Vec::new())
        })
        .collect()
}

/// The rows recording that repair `id` resolved `keys` toward `winner`,
/// their range's authority.
pub fn winner_ops(id: &str, keys: &[Vec<u8>], winner: &str) -> Vec<Op> {
    keys.iter()
        .map(|key| {
            let mut k = row_prefix(b'a', id);
            k.extend_from_slice(key);
            Op::Put(Cf::Journal, k, winner.as_bytes().to_vec())
        })
        .collect()
}

/// The keys repair `id` resolved toward an authority, with the winner.
pub fn winners<B: Backend>(
    store: &Store<B>,
    id: &str,
) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
    let prefix = row_prefix(b'a', id);
    let mut out = Vec::new();
    store.backend().scan(
        Cf::Journal,
        &prefix,
        Some(&prefix_end(&prefix)),
        &mut |k, v| {
            out.push((
                k[prefix.len()..].to_vec(),
                String::from_utf8_lossy(v).into_owned(),
            ));
            true
        },
    )?;
    Ok(out)
}

/// The journal rows for the applied outcomes of a repair batch.
pub fn entry_ops(id: &str, keys: &[Vec<u8>], outcomes: &[Applied]) -> Vec<Op> {
    keys.iter()
        .zip(outcomes)
        .filter(|(_, a)| a.decision == mend_core::Decision::Apply)
        .flat_map(|(key, a)| image_ops(id, key, a.before.as_ref(), &a.meta))
        .collect()
}

/// The journal row of one applied repair write of `key`: its before-image
/// (a row's payload as the value, for a digest-only range) and the entry
/// it left (meta only: the value hash identifies the value).
pub fn image_ops(id: &str, key: &[u8], before: Option<&Record>, after: &EntryMeta) -> Vec<Op> {
    let mut row = Vec::new();
    match before {
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
    let after = Record {
        meta: after.clone(),
        value: Vec::new(),
    };
    row.extend_from_slice(&after.encode());
    let mut k = entry_prefix(id);
    k.extend_from_slice(key);
    vec![Op::Put(Cf::Journal, k, row)]
}

/// Writes a header row.
pub fn put_header<B: Backend>(store: &Store<B>, h: &RepairHeader) -> Result<(), StoreError> {
    store.backend().write(vec![header_op(h)?], false)
}

/// The write of a header row, for a batch that commits it with other rows.
pub fn header_op(h: &RepairHeader) -> Result<Op, StoreError> {
    let raw = serde_json::to_vec(h).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Op::Put(Cf::Journal, header_key(&h.id), raw))
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

/// A journaled row of a digest-only range to undo: (key, before-image,
/// the feed's entry after the repair).
pub type RowImage = (Vec<u8>, Option<Record>, EntryMeta);

/// The outcome of undoing one side of a repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UndoOutcome {
    /// Keys restored to their before-image.
    pub restored: u64,
    /// Keys left alone, with why.
    pub skipped: Vec<(Vec<u8>, SkipNote)>,
}

/// Restores this side's before-images of repair `id`, skipping keys whose
/// entry changed since the repair wrote it.
///
/// With `keep_repaired_deletes` (the agent purges tombstones, `gc.enabled`)
/// a key the repair deleted is left deleted: see the skip reason.
///
/// Keys for which `is_row` holds (keys of digest-only ranges, whose rows
/// live behind an adapter) are not restored here: their images are
/// returned for `repair::rows::undo`.
pub fn undo_here<B: Backend>(
    store: &Store<B>,
    id: &str,
    keep_repaired_deletes: bool,
    is_row: &dyn Fn(&[u8]) -> bool,
) -> Result<(UndoOutcome, Vec<RowImage>), StoreError> {
    let prefix = entry_prefix(id);
    let end = prefix_end(&prefix);
    let mut rows = Vec::new();
    store
        .backend()
        .scan(Cf::Journal, &prefix, Some(&end), &mut |k, v| {
            rows.push((k[prefix.len()..].to_vec(), v.to_vec()));
            true
        })?;
    let mut out = UndoOutcome::default();
    let mut images = Vec::new();
    for (key, row) in rows {
        let (before, after) =
            decode_row(&row).map_err(|e| StoreError::Corrupt(format!("journal row: {e}")))?;
        // A repaired delete stays: once a replica holds a tombstone, its
        // peers may count on it to purge theirs (see `gc`). Putting the
        // older value back here would bring it back everywhere; putting an
        // older tombstone back would leave this replica without the delete
        // its peers purged, open to a write between the two versions.
        if keep_repaired_deletes && after.tombstone && before.is_some() {
            let why = if before.as_ref().is_some_and(|b| b.meta.tombstone) {
                "a repaired delete is not undone: peers may already have purged the tombstone, \
                 and the older one it replaced would not hold their delete"
            } else {
                "a repaired delete is not undone: peers may already have purged the tombstone, \
                 restoring the value here would resurrect it"
            };
            out.skipped
                .push((key, SkipNote::new(SkipReason::RepairedDelete, why)));
            continue;
        }
        if is_row(&key) {
            images.push((key, before, after));
            continue;
        }
        if store.compare_and_restore(&key, Some(&after), before.as_ref())? {
            out.restored += 1;
            continue;
        }
        // Already holding its before-image: restored by an earlier run of
        // this undo that did not finish.
        let now = store.get(&key)?;
        if now.as_ref().map(|r| &r.meta) == before.as_ref().map(|r| &r.meta) {
            out.restored += 1;
        } else {
            out.skipped.push((
                key,
                SkipNote::new(SkipReason::ChangedSinceRepair, "changed since the repair"),
            ));
        }
    }
    Ok((out, images))
}

const PRUNED_KEY: &[u8] = b"p";

/// Rows deleted per batch when pruning one repair's entries.
const PRUNE_BATCH_ROWS: usize = 4096;

/// The creation time of the newest pruned repair, if any was pruned.
pub fn pruned_up_to<B: Backend>(store: &Store<B>) -> Result<Option<u64>, StoreError> {
    let raw = store.backend().get(Cf::Journal, PRUNED_KEY)?;
    Ok(raw.and_then(|v| {
        <[u8; 8]>::try_from(v.as_slice())
            .ok()
            .map(u64::from_be_bytes)
    }))
}

/// The creation ms a repair id carries (`node-ms-random`), if it parses.
pub fn created_ms_of(id: &str) -> Option<u64> {
    let mut parts = id.rsplitn(3, '-');
    let _random = parts.next()?;
    parts.next()?.parse().ok()
}

/// Journal retention: how long and how many repairs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Repairs older than this (ms) go.
    pub age_ms: u64,
    /// Beyond the newest this many, repairs go.
    pub count_max: usize,
}

/// Removes the repairs `retention` no longer keeps (oldest first), except
/// those with an undo in progress, a running hold, or a run that is
/// running or paused. Returns how many went.
pub fn prune<B: Backend>(
    store: &Store<B>,
    now_ms: u64,
    retention: Retention,
) -> Result<u64, StoreError> {
    let all = list(store)?;
    let excess = all.len().saturating_sub(retention.count_max);
    let mut pruned = 0;
    let mut newest_pruned = pruned_up_to(store)?.unwrap_or(0);
    for (i, h) in all.iter().enumerate() {
        let old = h.created_ms.saturating_add(retention.age_ms) < now_ms;
        if !(old || i < excess)
            || h.undo_in_progress()
            || h.hold_until_ms > now_ms
            || (h.initiator && matches!(h.run, RunState::Running | RunState::Paused))
        {
            continue;
        }
        let rows = [
            entry_prefix(&h.id),
            row_prefix(b'q', &h.id),
            row_prefix(b'a', &h.id),
            row_prefix(SEGMENT_ROW, &h.id),
        ];
        loop {
            let mut ops = Vec::new();
            for prefix in &rows {
                store.backend().scan(
                    Cf::Journal,
                    prefix,
                    Some(&prefix_end(prefix)),
                    &mut |k, _| {
                        ops.push(Op::Delete(Cf::Journal, k.to_vec()));
                        ops.len() < PRUNE_BATCH_ROWS
                    },
                )?;
            }
            let done = ops.len() < PRUNE_BATCH_ROWS;
            if done {
                newest_pruned = newest_pruned.max(h.created_ms);
                ops.push(Op::Delete(Cf::Journal, header_key(&h.id)));
                ops.push(Op::Put(
                    Cf::Journal,
                    PRUNED_KEY.to_vec(),
                    newest_pruned.to_be_bytes().to_vec(),
                ));
            }
            store.backend().write(ops, false)?;
            if done {
                break;
            }
        }
        pruned += 1;
    }
    Ok(pruned)
}

/// Keys of every repair whose undo hold runs past `now_ms`: scheduled
/// repairs leave them alone.
pub fn held_keys<B: Backend>(
    store: &Store<B>,
    now_ms: u64,
) -> Result<std::collections::HashSet<Vec<u8>>, StoreError> {
    let mut out = std::collections::HashSet::new();
    for h in list(store)? {
        if h.hold_until_ms <= now_ms {
            continue;
        }
        for prefix in [entry_prefix(&h.id), row_prefix(b'q', &h.id)] {
            store.backend().scan(
                Cf::Journal,
                &prefix,
                Some(&prefix_end(&prefix)),
                &mut |k, _| {
                    out.insert(k[prefix.len()..].to_vec());
                    true
                },
            )?;
        }
    }
    Ok(out)
}

/// How many keys repair `id` journaled on this side (written here, or
/// pushed from here).
pub fn entry_count<B: Backend>(store: &Store<B>, id: &str) -> Result<u64, StoreError> {
    let mut n = 0;
    for prefix in [entry_prefix(id), row_prefix(b'q', id)] {
        store.backend().scan(
            Cf::Journal,
            &prefix,
            Some(&prefix_end(&prefix)),
            &mut |_, _| {
                n += 1;
                true
            },
        )?;
    }
    Ok(n)
}

/// The not-found error of an undo of `id`: says when the repair was pruned.
pub fn missing<B: Backend>(store: &Store<B>, id: &str) -> Result<String, StoreError> {
    Ok(match (pruned_up_to(store)?, created_ms_of(id)) {
        (Some(upto), Some(at)) if at <= upto => format!(
            "repair {id} was pruned from the journal (journal.retention_ms / journal.repairs_max); \
             its before-images are gone, so it can no longer be undone"
        ),
        _ => format!("no repair {id} in this agent's journal"),
    })
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
