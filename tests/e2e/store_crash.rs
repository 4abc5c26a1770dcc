//! Crash safety of the RocksDB-backed store: a writer process is killed with
//! SIGKILL at random moments, and after every kill the store must reopen with
//! a tree that matches its data and with every acknowledged write in place.
//!
//! The writer is this test binary itself, re-executed with
//! [`CHILD_DIR_ENV`] set so that [`crash_child`] runs the writer loop. It
//! speaks a line protocol on stdout, flushed line by line:
//!
//! * `try <n> <key>=<value|DEL> ...`: the writes of call `n` to
//!   `Store::write`, printed before the call;
//! * `ack <n> <key> <value|DEL>`: one line per write of call `n`, printed
//!   after the call returned.
//!
//! The parent kills the writer after a random number of acks, then drains the
//! pipe, so every line the writer printed before dying is known. A write the
//! writer finished but could not acknowledge is only ever the last `try`,
//! and since a batch is atomic it must then be present entirely or not at
//! all; everything acknowledged must be present. Which write is in flight at
//! the kill depends on scheduling, so a seed replays the writes and kill
//! counts but not the exact kill moments.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use mend_core::{NodeId, RangeSpec, Secret, TreeShape};
use mend_rocks::RocksBackend;
use mend_store::{Store, StoreConfig, Write};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Set in the writer process: the data directory to write to.
const CHILD_DIR_ENV: &str = "MEND_CRASH_CHILD_DIR";
/// Set in the writer process: which kill round it is (the key pool grows
/// with it, so keys keep accumulating across kills).
const CHILD_ROUND_ENV: &str = "MEND_CRASH_CHILD_ROUND";
/// Set in the writer process: the seed of its writes.
const CHILD_SEED_ENV: &str = "MEND_CRASH_CHILD_SEED";
/// Set by a developer to replay a failed run.
const SEED_ENV: &str = "MEND_CRASH_SEED";

/// Writer processes killed per run.
const KILLS: u64 = 30;
/// Most acks the parent waits for before a kill.
const ACKS_BEFORE_KILL_MAX: u64 = 400;
/// New keys per prefix that each round adds to the pool writes choose from.
const POOL_KEYS_PER_ROUND: u64 = 40;
/// Most writes in one batched `Store::write` call.
const BATCH_WRITES_MAX: u64 = 8;

/// The expected state: key → value, or `None` for a tombstone.
type State = BTreeMap<String, Option<String>>;

/// One write of the protocol: key and value (`None` = delete).
type Planned = (String, Option<String>);

fn ranges() -> Vec<RangeSpec> {
    let shape = TreeShape::new(16, 3).expect("shape");
    vec![
        RangeSpec {
            name: "low".into(),
            start: Vec::new(),
            end: Some(b"m".to_vec()),
            shape,
            mode: Default::default(),
            versionless: false,
        },
        RangeSpec {
            name: "high".into(),
            start: b"m".to_vec(),
            end: None,
            shape,
            mode: Default::default(),
            versionless: false,
        },
    ]
}

fn config(node: &str) -> StoreConfig {
    StoreConfig::new(
        NodeId::new(node).expect("node id"),
        Secret::from_bytes(b"crash"),
        Some(ranges()),
    )
}

