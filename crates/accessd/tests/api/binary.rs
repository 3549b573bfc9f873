//! The `accessd` binary as an operator runs it: first start with no keys,
//! restart, graceful shutdown on SIGTERM, clear start-up errors.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts accessd in `dir` with `env`, returns the child and its stdout
/// lines up to the "listening" line.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, Vec<String>) {
    start_logging_to(dir, env, Stdio::null())
}

/// [`start`], its log (stderr) going to `log`.
fn start_logging_to(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    log: Stdio,
) -> (Child, Vec<String>) {
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
        .stderr(log);
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
        (
            ("ACCESS_HASH_WAIT_MS", "30000"),
            "ACCESS_HASH_WAIT_MS (30000) must be less than ACCESS_REQUEST_TIMEOUT_SECS",
        ),
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

/// `accessd --help` shows which variables it reads, never their values
/// when they can carry a secret (database URL, mail URL, API keys, master
/// key); start-up errors redact the URL's `?password=` too.
#[test]
fn help_never_prints_secret_env_values() {
    const PASSWORD: &str = "Pw-in-url-7c1e";
    const QUERY_PASSWORD: &str = "Pw-in-query-3f9a";
    const SMTP_PASSWORD: &str = "Smtp-pw-55d0";
    const API_SECRET: &str = "api-secret-0123456789abcdef";
    const MASTER: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "ACCESS_DATABASE_URL",
            format!("postgres://ops:{PASSWORD}@127.0.0.1:1/access?password={QUERY_PASSWORD}"),
        ),
        (
            "ACCESS_MAIL",
            format!("smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:1"),
        ),
        ("ACCESS_API_KEYS", format!("crm:service:{API_SECRET}")),
        ("ACCESS_MASTER_KEY", MASTER.to_string()),
    ];
    for args in [&["--help"][..], &["-h"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_accessd"))
            .current_dir(dir.path())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("ACCESS_DATABASE_URL"), "{text}");
        for secret in [PASSWORD, QUERY_PASSWORD, SMTP_PASSWORD, API_SECRET, MASTER] {
            assert!(!text.contains(secret), "{args:?} printed a secret: {text}");
        }
    }
    // A start-up error names the database without its passwords.
    let output = Command::new(env!("CARGO_BIN_EXE_accessd"))
        .current_dir(dir.path())
        .env("ACCESS_LISTEN", "127.0.0.1:0")
        .env("ACCESS_LOG", "off")
        .env(
            "ACCESS_DATABASE_URL",
            format!("postgres://127.0.0.1:1/access?user=ops&password={QUERY_PASSWORD}"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains(QUERY_PASSWORD), "{err}");
}

