//! Drift over time: a bounded history of exchanges per (peer, range), the
//! keys seen divergent and for how many consecutive exchanges (transient vs
//! persistent), time to convergence, and drift budgets with their state.
//!
//! The history, the budget state and the convergence counters survive a
//! restart: after each exchange, scheduled or on demand
//! (`schedule::run_once`, `Operator/Diff`), the agent writes them
//! ([`Monitor::persisted`], at most `history_max` records per pair) to the
//! meta rows `agent/drift/<peer>\0<range>` (JSON), and loads them when it
//! starts ([`Monitor::load`]). The per-key streaks (which keys were
//! divergent last time) are not kept: after a restart every divergent key
//! counts as new once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use mend_core::classify::Category;
use mend_core::playbook::PlaybookAction;

use crate::config::Budget;
use crate::metrics::{Metrics, PeerLabel, PeerRange, PeerRangeCategory};
use crate::outcome::DiffOutcome;

/// One exchange of one range, as kept in the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// When it ran, ms since the epoch.
    pub at_ms: u64,
    /// Divergent keys.
    pub divergent_keys: u64,
    /// Divergent keys by category.
    pub by_category: BTreeMap<Category, u64>,
    /// Now minus the oldest newer-write timestamp among divergent keys, ms.
    pub oldest_divergence_ms: u64,
    /// Keys divergent in this and the previous exchange (in flight excluded).
    pub persistent: u64,
    /// Keys in flight or new since the previous exchange.
    pub transient: u64,
    /// Keys divergent in the previous exchange of this (peer, range) and
    /// not in this one (0 in the first exchange after a restart: which
    /// keys were divergent is not persisted).
    pub converged: u64,
    /// Round trips of the whole exchange.
    pub rounds: u32,
    /// Bytes sent by the whole exchange.
    pub bytes_sent: u64,
    /// Bytes received by the whole exchange.
    pub bytes_received: u64,
    /// Wall time of the whole exchange, ms.
    pub elapsed_ms: u64,
    /// What the playbook did, for a person.
    pub action: String,
    /// What the playbook did, for a program (`None`: a record kept from
    /// before the kind was recorded).
    #[serde(default)]
    pub action_kind: Option<PlaybookAction>,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    first_seen_ms: u64,
    streak: u32,
}

/// Drift state of one (peer, range).
#[derive(Debug, Default)]
pub struct RangeDrift {
    /// Oldest first, at most `history_max`.
    pub history: VecDeque<ExchangeRecord>,
    tracked: HashMap<Vec<u8>, Tracked>,
    /// Budget currently exceeded.
    pub budget_exceeded: bool,
    /// When the budget state last flipped (0 = never).
    pub budget_since_ms: u64,
    /// Convergences seen so far: one each time an exchange no longer finds
    /// a key the previous exchange of this (peer, range) found divergent (a
    /// key that diverges again counts again). The sum of
    /// [`ExchangeRecord::converged`] over every exchange, not only those
    /// the bounded history still holds.
    pub converged_keys: u64,
    /// The sum, over those convergences, of the time from the first
    /// exchange of the key's unbroken run of divergent exchanges (or the
    /// first after a restart) to the exchange that no longer found it, ms.
    /// Measured between exchanges: not from the write that made the key
    /// diverge, nor to the moment it converged.
    pub convergence_ms_total: u64,
}

/// What survives a restart of one (peer, range)'s drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedDrift {
    /// Oldest first.
    pub history: Vec<ExchangeRecord>,
    /// Budget currently exceeded.
    pub budget_exceeded: bool,
    /// When the budget state last flipped.
    pub budget_since_ms: u64,
    /// [`RangeDrift::converged_keys`].
    pub converged_keys: u64,
    /// [`RangeDrift::convergence_ms_total`].
    pub convergence_ms_total: u64,
}

const DRIFT_PREFIX: &[u8] = b"agent/drift/";

fn drift_key(peer: &str, range: &str) -> Vec<u8> {
    crate::meta::peer_range_key(DRIFT_PREFIX, peer, range)
}

/// A budget state change.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetFlip {
    /// Peer.
    pub peer: String,
    /// Range.
    pub range: String,
    /// New state.
    pub exceeded: bool,
    /// Divergent keys now.
    pub divergent_keys: u64,
    /// Oldest divergence now, ms.
    pub oldest_divergence_ms: u64,
    /// The budget.
    pub divergent_keys_max: u64,
    /// The budget.
    pub oldest_divergence_ms_max: u64,
}