fn open_existing(dir: &Path, node: &str) -> Store<RocksBackend> {
    let backend = RocksBackend::open_existing(dir).expect("open the RocksDB backend");
    Store::open(backend, config(node)).expect("open the store")
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn show(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("DEL")
}

/// The writer: runs only when re-executed by [`store_survives_sigkill`];
/// an ordinary test run passes through it.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let round = env_u64(CHILD_ROUND_ENV);
    let mut rng = StdRng::seed_from_u64(env_u64(CHILD_SEED_ENV));
    let store = open_existing(Path::new(&dir), "crash-writer");
    let pool = POOL_KEYS_PER_ROUND * (round + 1);
    let mut out = std::io::stdout().lock();
    // The harness has printed `test store_crash::crash_child ... ` without a
    // newline: end that line so the first `try` starts one of its own.
    if out.write_all(b"\n").and_then(|()| out.flush()).is_err() {
        return;
    }
    for n in 0u64.. {
        let count = if rng.random_ratio(1, 4) {
            rng.random_range(2..=BATCH_WRITES_MAX)
        } else {
            1
        };
        let planned: Vec<Planned> = (0..count)
            .map(|i| {
                let prefix = if rng.random_bool(0.5) { 'a' } else { 'x' };
                let key = format!("{prefix}{:05}", rng.random_range(0..pool));
                let value = (!rng.random_ratio(1, 5)).then(|| format!("r{round}n{n}i{i}"));
                (key, value)
            })
            .collect();
        let mut line = format!("try {n}");
        for (k, v) in &planned {
            line.push_str(&format!(" {k}={}", show(v)));
        }
        line.push('\n');
        // A failed write to stdout means the parent is gone: stop.
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
        let writes = planned
            .iter()
            .map(|(k, v)| match v {
                Some(v) => Write::put(k.as_bytes(), v.as_bytes()),
                None => Write::delete(k.as_bytes()),
            })
            .collect();
        let applied = store.write(writes).expect("write");
        assert!(
            applied
                .iter()
                .all(|a| a.decision == mend_core::Decision::Apply),
            "a local write was not applied: {applied:?}"
        );
        for (k, v) in &planned {
            let ack = format!("ack {n} {k} {}\n", show(v));
            if out
                .write_all(ack.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return;
            }
        }
    }
}

/// What the parent learnt from one writer's output.
#[derive(Default)]
struct Transcript {
    /// Acks seen.
    acks: u64,
    /// The call the last ack belonged to.
    last_acked: Option<u64>,
    /// The last `try` whose call has not been acknowledged: it may or may
    /// not have been committed when the writer died.
    in_flight: Option<(u64, Vec<Planned>)>,
}

impl Transcript {
    /// Folds one protocol line into `state`; other lines (the test
    /// harness's own output) are ignored.
    fn line(&mut self, line: &str, state: &mut State, ctx: &str) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("try") => {
                let n: u64 = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .expect("try number");
                let writes = words
                    .map(|w| {
                        let (k, v) = w.split_once('=').expect("key=value");
                        (k.to_string(), (v != "DEL").then(|| v.to_string()))
                    })
                    .collect();
                assert!(
                    self.in_flight.is_none(),
                    "{ctx}: call {n} tried before the previous one was acknowledged"
                );
                self.in_flight = Some((n, writes));
            }
            Some("ack") => {
                let n: u64 = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .expect("ack number");
                // The first ack of a call proves the whole batch committed.
                match self.in_flight.take() {
                    Some((tried, writes)) => {
                        assert_eq!(
                            tried, n,
                            "{ctx}: ack of call {n} while {tried} was in flight"
                        );
                        state.extend(writes);
                    }
                    None => assert_eq!(
                        self.last_acked,
                        Some(n),
                        "{ctx}: ack of call {n} that was never tried"
                    ),
                }
                self.last_acked = Some(n);
                self.acks += 1;
            }
            _ => {}
        }
    }
}

/// The store's entries for `keys`: value, or `None` for a tombstone;
/// absent keys are left out.
fn read_back<'a>(store: &Store<RocksBackend>, keys: impl Iterator<Item = &'a String>) -> State {
    let mut out = State::new();
    for k in keys {
        if let Some(r) = store.get(k.as_bytes()).expect("get") {
            let value =
                (!r.meta.tombstone).then(|| String::from_utf8(r.value).expect("values are ASCII"));
            out.insert(k.clone(), value);
        }
    }
    out
}

