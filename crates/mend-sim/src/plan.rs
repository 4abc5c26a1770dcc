//! A drill's plan: a time-ordered list of events (writes with the nodes they
//! reach, clock skews, wipes), the building blocks every scenario shares (a
//! replicated base data set, fully replicated background traffic, a little
//! in-flight noise), and their execution against a [`Cluster`].
//!
//! Ground truth is recorded where a fault is planned: a write that carries a
//! [`Fault`] becomes an [`Injected`] with the origin that actually stamped
//! it, and its stamped time is checked against the planned window. Nothing
//! is inferred from the diagnosis.

use mend_core::{Category, Side};

use crate::cluster::{A, B, C, Cluster, NODES};
use crate::rng::SplitMix64;
use crate::{Injected, SimError};

/// Minutes are the unit windows are planned in.
pub(crate) const MINUTE_MS: u64 = 60_000;
/// The base data set is written over this long, ending [`BASE_AGE_MS`] ago.
const BASE_SPAN_MS: u64 = 30 * MINUTE_MS;
/// How long ago the base data set's last write happened.
const BASE_AGE_MS: u64 = 60 * MINUTE_MS;
/// Background traffic stops this long before now, so it never overlaps the
/// last seconds where clock skew and replication lag are staged.
const BACKGROUND_QUIET_MS: u64 = MINUTE_MS;
/// In-flight writes are planned within this long before now: well inside
/// the default settle window (5 s).
pub(crate) const LAG_MAX_MS: u64 = 4_500;

/// What a planned write is meant to produce between node-a and node-b.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fault {
    /// The category the key must be diagnosed with.
    pub category: Category,
    /// The side that must be found behind.
    pub behind: Option<Side>,
    /// The window, inclusive, the stamped version must fall in.
    pub window: (u64, u64),
}

/// One planned event.
#[derive(Debug)]
enum Act {
    /// Makes a node's clock run ahead by the given ms.
    Skew(usize, u64),
    /// Wipes a node's store.
    Wipe(usize),
    /// A write by `origin`, delivered to `to`, and with another value to
    /// `altered.0`; `value` `None` is a delete.
    Write {
        origin: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        to: Vec<usize>,
        altered: Option<(usize, Vec<u8>)>,
        fault: Option<Fault>,
    },
}

/// A drill's plan under construction.
pub(crate) struct Plan<'r> {
    pub rng: &'r mut SplitMix64,
    /// The simulated time at which the exchange runs.
    pub now: u64,
    /// The first base write's time.
    pub base_start: u64,
    /// Base keys no fault has claimed yet, in random order.
    pool: Vec<Vec<u8>>,
    fresh: u64,
    events: Vec<(u64, Act)>,
}

