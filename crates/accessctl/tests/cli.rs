//! The CLI as an operator runs it: a real process on a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn accessctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(args)
        .env("ACCESS_DATABASE_URL", url)
        .output()
        .unwrap()
}

#[tokio::test]
async fn migrate_then_status_on_both_stores() {
    let pg = access_store::testing::TestDatabase::postgres()
        .await
        .unwrap();
    let lite = access_store::testing::TestDatabase::sqlite().unwrap();
    for url in [pg.url(), lite.url()] {
        let before = accessctl(url, &["status"]);
        assert!(!before.status.success());
        assert!(String::from_utf8_lossy(&before.stdout).contains("not migrated"));

        let out = accessctl(url, &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Twice is fine.
        assert!(accessctl(url, &["migrate"]).status.success());

        let out = accessctl(url, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("migrated, 0 events"), "{text}");
    }
}

#[test]
fn an_unsupported_url_is_one_clear_error() {
    let out = accessctl("mysql://root@localhost/x", &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(err.lines().count() <= 4, "{err}");
}