fn describe_diff(want: &State, got: &State) -> String {
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .take(10)
        .map(|k| format!("{k}: want {:?}, got {:?}", want.get(k), got.get(k)))
        .collect();
    diffs.join("; ")
}

/// Checks the reopened store against the acknowledged state and resolves
/// the in-flight call: its batch must be present entirely or not at all.
fn check_after_kill(dir: &Path, state: &mut State, in_flight: Option<Vec<Planned>>, ctx: &str) {
    let store = open_existing(dir, "crash-checker");
    let report = store.verify().expect("verify");
    assert!(
        report.ok(),
        "{ctx}: tree disagrees with the data after a kill: {report:?}"
    );
    let mut with_flight = state.clone();
    if let Some(writes) = &in_flight {
        with_flight.extend(writes.iter().cloned());
    }
    let got = read_back(&store, with_flight.keys());
    if got != *state {
        assert!(
            in_flight.is_some() && got == with_flight,
            "{ctx}: acknowledged writes lost or a batch torn: {}",
            describe_diff(state, &got)
        );
        *state = with_flight;
    }
    // The store holds nothing beyond what the writers printed.
    let stats = store.stats().expect("stats");
    let live = state.values().filter(|v| v.is_some()).count() as u64;
    let tombstones = state.len() as u64 - live;
    assert_eq!(
        (stats.keys, stats.tombstones),
        (live, tombstones),
        "{ctx}: (keys, tombstones) in the store vs written"
    );
}

#[test]
fn store_survives_sigkill() {
    // Proves that SIGKILL at any moment of a write loop of puts, deletes and batches never loses an acknowledged write, never tears a batch, and never leaves the tree out of step with the data.
    let seed = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("MEND_CRASH_SEED is a u64"),
        Err(_) => rand::random::<u64>(),
    };
    // Shown by the harness when the test fails.
    eprintln!("store_survives_sigkill: seed {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    drop(
        Store::open(
            RocksBackend::open_or_create(dir.path()).expect("create the backend"),
            config("crash-creator"),
        )
        .expect("create the store"),
    );
    let exe = std::env::current_exe().expect("current_exe");
    let mut state = State::new();
    let mut total_acks = 0;
    for round in 0..KILLS {
        // One kill in eight lands before the first ack: while the writer
        // starts or RocksDB recovers its log.
        let kill_after = if rng.random_ratio(1, 8) {
            0
        } else {
            rng.random_range(1..=ACKS_BEFORE_KILL_MAX)
        };
        let ctx = format!("seed {seed}, round {round}, kill after {kill_after} acks");
        let stderr_path = logs.path().join(format!("writer-{round}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store_crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .env(CHILD_SEED_ENV, rng.random::<u64>().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn the writer");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut transcript = Transcript::default();
        let mut killed = false;
        let mut line = String::new();
        loop {
            if !killed && transcript.acks >= kill_after {
                child.kill().expect("kill the writer");
                killed = true;
            }
            line.clear();
            // After the kill this drains what the writer printed before dying.
            if reader
                .read_line(&mut line)
                .expect("read the writer's stdout")
                == 0
            {
                break;
            }
            // A line cut short by the kill was never completed.
            if line.ends_with('\n') {
                transcript.line(&line, &mut state, &ctx);
            }
        }
        let status = child.wait().expect("wait for the writer");
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert!(
            killed && status.signal() == Some(libc::SIGKILL),
            "{ctx}: the writer ended by itself ({status}) after {} acks; its stderr:\n{stderr}",
            transcript.acks
        );
        total_acks += transcript.acks;
        check_after_kill(
            dir.path(),
            &mut state,
            transcript.in_flight.map(|(_, w)| w),
            &ctx,
        );
    }
    assert!(
        total_acks > KILLS * 10,
        "seed {seed}: only {total_acks} acknowledged writes in {KILLS} rounds"
    );
    assert!(
        state.len() > 200,
        "seed {seed}: only {} keys accumulated",
        state.len()
    );
}
