//! The `accessd` binary as an operator runs it: first start with no keys,
//! restart, graceful shutdown on SIGTERM, clear start-up errors.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts accessd in `dir` with `env`, returns the child and its stdout
/// lines up to the "listening" line.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_accessd"));
    command
        .current_dir(dir)
        .env_remove("ACCESS_DATABASE_URL")
        .env_remove("ACCESS_API_KEYS")
        .env_remove("ACCESS_API_KEYS_FILE")
        .env_remove("ACCESS_MASTER_KEY")
        .env_remove("ACCESS_MASTER_KEY_FILE")
        .env("ACCESS_LISTEN", "127.0.0.1:0")
        .env("ACCESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

fn address(lines: &[String]) -> String {
    let line = lines.iter().find(|l| l.contains("listening on")).unwrap();
    let start = line.find("http://").unwrap();
    line[start..].split_whitespace().next().unwrap().to_string()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "accessd did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn first_start_creates_one_admin_key_then_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults: SQLite file access.db and mail/ in the working directory.
    let (mut child, lines) = start(dir.path(), &[]);
    let key_line = lines
        .iter()
        .find(|l| l.contains("ak_"))
        .expect("no admin key shown");
    let key = key_line[key_line.find("ak_").unwrap()..].trim().to_string();
    let base = address(&lines);
    assert!(dir.path().join("access.db").exists());

    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"email": "first@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status:?}");

    // Second start: no new key; the old one still works (its hash was kept).
    let (mut child, lines) = start(dir.path(), &[]);
    assert!(!lines.iter().any(|l| l.contains("ak_")), "{lines:?}");
    let base = address(&lines);
    let answer = client
        .get(format!("{base}/v1/customers?email=first@example.com"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // The database holds only the key's digest.
    let db = std::fs::read(dir.path().join("access.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "plain key stored"
    );
    assert!(terminate(&mut child).success());
}

#[test]
fn start_up_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (env, expected) in [
        (
            ("ACCESS_DATABASE_URL", "mysql://x"),
            "unsupported database URL",
        ),
        (
            ("ACCESS_API_KEYS", "crm:root:0123456789abcdef0123"),
            "unknown role `root`",
        ),
        (("ACCESS_MAIL", "carrier-pigeon"), "mail"),
        (("ACCESS_PUBLIC_URL", "example.com"), "must start with http"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_accessd"))
            .current_dir(dir.path())
            .env("ACCESS_LISTEN", "127.0.0.1:0")
            .env("ACCESS_LOG", "off")
            .env(env.0, env.1)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{env:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(expected), "{env:?}: {err}");
        assert!(err.trim().lines().count() <= 2, "{env:?}: {err}");
        assert!(
            !err.contains("0123456789abcdef0123"),
            "secret in error: {err}"
        );
    }
}
