//! Replays the saved fuzz inputs (crashes found once, and seeds) through
//! the fuzz targets' checks on stable Rust, as part of the ordinary suite:
//! `fuzz/regressions/<target>/*`. A new crash input from
//! `cargo fuzz run <target>` (fuzz/artifacts/<target>/crash-…) is copied
//! there once fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../fuzz/src/domain.rs"]
mod domain;
#[path = "../../../fuzz/src/service.rs"]
mod service;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails again", path.display());
        count += 1;
    }
    assert!(count > 0, "no inputs in {}", dir.display());
}

#[test]
fn command_json_regressions() {
    replay("command_json", service::command_json);
}

#[test]
fn stored_event_regressions() {
    replay("stored_event", domain::stored_event);
}

#[test]
fn values_regressions() {
    replay("values", domain::values);
}
