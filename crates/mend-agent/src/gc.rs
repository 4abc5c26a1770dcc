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
//! A record is about one disk. A replica that loses its disk and rejoins
//! empty under the same node id no longer holds what it was seen holding,
//! and a third replica may hand it the older value before this side hears
//! from it again. So every record carries the peer's *incarnation* (a
//! random id its agent keeps for the life of its store and sends in every
//! handshake; a new one resets the peer's records here), and each purge
//! round first asks every configured peer for its incarnation
//! ([`confirm_peers`]): a peer that does not answer, or answers with a new
//! one, holds every horizon at 0 for that round; a record newer than the
//! round's check is not used in it. A wipe after the check is harmless: by
//! then every peer held the tombstone (or newer, or nothing under the rule
//! above), so no replica has the older value to hand on.
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
//! Rows: `agent/sync/<peer id>\0<range name>` → ms (u64 big-endian),
//! `agent/sync-clean/<peer id>\0<range name>` → ms of the last clean one,
//! and `agent/sync-incarnation/<peer id>` → the peer incarnation those
//! records are about (u64 big-endian).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::error::AgentError;
use crate::state::{AgentBackend, AgentState};
use crate::sync_record::{last_clean_sync, last_sync, recorded_incarnation};

/// Index rows one purge call examines (one store batch, one hold of the
/// writer lock).
pub const PURGE_BATCH_ROWS: usize = 256;

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
    /// Why `held_by` holds the horizon where it is.
    pub reason: HoldReason,
}

/// Why a peer holds a purge horizon back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Its in-sync record is the oldest (or it has none).
    OldestSync,
    /// It did not answer this round's incarnation check.
    Unconfirmed,
    /// It answered with another incarnation than its records are about (a
    /// replica that lost its disk): nothing recorded about it counts.
    NewIncarnation,
    /// Its record is newer than this round's check (an exchange raced it);
    /// the next round uses it.
    RecordAfterCheck,
    /// Discovery is on and has not resolved since start: a peer may be
    /// missing from the set.
    DiscoveryPending,
}

/// What one purge round learnt from asking every configured peer for its
/// incarnation ([`confirm_peers`]).
#[derive(Debug, Clone, Default)]
pub struct Confirmation {
    /// This agent's clock (ms) before the first question.
    pub asked_ms: u64,
    /// Each configured peer's incarnation; `None`: it did not answer.
    pub peers: std::collections::HashMap<String, Option<u64>>,
}

/// The purge horizon of every range as the records stand (what `mend
/// status` shows; the purge itself uses [`horizons_confirmed`]).
pub fn horizons<B: AgentBackend>(
    state: &AgentState<B>,
) -> Result<Vec<Horizon>, mend_store::StoreError> {
    horizons_confirmed(state, None)
}

