//! The repair data path of digest-only ranges (see `crate::rows` for the
//! adapter contract and its invariants): reading rows through the ahead
//! side's adapter, applying them through the behind side's with the
//! before-image journaled first, and undoing them.

use std::collections::HashMap;
use std::sync::Arc;

use mend_core::Decision;
use mend_core::limits::VALUE_BYTES_MAX;
use mend_core::playbook::{SkipNote, SkipReason};
use mend_core::{EntryMeta, RangeMode, Record};
use mend_store::Write;

use crate::error::AgentError;
use crate::journal::{self, RowImage};
use crate::rows::{Restore, RowAdapter, RowChange, RowError, RowFuture};
use crate::state::{AgentBackend, AgentState};

/// The name of `key`'s range if that range is digest-only.
pub fn digest_range<B: AgentBackend>(state: &AgentState<B>, key: &[u8]) -> Option<String> {
    let ranges = state.store.ranges();
    let spec = ranges.get(ranges.lookup(key).ok()?)?;
    (spec.mode == RangeMode::Digests).then(|| spec.name.clone())
}

fn adapter_of<B: AgentBackend>(
    state: &AgentState<B>,
    range: &str,
) -> Result<Arc<dyn RowAdapter>, AgentError> {
    state.rows.get(range).ok_or_else(|| {
        AgentError::precondition(format!(
            "range {range} is digest-only and no adapter serves its rows on {} \
             (run the agent with `mend attach` to repair it)",
            state.node_id
        ))
    })
}

/// Indices of `keys` grouped by their digest-only range; keys of
/// value-holding ranges under `None`.
fn by_range<B: AgentBackend>(
    state: &AgentState<B>,
    keys: &[Vec<u8>],
) -> HashMap<Option<String>, Vec<usize>> {
    let mut groups: HashMap<Option<String>, Vec<usize>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(digest_range(state, k)).or_default().push(i);
    }
    groups
}

/// The current records of `keys`, in order, wherever they live: values
/// from the store, rows of digest-only ranges through their adapters (a
/// row the store no longer holds is the tree's tombstone, if it has one).
pub async fn read_records<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<Option<Record>>, AgentError> {
    let mut out: Vec<Option<Record>> = vec![None; keys.len()];
    for (range, idx) in by_range(state, &keys) {
        let ks: Vec<Vec<u8>> = idx.iter().map(|&i| keys[i].clone()).collect();
        let got = match range {
            None => state.blocking(move |s| s.get_many(&ks)).await?,
            Some(range) => {
                let adapter = adapter_of(state, &range)?;
                let rows = adapter.read(&ks).await.map_err(|e| e.in_range(&range))?;
                if rows.len() != ks.len() {
                    return Err(AgentError::internal(format!(
                        "the adapter of range {range} answered {} keys of {}",
                        rows.len(),
                        ks.len()
                    )));
                }
                let held = state
                    .blocking(move |s| ks.iter().map(|k| s.get(k)).collect())
                    .await?;
                merge_rows(rows, held, &range)?
            }
        };
        for (i, r) in idx.into_iter().zip(got) {
            out[i] = r;
        }
    }
    Ok(out)
}

/// A store's rows with the tree's entries of the same keys: the row where
/// there is one, else the tree's tombstone (a delete the feed reported).
fn merge_rows(
    rows: Vec<Option<Record>>,
    held: Vec<Option<Record>>,
    range: &str,
) -> Result<Vec<Option<Record>>, AgentError> {
    rows.into_iter()
        .zip(held)
        .map(|(row, held)| match row {
            Some(r) if r.value.len() > VALUE_BYTES_MAX => Err(AgentError::precondition(format!(
                "a row of range {range} encodes to {} bytes, over VALUE_BYTES_MAX = \
                     {VALUE_BYTES_MAX}: it cannot be repaired through mend",
                r.value.len()
            ))),
            Some(r) => Ok(Some(r)),
            None => Ok(held.filter(|h| h.meta.tombstone)),
        })
        .collect()
}

/// What applying one repair write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written (in the store, or through the adapter).
    Applied,
    /// Not written: the receiving side's apply rule (or adapter) kept its
    /// own, by this decision.
    Kept(Decision),
}

