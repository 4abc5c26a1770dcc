//! Named limits of the data model. Each is enforced at the edge where input
//! enters (the store's write path, the gRPC layer), and exceeding one is a
//! typed error, never a truncation.

/// Largest key, in bytes. Keys are 1..=`KEY_BYTES_MAX` bytes; the empty key is
/// rejected because range bounds use it as "the start of the key space".
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value, in bytes (4 MiB). Larger values would make a single repair
/// message unbounded; stores holding bigger blobs keep a reference here.
pub const VALUE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Longest node id (the origin of a version), in bytes. Stored with every
/// entry, so it is kept short.
pub const NODE_ID_BYTES_MAX: usize = 64;

/// Most key ranges one store serves.
pub const RANGES_MAX: usize = 1024;

// Range ids are u16 in every row key (`[range u16]...`): more ranges would
// alias ids.
const _: () = assert!(RANGES_MAX <= u16::MAX as usize + 1);

/// Longest range name, in bytes.
pub const RANGE_NAME_BYTES_MAX: usize = 128;

/// Smallest and largest tree fan-out (children per interior node); a power of two.
pub const FANOUT_MIN: u32 = 2;
/// See [`FANOUT_MIN`].
pub const FANOUT_MAX: u32 = 256;

/// Deepest tree (levels below the root). Depth 0 would be a single bucket.
pub const DEPTH_MAX: u32 = 8;

/// Most buckets (leaves) per range tree: 2^24. The in-memory tree costs about
/// 48 bytes per bucket (leaf plus interior nodes), so this caps one range's
/// tree at ~800 MiB; the default shape (16^4 = 65 536 buckets) needs ~3 MiB.
pub const BUCKETS_MAX: u64 = 1 << 24;

// Buckets are numbered by u32 everywhere (row keys, probes, leaf queries):
// a larger tree would alias bucket numbers.
const _: () = assert!(BUCKETS_MAX <= 1 << 32);
// Every documented bound of a shape is reachable within BUCKETS_MAX: the
// widest fan-out at depth 1, the greatest depth at the smallest fan-out.
// Otherwise a shape the docs allow would be refused by `TreeShape::new`.
const _: () = assert!(FANOUT_MAX as u64 <= BUCKETS_MAX);
const _: () = assert!((FANOUT_MIN as u64).pow(DEPTH_MAX) <= BUCKETS_MAX);

/// Most entries in one ingest batch. A batch commits in one backend batch
/// (entries, tree leaves and the source's position together), so this bounds
/// the memory one batch holds and the size of that commit: at the largest
/// key, ~41 MiB of keys; typical feeds send far smaller batches.
pub const INGEST_BATCH_ENTRIES_MAX: usize = 10_000;

/// Longest ingest source name, in bytes (a feed's name, e.g. `pg-orders`).
/// Stored in every position row's key, so it is kept short.
pub const SOURCE_NAME_BYTES_MAX: usize = 128;

/// Longest ingest position, in bytes. A position is opaque to mend (a WAL
/// LSN, a Kafka offset, a resume token); 256 bytes holds any of them.
pub const POSITION_BYTES_MAX: usize = 256;
