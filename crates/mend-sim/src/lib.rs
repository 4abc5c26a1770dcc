//! mend-sim: deterministic, seeded drills.
//!
//! A drill builds three in-process replicas (`node-a`, `node-b`, `node-c`,
//! each a `mend_store::Store` over the memory backend) on a simulated clock,
//! loads the same versioned base data set into all three, injects one kind
//! of fault between node-a (local) and node-b (peer), then diagnoses it
//! exactly as an agent would: the agent's own exchange driver (`mend_agent::exchange::diff`
//! against node-b's Peer service over `mend_agent::link::mem`),
//! classification with the default policy, and attribution. It scores the
//! diagnosis against the ground truth the scenario recorded while
//! injecting: the category and side behind of every injected key, and the
//! origin and time window attribution gives it.
//!
//! One seed derives every parameter (the simulated time, key counts, which
//! keys, windows, skew amounts) through [`rng::SplitMix64`], so a drill
//! replays exactly from its scenario name and seed.

mod cluster;
pub mod faults;
mod plan;
pub use mend_core::rng;
mod scenarios;
mod score;

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Serialize, Serializer};
use thiserror::Error;

use mend_core::attribution::Source;
use mend_core::exchange::ExchangeError;
use mend_core::{Category, CoreError, Side};
use mend_store::StoreError;

pub use cluster::NODES;

use crate::cluster::Cluster;
use crate::plan::Plan;
use crate::rng::SplitMix64;
use crate::scenarios::After;

/// The diagnosis must name the right origin and window for at least this
/// share of the injected faults, in percent (and the right category for all).
pub const ORIGIN_WINDOW_TARGET_PCT: u64 = 95;

/// The simulated day starts here: 2024-05-01 00:00:00 UTC. The seed picks
/// the second of that day at which the exchange runs.
const EPOCH_MS: u64 = 1_714_521_600_000;

/// One built-in scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scenario {
    /// The name `run` and `mend simulate --scenario` take.
    pub name: &'static str,
    /// One sentence on what is injected.
    pub about: &'static str,
    #[serde(skip)]
    plan: fn(&mut Plan<'_>) -> After,
}

/// Every built-in scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "propagation_outage",
        about: "node-c's writes during a 1-4 minute window reach node-a but never node-b (missing and stale keys)",
        plan: scenarios::propagation_outage,
    },
    Scenario {
        name: "clock_skew",
        about: "node-a's clock jumps 30-90 s ahead; the writes it stamps meanwhile carry future versions (future_version)",
        plan: scenarios::clock_skew,
    },
    Scenario {
        name: "lost_deletes",
        about: "deletes made via node-a during a window never reach node-b (unpropagated_delete)",
        plan: scenarios::lost_deletes,
    },
    Scenario {
        name: "conflicts",
        about: "a writer reuses versions: node-a and node-b hold the same version with different values (conflict)",
        plan: scenarios::conflicts,
    },
    Scenario {
        name: "replication_lag",
        about: "writes of the last few seconds have reached only one of node-a and node-b so far (in_flight)",
        plan: scenarios::replication_lag,
    },
    Scenario {
        name: "wiped_replica",
        about: "node-b loses its disk and rejoins empty; everything written before the wipe is missing there (missing)",
        plan: scenarios::wiped_replica,
    },
];

/// One injected fault: the ground truth for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Injected {
    /// The key.
    #[serde(serialize_with = "key_str")]
    pub key: Vec<u8>,
    /// The category the diagnosis must give it.
    pub category: Category,
    /// The side that must be found behind (`None` for a conflict).
    pub behind: Option<Side>,
    /// The node that stamped the newer write.
    pub origin: String,
    /// The incident's window, inclusive, ms since the Unix epoch: the newer
    /// write lies in it, and so must the source attribution puts it in.
    pub window: (u64, u64),
}

/// A drill's outcome: what was injected, what was diagnosed, and the score.
#[derive(Debug, Clone, Serialize)]
pub struct Drill {
    /// The scenario's name.
    pub scenario: String,
    /// The seed every parameter came from.
    pub seed: u64,
    /// The simulated time of the exchange, ms since the Unix epoch.
    pub now_ms: u64,
    /// Distinct keys written in the drill.
    pub keys_total: u64,
    /// The ground truth, in key order.
    pub injected: Vec<Injected>,
    /// Every divergent key the exchange found, with its category and the
    /// side behind, in key order.
    #[serde(serialize_with = "diagnosed_json")]
    pub diagnosed: Vec<(Vec<u8>, Category, Option<Side>)>,
    /// Attribution's sources, largest first (all of them).
    pub sources: Vec<Source>,
    /// Round trips of the exchange, the handshake included.
    pub rounds: u32,
    /// Injected keys diagnosed with the injected category and side behind.
    pub category_correct: u64,
    /// Injected keys diagnosed correctly that also lie in a source with the
    /// injected category and origin whose window (first to last newer
    /// write, the key's included) lies inside the injected window.
    pub origin_window_correct: u64,
    /// Keys diagnosed as divergent that were never injected.
    #[serde(serialize_with = "keys_json")]
    pub unexpected: Vec<Vec<u8>>,
}