/// How the exchanges with one peer went lately (in memory: since start).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkState {
    /// The last exchange that completed, ms since the epoch (0 = none).
    pub last_ok_ms: u64,
    /// The last failure's message (empty = none since start).
    pub last_error: String,
    /// When it failed.
    pub last_error_ms: u64,
    /// Failures since the last exchange that completed.
    pub failures: u32,
}

/// The latest exchange with one peer, and its attribution, computed once
/// when first asked for (the dashboard asks on every poll).
#[derive(Debug)]
pub struct Latest {
    /// When it was recorded, ms.
    pub at_ms: u64,
    /// The exchange.
    pub outcome: Arc<DiffOutcome>,
    attribution: std::sync::OnceLock<crate::report::Attribution>,
}

impl Latest {
    /// The attribution as of the exchange, windows split at `window_gap_ms`
    /// (the first caller's gap is the one kept).
    pub fn attribution(&self, window_gap_ms: u64) -> &crate::report::Attribution {
        self.attribution
            .get_or_init(|| crate::report::attribution(&self.outcome, self.at_ms, window_gap_ms))
    }
}

/// Drift state of every peer, and the latest report per peer.
#[derive(Default)]
pub struct Monitor {
    ranges: Mutex<BTreeMap<(String, String), RangeDrift>>,
    last: Mutex<BTreeMap<String, Arc<Latest>>>,
    links: Mutex<BTreeMap<String, LinkState>>,
}

/// A snapshot of one (peer, range) for the History RPC and /status.
#[derive(Debug, Clone, Serialize)]
pub struct DriftView {
    /// Peer.
    pub peer: String,
    /// Range.
    pub range: String,
    /// Budget exceeded now.
    pub budget_exceeded: bool,
    /// Since when.
    pub budget_since_ms: u64,
    /// The history, oldest first.
    pub records: Vec<ExchangeRecord>,
    /// [`RangeDrift::converged_keys`].
    pub converged_keys: u64,
    /// [`RangeDrift::convergence_ms_total`] over `converged_keys`, ms (0
    /// when none): a mean time between exchanges, not between a write and
    /// its convergence.
    pub convergence_ms_mean: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Monitor {
    /// Records an exchange against `peer`; returns budget flips.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        metrics: &Metrics,
        peer: &str,
        budget: Option<Budget>,
        history_max: usize,
        outcome: &Arc<DiffOutcome>,
        now_ms: u64,
        action: (PlaybookAction, &str),
    ) -> Vec<BudgetFlip> {
        let mut flips = Vec::new();
        let mut ranges = lock(&self.ranges);
        for range in &outcome.ranges {
            let drift = ranges.entry((peer.to_string(), range.clone())).or_default();
            let keys: Vec<_> = outcome.keys.iter().filter(|k| &k.range == range).collect();
            let mut rec = ExchangeRecord {
                at_ms: now_ms,
                divergent_keys: keys.len() as u64,
                rounds: outcome.cost.rounds,
                bytes_sent: outcome.cost.bytes_sent,
                bytes_received: outcome.cost.bytes_received,
                elapsed_ms: outcome.elapsed.as_millis() as u64,
                action: action.1.to_string(),
                action_kind: Some(action.0),
                ..Default::default()
            };
            let mut present = std::collections::HashSet::new();
            for k in &keys {
                *rec.by_category.entry(k.category).or_default() += 1;
                let newer_ms = [&k.div.local, &k.div.peer]
                    .iter()
                    .filter_map(|e| e.as_ref().map(|e| e.version.ms))
                    .max()
                    .unwrap_or(now_ms);
                rec.oldest_divergence_ms = rec
                    .oldest_divergence_ms
                    .max(now_ms.saturating_sub(newer_ms));
                present.insert(k.div.key.clone());
                let t = drift.tracked.entry(k.div.key.clone()).or_insert(Tracked {
                    first_seen_ms: now_ms,
                    streak: 0,
                });
                t.streak += 1;
                if k.category != Category::InFlight && t.streak >= 2 {
                    rec.persistent += 1;
                } else {
                    rec.transient += 1;
                }
            }
            let gone: Vec<Vec<u8>> = drift
                .tracked
                .keys()
                .filter(|k| !present.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(t) = drift.tracked.remove(&k) {
                    let ms = now_ms.saturating_sub(t.first_seen_ms);
                    rec.converged += 1;
                    drift.converged_keys += 1;
                    drift.convergence_ms_total += ms;
                    metrics.convergence_seconds.observe(ms as f64 / 1000.0);
                }
            }
            let pr = PeerRange {
                peer: peer.into(),
                range: range.clone(),
            };
            if let Some(b) = budget {
                let counted = rec.divergent_keys
                    - rec
                        .by_category
                        .get(&Category::InFlight)
                        .copied()
                        .unwrap_or(0);
                let exceeded = counted > b.divergent_keys_max
                    || rec.oldest_divergence_ms > b.oldest_divergence_ms_max;
                if exceeded != drift.budget_exceeded || drift.budget_since_ms == 0 {
                    if exceeded != drift.budget_exceeded {
                        flips.push(BudgetFlip {
                            peer: peer.into(),
                            range: range.clone(),
                            exceeded,
                            divergent_keys: counted,
                            oldest_divergence_ms: rec.oldest_divergence_ms,
                            divergent_keys_max: b.divergent_keys_max,
                            oldest_divergence_ms_max: b.oldest_divergence_ms_max,
                        });
                    }
                    drift.budget_exceeded = exceeded;
                    drift.budget_since_ms = now_ms;
                }
                metrics
                    .budget_exceeded
                    .get_or_create(&pr)
                    .set(exceeded as i64);
            }
            drift.history.push_back(rec);
            while drift.history.len() > history_max {
                drift.history.pop_front();
            }
        }
        lock(&self.last).insert(
            peer.to_string(),
            Arc::new(Latest {
                at_ms: now_ms,
                outcome: outcome.clone(),
                attribution: std::sync::OnceLock::new(),
            }),
        );
        let mut links = lock(&self.links);
        let l = links.entry(peer.to_string()).or_default();
        l.last_ok_ms = now_ms;
        l.failures = 0;
        flips
    }

