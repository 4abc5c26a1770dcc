//! Proves that `attribute` groups classified divergent keys into the expected
//! sources, in the expected order and with the expected hints, for every
//! scenario in `testdata/attribution/`.
//!
//! Each case file holds a setup, a `----` line and the expected sources:
//!
//! ```text
//! # One sentence saying what the case shows.
//! now 1714569000000
//! nodes node-a node-b
//! key=k1 local=none peer=put ms=1714568531000 origin=node-c seq=88120
//! key=k2 local=put ms=1714568000000 origin=node-c seq=9 value=x peer=del ms=... origin=... seq=...
//! ----
//! missing node-c peer 1 1714568531000 1714568531000 88120-88120 gaps=local:1:88120-88120
//! hint contains "the only missing key was written via node-c at 13:02:11"
//! ```
//!
//! Setup: `now MS` and `nodes LOCAL PEER` are required; `settle MS`,
//! `skew MS` (default [`Policy::default`]), `window_gap MS` and
//! `sources_max N` (default [`Options::default`]) are optional. Each `key=`
//! line is one divergent key; `local=` and `peer=` are `none`, `put` or `del`,
//! and the `ms=`, optional `logical=` (default 0), `origin=`, `seq=` and,
//! for `put`, optional `value=` (default empty) after one belong to that side.
//! The keys are classified with `classify` at `now`; a key whose sides agree
//! is an error in the case.
//!
//! Expected: one line per source, in order,
//! `CATEGORY ORIGIN NEWER_SIDE COUNT FIRST_MS LAST_MS SEQ_MIN-SEQ_MAX`, plus
//! ` gaps=SIDE:MISSING:A-B,C-D` when the source has seq gaps; after it, any
//! number of `hint contains "..."` lines that its hint must contain. Lines
//! starting with `#` and blank lines are ignored.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use mend_core::attribution::{Observed, Options, Source, attribute};
use mend_core::exchange::{Divergence, EntrySummary, entry_hash};
use mend_core::{EntryMeta, NodeId, Policy, Record, Secret, Version, classify};

/// The fewest case files the suite accepts, so a broken path fails loudly.
const CASES_MIN: usize = 6;

/// One divergent key: the divergence attribution sees and the entries classify sees.
struct Key {
    div: Divergence,
    local: Option<EntryMeta>,
    peer: Option<EntryMeta>,
}

/// One parsed case file.
struct Case {
    policy: Policy,
    opts: Options,
    keys: Vec<Key>,
    /// Per expected source: its rendered line and the texts its hint must contain.
    expected: Vec<(String, Vec<String>)>,
}

#[test]
fn check_all_cases() {
    let dir = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("testdata/attribution");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    paths.retain(|p| p.extension().is_some_and(|x| x == "txt"));
    paths.sort();

    let mut failures = Vec::new();
    for path in &paths {
        let name = path.display();
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        let result = parse_case(&text).and_then(|case| check(&case));
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
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

/// Classifies the case's keys, attributes them and compares with the expected sources.
fn check(case: &Case) -> Result<(), String> {
    let mut observed = Vec::new();
    for k in &case.keys {
        let c = classify(
            k.local.as_ref(),
            k.peer.as_ref(),
            case.opts.now_ms,
            &case.policy,
        )
        .ok_or(format!(
            "key {}: both sides agree",
            String::from_utf8_lossy(&k.div.key)
        ))?;
        observed.push(Observed {
            div: &k.div,
            category: c.category,
            behind: c.behind,
        });
    }
    let got = attribute(&observed, &case.opts);
    let got_lines: Vec<String> = got.iter().map(render).collect();
    let want_lines: Vec<&str> = case.expected.iter().map(|(l, _)| l.as_str()).collect();
    if got_lines != want_lines {
        let got: Vec<String> = got
            .iter()
            .map(|s| format!("{}\n    hint: {}", render(s), s.hint))
            .collect();
        return Err(format!(
            "sources differ\nexpected:\n  {}\ngot:\n  {}",
            want_lines.join("\n  "),
            got.join("\n  ")
        ));
    }
    for (s, (line, hints)) in got.iter().zip(&case.expected) {
        for h in hints {
            if !s.hint.contains(h.as_str()) {
                return Err(format!(
                    "source `{line}`: hint does not contain \"{h}\"\n  hint: {}",
                    s.hint
                ));
            }
        }
    }
    Ok(())
}

/// Renders a source in the case-file syntax, without its hint.
fn render(s: &Source) -> String {
    let mut line = format!(
        "{} {} {} {} {} {} {}-{}",
        s.category, s.origin, s.newer_side, s.count, s.first_ms, s.last_ms, s.seq_min, s.seq_max
    );
    if let Some(g) = &s.seq_gaps {
        let ranges: Vec<String> = g.ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        line += &format!(" gaps={}:{}:{}", g.missing_on, g.missing, ranges.join(","));
    }
    line
}

/// Parses a whole case file; the error says what is wrong, the caller adds the file name.
fn parse_case(text: &str) -> Result<Case, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| *l == "----")
        .ok_or("no `----` line between setup and expected sources")?;
    let mut policy = Policy::default();
    let mut opts = Options::default();
    let (mut now_ms, mut nodes, mut keys) = (None, None, Vec::new());
    for line in meaningful_lines(&lines[..at]) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "now" => now_ms = Some(number(rest, "now")?),
            "settle" => policy.settle_ms = number(rest, "settle")?,
            "skew" => policy.clock_skew_ms = number(rest, "skew")?,
            "window_gap" => opts.window_gap_ms = number(rest, "window_gap")?,
            "sources_max" => opts.sources_max = number(rest, "sources_max")?,
            "nodes" => match rest.split_whitespace().collect::<Vec<_>>()[..] {
                [local, peer] => nodes = Some((local, peer)),
                _ => return Err(format!("expected `nodes LOCAL PEER`, got `{line}`")),
            },
            _ if word.starts_with("key=") => keys.push(parse_key(line)?),
            _ => return Err(format!("unknown setup line `{line}`")),
        }
    }
    let (local, peer) = nodes.ok_or("missing `nodes LOCAL PEER` line")?;
    opts.now_ms = now_ms.ok_or("missing `now` line")?;
    (opts.local_node, opts.peer_node) = (local.to_string(), peer.to_string());

    let mut expected: Vec<(String, Vec<String>)> = Vec::new();
    for line in meaningful_lines(&lines[at + 1..]) {
        if let Some(quoted) = line.strip_prefix("hint contains ") {
            let hint = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .ok_or(format!("hint must be in double quotes: `{line}`"))?;
            let source = expected
                .last_mut()
                .ok_or(format!("`{line}` before any source line"))?;
            source.1.push(hint.to_string());
        } else {
            expected.push((
                line.split_whitespace().collect::<Vec<_>>().join(" "),
                vec![],
            ));
        }
    }
    Ok(Case {
        policy,
        opts,
        keys,
        expected,
    })
}

