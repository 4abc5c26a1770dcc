//! The README's main job, `mend demo`, run as a newcomer runs it: a real
//! process with embedded defaults (three agents on loopback with mutual TLS,
//! divergence of every kind, diff, repair, converge). It must exit 0, show
//! every category, repair exactly the repairable keys, leave the three that
//! need a human or settle by themselves, and remove its temporary data.

use std::process::Command;

#[test]
fn the_demo_finds_every_category_repairs_and_converges() {
    let out = Command::new(env!("CARGO_BIN_EXE_mend"))
        .arg("demo")
        .output()
        .expect("run mend demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mend demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (before, after) = stdout
        .split_once("(after the repair)")
        .expect("a diff after the repair");
    for category in [
        "missing",
        "stale",
        "unpropagated_delete",
        "conflict",
        "future_version",
        "in_flight",
    ] {
        assert!(before.contains(category), "first diff lacks {category}");
    }
    assert!(before.contains("10 keys differ"), "first diff: {before}");
    assert!(before.contains("7 keys repaired"), "{before}");
    assert!(
        before.contains("is refused"),
        "a writer's certificate was not refused: {before}"
    );
    assert!(after.contains("3 keys differ"), "{after}");
    // No row of the diff after the repair (category counts, or key rows:
    // key, category, ...) names a repairable category.
    for line in after.lines() {
        let words: Vec<&str> = line.split_whitespace().take(2).collect();
        for left in ["missing", "stale", "unpropagated_delete"] {
            assert!(
                !words.contains(&left),
                "{left} still divergent after the repair: {line}"
            );
        }
    }
    assert!(after.contains("CONVERGED:"), "{after}");
    // Its data directory is gone.
    let data = stdout
        .split("data in ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the demo names its data directory");
    assert!(
        !std::path::Path::new(data).exists(),
        "{data} was left behind"
    );
}