    /// An exchange with `peer` (a configured peer's id: bounded) failed.
    pub fn exchange_failed(&self, peer: &str, now_ms: u64, error: &str) {
        let mut links = lock(&self.links);
        let l = links.entry(peer.to_string()).or_default();
        l.last_error = error.to_string();
        l.last_error_ms = now_ms;
        l.failures = l.failures.saturating_add(1);
    }

    /// How the exchanges with each peer went lately.
    pub fn links(&self) -> BTreeMap<String, LinkState> {
        lock(&self.links).clone()
    }

    /// The latest exchange of every peer.
    pub fn latest(&self) -> Vec<(String, Arc<Latest>)> {
        lock(&self.last)
            .iter()
            .map(|(p, l)| (p.clone(), l.clone()))
            .collect()
    }

    /// Sets the playbook action of the latest record of `peer`.
    pub fn set_action(&self, peer: &str, kind: PlaybookAction, action: &str) {
        for ((p, _), d) in lock(&self.ranges).iter_mut() {
            if p == peer
                && let Some(r) = d.history.back_mut()
            {
                r.action = action.to_string();
                r.action_kind = Some(kind);
            }
        }
    }

    /// The drift state of `peer` (or every peer).
    pub fn view(&self, peer: Option<&str>) -> Vec<DriftView> {
        lock(&self.ranges)
            .iter()
            .filter(|((p, _), _)| peer.is_none_or(|x| x == p))
            .map(|((p, r), d)| DriftView {
                peer: p.clone(),
                range: r.clone(),
                budget_exceeded: d.budget_exceeded,
                budget_since_ms: d.budget_since_ms,
                records: d.history.iter().cloned().collect(),
                converged_keys: d.converged_keys,
                convergence_ms_mean: d
                    .convergence_ms_total
                    .checked_div(d.converged_keys)
                    .unwrap_or(0),
            })
            .collect()
    }

    /// The meta rows that persist `peer`'s drift (see the module doc).
    pub fn persisted(&self, peer: &str) -> Result<Vec<mend_store::Op>, serde_json::Error> {
        let mut ops = Vec::new();
        for ((p, r), d) in lock(&self.ranges).iter() {
            if p != peer {
                continue;
            }
            let row = PersistedDrift {
                history: d.history.iter().cloned().collect(),
                budget_exceeded: d.budget_exceeded,
                budget_since_ms: d.budget_since_ms,
                converged_keys: d.converged_keys,
                convergence_ms_total: d.convergence_ms_total,
            };
            ops.push(mend_store::Op::Put(
                mend_store::Cf::Meta,
                drift_key(p, r),
                serde_json::to_vec(&row)?,
            ));
        }
        Ok(ops)
    }

