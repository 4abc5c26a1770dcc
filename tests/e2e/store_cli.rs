//! `mend store verify` and `mend store stats` run as real processes against
//! data directories prepared through the library: healthy stores, paths that
//! are not stores, a locked store and a store with a corrupt tree leaf.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mend_core::record::hex;
use mend_core::{Agg, NodeId, RangeSpec, Secret, TreeShape};
use mend_rocks::RocksBackend;
use mend_store::{Backend, Cf, Op, Store, StoreConfig, Write};
use serde_json::Value;

/// Secret material shared by the library and the CLI (via the environment).
const SECRET: &str = "e2e store cli secret";

/// Range names and shapes (fanout, depth) of the test stores, in id order.
const RANGES: [(&str, u32, u32); 2] = [("low", 16, 3), ("high", 4, 4)];

fn ranges() -> Vec<RangeSpec> {
    let shape =
        |(_, fanout, depth): (&str, u32, u32)| TreeShape::new(fanout, depth).expect("shape");
    vec![
        RangeSpec {
            name: RANGES[0].0.into(),
            start: Vec::new(),
            end: Some(b"m".to_vec()),
            shape: shape(RANGES[0]),
            mode: Default::default(),
            versionless: false,
        },
        RangeSpec {
            name: RANGES[1].0.into(),
            start: b"m".to_vec(),
            end: None,
            shape: shape(RANGES[1]),
            mode: Default::default(),
            versionless: false,
        },
    ]
}

fn create(dir: &Path) -> Store<RocksBackend> {
    let cfg = StoreConfig::new(
        NodeId::new("e2e-cli").expect("node id"),
        Secret::from_bytes(SECRET.as_bytes()),
        Some(ranges()),
    );
    Store::open(
        RocksBackend::open_or_create(dir).expect("create the backend"),
        cfg,
    )
    .expect("create the store")
}

/// Live keys and tombstones per range written by [`populate`].
const LIVE: [u64; 2] = [50, 35];
const TOMBSTONES: [u64; 2] = [10, 6];

/// Writes 60 keys in range `low` and 40 in `high`, then deletes 10 and 5 of
/// them, and deletes one key of `high` that never existed.
fn populate(store: &Store<RocksBackend>) {
    let mut puts: Vec<Write> = (0..60)
        .map(|i| Write::put(format!("a{i:03}"), format!("va{i}")))
        .collect();
    puts.extend((0..40).map(|i| Write::put(format!("q{i:03}"), format!("vq{i}"))));
    store.write(puts).expect("puts");
    for i in 0..10 {
        store
            .write(vec![Write::delete(format!("a{i:03}"))])
            .expect("delete");
    }
    let mut deletes: Vec<Write> = (0..5).map(|i| Write::delete(format!("q{i:03}"))).collect();
    deletes.push(Write::delete("z-never-written"));
    store.write(deletes).expect("deletes");
}

fn mend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mend"))
        .args(args)
        .env("MEND_CLUSTER_SECRET", SECRET)
        .output()
        .expect("run mend")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "mend {}: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Asserts exit code 2, nothing on stdout and exactly one `mend: ` line on
/// stderr; returns that line.
fn one_error_line(args: &[&str], out: &Output) -> String {
    let ctx = describe(args, out);
    assert_eq!(out.status.code(), Some(2), "{ctx}");
    assert!(out.stdout.is_empty(), "{ctx}");
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{ctx}");
    assert!(lines[0].starts_with("mend: "), "{ctx}");
    lines[0].to_string()
}

/// Every file and directory under `dir` with its contents, to show that a
/// command changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("dir entry").path();
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn json(args: &[&str], out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(args, out)))
}

