//! The command line (split at NUL bytes): clap parsing of mend's own
//! definitions never panics. The definitions are compiled in from
//! `src/cli.rs` (they depend on clap only), so this never builds RocksDB.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/cli.rs"]
mod cli;

fuzz_target!(|data: &[u8]| {
    cli::fuzz_parse(data);
});