/// One row of [`Drill::table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CategoryRow {
    /// The category.
    pub category: Category,
    /// Keys injected with it.
    pub injected: u64,
    /// Keys diagnosed with it.
    pub diagnosed: u64,
    /// Injected keys diagnosed with it (and the right side behind).
    pub correct: u64,
}

impl Drill {
    /// Share of injected keys with the right category, in whole percent
    /// rounded down (100 only when all are right).
    pub fn categories_pct(&self) -> u64 {
        pct(self.category_correct, self.injected.len() as u64)
    }

    /// Share of injected keys with the right origin and window, in whole
    /// percent rounded down.
    pub fn origin_window_pct(&self) -> u64 {
        pct(self.origin_window_correct, self.injected.len() as u64)
    }

    /// True when the diagnosis meets the targets: every injected key in its
    /// category, nothing diagnosed that was not injected, and at least
    /// [`ORIGIN_WINDOW_TARGET_PCT`] percent attributed to the right origin
    /// and window.
    pub fn passed(&self) -> bool {
        let n = self.injected.len() as u64;
        self.category_correct == n
            && self.unexpected.is_empty()
            && self.origin_window_correct * 100 >= ORIGIN_WINDOW_TARGET_PCT * n
    }

    /// Injected against diagnosed keys per category, in precedence order;
    /// categories neither injected nor diagnosed are left out.
    pub fn table(&self) -> Vec<CategoryRow> {
        let diagnosed: HashMap<&[u8], (Category, Option<Side>)> = self
            .diagnosed
            .iter()
            .map(|(k, c, b)| (k.as_slice(), (*c, *b)))
            .collect();
        let right = |f: &Injected| diagnosed.get(f.key.as_slice()) == Some(&(f.category, f.behind));
        Category::ALL
            .into_iter()
            .map(|category| CategoryRow {
                category,
                injected: self
                    .injected
                    .iter()
                    .filter(|f| f.category == category)
                    .count() as u64,
                diagnosed: self.diagnosed.iter().filter(|d| d.1 == category).count() as u64,
                correct: self
                    .injected
                    .iter()
                    .filter(|f| f.category == category && right(f))
                    .count() as u64,
            })
            .filter(|r| r.injected > 0 || r.diagnosed > 0)
            .collect()
    }
}

/// `part` of `whole` in whole percent, rounded down; 100 for an empty whole.
fn pct(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(100)
}

/// Errors of a drill.
#[derive(Debug, Error)]
pub enum SimError {
    /// No built-in scenario has this name.
    #[error("unknown scenario {name:?} (known: {known})")]
    UnknownScenario {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A replica's store failed.
    #[error("simulated store: {0}")]
    Store(#[from] StoreError),
    /// The exchange failed.
    #[error("simulated exchange: {0}")]
    Exchange(#[from] ExchangeError),
    /// A core type rejected a value (a node id).
    #[error("simulator setup: {0}")]
    Core(#[from] CoreError),
    /// The simulator broke one of its own invariants: a bug in a scenario.
    #[error("simulator invariant broken: {0}")]
    Invariant(String),
}

/// Runs the scenario `name` with `seed` and scores the diagnosis.
pub fn run(name: &str, seed: u64) -> Result<Drill, SimError> {
    let Some(scenario) = SCENARIOS.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        return Err(SimError::UnknownScenario {
            name: name.to_string(),
            known: known.join(", "),
        });
    };
    let mut rng = SplitMix64::new(seed);
    let now = EPOCH_MS + rng.below(86_400) * 1_000;
    let mut cluster = Cluster::new(seed, now)?;
    let mut plan = Plan::with_base(&mut rng, now);
    let after = (scenario.plan)(&mut plan);
    let base_start = plan.base_start;
    let mut injected = plan.execute(&mut cluster)?;
    injected.extend(scenarios::after(after, &cluster, base_start));
    injected.sort_by(|a, b| a.key.cmp(&b.key));
    score::judge(scenario.name, seed, now, &cluster, injected)
}

/// Keys are ASCII in every scenario; JSON shows them as strings.
fn key_str<S: Serializer>(key: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(key))
}

fn keys_json<S: Serializer>(keys: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|k| String::from_utf8_lossy(k)))
}

fn diagnosed_json<S: Serializer>(
    d: &[(Vec<u8>, Category, Option<Side>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    /// One diagnosed key, as JSON shows it.
    #[derive(Serialize)]
    struct Key<'a> {
        key: Cow<'a, str>,
        category: Category,
        behind: Option<Side>,
    }
    s.collect_seq(d.iter().map(|(k, category, behind)| Key {
        key: String::from_utf8_lossy(k),
        category: *category,
        behind: *behind,
    }))
}