/// The purge horizon of every range: the oldest over the configured peers
/// (with none configured, now) of each peer's last in-sync time, where a
/// sync that found the peer holding nothing against a tombstone here
/// counts only if no other peer's last clean sync is later (else the
/// peer's own last clean sync counts; see the module doc). With a
/// `confirmation`, a peer that did not answer it, answered with another
/// incarnation than its records are about, or has a record newer than it
/// holds the horizon at 0.
pub fn horizons_confirmed<B: AgentBackend>(
    state: &AgentState<B>,
    confirmation: Option<&Confirmation>,
) -> Result<Vec<Horizon>, mend_store::StoreError> {
    let now = state.store.now_ms();
    let peers = state.peers();
    let pending = state.discovery_pending();
    let mut held = Vec::new();
    if let Some(c) = confirmation {
        for p in &peers {
            let why = match c.peers.get(&p.id).copied().flatten() {
                None => Some(HoldReason::Unconfirmed),
                Some(i) if recorded_incarnation(state, &p.id)? != Some(i) => {
                    Some(HoldReason::NewIncarnation)
                }
                Some(_) => None,
            };
            held.push(why);
        }
    }
    let mut out = Vec::new();
    for spec in state.store.ranges().specs() {
        let mut h = Horizon {
            range: spec.name.clone(),
            before_ms: now,
            held_by: None,
            reason: HoldReason::OldestSync,
        };
        if pending {
            h.before_ms = 0;
            h.reason = HoldReason::DiscoveryPending;
            out.push(h);
            continue;
        }
        let mut seen = Vec::with_capacity(peers.len());
        for p in &peers {
            let any = last_sync(state, &p.id, &spec.name)?.unwrap_or(0);
            let clean = last_clean_sync(state, &p.id, &spec.name)?.unwrap_or(0);
            seen.push((p.id.as_str(), any, clean));
        }
        for (i, &(id, any, clean)) in seen.iter().enumerate() {
            let counts = clean >= any || seen.iter().all(|&(other, _, c)| other == id || c <= any);
            let mut at = if counts { any } else { clean };
            let mut reason = HoldReason::OldestSync;
            if let Some(why) = held.get(i).copied().flatten() {
                (at, reason) = (0, why);
            } else if let Some(c) = confirmation
                && any.max(clean) > c.asked_ms
            {
                (at, reason) = (0, HoldReason::RecordAfterCheck);
            }
            if h.held_by.is_none() || at < h.before_ms {
                h.before_ms = at;
                h.held_by = Some(id.to_string());
                h.reason = reason;
            }
        }
        out.push(h);
    }
    Ok(out)
}

/// Asks every configured peer for its store incarnation (a handshake that
/// compares no range), one after the other, each bounded by the link's
/// per-call timeout.
pub async fn confirm_peers<B: AgentBackend>(state: &AgentState<B>) -> Confirmation {
    let mut c = Confirmation {
        asked_ms: state.store.now_ms(),
        peers: Default::default(),
    };
    for p in &state.peers() {
        let answer = crate::exchange::ask_handshake(state, &p.address, &[]).await;
        let inc = match answer {
            Ok(r) if r.node_id == p.id && r.incarnation != 0 => Some(r.incarnation),
            Ok(r) => {
                tracing::warn!(peer = %p.id, answered_as = %r.node_id, incarnation = r.incarnation,
                    "peer cannot confirm its store incarnation; tombstone purge waits");
                None
            }
            Err(e) => {
                tracing::info!(peer = %p.id, error = %e.message(),
                    "peer did not confirm its store incarnation; tombstone purge waits");
                None
            }
        };
        c.peers.insert(p.id.clone(), inc);
    }
    c
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
pub async fn purge_once<B: AgentBackend>(
    state: &Arc<AgentState<B>>,
) -> Result<PurgeRound, AgentError> {
    // Only when some record allows a purge is it worth asking the peers.
    let st = state.clone();
    let recorded = state
        .run(move || horizons(&st).map_err(AgentError::from))
        .await?;
    let hs = if recorded.iter().all(|h| h.before_ms == 0) {
        recorded
    } else {
        let confirmation = confirm_peers(state).await;
        let records = state.sync_records.lock().await;
        let st = state.clone();
        let hs = state
            .run(move || horizons_confirmed(&st, Some(&confirmation)).map_err(AgentError::from))
            .await?;
        drop(records);
        hs
    };
    let mut round = PurgeRound::default();
    let mut pacer = crate::pace::Pacer::new(0, state.config.gc.purge_rate_per_s);
    for (id, h) in hs.iter().enumerate() {
        let id = id as u16;
        state
            .metrics
            .purge_horizon_timestamp_seconds
            .get_or_create(&crate::metrics::RangeLabel::of(&h.range))
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
                .get_or_create(&crate::metrics::RangeLabel::of(&h.range))
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
pub async fn prune_journal<B: AgentBackend>(state: &Arc<AgentState<B>>) -> Result<u64, AgentError> {
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
