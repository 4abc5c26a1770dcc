//! Probes and leaf probes arrive from untrusted peers: answering arbitrary
//! ones must return a result or a protocol error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mend_core::fuzzing::respond_arbitrary(data);
});
