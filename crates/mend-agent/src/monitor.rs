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

/// A completed exchange, as the monitor records it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The peer's id.
    pub peer: &'a str,
    /// What the exchange found.
    pub outcome: &'a Arc<DiffOutcome>,
    /// When it was recorded, ms since the epoch.
    pub now_ms: u64,
    /// What the playbook did: its kind and the line shown to operators.
    pub action: (PlaybookAction, &'a str),
    /// The peer's drift budget, if one is configured.
    pub budget: Option<Budget>,
    /// Records kept per (peer, range).
    pub history_max: usize,
}

/// What an exchange changed in the drift of one (peer, range), for the
/// caller to publish ([`publish_drift`]) and alert on.
#[derive(Debug, Clone, Default)]
pub struct DriftChange {
    /// Range.
    pub range: String,
    /// The budget's state after the exchange (`None`: no budget).
    pub budget_exceeded: Option<bool>,
    /// The budget's state flipped.
    pub flip: Option<BudgetFlip>,
    /// Time to convergence of each key converged, ms.
    pub converged_ms: Vec<u64>,
}

/// The drift of `range` after the exchange `o`, from the drift before it:
/// the exchange recorded in the history, the keys tracked across exchanges
/// (persistent or transient, converged), and the budget's state. Pure: the
/// caller stores the new drift and publishes the change.
pub fn update_drift(
    mut drift: RangeDrift,
    range: &str,
    o: &Observation<'_>,
) -> (RangeDrift, DriftChange) {
    let now_ms = o.now_ms;
    let outcome = o.outcome;
    let keys: Vec<_> = outcome.keys.iter().filter(|k| k.range == range).collect();
    let mut rec = ExchangeRecord {
        at_ms: now_ms,
        divergent_keys: keys.len() as u64,
        rounds: outcome.cost.rounds,
        bytes_sent: outcome.cost.bytes_sent,
        bytes_received: outcome.cost.bytes_received,
        elapsed_ms: outcome.elapsed.as_millis() as u64,
        action: o.action.1.to_string(),
        action_kind: Some(o.action.0),
        ..Default::default()
    };
    let present = track_keys(&mut drift, &mut rec, &keys, now_ms);
    let converged_ms = forget_converged(&mut drift, &mut rec, &present, now_ms);
    let mut change = DriftChange {
        range: range.to_string(),
        converged_ms,
        ..Default::default()
    };
    if let Some(b) = o.budget {
        change.flip = check_budget(&mut drift, &rec, b, o.peer, range, now_ms);
        change.budget_exceeded = Some(drift.budget_exceeded);
    }
    drift.history.push_back(rec);
    while drift.history.len() > o.history_max {
        drift.history.pop_front();
    }
    (drift, change)
}

/// Counts `keys` (this exchange's divergent keys of one range) into `rec`
/// by category, age and streak; returns the set of them.
fn track_keys(
    drift: &mut RangeDrift,
    rec: &mut ExchangeRecord,
    keys: &[&crate::outcome::DivergentKey],
    now_ms: u64,
) -> std::collections::HashSet<Vec<u8>> {
    let mut present = std::collections::HashSet::new();
    for k in keys {
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
    present
}

/// Stops tracking the keys not `present` any more, counting them converged;
/// returns the time each took, ms.
fn forget_converged(
    drift: &mut RangeDrift,
    rec: &mut ExchangeRecord,
    present: &std::collections::HashSet<Vec<u8>>,
    now_ms: u64,
) -> Vec<u64> {
    let mut converged_ms = Vec::new();
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
            converged_ms.push(ms);
        }
    }
    converged_ms
}

