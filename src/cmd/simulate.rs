//! `mend simulate`: a drill. Runs a built-in scenario of `mend_sim` in
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

/// Runs `mend simulate`.
pub fn run(a: SimulateArgs) -> anyhow::Result<ExitCode> {
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
