//! Shadow runs: the plan applied to checkpoints of both stores, and the
//! planned keys compared afterwards; the live stores never see the writes.

use std::collections::HashMap;
use std::sync::Arc;

use mend_core::classify::Side;
use mend_core::exchange::EntrySummary;
use mend_core::playbook::{Resolution, SkipNote, SkipReason};
use mend_rpc::convert::{summary_from_pb, version_to_pb};
use mend_rpc::pb;

use crate::error::AgentError;
use crate::exchange::{connect, next_message, peer_err};
use crate::state::{AgentBackend, AgentState};
use crate::wire::write_from_pb;

use super::fetch::FetchCheck;
use super::plan::keys_behind;
use super::{Planned, REPAIR_BATCH_KEYS, ShadowOutcome, rpc_timeout};

/// After-states of keys by side: `None` where the key is absent.
type After = HashMap<Vec<u8>, Option<EntrySummary>>;

/// Applies the plan to checkpoints of both stores (the peer's through
/// `ShadowPush`) and compares the planned keys afterwards.
pub(super) async fn shadow_run<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    planned: &[Planned],
) -> Result<ShadowOutcome, AgentError> {
    let peer = connect(state, addr).await?;
    // Rows behind an adapter have no checkpoint to apply to.
    let (rows, planned): (Vec<&Planned>, Vec<&Planned>) = planned
        .iter()
        .partition(|p| crate::repair::rows::digest_range(state, &p.key).is_some());
    let planned: Vec<Planned> = planned.into_iter().cloned().collect();
    let to_peer = keys_behind(&planned, Side::Peer);
    let to_local = keys_behind(&planned, Side::Local);
    let mut peer_after = After::new();
    let mut local_after = After::new();
    if !to_peer.is_empty() {
        shadow_peer(state, addr, &peer, &to_peer, &mut peer_after).await?;
    }
    if !to_local.is_empty() {
        shadow_local(state, addr, &peer, &to_local, &mut local_after).await?;
    }
    // The other side of each planned key is its live entry (unchanged).
    let keys: Vec<Vec<u8>> = to_peer.clone();
    let live_local = state
        .blocking(move |s| {
            keys.iter()
                .map(|k| s.summary(k).map(|e| (k.clone(), e)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    local_after.extend(live_local);
    for chunk in to_local.chunks(state.config.limits.fetch_keys_max) {
        let r = peer
            .lookup(pb::FetchRequest {
                keys: chunk.to_vec(),
            })
            .await
            .map_err(|s| peer_err(addr, s))?;
        summarize(addr, r, &mut peer_after)?;
    }
    Ok(predict(&rows, &planned, &local_after, &peer_after))
}

/// The entries of a lookup (or shadow push) answer, into `into`.
fn summarize(addr: &str, r: pb::LookupResponse, into: &mut After) -> Result<(), AgentError> {
    for x in r.results {
        let e = match x.entry {
            Some(e) if x.found => Some(summary_from_pb(e).map_err(|s| peer_err(addr, s))?),
            _ => None,
        };
        into.insert(x.key, e);
    }
    Ok(())
}

/// Peer side: the local entries of `to_peer` pushed to a checkpoint of the
/// peer; its entries afterwards into `after`.
async fn shadow_peer<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    to_peer: &[Vec<u8>],
    after: &mut After,
) -> Result<(), AgentError> {
    let keys = to_peer.to_vec();
    let recs = state
        .blocking(move |s| {
            Ok(keys
                .iter()
                .cloned()
                .zip(s.get_many(&keys)?)
                .collect::<Vec<_>>())
        })
        .await?;
    let entries: Vec<pb::Entry> = recs
        .into_iter()
        .filter_map(|(key, r)| {
            r.map(|r| pb::Entry {
                key,
                version: Some(version_to_pb(&r.meta.version)),
                tombstone: r.meta.tombstone,
                value: r.value,
            })
        })
        .collect();
    let msgs: Vec<pb::PushRequest> = entries
        .chunks(REPAIR_BATCH_KEYS)
        .map(|c| pb::PushRequest {
            repair_id: String::new(),
            entries: c.to_vec(),
        })
        .collect();
    let r = peer
        .shadow_push(msgs)
        .await
        .map_err(|s| peer_err(addr, s))?;
    summarize(addr, r, after)
}

/// Local side: the peer's entries of `to_local` fetched and applied to a
/// checkpoint of this store; its entries afterwards into `after`.
async fn shadow_local<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    peer: &crate::exchange::Peer,
    to_local: &[Vec<u8>],
    after: &mut After,
) -> Result<(), AgentError> {
    let mut writes = Vec::new();
    for chunk in to_local.chunks(state.config.limits.fetch_keys_max) {
        let mut stream = peer
            .fetch(pb::FetchRequest {
                keys: chunk.to_vec(),
            })
            .await
            .map_err(|s| peer_err(addr, s))?;
        let mut check = FetchCheck::new(chunk);
        while let Some(m) = next_message(&mut stream, rpc_timeout(state), addr).await? {
            if let Some(e) = check.entry(m, addr)? {
                writes.push(write_from_pb(e).map_err(|s| peer_err(addr, s))?);
            }
        }
    }
    let st = state.clone();
    let applied = state
        .run(move || {
            B::shadow_apply(&st.store, &st.config.data_dir, "local", writes)
                .map_err(AgentError::from)
        })
        .await?;
    after.extend(applied);
    Ok(())
}

/// The prediction: a planned key converges when both sides' entries agree
/// afterwards; rows behind adapters and keys toward an authority are not
/// predicted.
fn predict(rows: &[&Planned], planned: &[Planned], local: &After, peer: &After) -> ShadowOutcome {
    let mut out = ShadowOutcome::default();
    for p in rows {
        out.remaining.push((
            p.key.clone(),
            SkipNote::new(
                SkipReason::NotPredicted,
                "not predicted: a digest-only range's rows live behind its adapter, \
                 which a shadow run does not write to",
            ),
        ));
    }
    for p in planned {
        if p.resolution == Resolution::Authority {
            out.remaining.push((
                p.key.clone(),
                SkipNote::new(
                    SkipReason::NotPredicted,
                    "not predicted: resolving toward the authority re-stamps the entry, \
                     which a shadow run does not do",
                ),
            ));
            continue;
        }
        let l = local.get(&p.key).cloned().flatten();
        let r = peer.get(&p.key).cloned().flatten();
        if l.as_ref().map(|e| e.hash) == r.as_ref().map(|e| e.hash) {
            out.converged += 1;
        } else {
            out.remaining.push((
                p.key.clone(),
                SkipNote::new(
                    SkipReason::Kept,
                    format!(
                        "{} would still differ: the {} side's apply rule kept its entry",
                        p.category.as_str(),
                        p.behind.as_str()
                    ),
                ),
            ));
        }
    }
    out
}