impl<'r> Plan<'r> {
    /// A plan that starts by loading 2000–5000 keys, written over half an
    /// hour by origins spread over the three nodes and replicated to all.
    pub(crate) fn with_base(rng: &'r mut SplitMix64, now: u64) -> Plan<'r> {
        let base_start = now - BASE_AGE_MS - BASE_SPAN_MS;
        let mut p = Plan {
            rng,
            now,
            base_start,
            pool: Vec::new(),
            fresh: 0,
            events: Vec::new(),
        };
        let n = p.rng.between(2_000, 5_000);
        let step = BASE_SPAN_MS / n;
        for i in 0..n {
            let at = base_start + i * step + p.rng.below(step);
            let key = format!("user:{i:07}").into_bytes();
            let origin = p.rng.below(3) as usize;
            p.write(at, origin, key.clone(), true, &[A, B, C], None);
            p.pool.push(key);
        }
        let mut pool = std::mem::take(&mut p.pool);
        p.rng.shuffle(&mut pool);
        p.pool = pool;
        p
    }

    /// A random value of 16–64 bytes.
    pub(crate) fn value(&mut self) -> Vec<u8> {
        let n = self.rng.between(16, 64) as usize;
        self.rng.bytes(n)
    }

    /// A key no event has written yet, under `prefix`.
    pub(crate) fn fresh_key(&mut self, prefix: &str) -> Vec<u8> {
        self.fresh += 1;
        format!("{prefix}:{:07}", self.fresh).into_bytes()
    }

    /// Claims a base key for a fault: no other event will write it.
    pub(crate) fn claim(&mut self) -> Vec<u8> {
        match self.pool.pop() {
            Some(k) => k,
            None => self.fresh_key("extra"),
        }
    }

    /// A window of `min_ms..=max_ms` that starts 10–40 minutes ago.
    pub(crate) fn past_window(&mut self, min_ms: u64, max_ms: u64) -> (u64, u64) {
        let start = self.now - self.rng.between(10 * MINUTE_MS, 40 * MINUTE_MS);
        (start, start + self.rng.between(min_ms, max_ms))
    }

    /// `n` times in `window`, inclusive, ascending.
    pub(crate) fn times(&mut self, n: u64, (lo, hi): (u64, u64)) -> Vec<u64> {
        let mut t: Vec<u64> = (0..n).map(|_| self.rng.between(lo, hi)).collect();
        t.sort_unstable();
        t
    }

    /// Plans a write at `at` (a put of a random value, or a delete).
    pub(crate) fn write(
        &mut self,
        at: u64,
        origin: usize,
        key: Vec<u8>,
        put: bool,
        to: &[usize],
        fault: Option<Fault>,
    ) {
        let value = put.then(|| self.value());
        let to = to.to_vec();
        self.events.push((
            at,
            Act::Write {
                origin,
                key,
                value,
                to,
                altered: None,
                fault,
            },
        ));
    }

    /// Plans a write whose version reaches `altered` with another value.
    pub(crate) fn write_altered(
        &mut self,
        at: u64,
        origin: usize,
        key: Vec<u8>,
        to: &[usize],
        altered: usize,
        fault: Fault,
    ) {
        let value = self.value();
        let mut other = self.value();
        if other == value {
            other.push(0);
        }
        let to = to.to_vec();
        let act = Act::Write {
            origin,
            key,
            value: Some(value),
            to,
            altered: Some((altered, other)),
            fault: Some(fault),
        };
        self.events.push((at, act));
    }

    /// Plans a clock skew of `node` from `at` on.
    pub(crate) fn skew(&mut self, at: u64, node: usize, ms: u64) {
        self.events.push((at, Act::Skew(node, ms)));
    }

    /// Plans a wipe of `node` at `at`.
    pub(crate) fn wipe(&mut self, at: u64, node: usize) {
        self.events.push((at, Act::Wipe(node)));
    }

    /// Plans 100–300 fully replicated puts between the base load and a
    /// minute ago, updating unclaimed base keys or creating new ones. Writes
    /// that would originate at `silent.0` within `silent.1` (a node whose
    /// propagation is down) come from the next node instead.
    pub(crate) fn background(&mut self, silent: Option<(usize, (u64, u64))>) {
        let n = self.rng.between(100, 300);
        let span = (self.now - BASE_AGE_MS, self.now - BACKGROUND_QUIET_MS);
        for at in self.times(n, span) {
            let mut origin = self.rng.below(3) as usize;
            if let Some((node, (lo, hi))) = silent
                && origin == node
                && (lo..=hi).contains(&at)
            {
                origin = (origin + 1) % 3;
            }
            let key = if self.pool.is_empty() || self.rng.percent(30) {
                self.fresh_key("event")
            } else {
                self.pool[self.rng.below(self.pool.len() as u64) as usize].clone()
            };
            self.write(at, origin, key, true, &[A, B, C], None);
        }
    }

    /// Plans `n` new writes made within the last [`LAG_MAX_MS`] by nodes of
    /// `origins`, each delivered to node-a or node-b but not both yet:
    /// in-flight keys, with the side that lacks them behind. `update` is the
    /// percentage that update a claimed base key instead of a new one.
    pub(crate) fn in_flight(&mut self, n: u64, origins: &[usize], update: u64) {
        let window = (self.now - LAG_MAX_MS, self.now);
        for at in self.times(n, window) {
            let origin = origins[self.rng.below(origins.len() as u64) as usize];
            let reaches_a = match origin {
                A => true,
                B => false,
                _ => self.rng.percent(50),
            };
            let mut to = vec![origin, if reaches_a { A } else { B }];
            if origin != C && self.rng.percent(50) {
                to.push(C);
            }
            let behind = Some(if reaches_a { Side::Peer } else { Side::Local });
            let key = if self.rng.percent(update) {
                self.claim()
            } else {
                self.fresh_key("session")
            };
            let fault = Fault {
                category: Category::InFlight,
                behind,
                window,
            };
            self.write(at, origin, key, true, &to, Some(fault));
        }
    }

    /// A little accountable noise: 0–3 in-flight writes by `origins`.
    pub(crate) fn noise(&mut self, origins: &[usize]) {
        let n = self.rng.between(0, 3);
        self.in_flight(n, origins, 0);
    }

    /// Runs the plan in time order (at equal times, skews and wipes before
    /// writes), leaving the clock at `now`, and returns the injected faults.
    pub(crate) fn execute(mut self, cluster: &mut Cluster) -> Result<Vec<Injected>, SimError> {
        let rank = |a: &Act| u8::from(matches!(a, Act::Write { .. }));
        self.events.sort_by_key(|(at, act)| (*at, rank(act)));
        let mut injected = Vec::new();
        for (at, act) in self.events {
            cluster.set_time(at);
            match act {
                Act::Skew(node, ms) => cluster.set_skew(node, ms),
                Act::Wipe(node) => cluster.wipe(node)?,
                Act::Write {
                    origin,
                    key,
                    value,
                    to,
                    altered,
                    fault,
                } => {
                    let v = cluster.write(origin, &key, value, &to, altered)?;
                    let Some(f) = fault else { continue };
                    if !(f.window.0..=f.window.1).contains(&v.ms) {
                        return Err(SimError::Invariant(format!(
                            "{} stamped at {} ms, outside its planned window {:?}",
                            String::from_utf8_lossy(&key),
                            v.ms,
                            f.window
                        )));
                    }
                    injected.push(Injected {
                        key,
                        category: f.category,
                        behind: f.behind,
                        origin: NODES[origin].to_string(),
                        window: f.window,
                    });
                }
            }
        }
        cluster.set_time(self.now);
        Ok(injected)
    }
}