/// Sets the budget state of the drift from `rec`; returns the flip, if the
/// state changed.
fn check_budget(
    drift: &mut RangeDrift,
    rec: &ExchangeRecord,
    b: Budget,
    peer: &str,
    range: &str,
    now_ms: u64,
) -> Option<BudgetFlip> {
    let mut flip = None;
    let counted = rec.divergent_keys
        - rec
            .by_category
            .get(&Category::InFlight)
            .copied()
            .unwrap_or(0);
    let exceeded =
        counted > b.divergent_keys_max || rec.oldest_divergence_ms > b.oldest_divergence_ms_max;
    if exceeded != drift.budget_exceeded || drift.budget_since_ms == 0 {
        if exceeded != drift.budget_exceeded {
            flip = Some(BudgetFlip {
                peer: peer.into(),
                range: range.to_string(),
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
    flip
}

/// Publishes what an exchange with `peer` changed in its drift: the time
/// to convergence of each converged key, and the budget gauges.
pub fn publish_drift(metrics: &Metrics, peer: &str, changes: &[DriftChange]) {
    for c in changes {
        for ms in &c.converged_ms {
            metrics.convergence_seconds.observe(*ms as f64 / 1000.0);
        }
        if let Some(exceeded) = c.budget_exceeded {
            let pr = PeerRange {
                peer: peer.into(),
                range: c.range.clone(),
            };
            metrics
                .budget_exceeded
                .get_or_create(&pr)
                .set(exceeded as i64);
        }
    }
}

impl Monitor {
    /// Records an exchange ([`update_drift`] for each of its ranges);
    /// returns what changed, for [`publish_drift`].
    pub fn record(&self, o: &Observation<'_>) -> Vec<DriftChange> {
        let mut changes = Vec::new();
        let mut ranges = lock(&self.ranges);
        for range in &o.outcome.ranges {
            let drift = ranges
                .entry((o.peer.to_string(), range.clone()))
                .or_default();
            let (next, change) = update_drift(std::mem::take(drift), range, o);
            *drift = next;
            changes.push(change);
        }
        lock(&self.last).insert(
            o.peer.to_string(),
            Arc::new(Latest {
                at_ms: o.now_ms,
                outcome: o.outcome.clone(),
                attribution: std::sync::OnceLock::new(),
            }),
        );
        let mut links = lock(&self.links);
        let l = links.entry(o.peer.to_string()).or_default();
        l.last_ok_ms = o.now_ms;
        l.failures = 0;
        changes
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mend_core::NodeId;
    use mend_core::exchange::{Divergence, EntrySummary};
    use mend_core::version::Version;

    use super::*;
    use crate::outcome::{Cost, DivergentKey};

    /// A key of range `r` present here only, written at `written_ms`.
    fn key(k: &str, category: Category, written_ms: u64) -> DivergentKey {
        let local = EntrySummary {
            key: k.as_bytes().to_vec(),
            version: Version {
                ms: written_ms,
                logical: 0,
                origin: NodeId::new("a").unwrap(),
                seq: 1,
            },
            tombstone: false,
            hash: 1,
        };
        DivergentKey {
            range: "r".into(),
            div: Divergence {
                key: k.as_bytes().to_vec(),
                local: Some(local),
                peer: None,
            },
            category,
            behind: None,
        }
    }

    fn outcome(keys: Vec<DivergentKey>) -> Arc<DiffOutcome> {
        Arc::new(DiffOutcome {
            local_node: "a".into(),
            peer_node: "b".into(),
            peer_incarnation: 1,
            ranges: vec!["r".into()],
            versionless_ranges: Vec::new(),
            keys,
            tree_mismatches: Vec::new(),
            started_ms: 0,
            peer_clock_skew_ms: 0,
            entries_local: 0,
            entries_peer: 0,
            cost: Cost::default(),
            elapsed: Duration::ZERO,
        })
    }

    /// Runs one exchange of range `r` with `b` through the pure update.
    fn exchange(
        drift: RangeDrift,
        keys: Vec<DivergentKey>,
        now_ms: u64,
        budget: Option<Budget>,
    ) -> (RangeDrift, DriftChange) {
        let outcome = outcome(keys);
        let o = Observation {
            peer: "b",
            outcome: &outcome,
            now_ms,
            action: (PlaybookAction::Report, "report"),
            budget,
            history_max: 2,
        };
        update_drift(drift, "r", &o)
    }

    #[test]
    fn a_key_divergent_twice_is_persistent_then_converges() {
        let k = || key("k", Category::Missing, 500);
        let (d, c) = exchange(RangeDrift::default(), vec![k()], 1_000, None);
        let rec = d.history.back().unwrap();
        assert_eq!((rec.transient, rec.persistent), (1, 0));
        assert_eq!(rec.oldest_divergence_ms, 500);
        assert!(c.converged_ms.is_empty() && c.budget_exceeded.is_none());

        let (d, _) = exchange(d, vec![k()], 2_000, None);
        let rec = d.history.back().unwrap();
        assert_eq!((rec.transient, rec.persistent), (0, 1));

        let (d, c) = exchange(d, Vec::new(), 4_000, None);
        let rec = d.history.back().unwrap();
        assert_eq!((rec.divergent_keys, rec.converged), (0, 1));
        // Converged 3 s after the exchange that first found it.
        assert_eq!(c.converged_ms, vec![3_000]);
        assert_eq!((d.converged_keys, d.convergence_ms_total), (1, 3_000));
        assert!(d.tracked.is_empty());
        // history_max = 2: the first exchange is gone.
        assert_eq!(d.history.len(), 2);
        assert_eq!(d.history.front().unwrap().at_ms, 2_000);
    }

    #[test]
    fn in_flight_keys_stay_transient_and_outside_the_budget() {
        let budget = Budget {
            divergent_keys_max: 0,
            oldest_divergence_ms_max: 10_000,
        };
        let k = || key("k", Category::InFlight, 900);
        let (d, c) = exchange(RangeDrift::default(), vec![k()], 1_000, Some(budget));
        let (d, c2) = exchange(d, vec![k()], 2_000, Some(budget));
        let rec = d.history.back().unwrap();
        assert_eq!((rec.transient, rec.persistent), (1, 0));
        assert_eq!(c.budget_exceeded, Some(false));
        assert!(c.flip.is_none() && c2.flip.is_none());
    }

    #[test]
    fn a_budget_flips_when_exceeded_and_back() {
        let budget = Budget {
            divergent_keys_max: 1,
            oldest_divergence_ms_max: 60_000,
        };
        let keys = || {
            vec![
                key("a", Category::Missing, 1_000),
                key("b", Category::Stale, 1_000),
            ]
        };
        // The first exchange within budget sets the state (since 1 s) without a flip.
        let (d, c) = exchange(RangeDrift::default(), Vec::new(), 1_000, Some(budget));
        assert!(c.flip.is_none());
        assert_eq!((d.budget_exceeded, d.budget_since_ms), (false, 1_000));

        let (d, c) = exchange(d, keys(), 2_000, Some(budget));
        let f = c.flip.expect("exceeded");
        assert!(f.exceeded);
        assert_eq!((f.peer.as_str(), f.range.as_str()), ("b", "r"));
        assert_eq!((f.divergent_keys, f.divergent_keys_max), (2, 1));
        assert_eq!(c.budget_exceeded, Some(true));
        assert_eq!((d.budget_exceeded, d.budget_since_ms), (true, 2_000));

        // Still exceeded: no flip, the state keeps its time.
        let (d, c) = exchange(d, keys(), 3_000, Some(budget));
        assert!(c.flip.is_none());
        assert_eq!(d.budget_since_ms, 2_000);

        let (d, c) = exchange(d, Vec::new(), 4_000, Some(budget));
        assert!(!c.flip.expect("back within").exceeded);
        assert_eq!(c.converged_ms, vec![2_000, 2_000]);
        assert_eq!((d.budget_exceeded, d.budget_since_ms), (false, 4_000));
    }

    #[test]
    fn record_keeps_each_range_and_returns_its_change() {
        let m = Monitor::default();
        let outcome = outcome(vec![key("k", Category::Missing, 0)]);
        let changes = m.record(&Observation {
            peer: "b",
            outcome: &outcome,
            now_ms: 5,
            action: (PlaybookAction::Report, "report"),
            budget: None,
            history_max: 4,
        });
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].range, "r");
        let v = m.view(Some("b"));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].records[0].divergent_keys, 1);
        assert_eq!(m.links()["b"].last_ok_ms, 5);
    }
}
