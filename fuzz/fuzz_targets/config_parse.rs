//! The agent's config file (from disk or a ConfigMap): parsing and
//! validation never panic; what parses round-trips through TOML.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mend_config::fuzzing::config_parse(data);
});