/// Applies repair `rid`'s `writes` (each with a version), journaled with
/// their before-images: writes of value-holding ranges through the store's
/// apply rule in one batch, writes of digest-only ranges through their
/// adapters. Returns each write's key and outcome, in order.
pub async fn apply_writes<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    rid: &str,
    writes: Vec<Write>,
) -> Result<Vec<(Vec<u8>, Applied)>, AgentError> {
    let keys: Vec<Vec<u8>> = writes.iter().map(|w| w.key.clone()).collect();
    let groups = by_range(state, &keys);
    let mut slots: Vec<Option<Write>> = writes.into_iter().map(Some).collect();
    let mut out: Vec<Option<Applied>> = vec![None; keys.len()];
    for (range, idx) in groups {
        let ws: Vec<Write> = idx.iter().filter_map(|&i| slots[i].take()).collect();
        let got = match range {
            None => apply_values(state, rid, ws).await?,
            Some(range) => apply_rows(state, rid, &range, ws).await?,
        };
        for (i, a) in idx.into_iter().zip(got) {
            out[i] = Some(a);
        }
    }
    keys.into_iter()
        .zip(out)
        .map(|(k, a)| match a {
            Some(a) => Ok((k, a)),
            None => Err(AgentError::Internal(
                "a repair write's range group gave no outcome for it".into(),
            )),
        })
        .collect()
}

async fn apply_values<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    rid: &str,
    writes: Vec<Write>,
) -> Result<Vec<Applied>, AgentError> {
    let rid = rid.to_string();
    let outs = state
        .blocking(move |s| {
            let ks: Vec<Vec<u8>> = writes.iter().map(|w| w.key.clone()).collect();
            s.write_with_extra(writes, &|o| journal::entry_ops(&rid, &ks, o))
        })
        .await?;
    Ok(outs
        .into_iter()
        .map(|a| match a.decision {
            mend_core::Decision::Apply => Applied::Applied,
            d => Applied::Kept(d),
        })
        .collect())
}

async fn apply_rows<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    rid: &str,
    range: &str,
    writes: Vec<Write>,
) -> Result<Vec<Applied>, AgentError> {
    let adapter = adapter_of(state, range)?;
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        let version = w
            .version
            .clone()
            .ok_or_else(|| AgentError::invalid("a repair write without a version"))?;
        let change = match w.value {
            Some(payload) => RowChange::Put { version, payload },
            None => RowChange::Delete { version },
        };
        let st = state.clone();
        let (id, key) = (rid.to_string(), w.key.clone());
        let journal = move |before: Option<Record>, after: EntryMeta| -> RowFuture<'static, ()> {
            let (st, id, key) = (st.clone(), id.clone(), key.clone());
            Box::pin(async move {
                st.blocking(move |s| {
                    s.backend().write(
                        journal::image_ops(&id, &key, before.as_ref(), &after),
                        false,
                    )
                })
                .await
                .map_err(|e| RowError::Unavailable(format!("journal: {}", e.message())))
            })
        };
        let applied = adapter
            .apply(&w.key, &change, &journal)
            .await
            .map_err(|e| e.in_range(range))?;
        out.push(if applied {
            Applied::Applied
        } else {
            Applied::Kept(Decision::Stale)
        });
    }
    Ok(out)
}

/// Undoes the journaled rows of digest-only ranges through their adapters.
///
/// A row goes back only where the store still holds the repair's row. The
/// tree must hold it too (the feed delivered the repair's write): the
/// restored row carries an older version, which the feed's apply rule
/// would refuse, so after the store restores it the tree entry is put
/// back here, from the repair's entry only; if the feed has not delivered
/// the repair's write yet, restoring now would let that late delivery
/// win, so the key is skipped and a second undo finishes it.
pub async fn undo<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    images: Vec<RowImage>,
) -> Result<journal::UndoOutcome, AgentError> {
    let mut out = journal::UndoOutcome::default();
    for (key, before, after) in images {
        let Some(range) = digest_range(state, &key) else {
            continue;
        };
        let adapter = adapter_of(state, &range)?;
        match undo_row(state, adapter.as_ref(), &key, before, after)
            .await
            .map_err(|e| e.in_range(&range))?
        {
            Ok(()) => out.restored += 1,
            Err(why) => out.skipped.push((key, why)),
        }
    }
    Ok(out)
}

