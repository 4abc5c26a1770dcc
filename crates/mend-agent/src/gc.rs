//! Safe tombstone purge: Cassandra's gc_grace rule, made explicit and
//! checked instead of hoped for.
//!
//! A tombstone may go only once no replica of its range can still hold the
//! value it deleted; otherwise that replica would, at the next exchange,
//! look like the only holder of a `missing` key and be "repaired" back to
//! life. What the agent knows: a diff that finds no key where this side's
//! tombstone meets an older live value at the peer (and no tree mismatch)
//! proves that the peer held, when the diff started, for every tombstone
//! this side held then, the same tombstone, something newer, or nothing
//! ([`DiffOutcome::purge_safe_ranges`]). So each such diff records, per
//! (peer, range), its start time ([`record_sync`]), persisted in the
//! store's meta column family; a range's *purge horizon* is the oldest of those times over all
//! configured peers (none recorded for a peer: no horizon, nothing goes).
//!
//! "Nothing" needs care with more than one peer: a peer that holds nothing
//! may later be handed the older value by a third replica that still had it
//! (a `missing` repair between those two). So a sync that found the peer
//! holding nothing against a tombstone here counts only if every other
//! peer's last *clean* sync (the peer held every tombstone here, or newer)
//! is no later than it: then no replica held an older value it could pass
//! on. Otherwise the peer's own last clean sync counts ([`horizons`]).
//! The purge removes tombstones that arrived here before the horizon and are
//! older than `tombstone_grace_ms`, a bounded batch at a time, paced by
//! `gc.purge_rate_per_s`, keeping the tree exact (the store does the
//! removal, under its writer lock).
//!
//! While one side has purged and the other not yet, the diff shows a
//! tombstone past its grace against nothing; the repair plan skips it
//! ([`mend_core::playbook::Skip::Purged`]) instead of copying it back, and
//! the other side's own purge follows under its own horizon, which the
//! earlier in-sync exchange already moved past the tombstone.
//!
//! The same background task prunes the repair journal
//! ([`prune_journal`]).
//!
//! Rows: `agent/sync/<peer id>\0<range name>` → ms (u64 big-endian), and
//! `agent/sync-clean/<peer id>\0<range name>` → ms of the last clean one.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tonic::Status;

use mend_store::{Cf, Op};

use crate::exchange::DiffOutcome;
use crate::state::{AgentBackend, AgentState};

/// Index rows one purge call examines (one store batch, one hold of the
/// writer lock).
pub const PURGE_BATCH_ROWS: usize = 256;

const SYNC_PREFIX: &[u8] = b"agent/sync/";
const CLEAN_PREFIX: &[u8] = b"agent/sync-clean/";

fn sync_key(peer: &str, range: &str) -> Vec<u8> {
    crate::state::peer_range_key(SYNC_PREFIX, peer, range)
}

fn clean_key(peer: &str, range: &str) -> Vec<u8> {
    crate::state::peer_range_key(CLEAN_PREFIX, peer, range)
}

/// Records, for each range of `out` that is purge-safe, that the peer
/// could not resurrect any tombstone this side held when the diff started. Only a configured peer's
/// record moves a purge horizon; the peer is named by the node id its
/// handshake proved.
pub async fn record_sync<B: AgentBackend>(
    state: &AgentState<B>,
    out: &DiffOutcome,
) -> Result<(), Status> {
    if !state.config.peers.iter().any(|p| p.id == out.peer_node) {
        return Ok(());
    }
    let at = out.started_ms.to_be_bytes().to_vec();
    let mut ops: Vec<Op> = out
        .purge_safe_ranges()
        .map(|r| Op::Put(Cf::Meta, sync_key(&out.peer_node, r), at.clone()))
        .collect();
    ops.extend(
        out.purge_clean_ranges()
            .map(|r| Op::Put(Cf::Meta, clean_key(&out.peer_node, r), at.clone())),
    );
    if ops.is_empty() {
        return Ok(());
    }
    state.blocking(move |s| s.backend().write(ops, false)).await
}

/// When `peer` was last seen in sync on `range` (ms), if ever.
pub fn last_sync<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &str,
    range: &str,
) -> Result<Option<u64>, mend_store::StoreError> {
    read_ms(state, &sync_key(peer, range))
}

/// When `peer` was last seen in sync on `range` holding every tombstone of
/// this side's (or newer), if ever.
pub fn last_clean_sync<B: AgentBackend>(
    state: &AgentState<B>,
    peer: &str,
    range: &str,
) -> Result<Option<u64>, mend_store::StoreError> {
    read_ms(state, &clean_key(peer, range))
}

fn read_ms<B: AgentBackend>(
    state: &AgentState<B>,
    key: &[u8],
) -> Result<Option<u64>, mend_store::StoreError> {
    let raw = state.store.backend().get(Cf::Meta, key)?;
    Ok(raw.and_then(|v| {
        <[u8; 8]>::try_from(v.as_slice())
            .ok()
            .map(u64::from_be_bytes)
    }))
}

