//! Proves `mend_core::playbook` against the table in
//! `testdata/playbook.txt` (the format is described at its top).

#![allow(clippy::unwrap_used)]

use mend_core::playbook::{
    Authority, AuthorityScope, Divergent, Resolution, Skip, Verdict, repair_plan, verdict,
};
use mend_core::{Category, NodeId, Side};

/// The fewest cases the suite accepts, so a broken file fails loudly.
const CASES_MIN: usize = 20;

fn side(s: &str) -> Option<Side> {
    match s {
        "local" => Some(Side::Local),
        "peer" => Some(Side::Peer),
        "none" => None,
        _ => panic!("side {s:?}"),
    }
}

fn skip_kind(s: &Skip) -> &'static str {
    match s {
        Skip::NotSelected(_) => "not_selected",
        Skip::Conflict => "conflict",
        Skip::FutureVersion(_) => "future_version",
        Skip::InFlight => "in_flight",
        Skip::NoSideBehind(_) => "no_side_behind",
        Skip::Purged => "purged",
        Skip::AuthorityElsewhere => "authority_elsewhere",
    }
}

fn check_plan(case: &str, args: &[&str], expected: &[&str]) {
    let category = Category::parse(args[0]).unwrap_or_else(|| panic!("{case}: category"));
    let selected: Vec<Category> = match args[2] {
        "default" => Vec::new(),
        list => list
            .split('+')
            .map(|c| Category::parse(c).unwrap_or_else(|| panic!("{case}: {c}")))
            .collect(),
    };
    // Flags after SELECTED: `purged`, `authority=SIDE[/SCOPE]` (SIDE local,
    // peer or elsewhere; SCOPE conflicts (default) or all).
    let flags = &args[3..];
    let authority = flags
        .iter()
        .find_map(|f| f.strip_prefix("authority="))
        .map(|a| {
            let (s, scope) = a.split_once('/').unwrap_or((a, "conflicts"));
            Authority {
                side: match s {
                    "elsewhere" => None,
                    s => side(s),
                },
                scope: AuthorityScope::parse(scope).unwrap_or_else(|| panic!("{case}: {scope}")),
            }
        });
    let origin = NodeId::new("node-z").unwrap();
    let k = Divergent {
        key: b"k",
        category,
        behind: side(args[1]),
        origin: Some(&origin),
        purged: flags.contains(&"purged"),
        authority,
    };
    let plan = repair_plan([k], &selected);
    let got = match (plan.planned.first(), plan.skipped.first()) {
        (Some(m), None) => {
            assert_eq!(m.category, category, "{case}");
            match m.resolution {
                Resolution::Newer => format!("planned {}", m.behind.as_str()),
                Resolution::Authority => format!("planned {} by authority", m.behind.as_str()),
            }
        }
        (None, Some((_, why))) => {
            // Every skip explains itself in words a report can show.
            assert!(!why.to_string().is_empty(), "{case}");
            format!("skip {}", skip_kind(why))
        }
        _ => panic!("{case}: a key must be planned or skipped, exactly once"),
    };
    assert_eq!(got, expected.join(" "), "{case}");
}

fn check_verdict(case: &str, args: &[&str], expected: &[&str]) {
    let n = |i: usize| args[i].parse::<u64>().unwrap_or_else(|_| panic!("{case}"));
    let v = verdict(
        n(0),
        n(1),
        n(2),
        args[3].parse().unwrap(),
        args[4].parse().unwrap(),
    );
    let got = match v {
        Verdict::Report => "report",
        Verdict::Repair => "repair",
        Verdict::RefusedBlastRadius { .. } => "blast",
        Verdict::RefusedUnhealthyPeer => "unhealthy",
    };
    assert_eq!(got, expected.join(" "), "{case}");
}

#[test]
fn check_all_cases() {
    let path = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests and benches"),
    )
    .join("testdata/playbook.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut cases = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (lhs, rhs) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("{line}: no ->"));
        let words: Vec<&str> = lhs.split_whitespace().collect();
        let expected: Vec<&str> = rhs.split_whitespace().collect();
        match words[0] {
            "plan" => check_plan(line, &words[1..], &expected),
            "verdict" => check_verdict(line, &words[1..], &expected),
            other => panic!("{line}: unknown case kind {other:?}"),
        }
        cases += 1;
    }
    assert!(
        cases >= CASES_MIN,
        "only {cases} cases in {}",
        path.display()
    );
}
