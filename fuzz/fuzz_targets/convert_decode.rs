//! Protobuf messages from peers, decoded and passed through the
//! `mend_rpc::convert` functions the agent applies to them: never a panic;
//! what converts converts back to an equal message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mend_rpc::fuzzing::convert_decode(data);
});
