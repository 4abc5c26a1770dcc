//! Criterion suites behind one `main`, one module per area (STYLE.md point 14).
//!
//! Run everything with `cargo bench --bench benches`, or one area by its group
//! prefix, e.g. `cargo bench --bench benches -- store/`. Results and the
//! commands that produced them are recorded in `BENCHMARKS.md`.

#![allow(clippy::unwrap_used)]

mod digest;
mod e2e;
mod exchange;
mod ingest;
mod ops;
mod repair;
mod scale;
mod store;

criterion::criterion_main!(
    digest::benches,
    store::benches,
    ingest::benches,
    repair::benches,
    exchange::benches,
    e2e::benches,
    scale::benches,
    ops::benches
);