/// Undoes one row: `Ok(Ok(()))` when the store holds the before-image
/// afterwards (restored now or by an earlier undo), `Ok(Err(why))` when
/// it was left alone.
async fn undo_row<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    adapter: &dyn RowAdapter,
    key: &[u8],
    before: Option<Record>,
    after: EntryMeta,
) -> Result<Result<(), SkipNote>, RowError> {
    let changed = || SkipNote::new(SkipReason::ChangedSinceRepair, "changed since the repair");
    let Some(b) = before else {
        return undo_insert(state, adapter, key, after).await;
    };
    let tree = tree_meta(state, key).await?;
    if tree.as_ref() != Some(&after) {
        let now = adapter
            .read(std::slice::from_ref(&key.to_vec()))
            .await?
            .pop()
            .flatten()
            .map(|r| r.meta);
        if now.as_ref() == Some(&b.meta) && tree.as_ref() == Some(&b.meta) {
            return Ok(Ok(()));
        }
        if now.as_ref() != Some(&after) {
            return Ok(Err(changed()));
        }
        // The store holds the repair's row, the tree not yet: the feed
        // has still to deliver it, and restoring before it does would let
        // that late delivery win over the older restored row.
        let tree = await_tree(state, key, |t| t == Some(&after)).await?;
        if tree.as_ref() != Some(&after) {
            return Ok(Err(SkipNote::new(
                SkipReason::FeedPending,
                format!(
                    "the change feed did not deliver the repair's write to the tree within \
                     {} ms (UNDO_FEED_WAIT); left as it is",
                    UNDO_FEED_WAIT.as_millis()
                ),
            )));
        }
    }
    match adapter.restore(key, &after, Some(&b)).await? {
        Restore::Changed => Ok(Err(changed())),
        Restore::Restored | Restore::AlreadyRestored => {
            // The feed will report the restored row at its older version,
            // which its apply rule refuses over the repair's entry: put the
            // tree entry back here, from the repair's entry only.
            let restored = Record::digest_only(b.meta.version, b.meta.value_hash);
            let k = key.to_vec();
            state
                .blocking(move |s| s.compare_and_restore(&k, Some(&after), Some(&restored)))
                .await
                .map_err(store_err)?;
            Ok(Ok(()))
        }
    }
}

/// How long undo waits for the change feed to deliver a repair's write to
/// the tree before it leaves the row alone.
pub const UNDO_FEED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Undoes a repair that inserted `key`'s row (no before-image): the store
/// deletes it, and its feed reports the delete as a tombstone newer than
/// the repair's entry. Before the repair the tree held nothing for the key,
/// and a tombstone would say this replica deleted the row (a later repair
/// would carry that delete to its peer), so once the feed has delivered it
/// the tombstone is removed here, from a tombstone newer than the repair's
/// entry only.
async fn undo_insert<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    adapter: &dyn RowAdapter,
    key: &[u8],
    after: EntryMeta,
) -> Result<Result<(), SkipNote>, RowError> {
    match adapter.restore(key, &after, None).await? {
        Restore::Changed => {
            return Ok(Err(SkipNote::new(
                SkipReason::ChangedSinceRepair,
                "changed since the repair",
            )));
        }
        Restore::Restored | Restore::AlreadyRestored => {}
    }
    // Waits for the feed's tombstone (or a row written since the undo).
    match await_tree(state, key, |t| t.is_none_or(|t| newer(t, &after))).await? {
        // Gone already (an earlier undo removed it).
        None => Ok(Ok(())),
        Some(t) if t.tombstone && newer(&t, &after) => {
            let k = key.to_vec();
            state
                .blocking(move |s| s.compare_and_restore(&k, Some(&t), None))
                .await
                .map_err(store_err)?;
            Ok(Ok(()))
        }
        // A live row newer than the repair's: written since the undo.
        Some(t) if newer(&t, &after) => Ok(Ok(())),
        Some(_) => Ok(Err(SkipNote::new(
            SkipReason::FeedPending,
            format!(
                "the row is deleted, but the change feed did not deliver the delete to \
                 the tree within {} ms (UNDO_FEED_WAIT): the tree will show a delete here",
                UNDO_FEED_WAIT.as_millis()
            ),
        ))),
    }
}

/// The tree's entry of `key`.
async fn tree_meta<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    key: &[u8],
) -> Result<Option<EntryMeta>, RowError> {
    let k = key.to_vec();
    state
        .blocking(move |s| s.get(&k))
        .await
        .map(|r| r.map(|r| r.meta))
        .map_err(store_err)
}

/// The tree's entry of `key` once `done` holds for it, or as it is after
/// [`UNDO_FEED_WAIT`]: the feed is another process's, and nothing here is
/// told when it delivers, so the tree is read again every
/// [`UNDO_FEED_POLL`].
async fn await_tree<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    key: &[u8],
    done: impl Fn(Option<&EntryMeta>) -> bool,
) -> Result<Option<EntryMeta>, RowError> {
    let deadline = tokio::time::Instant::now() + UNDO_FEED_WAIT;
    loop {
        let tree = tree_meta(state, key).await?;
        if done(tree.as_ref()) || tokio::time::Instant::now() >= deadline {
            return Ok(tree);
        }
        tokio::time::sleep(UNDO_FEED_POLL).await;
    }
}

/// How often [`await_tree`] reads the tree again.
pub const UNDO_FEED_POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn store_err(e: AgentError) -> RowError {
    RowError::Unavailable(e.message().to_string())
}

/// Whether `a` is newer than `b` by the apply rule.
fn newer(a: &EntryMeta, b: &EntryMeta) -> bool {
    mend_core::apply::decide(Some(b), a) == mend_core::Decision::Apply
}

// Undo polls the feed several times before it gives up on it.
const _: () = assert!(UNDO_FEED_POLL.as_millis() * 10 <= UNDO_FEED_WAIT.as_millis());
