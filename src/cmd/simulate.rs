//! `mend simulate`: a drill, or (`--seeds N`) the fault simulation of
//! `mend_sim::faults` over N seeds. A drill runs a built-in scenario of `mend_sim` in
//! process (three replicas on a simulated clock, one injected fault, the
//! exchange, classification and attribution) and prints what mend diagnosed
//! against what was injected. Exit 0 when the diagnosis meets the targets
//! (every injected key in its category, nothing unexpected, the origin and
//! window right for at least 95%), 1 when it does not, 2 on an error such
//! as an unknown scenario.

use std::process::ExitCode;

use anyhow::Context;
use mend_sim::{Drill, ORIGIN_WINDOW_TARGET_PCT, SCENARIOS};
use serde::Serialize;

use crate::cli::SimulateArgs;
use crate::output::print_json;

/// Sources shown in the human report (all are in `--json`).
const SOURCES_SHOWN: usize = 5;

/// The JSON report: the drill plus its verdict.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    drill: &'a Drill,
    table: Vec<mend_sim::CategoryRow>,
    categories_pct: u64,
    origin_window_pct: u64,
    all_categories_correct: bool,
    passed: bool,
}

/// The JSON summary of a fault simulation.
#[derive(Serialize, Default)]
struct FaultReport {
    first_seed: u64,
    seeds: u64,
    seeds_per_s: f64,
    writes_acked: u64,
    exchanges: u64,
    exchanges_failed: u64,
    repairs: u64,
    auto_repairs: u64,
    keys_repaired: u64,
    undos: u64,
    tombstones_purged: u64,
    crashes: u64,
    crashes_mid_repair: u64,
    wipes: u64,
    lost_to_wipe: u64,
    messages: u64,
    faults_injected: u64,
    converge_rounds_max: u32,
    violations: u64,
    failed: Vec<mend_sim::faults::SimOutcome>,
}

/// `mend simulate --seeds N`: the fault simulation, seed after seed.
fn run_faults(first: u64, n: u64, json: bool) -> anyhow::Result<ExitCode> {
    use mend_sim::faults::{mode_of, run_seed};
    let started = std::time::Instant::now();
    let mut r = FaultReport {
        first_seed: first,
        seeds: n,
        ..FaultReport::default()
    };
    for seed in first..first.saturating_add(n) {
        let o = run_seed(seed, mode_of(seed));
        r.writes_acked += o.writes_acked;
        r.exchanges += o.exchanges;
        r.exchanges_failed += o.exchanges_failed;
        r.repairs += o.repairs;
        r.auto_repairs += o.auto_repairs;
        r.keys_repaired += o.keys_repaired;
        r.undos += o.undos;
        r.tombstones_purged += o.tombstones_purged;
        r.crashes += o.crashes;
        r.crashes_mid_repair += o.crashes_mid_repair;
        r.wipes += o.wipes;
        r.lost_to_wipe += o.lost_to_wipe;
        r.messages += o.messages;
        r.faults_injected += o.faults_injected;
        r.converge_rounds_max = r.converge_rounds_max.max(o.converge_rounds);
        if !o.violations.is_empty() {
            r.violations += o.violations.len() as u64;
            if !json {
                println!(
                    "seed {seed} ({:?}) FAILED (replay: mend simulate --seeds 1 --seed {seed}):",
                    mode_of(seed)
                );
                for v in o.violations.iter().take(10) {
                    println!("  {v}");
                }
            }
            r.failed.push(o);
        }
    }
    r.seeds_per_s = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if json {
        print_json(&r)?;
    } else {
        println!(
            "{} seeds from {first} in {:.1} s ({:.0} seeds/s): {} failed",
            n,
            started.elapsed().as_secs_f64(),
            r.seeds_per_s,
            r.failed.len()
        );
        println!(
            "  {} writes acknowledged, {} lost by mend, {} lost only with a wiped replica",
            r.writes_acked,
            r.failed
                .iter()
                .flat_map(|o| &o.violations)
                .filter(|v| v.contains("lost"))
                .count(),
            r.lost_to_wipe
        );
        println!(
            "  {} exchanges ({} failed under faults), {} repairs ({} automatic, {} keys), {} undos, {} tombstones purged",
            r.exchanges,
            r.exchanges_failed,
            r.repairs,
            r.auto_repairs,
            r.keys_repaired,
            r.undos,
            r.tombstones_purged
        );
        println!(
            "  {} crashes ({} mid-repair), {} wipes, {} of {} messages faulted; converged within {} rounds",
            r.crashes,
            r.crashes_mid_repair,
            r.wipes,
            r.faults_injected,
            r.messages,
            r.converge_rounds_max
        );
    }
    Ok(if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `mend simulate`.
pub fn run(a: SimulateArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.seeds {
        return run_faults(a.seed, n, a.json);
    }
    if a.list {
        if a.json {
            print_json(&SCENARIOS)?;
        } else {
            for s in SCENARIOS {
                println!("{:<20} {}", s.name, s.about);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(name) = a.scenario else {
        anyhow::bail!("give --scenario NAME, or --list to see the scenarios");
    };
    let drill =
        mend_sim::run(&name, a.seed).with_context(|| format!("drill {name} seed {}", a.seed))?;
    let passed = drill.passed();
    if a.json {
        print_json(&Report {
            drill: &drill,
            table: drill.table(),
            categories_pct: drill.categories_pct(),
            origin_window_pct: drill.origin_window_pct(),
            all_categories_correct: drill.category_correct == drill.injected.len() as u64,
            passed,
        })?;
    } else {
        print_human(&drill);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_human(d: &Drill) {
    println!(
        "scenario {}, seed {} (replay: mend simulate --scenario {} --seed {})",
        d.scenario, d.seed, d.scenario, d.seed
    );
    println!(
        "{} keys on node-a, node-b, node-c; {} injected faults between node-a (local) and node-b (peer); exchange in {} round trips",
        d.keys_total,
        d.injected.len(),
        d.rounds
    );
    println!();
    println!(
        "{:<20} {:>9} {:>10} {:>8}",
        "category", "injected", "diagnosed", "correct"
    );
    for r in d.table() {
        println!(
            "{:<20} {:>9} {:>10} {:>8}",
            r.category.as_str(),
            r.injected,
            r.diagnosed,
            r.correct
        );
    }
    println!();
    let shown = d.sources.len().min(SOURCES_SHOWN);
    println!("top sources ({shown} of {}):", d.sources.len());
    for s in &d.sources[..shown] {
        println!("  {:>5}  {:<20} {}", s.count, s.category.as_str(), s.origin);
        println!("         {}", s.hint);
    }
    if !d.unexpected.is_empty() {
        let first: Vec<_> = d
            .unexpected
            .iter()
            .take(5)
            .map(|k| String::from_utf8_lossy(k))
            .collect();
        println!(
            "unexpected divergent keys: {} (first: {})",
            d.unexpected.len(),
            first.join(", ")
        );
    }
    println!();
    let (cats, ow) = (d.categories_pct(), d.origin_window_pct());
    if d.passed() {
        println!("diagnosis matched: {cats}% categories, {ow}% origin+window");
    } else {
        println!(
            "diagnosis MISSED the targets: {cats}% categories (target 100%), {ow}% origin+window (target {ORIGIN_WINDOW_TARGET_PCT}%), {} unexpected keys",
            d.unexpected.len()
        );
    }
}
