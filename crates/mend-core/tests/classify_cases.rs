//! Proves that `classify` gives the expected category and lagging side for
//! every scenario in `testdata/classify/`.
//!
//! Each case file holds a setup, a `----` line and the expected result:
//!
//! ```text
//! # One sentence saying what the case shows.
//! now 100000
//! settle 5000
//! skew 1000
//! local put ms=90000 origin=node-a seq=7 value=x
//! peer  none
//! ----
//! category missing
//! behind peer
//! ```
//!
//! `now`, `settle` and `skew` are milliseconds and all three are required.
//! A side is `none`, or `put` or `del` followed by `ms=`, optional `logical=`
//! (default 0), `origin=`, `seq=` and, for `put` only, optional `value=`
//! (default empty). The expected part is `category NAME` and
//! `behind local|peer|none`, or the single line `agree`. Lines starting with
//! `#` and blank lines are ignored.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use mend_core::{Category, EntryMeta, NodeId, Policy, Record, Side, Version, classify};

/// The fewest case files the suite accepts, so a broken path fails loudly.
const CASES_MIN: usize = 14;

/// What a case expects: `None` for agreement, otherwise category and side behind.
type Expected = Option<(Category, Option<Side>)>;

/// One parsed case file.
struct Case {
    now_ms: u64,
    policy: Policy,
    local: Option<EntryMeta>,
    peer: Option<EntryMeta>,
    expected: Expected,
}

#[test]
fn check_all_cases() {
    let dir = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("testdata/classify");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    paths.retain(|p| p.is_file());
    paths.sort();

    let mut failures = Vec::new();
    for path in &paths {
        let name = path.display();
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        let case = parse_case(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = classify(
            case.local.as_ref(),
            case.peer.as_ref(),
            case.now_ms,
            &case.policy,
        )
        .map(|c| (c.category, c.behind));
        if got != case.expected {
            failures.push(format!(
                "{name}: expected {}, got {}",
                render(case.expected),
                render(got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        paths.len() >= CASES_MIN,
        "found {} case files in {}, expected at least {CASES_MIN}",
        paths.len(),
        dir.display()
    );
}

/// Renders a result in the case-file syntax, on one line.
fn render(r: Expected) -> String {
    match r {
        None => "agree".to_string(),
        Some((category, behind)) => {
            let behind = behind.map_or("none", |s| s.as_str());
            format!("category {category} / behind {behind}")
        }
    }
}

/// Parses a whole case file; the error says what is wrong, the caller adds the file name.
fn parse_case(text: &str) -> Result<Case, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| *l == "----")
        .ok_or("no `----` line between setup and expected result")?;
    let (setup, expected) = (&lines[..at], &lines[at + 1..]);
    let (mut now_ms, mut settle_ms, mut clock_skew_ms) = (None, None, None);
    let (mut local, mut peer) = (None, None);
    for line in meaningful_lines(setup) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "now" => now_ms = Some(number(rest, "now")?),
            "settle" => settle_ms = Some(number(rest, "settle")?),
            "skew" => clock_skew_ms = Some(number(rest, "skew")?),
            "local" => local = Some(parse_entry(rest).map_err(|e| format!("local: {e}"))?),
            "peer" => peer = Some(parse_entry(rest).map_err(|e| format!("peer: {e}"))?),
            _ => return Err(format!("unknown setup line `{line}`")),
        }
    }
    Ok(Case {
        now_ms: now_ms.ok_or("missing `now` line")?,
        policy: Policy {
            settle_ms: settle_ms.ok_or("missing `settle` line")?,
            clock_skew_ms: clock_skew_ms.ok_or("missing `skew` line")?,
        },
        local: local.ok_or("missing `local` line")?,
        peer: peer.ok_or("missing `peer` line")?,
        expected: parse_expected(expected)?,
    })
}

/// Parses the lines after `----`.
fn parse_expected(lines: &[&str]) -> Result<Expected, String> {
    let lines: Vec<&str> = meaningful_lines(lines).collect();
    match lines.as_slice() {
        ["agree"] => Ok(None),
        [category, behind] => {
            let category = category
                .strip_prefix("category ")
                .map(str::trim)
                .ok_or(format!("expected `category NAME`, got `{category}`"))?;
            let category =
                Category::parse(category).ok_or(format!("unknown category `{category}`"))?;
            let behind = match behind.strip_prefix("behind ").map(str::trim) {
                Some("local") => Some(Side::Local),
                Some("peer") => Some(Side::Peer),
                Some("none") => None,
                _ => return Err(format!("expected `behind local|peer|none`, got `{behind}`")),
            };
            Ok(Some((category, behind)))
        }
        _ => Err("expected result must be `agree`, or a `category` and a `behind` line".into()),
    }
}

/// Parses `none` or `put|del ms=.. [logical=..] origin=.. seq=.. [value=..]`.
fn parse_entry(text: &str) -> Result<Option<EntryMeta>, String> {
    let mut words = text.split_whitespace();
    let tombstone = match words.next() {
        Some("none") if words.next().is_none() => return Ok(None),
        Some("put") => false,
        Some("del") => true,
        _ => {
            return Err(format!(
                "expected `none`, `put ..` or `del ..`, got `{text}`"
            ));
        }
    };
    let (mut ms, mut logical, mut origin, mut seq, mut value) = (None, 0, None, None, None);
    for field in words {
        let (key, val) = field
            .split_once('=')
            .ok_or(format!("expected key=value, got `{field}`"))?;
        match key {
            "ms" => ms = Some(number(val, key)?),
            "logical" => logical = number(val, key)?,
            "origin" => origin = Some(NodeId::new(val).map_err(|e| e.to_string())?),
            "seq" => seq = Some(number(val, key)?),
            "value" if !tombstone => value = Some(val.as_bytes().to_vec()),
            _ => return Err(format!("unexpected field `{field}`")),
        }
    }
    let version = Version {
        ms: ms.ok_or("missing ms=")?,
        logical,
        origin: origin.ok_or("missing origin=")?,
        seq: seq.ok_or("missing seq=")?,
    };
    let record = if tombstone {
        Record::tombstone(version)
    } else {
        Record::live(version, value.unwrap_or_default())
    };
    Ok(Some(record.meta))
}

/// Parses a decimal number, naming the field on failure.
fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{what}` needs a number, got `{text}`"))
}

/// Skips blank lines and `#` comments; the lines are already trimmed.
fn meaningful_lines<'a>(lines: &[&'a str]) -> impl Iterator<Item = &'a str> {
    lines
        .iter()
        .copied()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}