/// A range's purge horizon and the peer that holds it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Horizon {
    /// Range name.
    pub range: String,
    /// Tombstones that arrived before this (ms) may be purged once past
    /// their grace; 0 = none may.
    pub before_ms: u64,
    /// The configured peer with the oldest (or no) in-sync record; `None`
    /// when no peer is configured (a single replica purges on grace alone).
    pub held_by: Option<String>,
}

/// The purge horizon of every range: the oldest over the configured peers
/// (with none configured, now) of each peer's last in-sync time, where a
/// sync that found the peer holding nothing against a tombstone here
/// counts only if no other peer's last clean sync is later (else the
/// peer's own last clean sync counts; see the module doc).
pub fn horizons<B: AgentBackend>(
    state: &AgentState<B>,
) -> Result<Vec<Horizon>, mend_store::StoreError> {
    let now = state.store.now_ms();
    let mut out = Vec::new();
    for spec in state.store.ranges().specs() {
        let mut h = Horizon {
            range: spec.name.clone(),
            before_ms: now,
            held_by: None,
        };
        let mut seen = Vec::with_capacity(state.config.peers.len());
        for p in &state.config.peers {
            let any = last_sync(state, &p.id, &spec.name)?.unwrap_or(0);
            let clean = last_clean_sync(state, &p.id, &spec.name)?.unwrap_or(0);
            seen.push((p.id.as_str(), any, clean));
        }
        for &(id, any, clean) in &seen {
            let counts = clean >= any || seen.iter().all(|&(other, _, c)| other == id || c <= any);
            let at = if counts { any } else { clean };
            if h.held_by.is_none() || at < h.before_ms {
                h.before_ms = at;
                h.held_by = Some(id.to_string());
            }
        }
        out.push(h);
    }
    Ok(out)
}

/// What one purge round did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeRound {
    /// Tombstones removed, over all ranges.
    pub purged: u64,
    /// Index rows examined.
    pub examined: u64,
    /// Each range's horizon as used.
    pub horizons: Vec<Horizon>,
}

/// One purge round over every range, to the current horizons, paced by
/// `gc.purge_rate_per_s`.
pub async fn purge_once<B: AgentBackend>(state: &Arc<AgentState<B>>) -> Result<PurgeRound, Status> {
    let st = state.clone();
    let hs = state
        .run(move || horizons(&st).map_err(crate::status::from_store))
        .await?;
    let mut round = PurgeRound::default();
    let mut pacer = crate::repair::Pacer::new(0, state.config.gc.purge_rate_per_s);
    for (id, h) in hs.iter().enumerate() {
        let id = id as u16;
        state
            .metrics
            .purge_horizon_timestamp_seconds
            .get_or_create(&crate::metrics::RangeLabel {
                range: h.range.clone(),
            })
            .set((h.before_ms / 1000) as i64);
        if h.before_ms == 0 {
            continue;
        }
        loop {
            let before = h.before_ms;
            let p = state
                .blocking(move |s| s.purge_tombstones(id, before, PURGE_BATCH_ROWS))
                .await?;
            round.purged += p.purged;
            round.examined += p.examined;
            state
                .metrics
                .tombstones_purged
                .get_or_create(&crate::metrics::RangeLabel {
                    range: h.range.clone(),
                })
                .inc_by(p.purged);
            if !p.more {
                break;
            }
            pacer.take(0, p.examined).await;
        }
    }
    round.horizons = hs;
    if round.purged > 0 {
        tracing::info!(purged = round.purged, "tombstones purged");
    }
    Ok(round)
}

/// Prunes the repair journal to `journal.retention_ms` and
/// `journal.repairs_max`; returns how many repairs went.
pub async fn prune_journal<B: AgentBackend>(state: &Arc<AgentState<B>>) -> Result<u64, Status> {
    let now = state.store.now_ms();
    let r = crate::journal::Retention {
        age_ms: state.config.journal.retention_ms,
        count_max: state.config.journal.repairs_max,
    };
    let n = state
        .blocking(move |s| crate::journal::prune(s, now, r))
        .await?;
    if n > 0 {
        tracing::info!(pruned = n, "repair journal pruned");
    }
    Ok(n)
}

/// Runs [`purge_once`] (when `gc.enabled`) and [`prune_journal`] every `gc.purge_interval_ms` until `shutdown`.
pub fn spawn<B: AgentBackend>(state: Arc<AgentState<B>>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let purge = state.config.gc.enabled;
        let mut tick =
            tokio::time::interval(Duration::from_millis(state.config.gc.purge_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            if purge && let Err(e) = purge_once(&state).await {
                tracing::warn!(error = %e.message(), "tombstone purge failed; retried next interval");
            }
            if let Err(e) = prune_journal(&state).await {
                tracing::warn!(error = %e.message(), "journal prune failed; retried next interval");
            }
        }
    });
}
