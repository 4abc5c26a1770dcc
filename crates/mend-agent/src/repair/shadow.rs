//! Shadow runs: the plan applied to checkpoints of both stores, and the
//! planned keys compared afterwards; the live stores never see the writes.

use std::sync::Arc;

use mend_core::classify::Side;
use mend_rpc::convert::version_to_pb;
use mend_rpc::pb;

use crate::error::AgentError;
use crate::exchange::{connect, next_message, peer_err};
use crate::state::{AgentBackend, AgentState};
use crate::wire::write_from_pb;

use super::fetch::FetchCheck;
use super::plan::keys_behind;
use super::{Planned, REPAIR_BATCH_KEYS, ShadowOutcome, rpc_timeout};
use mend_core::playbook::Resolution;
use mend_core::playbook::{SkipNote, SkipReason};

/// Applies the plan to checkpoints of both stores (the peer's through
/// `ShadowPush`) and compares the planned keys afterwards.
pub(super) async fn shadow_run<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
    addr: &str,
    planned: &[Planned],
) -> Result<ShadowOutcome, AgentError> {
    use mend_core::exchange::EntrySummary;
    use mend_rpc::convert::summary_from_pb;
    use std::collections::HashMap;
    let peer = connect(state, addr).await?;
    // Rows behind an adapter have no checkpoint to apply to.
    let (rows, planned): (Vec<&Planned>, Vec<&Planned>) = planned
        .iter()
        .partition(|p| crate::repair::rows::digest_range(state, &p.key).is_some());
    let planned: Vec<Planned> = planned.into_iter().cloned().collect();
    let planned = planned.as_slice();
    let to_peer = keys_behind(planned, Side::Peer);
    let to_local = keys_behind(planned, Side::Local);
    let mut peer_after: HashMap<Vec<u8>, Option<EntrySummary>> = HashMap::new();
    let mut local_after: HashMap<Vec<u8>, Option<EntrySummary>> = HashMap::new();
    let summarize = |r: pb::LookupResponse,
                     into: &mut HashMap<Vec<u8>, Option<EntrySummary>>|
     -> Result<(), AgentError> {
        for x in r.results {
            let e = match x.entry {
                Some(e) if x.found => Some(summary_from_pb(e).map_err(|s| peer_err(addr, s))?),
                _ => None,
            };
            into.insert(x.key, e);
        }
        Ok(())
    };
    // Peer side: push the local entries to a checkpoint of the peer.
    if !to_peer.is_empty() {
        let keys = to_peer.clone();
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
        summarize(r, &mut peer_after)?;
    }
    // Local side: fetch the peer's entries and apply them to a local checkpoint.
    if !to_local.is_empty() {
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
        let after = state
            .run(move || {
                B::shadow_apply(&st.store, &st.config.data_dir, "local", writes)
                    .map_err(AgentError::from)
            })
            .await?;
        local_after.extend(after);
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
        summarize(r, &mut peer_after)?;
    }
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
        let l = local_after.get(&p.key).cloned().flatten();
        let r = peer_after.get(&p.key).cloned().flatten();
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
    Ok(out)
}
