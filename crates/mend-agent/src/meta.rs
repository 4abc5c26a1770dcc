//! The layout of the agent's own rows in the store's meta column family
//! (sync records, drift history): shared key builders.

/// The key of the agent's meta row under `prefix` for (`peer`, `range`):
/// `prefix peer 0x00 range` (sync records, drift history).
pub(crate) fn peer_range_key(prefix: &[u8], peer: &str, range: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k.extend_from_slice(range.as_bytes());
    k
}
