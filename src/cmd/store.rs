//! `mend store verify|stats|rebuild`: offline inspection of a data directory.
//! Opens an existing store only (never creates one); a missing path, a
//! locked database or a directory that is not a mend store is an error
//! (exit 2) before anything is written.

use std::process::ExitCode;

use anyhow::Context;
use mend_core::NodeId;
use mend_rocks::RocksBackend;
use mend_store::{Store, StoreConfig};

use crate::cli::{StoreArgs, StoreCommand};
use crate::output::{human_bytes, print_json};

fn open(a: &StoreArgs) -> anyhow::Result<Store<RocksBackend>> {
    let secret = crate::secret::load(a.secret_file.as_deref(), |_| {})?;
    let backend = RocksBackend::open_existing(&a.data_dir)?;
    let node = NodeId::new("mend-cli").context("node id")?;
    let store =
        Store::open(backend, StoreConfig::new(node, secret, None)).map_err(|e| match e {
            mend_store::StoreError::NotAStore { why, .. } => {
                anyhow::anyhow!("{} is not a mend store: {why}", a.data_dir.display())
            }
            e => e.into(),
        })?;
    Ok(store)
}

/// Runs a `mend store` subcommand.
pub fn run(c: StoreCommand) -> anyhow::Result<ExitCode> {
    match c {
        StoreCommand::Verify(a) => {
            let s = open(&a)?;
            let r = s.verify()?;
            if a.json {
                print_json(&serde_json::json!({ "ok": r.ok(), "ranges": r.ranges }))?;
            } else {
                for rv in &r.ranges {
                    match rv.first_bad_bucket {
                        None => println!(
                            "ok    range {:<16} root {} ({} entries)",
                            rv.name, rv.root, rv.entries
                        ),
                        Some(b) => println!(
                            "BAD   range {:<16} first disagreeing bucket {b} ({} buckets differ)",
                            rv.name, rv.bad_buckets
                        ),
                    }
                }
            }
            if !r.ok() {
                if !a.json {
                    eprintln!(
                        "mend: tree does not match the data; `mend store rebuild` recomputes it"
                    );
                }
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Stats(a) => {
            let s = open(&a)?;
            let st = s.stats()?;
            if a.json {
                print_json(&st)?;
            } else {
                println!(
                    "{} keys, {} tombstones, {} ranges, {} on disk",
                    st.keys,
                    st.tombstones,
                    st.ranges.len(),
                    human_bytes(st.disk_bytes)
                );
                for r in &st.ranges {
                    println!(
                        "  range {:<16} keys {:>10}  tombstones {:>8}  tree {}^{} = {} buckets ({})  root {}",
                        r.name,
                        r.keys,
                        r.tombstones,
                        r.fanout,
                        r.depth,
                        r.buckets,
                        human_bytes(r.tree_memory_bytes),
                        &r.root[..16]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Rebuild(a) => {
            let s = open(&a)?;
            let started = std::time::Instant::now();
            s.rebuild()?;
            let rebuild_ms = started.elapsed().as_secs_f64() * 1e3;
            let started = std::time::Instant::now();
            let r = s.verify()?;
            let verify_ms = started.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(r.ok(), "rebuild did not produce a consistent tree");
            if a.json {
                print_json(&serde_json::json!({
                    "ok": true,
                    "rebuild_ms": rebuild_ms,
                    "verify_ms": verify_ms,
                    "ranges": r.ranges,
                }))?;
            } else {
                println!(
                    "rebuilt {} ranges in {rebuild_ms:.0} ms (then verified in {verify_ms:.0} ms)",
                    r.ranges.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
