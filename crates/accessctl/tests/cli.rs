//! The CLI as an operator runs it: a real process on a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn accessctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(args)
        .env("ACCESS_DATABASE_URL", url)
        .env("ACCESS_MASTER_KEY", access_store::testing::TEST_MASTER_KEY)
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

/// `accessctl audit export` and `accessctl replay`.
mod audit_export_and_replay {
    use std::path::Path;
    use std::time::Duration;

    use access_projections::export::CSV_HEADER;
    use access_projections::{Projector, ProjectorOptions};
    use access_store::testing::TestDatabase;
    use access_store::StoreOptions;
    use chrono::Utc;
    use serde_json::Value;

    use super::accessctl;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn export(url: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["audit", "export"];
        all.extend_from_slice(args);
        accessctl(url, &all)
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    async fn audit_export_writes_csv_and_json_lines(db: TestDatabase) {
        let url = db.url().to_string();
        let store = db.store(StoreOptions::default()).await.unwrap();
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(access_store::testing::sample_history(&store, n).await);
        }
        let projector = Projector::spawn(
            store.clone(),
            ProjectorOptions {
                poll: Duration::from_millis(20),
                ..ProjectorOptions::default()
            },
        );
        projector
            .wait_caught_up(Duration::from_secs(20))
            .await
            .unwrap();
        projector.stop();
        let dir = tempfile::tempdir().unwrap();

        // CSV: the header, then one row per event.
        let csv = dir.path().join("audit.csv");
        let out = export(&url, &["--format", "csv", "--output", path(&csv)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("exported 21 rows to {}", csv.display())),
            "{}",
            text(&out.stdout)
        );
        assert!(
            !text(&out.stderr).contains("warning"),
            "{}",
            text(&out.stderr)
        );
        let written = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<_> = written.lines().collect();
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert_eq!(lines.len(), 1 + 21);
        assert!(!written.contains("fake:"), "{written}");

        // JSON Lines, the format taken from the file name.
        let jsonl = dir.path().join("audit.jsonl");
        let out = export(&url, &["--output", path(&jsonl)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rows: Vec<Value> = std::fs::read_to_string(&jsonl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 21);
        assert_eq!(rows[0]["kind"], "customer_registered");
        assert_eq!(rows[0]["actor"]["name"], "crm");

        // Filters, to standard output.
        let out = export(
            &url,
            &[
                "--kind",
                "access_revoked",
                "--format",
                "csv",
                "--output",
                "-",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1 + 3, "{stdout}");
        assert!(stdout
            .lines()
            .skip(1)
            .all(|l| l.contains(",access_revoked,")));
        assert!(text(&out.stderr).contains("exported 3 rows to standard output"));
        let customer = ids[1].to_string();
        let out = export(
            &url,
            &[
                "--customer",
                &customer,
                "--format",
                "jsonl",
                "--output",
                "-",
            ],
        );
        assert_eq!(text(&out.stdout).lines().count(), 7);
        let out = export(
            &url,
            &["--actor", "erp", "--format", "jsonl", "--output", "-"],
        );
        assert_eq!(text(&out.stdout).lines().count(), 3 * 3);
        let from = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let to = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let out = export(
            &url,
            &[
                "--from", &from, "--to", &to, "--format", "jsonl", "--output", "-",
            ],
        );
        assert_eq!(text(&out.stdout).lines().count(), 21);
        let out = export(
            &url,
            &["--to", "2001-01-01", "--output", "-", "--format", "csv"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{}\n", CSV_HEADER.join(",")));

        // Events the projector has not seen: a warning, and the export is
        // the projected snapshot.
        access_store::testing::sample_history(&store, 9).await;
        let out = export(&url, &["--format", "csv", "--output", path(&csv)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("warning") && stderr.contains("behind") && stderr.contains("7 event"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 22);

        // Bad values: one clear error each, and no file left behind.
        for (args, expected) in [
            (
                vec!["--from", "yesterday", "--output", "-", "--format", "csv"],
                "RFC 3339",
            ),
            (
                vec!["--customer", "42", "--output", "-", "--format", "csv"],
                "customer id",
            ),
            (
                vec!["--kind", "nope", "--output", "-", "--format", "csv"],
                "access_revoked",
            ),
            (vec!["--output", "audit.txt"], "--format"),
            (
                vec![
                    "--from",
                    "2026-02-01",
                    "--to",
                    "2026-01-01",
                    "--output",
                    "-",
                    "--format",
                    "csv",
                ],
                "before --to",
            ),
            (
                vec!["--format", "csv", "--output", "/nonexistent/dir/a.csv"],
                "/nonexistent/dir",
            ),
        ] {
            let out = export(&url, &args);
            assert!(!out.status.success(), "{args:?}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.csv", "audit.jsonl"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_export_on_postgres() {
        audit_export_writes_csv_and_json_lines(TestDatabase::postgres().await.unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_export_on_sqlite() {
        audit_export_writes_csv_and_json_lines(TestDatabase::sqlite().unwrap()).await;
    }

    #[test]
    fn audit_export_of_an_unmigrated_store_says_so() {
        let db = TestDatabase::sqlite().unwrap();
        let out = export(db.url(), &["--format", "csv", "--output", "-"]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("not migrated"),
            "{}",
            text(&out.stderr)
        );
    }

    /// Replay needs no database: a URL it cannot use proves it never
    /// connects.
    const NO_DATABASE: &str = "mysql://nowhere/none";

    const EXPORTED_KINDS: [&str; 10] = [
        "customer_registered",
        "access_granted",
        "access_notification_sent",
        "password_setup_completed",
        "email_changed",
        "password_set",
        "access_notification_sent",
        "password_changed",
        "email_change_requested",
        "email_change_confirmed",
    ];

    #[test]
    fn replay_of_an_exported_stream_prints_the_access_state_and_audit_trail() {
        let file = format!("{FIXTURES}/customer-export.jsonl");
        let out = accessctl(NO_DATABASE, &["replay", &file]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            stdout.contains("replayed 10 event(s) of 1 customer(s)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("customer 5f1c6a2e-8d3b-4c0a-9e7f-2b4d6c8a1e30"),
            "{stdout}"
        );
        for line in [
            "email          ann@elsewhere.example",
            "name           Ann Smith",
            "access         granted (customer_center)",
            "password       set",
            "pending email  none",
            "version        10",
        ] {
            assert!(stdout.contains(line), "`{line}` in {stdout}");
        }
        // The audit kinds, in order.
        let mut rest = stdout.as_str();
        for kind in EXPORTED_KINDS {
            let at = rest
                .find(kind)
                .unwrap_or_else(|| panic!("{kind} in {stdout}"));
            rest = &rest[at + kind.len()..];
        }
        assert!(stdout.contains("ann@example.com -> ann.new@example.org; reason: asked by phone"));

        let out = accessctl(NO_DATABASE, &["replay", "--format", "json", &file]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["events"], 10);
        let customer = &report["customers"][0];
        assert_eq!(customer["state"]["email"], "ann@elsewhere.example");
        assert_eq!(customer["state"]["access_granted"], true);
        assert_eq!(customer["state"]["password_set"], true);
        assert_eq!(customer["state"]["must_change_password"], false);
        let kinds: Vec<_> = customer["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, EXPORTED_KINDS);
        assert_eq!(customer["audit"][3]["actor"]["kind"], "customer");
        assert_eq!(customer["audit"][3]["password_source"], "setup_link");
    }

    /// The stream of the upcasting fixture (event versions 1.0), as an
    /// export would give it: no hash, one line per event.
    fn old_stream_as_json_lines() -> String {
        let raw: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{FIXTURES}/customer-stream-v1.0.json")).unwrap(),
        )
        .unwrap();
        let mut out = String::new();
        for e in raw["events"].as_array().unwrap() {
            let event_type = e["event_type"].as_str().unwrap();
            let mut data = e["payload"][event_type].clone();
            data.as_object_mut().unwrap().remove("password_hash");
            let line = serde_json::json!({
                "sequence": e["sequence"],
                "event_type": event_type,
                "event_version": e["event_version"],
                "metadata": e["metadata"],
                "data": data,
            });
            out.push_str(&format!("{line}\n"));
        }
        out
    }

    #[test]
    fn replay_upcasts_older_versions_and_stands_in_for_left_out_secrets() {
        let mut lines = old_stream_as_json_lines();
        // Without metadata and without the link's digest.
        lines.push_str(
            r#"{"sequence":5,"event_type":"AccessNotificationSent","data":{"recipient":"old.timer@example.net","setup_link":{"expires_at":"2999-01-01T00:00:00Z"},"at":"2024-06-12T08:00:00Z"}}"#,
        );
        lines.push('\n');
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.jsonl");
        std::fs::write(&file, lines).unwrap();
        let out = accessctl(NO_DATABASE, &["replay", "--format", "json", path(&file)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let state = &report["customers"][0]["state"];
        assert_eq!(state["email"], "old.timer@example.net");
        // AccessGranted 1.0 had no role, PasswordSet 1.0 no temporary flag.
        assert_eq!(state["role"], "customer_center");
        assert_eq!(state["password_set"], true);
        assert_eq!(state["must_change_password"], true);
        assert_eq!(state["setup_link_expires_at"], "2999-01-01T00:00:00Z");
        let audit = report["customers"][0]["audit"].as_array().unwrap();
        assert_eq!(audit.len(), 5);
        assert_eq!(audit[3]["reason"], "customer asked by phone");
        assert_eq!(audit[4]["actor"]["kind"], "system");
        assert_eq!(audit[4]["actor"]["name"], "accessctl-replay");
        assert_eq!(audit[4]["with_setup_link"], true);

        let out = accessctl(NO_DATABASE, &["replay", path(&file)]);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("set, temporary (must change at next login)"),
            "{stdout}"
        );
        assert!(stdout.contains("until 2999-01-01T00:00:00Z"), "{stdout}");
    }

    #[test]
    fn replay_names_the_line_of_a_malformed_event() {
        let fixture = std::fs::read_to_string(format!("{FIXTURES}/customer-export.jsonl")).unwrap();
        let good: Vec<&str> = fixture.lines().collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.jsonl");
        for (content, expected) in [
            // A blank line counts: the broken one is line 4.
            (
                format!("{}\n\n{}\n{{not json\n", good[0], good[1]),
                "line 4: not JSON",
            ),
            (
                format!("{}\n{}\n", good[0], good[2]),
                "line 2: sequence 3 where 2 was expected",
            ),
            (
                format!(
                    "{}\n{}\n",
                    good[0],
                    good[1].replace("AccessGranted", "AccessSold")
                ),
                "line 2: unknown event type `AccessSold`",
            ),
            (
                format!("{}\n", good[0].replace("ann@example.com", "not an email")),
                "line 1: not a valid CustomerRegistered 1.0 event",
            ),
            (
                format!("{}\n", good[1]),
                "line 1: AccessGranted before any CustomerRegistered",
            ),
            (
                r#"{"customer_id":"x","events":[]}"#.to_string(),
                "format=jsonl",
            ),
            (String::new(), "no events"),
        ] {
            std::fs::write(&file, &content).unwrap();
            let out = accessctl(NO_DATABASE, &["replay", path(&file)]);
            assert!(!out.status.success(), "{content}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(expected), "{expected}: {stderr}");
            assert!(stderr.contains("bad.jsonl"), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
}

/// `accessctl audit digest` and `accessctl audit verify` (the hash chain).
mod audit_chain {
    use access_domain::{CustomerCommand, CustomerId, EmailAddress};
    use access_store::prelude::*;
    use access_store::testing::{exec_sql, run, TestDatabase};
    use access_store::{Store, StoreOptions};

    use super::accessctl;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    async fn register(store: &Store, n: usize) {
        let id = CustomerId::new_random();
        let command = CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: EmailAddress::parse(&format!("c{n}@example.com")).unwrap(),
            name: None,
        };
        run(store, id, command).await.unwrap();
    }

    /// The first `n` global positions, in the global order.
    async fn positions(store: &Store, n: u32) -> Vec<i64> {
        store
            .read_feed(access_store::Position::START, n)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position.global)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn digest_then_verify_then_tampering_exits_1_naming_the_positions() {
        let pg = TestDatabase::postgres().await.unwrap();
        let lite = TestDatabase::sqlite().unwrap();
        for db in [&pg, &lite] {
            let url = db.url();
            let store = db.store(StoreOptions::default()).await.unwrap();

            // An empty history has a digest too.
            let out = accessctl(url, &["audit", "digest"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert_eq!(text(&out.stdout).trim(), format!("0:0:{}", "0".repeat(64)));

            for n in 0..4 {
                register(&store, n).await;
            }
            let out = accessctl(url, &["audit", "digest"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let digest = text(&out.stdout).trim().to_string();
            let head = store.head().await.unwrap();
            assert!(
                digest.starts_with(&format!("{}:{}:", head.tx, head.global)),
                "{digest} vs {head}"
            );
            assert_eq!(digest.rsplit(':').next().unwrap().len(), 64, "{digest}");

            let out = accessctl(url, &["audit", "verify"]);
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
            assert!(stdout.contains("chain intact: 4 events"), "{stdout}");
            let out = accessctl(url, &["audit", "verify", "--digest", &digest]);
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
            assert!(stdout.contains("digest matches"), "{stdout}");

            // A malformed digest is one clear error.
            let out = accessctl(url, &["audit", "verify", "--digest", "12:nope"]);
            assert!(!out.status.success());
            assert!(text(&out.stderr).contains("is not a digest"));

            // Plain SQL: one payload altered, one event deleted.
            let at = positions(&store, 4).await;
            let (altered, removed) = (at[1], at[2]);
            let rewrite = match store.kind() {
                "postgres" => format!(
                    "UPDATE events SET payload = (payload::jsonb || '{{\"by\":\"mallory\"}}')::json \
                     WHERE global_position = {altered}"
                ),
                _ => format!(
                    "UPDATE events SET payload = json_set(payload, '$.by', 'mallory') \
                     WHERE global_position = {altered}"
                ),
            };
            exec_sql(&store, &rewrite).await;
            exec_sql(
                &store,
                &format!("DELETE FROM events WHERE global_position = {removed}"),
            )
            .await;

            let out = accessctl(url, &["audit", "verify", "--digest", &digest]);
            let stdout = text(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
            let problems: Vec<&str> = stdout
                .lines()
                .filter(|l| l.starts_with("position "))
                .collect();
            assert_eq!(
                problems,
                [
                    format!("position {altered}: altered"),
                    format!("position {removed}: removed")
                ],
                "{stdout}"
            );
            assert!(stdout.contains("digest does not match"), "{stdout}");
        }
    }
}

/// Help output and connection errors never show a secret given in the
/// environment: not the database URL's password (in the user part or as a
/// `?password=` parameter), not the master key.
#[test]
fn secrets_are_never_printed() {
    const PASSWORD: &str = "Pw-in-url-7c1e";
    const QUERY_PASSWORD: &str = "Pw-in-query-3f9a";
    const MASTER: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let url = format!("postgres://ops:{PASSWORD}@127.0.0.1:1/access?sslpassword={QUERY_PASSWORD}");
    let query_url = format!("postgres://127.0.0.1:1/access?user=ops&password={QUERY_PASSWORD}");
    for (url, args) in [
        (&url, &["--help"][..]),
        (&url, &["status", "--help"]),
        (&url, &["rebuild", "--help"]),
        (&query_url, &["--help"]),
        (&url, &["status"]),
        (&query_url, &["status"]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_accessctl"))
            .args(args)
            .env("ACCESS_DATABASE_URL", url)
            .env("ACCESS_MASTER_KEY", MASTER)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in [PASSWORD, QUERY_PASSWORD, MASTER] {
            assert!(!text.contains(secret), "{args:?} printed a secret: {text}");
        }
    }
}

/// `accessctl scenarios run`: the repository's scenario files pass with the
/// shipped binary, and a wrong file fails with exit 1, the two event lists
/// side by side and a JUnit report, all without a database.
#[test]
fn scenario_files_run_without_cargo_and_report_in_junit() {
    const NO_DATABASE: &str = "mysql://nowhere/none";
    let repo_scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/scenarios");
    let out = accessctl(NO_DATABASE, &["scenarios", "run", repo_scenarios]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("ok    grant-access-with-setup-link.yaml"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrong.yaml"),
        "name: Granting access with a setup link (the link is forgotten here)\n\
         given:\n  - CustomerRegistered:\n      customer_id: 6f1f4d1e-8f6b-4c39-9a59-0c3b7c1e2a10\n      \
         email: ann@example.com\n      at: 2026-11-20T09:00:00Z\n\
         when:\n  command: GrantAccess\n  send_notification: true\n\
         then:\n  events:\n    - AccessGranted: {}\n",
    )
    .unwrap();
    let junit = dir.path().join("report.xml");
    let out = accessctl(
        NO_DATABASE,
        &[
            "scenarios",
            "run",
            dir.path().to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  wrong.yaml"), "{stdout}");
    assert!(stdout.contains("#   expected"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("0 passed, 1 failed"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testcase name="wrong.yaml""#) && xml.contains("<failure"),
        "{xml}"
    );

    let out = accessctl(NO_DATABASE, &["scenarios", "run", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read /no/such/dir"), "{stderr}");
}
