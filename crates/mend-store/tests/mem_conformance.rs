//! The backend conformance suite on the in-memory backend.

#![allow(clippy::unwrap_used)]

use mend_store::MemBackend;
use mend_store::conformance::{Harness, run_all};

struct Mem;

impl Harness for Mem {
    type B = MemBackend;
    fn fresh(&mut self) -> MemBackend {
        MemBackend::new()
    }
    fn reopen(&mut self, b: MemBackend) -> MemBackend {
        b
    }
}

#[test]
fn memory_backend_conforms() {
    run_all(&mut Mem);
}
