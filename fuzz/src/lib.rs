//! What the fuzz targets check, as plain functions: libFuzzer calls them
//! from `fuzz_targets/` (nightly or `RUSTC_BOOTSTRAP=1`), and the ordinary
//! test suite replays the saved inputs in `fuzz/regressions/<target>/`
//! through them on stable (crates/accessd/tests/fuzz_regressions.rs, which
//! includes these files).
//!
//! Each function panics when a property is broken; any other input is fine.
//! `service` (the `command_json` target) needs the whole service crate and
//! is behind the `service` feature, so the domain targets build quickly.

pub mod domain;
#[cfg(feature = "service")]
pub mod service;
