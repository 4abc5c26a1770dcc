//! The RocksDB backend passes the conformance suite, and opening paths that
//! are not mend stores fails cleanly without creating anything.

#![allow(clippy::unwrap_used)]

use mend_rocks::RocksBackend;
use mend_store::conformance::{Harness, config, run_all};
use mend_store::{Store, StoreError, Write};
use tempfile::TempDir;

struct Rocks {
    dirs: Vec<TempDir>,
}

impl Harness for Rocks {
    type B = RocksBackend;
    fn fresh(&mut self) -> RocksBackend {
        let d = tempfile::tempdir().expect("tempdir");
        let b = RocksBackend::open_or_create(d.path()).expect("open");
        self.dirs.push(d);
        b
    }
    fn reopen(&mut self, b: RocksBackend) -> RocksBackend {
        let p = b.path().to_path_buf();
        drop(b);
        RocksBackend::open_existing(&p).expect("reopen")
    }
}

#[test]
fn rocksdb_backend_conforms() {
    run_all(&mut Rocks { dirs: Vec::new() });
}

#[test]
fn opening_non_stores_fails_without_creating_anything() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope");
    let e = RocksBackend::open_existing(&missing).unwrap_err();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    assert!(!missing.exists());
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = RocksBackend::open_existing(&empty).unwrap_err();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn a_second_open_of_a_live_store_reports_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(
        RocksBackend::open_or_create(d.path()).unwrap(),
        config("n1", 5),
    )
    .unwrap();
    s.write(vec![Write::put("k", "v")]).unwrap();
    let e = RocksBackend::open_existing(d.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
}

#[test]
fn corrupt_leaf_rows_and_params_are_typed_errors() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = Store::open(
            RocksBackend::open_or_create(d.path()).unwrap(),
            config("n1", 5),
        )
        .unwrap();
        s.write(vec![Write::put("k", "v")]).unwrap();
        use mend_store::Backend;
        s.backend()
            .write(
                vec![mend_store::Op::Put(
                    mend_store::Cf::Leaves,
                    vec![0, 0, 0, 0, 0, 1],
                    vec![1, 2, 3],
                )],
                true,
            )
            .unwrap();
    }
    let e = Store::open(
        RocksBackend::open_existing(d.path()).unwrap(),
        config("n1", 5),
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    {
        let b = RocksBackend::open_existing(d.path()).unwrap();
        use mend_store::Backend;
        b.write(
            vec![mend_store::Op::Put(
                mend_store::Cf::Meta,
                b"params".to_vec(),
                b"{not json".to_vec(),
            )],
            true,
        )
        .unwrap();
    }
    let e = Store::open(
        RocksBackend::open_existing(d.path()).unwrap(),
        config("n1", 5),
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
}