/// Parses `key=K local=.. [fields] peer=.. [fields]`.
fn parse_key(line: &str) -> Result<Key, String> {
    let mut key = None;
    // Per side (local, peer): `None` until named, then `Some(None)` for an
    // absent entry or `Some(Some(tombstone))`; and the fields that follow.
    let mut kinds: [Option<Option<bool>>; 2] = [None, None];
    let mut fields: [Vec<(&str, &str)>; 2] = [vec![], vec![]];
    let mut current = None;
    for field in line.split_whitespace() {
        let (name, val) = field
            .split_once('=')
            .ok_or(format!("expected name=value, got `{field}` in `{line}`"))?;
        match name {
            "key" => key = Some(val.as_bytes().to_vec()),
            "local" | "peer" => {
                let i = usize::from(name == "peer");
                kinds[i] = Some(match val {
                    "none" => None,
                    "put" => Some(false),
                    "del" => Some(true),
                    _ => return Err(format!("`{name}=` takes none, put or del, got `{val}`")),
                });
                current = Some(i);
            }
            _ => fields[current.ok_or(format!("`{field}` before local= or peer="))?]
                .push((name, val)),
        }
    }
    let key = key.ok_or(format!("missing key= in `{line}`"))?;
    let mut metas = [None, None];
    for (i, side) in ["local", "peer"].into_iter().enumerate() {
        metas[i] = match kinds[i].ok_or(format!("missing `{side}=` in `{line}`"))? {
            None if fields[i].is_empty() => None,
            None => return Err(format!("`{side}=none` takes no fields in `{line}`")),
            Some(tombstone) => {
                Some(meta(tombstone, &fields[i]).map_err(|e| format!("{side}: {e}"))?)
            }
        };
    }
    let [local, peer] = metas;
    let summary = |m: &EntryMeta| EntrySummary {
        key: key.clone(),
        version: m.version.clone(),
        tombstone: m.tombstone,
        hash: entry_hash(&m.digest(&Secret::development(), &key)),
    };
    let div = Divergence {
        key: key.clone(),
        local: local.as_ref().map(summary),
        peer: peer.as_ref().map(summary),
    };
    Ok(Key { div, local, peer })
}

/// Builds one side's entry from its fields.
fn meta(tombstone: bool, fields: &[(&str, &str)]) -> Result<EntryMeta, String> {
    let (mut ms, mut logical, mut origin, mut seq, mut value) = (None, 0, None, None, None);
    for &(name, val) in fields {
        match name {
            "ms" => ms = Some(number(val, name)?),
            "logical" => logical = number(val, name)?,
            "origin" => origin = Some(NodeId::new(val).map_err(|e| e.to_string())?),
            "seq" => seq = Some(number(val, name)?),
            "value" if !tombstone => value = Some(val.as_bytes().to_vec()),
            _ => return Err(format!("unexpected field `{name}={val}`")),
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
    Ok(record.meta)
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
