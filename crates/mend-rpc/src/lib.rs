//! mend-rpc: the gRPC edge. Generated protobuf/tonic code lives in [`pb`];
//! [`convert`] (and [`ingest`] for the Ingest service) turns wire messages into domain types (validating everything
//! that came from the network) and back. No other crate sees generated types
//! except the agent's service implementations, which convert at once.
//!
//! Invariant: nothing decoded from the wire reaches domain code without
//! passing a `convert` function that returns a `tonic::Status` on bad input.

pub mod convert;
pub mod enums;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ingest;
pub mod report;

/// Generated code for `proto/mend/v1/mend.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("mend.v1");
}

/// The encoded file descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mend_descriptor");

/// Version of the exchange protocol; peers with another version are refused
/// at handshake, by both sides. 3: mutual challenge-response secret check,
/// range bounds in the handshake. 4: categories, sides, apply decisions,
/// skip reasons and playbook actions as protobuf enums (`enums`), no longer
/// strings. 5: trees of one fan-out and different depths compare at the
/// smaller depth (`RangeRoot.depth`, and the compared depth on every probe
/// and leaf request).
pub const PROTOCOL_VERSION: u32 = 5;

/// Largest gRPC message the agent decodes or encodes (16 MiB): a 4 MiB value
/// plus framing fits with room; larger messages are refused with
/// `RESOURCE_EXHAUSTED` by tonic.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;

// Limits elsewhere that must fit one message (checked at compile time, so
// raising one of them past the message limit does not build).
const _: () = {
    use mend_core::exchange::{
        LEAF_DIGESTS_MAX, LEAF_ENTRY_OVERHEAD_BYTES, LEAF_QUERIES_MAX, LEAF_REPLY_BYTES_MAX,
        PROBE_REPLY_HASHES_MAX,
    };
    use mend_core::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
    /// Generous bytes of protobuf framing per repeated element and message.
    const SLACK: usize = 64;
    // The largest entry: a 4 MiB value with the largest key.
    assert!(
        VALUE_BYTES_MAX + KEY_BYTES_MAX + LEAF_ENTRY_OVERHEAD_BYTES + SLACK <= MESSAGE_BYTES_MAX
    );
    // The replies to one probe request: 8-byte truncated hashes (fixed64).
    assert!(PROBE_REPLY_HASHES_MAX * 8 + SLACK <= MESSAGE_BYTES_MAX);
    // One leaf probe: its digests (fixed64) and each query's framing.
    assert!(LEAF_DIGESTS_MAX * 8 + LEAF_QUERIES_MAX * SLACK <= MESSAGE_BYTES_MAX);
    // A leaf reply is cut after the entry that passes its soft limit.
    assert!(
        LEAF_REPLY_BYTES_MAX + KEY_BYTES_MAX + LEAF_ENTRY_OVERHEAD_BYTES + SLACK
            <= MESSAGE_BYTES_MAX
    );
};

/// Framing bytes gRPC adds to each message (compression flag + length).
pub const GRPC_FRAME_BYTES: u64 = 5;
