//! Stored records are decoded from disk and (as entries) from the network:
//! decoding arbitrary bytes must never panic, and what decodes re-encodes
//! to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mend_core::fuzzing::record_roundtrip(data);
});
