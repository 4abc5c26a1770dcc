//! Leaf replies carry entry lists in the packed encoding, from untrusted
//! peers: decoding arbitrary bytes must return entries or an error, and
//! whatever decodes must survive re-encoding unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mend_core::fuzzing::packed_roundtrip(data);
});
