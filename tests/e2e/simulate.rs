//! `mend simulate` run as a real process: `--list` names every scenario, a
//! seeded drill reports every injected key in its category as JSON and exits
//! 0, and an unknown scenario exits 2 with one line on stderr.

use std::process::{Command, Output};

use serde_json::Value;

fn mend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .output()
        .expect("run mend")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `--list` prints one line per scenario, each starting with its name.
#[test]
fn simulate_list_names_every_scenario() {
    let out = mend(&["simulate", "--list"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let want = [
        "propagation_outage",
        "clock_skew",
        "lost_deletes",
        "conflicts",
        "replication_lag",
        "wiped_replica",
    ];
    assert_eq!(names, want, "{stdout}");
}

/// A propagation outage drill with seed 7 diagnoses every injected key in
/// its category, attributes them to node-c, and meets the targets.
#[test]
fn simulate_propagation_outage_json_has_every_category_right() {
    let out = mend(&[
        "simulate",
        "--scenario",
        "propagation_outage",
        "--seed",
        "7",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["scenario"], "propagation_outage");
    assert_eq!(v["seed"], 7);
    assert_eq!(v["all_categories_correct"], true, "{v:#}");
    assert_eq!(v["categories_pct"], 100);
    assert_eq!(v["passed"], true);
    let injected = v["injected"].as_array().expect("injected list");
    assert!(!injected.is_empty());
    assert_eq!(v["category_correct"].as_u64(), Some(injected.len() as u64));
    assert_eq!(v["unexpected"].as_array().map(Vec::len), Some(0));
    assert!(v["origin_window_pct"].as_u64().expect("pct") >= 95);
    assert_eq!(
        v["sources"][0]["origin"], "node-c",
        "the largest source is the outage"
    );
    // The same seed replays the same drill.
    let again = mend(&[
        "simulate",
        "--scenario",
        "propagation_outage",
        "--seed",
        "7",
        "--json",
    ]);
    assert_eq!(again.stdout, out.stdout);
}

/// An unknown scenario is an error: exit 2, one line on stderr naming it.
#[test]
fn simulate_unknown_scenario_exits_2_with_one_line() {
    let out = mend(&["simulate", "--scenario", "no_such_drill"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no_such_drill"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn simulate_seeds_runs_the_fault_simulation_and_reports_it() {
    // Proves `mend simulate --seeds N` runs the agents under faults, says
    // how many seeds failed, and its JSON carries the counts it claims.
    let out = mend(&["simulate", "--seeds", "8", "--seed", "100", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seeds"], 8);
    assert_eq!(v["first_seed"], 100);
    assert_eq!(v["violations"], 0);
    assert!(v["writes_acked"].as_u64().unwrap() > 0);
    assert!(v["exchanges"].as_u64().unwrap() > 0);
    assert!(v["crashes"].as_u64().unwrap() > 0);
    assert!(v["faults_injected"].as_u64().unwrap() > 0);
    let human = mend(&["simulate", "--seeds", "2"]);
    assert_eq!(human.status.code(), Some(0));
    assert!(
        text(&human.stdout).contains("2 seeds from 1"),
        "{}",
        text(&human.stdout)
    );
    // Zero seeds is a usage error, one line, exit 2.
    let bad = mend(&["simulate", "--seeds", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}