    /// A monitor holding the drift persisted in `store` (the newest
    /// `history_max` records per pair). Unreadable rows are skipped with a
    /// warning: drift history is diagnostics, never a reason not to start.
    pub fn load<B: mend_store::Backend>(
        store: &mend_store::Store<B>,
        history_max: usize,
    ) -> Result<Monitor, mend_store::StoreError> {
        let m = Monitor::default();
        let mut end = DRIFT_PREFIX.to_vec();
        if let Some(l) = end.last_mut() {
            *l += 1;
        }
        let mut ranges = lock(&m.ranges);
        store
            .backend()
            .scan(mend_store::Cf::Meta, DRIFT_PREFIX, Some(&end), &mut |k, v| {
                let name = &k[DRIFT_PREFIX.len()..];
                let Some(split) = name.iter().position(|b| *b == 0) else {
                    return true;
                };
                let peer = String::from_utf8_lossy(&name[..split]).into_owned();
                let range = String::from_utf8_lossy(&name[split + 1..]).into_owned();
                match serde_json::from_slice::<PersistedDrift>(v) {
                    Ok(p) => {
                        let skip = p.history.len().saturating_sub(history_max);
                        ranges.insert(
                            (peer, range),
                            RangeDrift {
                                history: p.history.into_iter().skip(skip).collect(),
                                tracked: HashMap::new(),
                                budget_exceeded: p.budget_exceeded,
                                budget_since_ms: p.budget_since_ms,
                                converged_keys: p.converged_keys,
                                convergence_ms_total: p.convergence_ms_total,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(%peer, %range, error = %e, "persisted drift history unreadable; starting it afresh")
                    }
                }
                true
            })?;
        drop(ranges);
        Ok(m)
    }

    /// The latest report for `peer`, or the most recent of any peer.
    pub fn last(&self, peer: Option<&str>) -> Option<Arc<DiffOutcome>> {
        let last = lock(&self.last);
        match peer {
            Some(p) => last.get(p).map(|l| l.outcome.clone()),
            None => last
                .values()
                .max_by_key(|l| l.at_ms)
                .map(|l| l.outcome.clone()),
        }
    }
}

/// Records the cost counters of an exchange.
pub fn observe_exchange(metrics: &Metrics, peer: &str, o: &DiffOutcome, now_ms: u64) {
    publish_divergence(metrics, peer, o, now_ms);
    let l = PeerLabel { peer: peer.into() };
    metrics.exchanges.get_or_create(&l).inc();
    metrics
        .exchange_rounds
        .get_or_create(&l)
        .observe(o.cost.rounds as f64);
    metrics
        .exchange_sent_bytes
        .get_or_create(&l)
        .inc_by(o.cost.bytes_sent);
    metrics
        .exchange_received_bytes
        .get_or_create(&l)
        .inc_by(o.cost.bytes_received);
    metrics
        .exchange_duration_seconds
        .get_or_create(&l)
        .observe(o.elapsed.as_secs_f64());
}

/// Sets the divergence gauges of every range `o` compared with `peer`:
/// keys per category and the age of the oldest divergence. Every exchange,
/// on demand or scheduled, publishes them.
pub fn publish_divergence(metrics: &Metrics, peer: &str, o: &DiffOutcome, now_ms: u64) {
    for range in &o.ranges {
        let mut oldest_ms = 0u64;
        let mut counts = std::collections::BTreeMap::new();
        for k in o.keys.iter().filter(|k| &k.range == range) {
            *counts.entry(k.category).or_insert(0i64) += 1;
            let newer_ms = [&k.div.local, &k.div.peer]
                .iter()
                .filter_map(|e| e.as_ref().map(|e| e.version.ms))
                .max()
                .unwrap_or(now_ms);
            oldest_ms = oldest_ms.max(now_ms.saturating_sub(newer_ms));
        }
        for c in Category::ALL {
            metrics
                .divergent_keys
                .get_or_create(&PeerRangeCategory {
                    peer: peer.into(),
                    range: range.clone(),
                    category: c.as_str().into(),
                })
                .set(counts.get(&c).copied().unwrap_or(0));
        }
        metrics
            .oldest_divergence_seconds
            .get_or_create(&PeerRange {
                peer: peer.into(),
                range: range.clone(),
            })
            .set(oldest_ms as f64 / 1000.0);
    }
}