#[test]
fn verify_and_stats_describe_a_healthy_store() {
    // Proves that on a healthy store `verify` exits 0 with one root per range and `stats` reports the right counts and shapes.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = create(dir.path());
    populate(&store);
    let roots: Vec<String> = (0..RANGES.len() as u16)
        .map(|r| hex(&store.root(r).expect("root").hash()))
        .collect();
    drop(store);
    let data_dir = dir.path().to_str().expect("utf-8 path");

    let args = ["store", "verify", "--data-dir", data_dir];
    let out = mend(&args);
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert!(out.stderr.is_empty(), "{ctx}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), RANGES.len(), "{ctx}");
    for (i, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&words[..4], ["ok", "range", RANGES[i].0, "root"], "{ctx}");
        assert_eq!(words[4], roots[i], "{ctx}");
        let entries = format!("({} entries)", LIVE[i] + TOMBSTONES[i]);
        assert!(line.ends_with(&entries), "{ctx}");
    }

    let args = ["store", "verify", "--data-dir", data_dir, "--json"];
    let out = mend(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    let v = json(&args, &out);
    assert_eq!(v["ok"], true, "{v}");
    let ranges = v["ranges"].as_array().expect("ranges");
    assert_eq!(ranges.len(), RANGES.len(), "{v}");
    for (i, r) in ranges.iter().enumerate() {
        assert_eq!(r["root"], roots[i].as_str(), "{v}");
        assert_eq!(r["first_bad_bucket"], Value::Null, "{v}");
    }

    let args = ["store", "stats", "--data-dir", data_dir, "--json"];
    let out = mend(&args);
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert!(out.stderr.is_empty(), "{ctx}");
    let v = json(&args, &out);
    assert_eq!(v["keys"], LIVE.iter().sum::<u64>(), "{v}");
    assert_eq!(v["tombstones"], TOMBSTONES.iter().sum::<u64>(), "{v}");
    assert!(v["disk_bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    let ranges = v["ranges"].as_array().expect("ranges");
    assert_eq!(ranges.len(), RANGES.len(), "{v}");
    for (i, r) in ranges.iter().enumerate() {
        let (name, fanout, depth) = RANGES[i];
        assert_eq!(r["name"], name, "{v}");
        assert_eq!(r["fanout"], fanout, "{v}");
        assert_eq!(r["depth"], depth, "{v}");
        assert_eq!(r["buckets"], (fanout as u64).pow(depth), "{v}");
        assert_eq!(r["keys"], LIVE[i], "{v}");
        assert_eq!(r["tombstones"], TOMBSTONES[i], "{v}");
        assert_eq!(r["root"], roots[i].as_str(), "{v}");
    }

    let args = ["store", "stats", "--data-dir", data_dir];
    let out = mend(&args);
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let head = format!(
        "{} keys, {} tombstones, {} ranges, ",
        LIVE.iter().sum::<u64>(),
        TOMBSTONES.iter().sum::<u64>(),
        RANGES.len()
    );
    assert!(text(&out.stdout).starts_with(&head), "{ctx}");
}

#[test]
fn paths_that_are_not_stores_exit_2_and_create_nothing() {
    // Proves that a missing path, an empty directory, a directory of other files and a plain RocksDB database each fail with exit 2 and one `mend: ` line, leaving the file system as it was.
    let base = tempfile::tempdir().expect("tempdir");
    let missing = base.path().join("missing");
    let empty = base.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let foreign = base.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join("notes.txt"), "not a database\n").expect("write");
    let plain = base.path().join("plain-rocksdb");
    {
        let db = rocksdb::DB::open_default(&plain).expect("plain RocksDB");
        db.put(b"k", b"v").expect("put");
    }
    for dir in [&missing, &empty, &foreign, &plain] {
        let data_dir = dir.to_str().expect("utf-8 path");
        for cmd in [
            &["verify"][..],
            &["verify", "--json"],
            &["stats"],
            &["stats", "--json"],
        ] {
            let before = snapshot(base.path());
            let mut args = vec!["store"];
            args.extend_from_slice(cmd);
            args.extend_from_slice(&["--data-dir", data_dir]);
            let out = mend(&args);
            let line = one_error_line(&args, &out);
            assert!(line.contains(data_dir), "the error names the path: {line}");
            assert!(line.contains("not a mend store"), "{line}");
            assert!(
                snapshot(base.path()) == before,
                "{}: files changed",
                describe(&args, &out)
            );
        }
    }
    assert!(!missing.exists());
}

#[test]
fn a_locked_store_exits_2_naming_the_lock() {
    // Proves that while another process has the store open, `verify` and `stats` fail with exit 2 and one line saying it is locked.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = create(dir.path());
    populate(&store);
    let data_dir = dir.path().to_str().expect("utf-8 path");
    for cmd in ["verify", "stats"] {
        let args = ["store", cmd, "--data-dir", data_dir];
        let out = mend(&args);
        let line = one_error_line(&args, &out);
        assert!(line.contains("locked"), "{line}");
    }
    // The holder is undisturbed.
    store
        .write(vec![Write::put("after", "cli")])
        .expect("write after the CLI ran");
    assert!(store.verify().expect("verify").ok());
}

#[test]
fn verify_names_the_bucket_of_a_corrupt_leaf() {
    // Proves that a persisted leaf disagreeing with the data makes `verify` exit 1 naming that bucket, and that `rebuild` repairs it.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = create(dir.path());
    populate(&store);
    let (range, bucket, _) = store.locate(b"q020").expect("locate");
    assert_eq!(range, 1, "q020 is in range high");
    let depth = store.shape(range).expect("shape").depth;
    let leaf_key = store.layout(range, depth).expect("layout").leaf_key(bucket);
    let raw = store
        .backend()
        .get(Cf::Leaves, &leaf_key)
        .expect("get leaf");
    let mut leaf =
        Agg::decode(&raw.expect("the bucket of a live key has a leaf row")).expect("leaf");
    leaf.add_digest(&[0x5a; 32]);
    store
        .backend()
        .write(
            vec![Op::Put(Cf::Leaves, leaf_key, leaf.encode().to_vec())],
            true,
        )
        .expect("write the corrupt leaf");
    drop(store);
    let data_dir = dir.path().to_str().expect("utf-8 path");

    let args = ["store", "verify", "--data-dir", data_dir];
    let out = mend(&args);
    let ctx = describe(&args, &out);
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), RANGES.len(), "{ctx}");
    assert!(lines[0].starts_with("ok "), "{ctx}");
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&words[..3], ["BAD", "range", RANGES[1].0], "{ctx}");
    let named = format!("bucket {bucket} (1 buckets differ)");
    assert!(lines[1].ends_with(&named), "{ctx}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{ctx}");
    assert!(stderr.starts_with("mend: "), "{ctx}");

    let args = ["store", "verify", "--data-dir", data_dir, "--json"];
    let out = mend(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let v = json(&args, &out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["ranges"][0]["first_bad_bucket"], Value::Null, "{v}");
    assert_eq!(v["ranges"][1]["first_bad_bucket"], bucket, "{v}");
    assert_eq!(v["ranges"][1]["bad_buckets"], 1, "{v}");

    let args = ["store", "rebuild", "--data-dir", data_dir, "--json"];
    let out = mend(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
    let v = json(&args, &out);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["rebuild_ms"].as_f64().is_some(), "{v}");
    assert_eq!(v["ranges"][1]["first_bad_bucket"], Value::Null, "{v}");
    let args = ["store", "verify", "--data-dir", data_dir];
    let out = mend(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
}
