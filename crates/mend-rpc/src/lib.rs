//! mend-rpc: the gRPC edge. Generated protobuf/tonic code lives in [`pb`];
//! [`convert`] turns wire messages into domain types (validating everything
//! that came from the network) and back. No other crate sees generated types
//! except the agent's service implementations, which convert at once.
//!
//! Invariant: nothing decoded from the wire reaches domain code without
//! passing a `convert` function that returns a `tonic::Status` on bad input.

pub mod convert;
pub mod fuzzing;

/// Generated code for `proto/mend/v1/mend.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("mend.v1");
}

/// The encoded file descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mend_descriptor");

/// Version of the exchange protocol; peers with another version are refused
/// at handshake, by both sides. 3: mutual challenge-response secret check,
/// range bounds in the handshake.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest gRPC message the agent decodes or encodes (16 MiB): a 4 MiB value
/// plus framing fits with room; larger messages are refused with
/// `RESOURCE_EXHAUSTED` by tonic.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;

/// Framing bytes gRPC adds to each message (compression flag + length).
pub const GRPC_FRAME_BYTES: u64 = 5;
