#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The scenario files of the repository (`tests/scenarios/`) all pass, and
//! the runner reports what a wrong file expects next to what happened.

use std::path::PathBuf;

use access_scenarios::{run_paths, run_yaml, Outcome, ScenarioError};

/// Where the scenario files live (the repository's `tests/scenarios/`).
fn scenario_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/scenarios"
    ))
}

#[tokio::test]
async fn every_scenario_file_of_the_repository_passes() {
    let report = run_paths(&[scenario_dir()]).await.unwrap();
    for case in &report.cases {
        println!("{}", case.line());
    }
    assert!(report.cases.len() >= 20, "{}", report.summary());
    assert_eq!(
        report.failed(),
        0,
        "{}{}",
        report.summary(),
        report.failures()
    );
}

const CHANGE_EMAIL_WITH_LINK: &str = r#"
name: A setup link with an email change
given:
  - CustomerRegistered:
      customer_id: 6f1f4d1e-8f6b-4c39-9a59-0c3b7c1e2a10
      email: ann@example.com
      name: Ann Smith
      at: 2026-11-20T09:00:00Z
  - AccessGranted:
      role: customer_center
      at: 2026-11-20T09:00:00Z
when:
  command: ChangeEmail
  email: ann.new@example.org
  send_notification: true
then:
  events:
"#;

#[tokio::test]
async fn a_failing_scenario_shows_expected_and_actual_events_side_by_side() {
    // Expects only the email change: the aggregate also sends the link.
    let yaml = format!(
        "{CHANGE_EMAIL_WITH_LINK}    - EmailChanged:\n        new_email: ann.new@example.org\n    - AccessRevoked:\n        reason: none\n"
    );
    let why = run_yaml(&yaml).await.unwrap_err();
    assert!(
        why.contains("scenario: A setup link with an email change"),
        "{why}"
    );
    let table: Vec<&str> = why
        .lines()
        .skip_while(|l| !l.contains("#   expected"))
        .take(3)
        .collect();
    assert_eq!(table.len(), 3, "{why}");
    assert!(table[0].contains("actual"), "{why}");
    assert!(
        table[1].contains("EmailChanged") && table[1].trim_end().ends_with("ok"),
        "{why}"
    );
    assert!(
        table[2].contains("AccessRevoked")
            && table[2].contains("AccessNotificationSent")
            && table[2].trim_end().ends_with("DIFFERS"),
        "{why}"
    );
    assert!(
        why.contains("- expected:") && why.contains("+ actual:"),
        "{why}"
    );
}

#[tokio::test]
async fn a_scenario_with_the_right_events_passes() {
    let yaml = format!(
        "{CHANGE_EMAIL_WITH_LINK}    - EmailChanged:\n        new_email: ann.new@example.org\n    - AccessNotificationSent:\n        recipient: ann.new@example.org\n"
    );
    run_yaml(&yaml).await.unwrap();
}

#[tokio::test]
async fn a_misspelled_key_is_reported_not_ignored() {
    let why = run_yaml("name: x\ngive: []\nwhen: {command: RevokeAccess}\nthen: {events: []}\n")
        .await
        .unwrap_err();
    assert!(why.contains("unknown field `give`"), "{why}");
}

#[tokio::test]
async fn a_directory_run_counts_and_reports_in_junit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        format!(
            "{CHANGE_EMAIL_WITH_LINK}    - EmailChanged:\n        new_email: ann.new@example.org\n    - AccessNotificationSent: {{}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!("{CHANGE_EMAIL_WITH_LINK}    - EmailChanged: {{}}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("old.yml"), "name: skipped?\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    // Upper case counts too; a link back up the tree is not followed.
    std::fs::write(dir.path().join("SHOUTED.YAML"), "name: typo\n").unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();

    let report = run_paths(&[dir.path().to_path_buf()]).await.unwrap();
    let files: Vec<(&str, bool)> = report
        .cases
        .iter()
        .map(|c| (c.file.as_str(), c.outcome == Outcome::Passed))
        .collect();
    assert_eq!(
        files,
        [
            ("SHOUTED.YAML", false),
            ("bad.yaml", false),
            ("good.yaml", true),
            ("old.yml", false)
        ]
    );
    assert_eq!(report.summary(), "1 passed, 3 failed");

    let xml = report.junit_xml().unwrap();
    assert!(
        xml.contains(r#"tests="4""#) && xml.contains(r#"failures="3""#),
        "{xml}"
    );
    assert!(xml.contains(r#"<testcase name="bad.yaml""#), "{xml}");
    assert!(xml.contains("expected 1, got 2"), "{xml}");
}

#[tokio::test]
async fn a_directory_without_scenarios_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_paths(&[dir.path().to_path_buf()]).await.unwrap_err();
    assert!(matches!(err, ScenarioError::NoScenarios(_)), "{err}");
    let missing = dir.path().join("nope");
    let err = run_paths(&[missing]).await.unwrap_err();
    assert!(matches!(err, ScenarioError::Unreadable { .. }), "{err}");
}