/// accessd's log, as an operator's file or a log shipper receives it: no
/// colour codes when stderr is no terminal, and one line per request at
/// `info` naming the matched route (never the raw path or query, which
/// carry ids, emails and tokens), the status, the latency and the request
/// id.
#[tokio::test]
async fn logs_to_a_file_are_plain_lines_one_per_request_without_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("accessd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_accessd"))
        .current_dir(dir.path())
        .env_remove("ACCESS_DATABASE_URL")
        .env_remove("ACCESS_API_KEYS_FILE")
        .env_remove("ACCESS_MASTER_KEY")
        .env_remove("ACCESS_MASTER_KEY_FILE")
        .env_remove("NO_COLOR")
        .env_remove("ACCESS_LOG_FORMAT")
        .env(
            "ACCESS_API_KEYS",
            "crm:service:service-secret-0123456789abcdef",
        )
        .env("ACCESS_LISTEN", "127.0.0.1:0")
        .env("ACCESS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
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
    let base = address(&lines);
    let client = reqwest::Client::new();
    let key = "service-secret-0123456789abcdef";
    let created = client
        .post(format!("{base}/v1/customers"))
        .bearer_auth(key)
        .header("x-request-id", "log-test-1")
        .json(&serde_json::json!({"email": "logged.person@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: serde_json::Value = created.json().await.unwrap();
    let id = body["customer_id"].as_str().unwrap().to_string();
    let found = client
        .get(format!(
            "{base}/v1/customers?email=logged.person@example.com"
        ))
        .bearer_auth(key)
        .header("x-request-id", "log-test-2")
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let missing = client
        .get(format!("{base}/v1/customers/{}", uuid::Uuid::new_v4()))
        .bearer_auth(key)
        .header("x-request-id", "log-test-3")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let page = client
        .get(format!("{base}/setup-password?token=tok-secret-part-1234"))
        .header("x-request-id", "log-test-4")
        .send()
        .await
        .unwrap();
    let page_status = page.status().as_u16().to_string();
    assert!(terminate(&mut child).success());

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !text.contains("\x1b["),
        "colour codes in a log file:\n{text}"
    );
    for personal in ["logged.person", "tok-secret-part", id.as_str()] {
        assert!(!text.contains(personal), "`{personal}` in the log:\n{text}");
    }
    for (request_id, method, route, status) in [
        ("log-test-1", "POST", "/v1/customers", "201"),
        ("log-test-2", "GET", "/v1/customers", "200"),
        ("log-test-3", "GET", "/v1/customers/{id}", "404"),
        ("log-test-4", "GET", "/setup-password", page_status.as_str()),
    ] {
        let request_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(request_id) && l.contains("status="))
            .collect();
        assert_eq!(request_lines.len(), 1, "{request_id}:\n{text}");
        let line = request_lines[0];
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(&format!("method={method}")), "{line}");
        assert!(line.contains(&format!("route={route} ")), "{line}");
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
    }
}

/// Every audit console session's start and end is a log line naming the
/// key (its name and role), never the key's secret or the session's token;
/// and an out-of-range console setting stops the start with a clear line.
#[tokio::test]
async fn console_sessions_are_logged_by_key_name_never_by_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("accessd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let secret = "auditor-secret-for-the-log-test";
    let keys = format!("ines:auditor:{secret}");
    let (mut child, lines) = start_logging_to(
        dir.path(),
        &[
            ("ACCESS_API_KEYS", keys.as_str()),
            ("ACCESS_LOG", "info"),
            ("ACCESS_LOG_FORMAT", "text"),
        ],
        Stdio::from(log),
    );
    let base = address(&lines);
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let page = client
        .get(format!("{base}/audit/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let start = page.find(marker).unwrap() + marker.len();
    let csrf = &page[start..start + 32];
    let home = client
        .post(format!("{base}/audit/login"))
        .form(&[("api_key", secret), ("csrf_token", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(home.url().path(), "/audit");
    let out = client
        .post(format!("{base}/audit/logout"))
        .form(&[("csrf_token", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.url().path(), "/audit/login");
    assert!(terminate(&mut child).success());

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(secret), "the key in the log:\n{text}");
    let started: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("audit console session started"))
        .collect();
    assert_eq!(started.len(), 1, "{text}");
    assert!(
        started[0].contains("key=ines") && started[0].contains("role=auditor"),
        "{}",
        started[0]
    );
    let ended: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("audit console session ended"))
        .collect();
    assert_eq!(ended.len(), 1, "{text}");
    assert!(
        ended[0].contains("key=ines") && ended[0].contains("signed out"),
        "{}",
        ended[0]
    );

    // A console session longer than 8 hours is refused at start.
    let refused = Command::new(env!("CARGO_BIN_EXE_accessd"))
        .current_dir(dir.path())
        .env_remove("ACCESS_DATABASE_URL")
        .env_remove("ACCESS_MASTER_KEY")
        .env("ACCESS_AUDIT_SESSION_HOURS", "24")
        .env("ACCESS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("ACCESS_AUDIT_SESSION_HOURS must be from 1 to 8 (got 24)"),
        "{err}"
    );
}
