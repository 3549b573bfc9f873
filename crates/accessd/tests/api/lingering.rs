//! Nothing secret or forgotten lingers in the SQLite database files
//! (`access.db`, `access.db-wal`, `access.db-shm`): not a mailed link's
//! token once the mail went out, not a forgotten customer's emails and
//! name. Searched byte for byte in the files while the service runs and
//! after it stopped (docs/privacy.md, docs/storage.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;
use crate::smtp::{free_port, mail_status, SmtpServer};

/// The database's files: `access.db` and its `-wal` / `-shm` companions.
fn database_files(app_url: &str) -> Vec<PathBuf> {
    let path = PathBuf::from(app_url.trim_start_matches("sqlite://"));
    let dir = path.parent().unwrap().to_path_buf();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&name))
        })
        .collect();
    files.sort();
    files
}

/// Which of `needles` occur in which database file.
fn found_in_files(url: &str, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in database_files(url) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue; // the -wal file may go away between listing and reading
        };
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("`{needle}` in {}", file.display()));
            }
        }
    }
    found
}

/// Waits (bounded) until none of `needles` is in the files.
async fn wait_until_gone(url: &str, needles: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = found_in_files(url, needles);
        if found.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_token_is_not_in_the_database_files() {
    let port = free_port(); // nothing listens there yet
    let app = TestApp::spawn_with(Db::Sqlite, |c| {
        c.mail = format!("smtp://127.0.0.1:{port}?tls=none");
        c.mail_retry_ms = 100;
        c.mail_max_attempts = 100;
    })
    .await;
    let url = app.database_url();
    assert!(
        database_files(&url)
            .iter()
            .any(|f| f.ends_with("access.db")),
        "{:?}",
        database_files(&url)
    );
    let id = app.register("lingering.token@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    // The mail waits in the queue while SMTP is down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mail_status(&app, "pending")
        .await
        .first()
        .is_none_or(|m| m["attempts"].as_u64() < Some(1))
    {
        assert!(Instant::now() < deadline, "the mail was never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = SmtpServer::start(port);
    let raw = server.wait_for(1).await.remove(0);
    let link = access_mail::extract_token(&raw, "/setup-password").expect("a setup link");
    let (_, secret) = link.split_once('.').expect("<customer id>.<token>");
    assert!(secret.len() >= 20, "{link}");
    // Sent and marked sent: the token is nowhere in the files.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mail_status(&app, "sent").await.is_empty() {
        assert!(Instant::now() < deadline, "the mail was never marked sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        found_in_files(&url, &[secret]),
        Vec::<String>::new(),
        "while running"
    );
    let _db = app.stop_keeping_database().await;
    assert_eq!(
        found_in_files(&url, &[secret]),
        Vec::<String>::new(),
        "after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_is_not_in_the_database_files() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let url = app.database_url();
    let kept = app.customer_with_password("zqxkept@example.com").await;
    let id = app
        .post(
            "/v1/customers",
            SERVICE,
            json!({"email": "zqxlinger.one@example.com", "name": "Zqxlinger Person"}),
        )
        .await
        .expect(201)
        .body["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    app.command(
        &id,
        "change-email",
        json!({"email": "zqxlinger.two@example.com", "password": PW2,
               "password_confirm": PW2, "send_notification": true}),
    )
    .await
    .expect(200);
    // The read model has the customer (and with it its emails and name).
    assert_eq!(
        app.customer(&id).await["email"],
        "zqxlinger.two@example.com"
    );
    let needles = [
        "zqxlinger.one@example.com",
        "zqxlinger.two@example.com",
        "Zqxlinger Person",
    ];

    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "erasure request"}),
    )
    .await
    .expect(200);
    assert_eq!(app.customer(&id).await["email"], "[forgotten]");
    wait_until_gone(&url, &needles, "while running").await;
    // The other customer's address is still in the read model's files:
    // the search does find what is there.
    assert!(!found_in_files(&url, &["zqxkept@example.com"]).is_empty());
    assert_eq!(app.customer(&kept).await["email"], "zqxkept@example.com");
    let _db = app.stop_keeping_database().await;
    assert!(!found_in_files(&url, &["zqxkept@example.com"]).is_empty());
    assert_eq!(
        found_in_files(&url, &needles),
        Vec::<String>::new(),
        "after stop"
    );
}

/// Issue 22: a customer's TOTP secret (and its recovery codes) is never in
/// the database files in plain: not while it is enrolled, not after the
/// customer is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_secret_is_not_in_the_database_files() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let url = app.database_url();
    let email = "zqxtotp@example.com";
    let id = app.customer_with_password(email).await;
    let token = app.session(email, PW).await;
    let begun = app
        .call(
            reqwest::Method::POST,
            "/v1/self/second-factor/totp",
            Some(&token),
            None,
        )
        .await
        .expect(201);
    let secret = begun.body["secret"].as_str().unwrap().to_string();
    let confirmed = app
        .call(
            reqwest::Method::POST,
            "/v1/self/second-factor/totp/confirm",
            Some(&token),
            Some(json!({"code": crate::second_factor::python_totp(&secret, 0)})),
        )
        .await
        .expect(200);
    let mut needles: Vec<String> = vec![secret.clone(), secret.to_lowercase()];
    for code in confirmed.body["recovery_codes"].as_array().unwrap() {
        needles.push(code.as_str().unwrap().to_string());
    }
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    // The search finds what is there: the login email is in the read model.
    assert!(!found_in_files(&url, &[email]).is_empty());
    assert_eq!(
        found_in_files(&url, &needles),
        Vec::<String>::new(),
        "enrolled"
    );

    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "erasure request"}),
    )
    .await
    .expect(200);
    let _db = app.stop_keeping_database().await;
    assert_eq!(
        found_in_files(&url, &needles),
        Vec::<String>::new(),
        "after forget and stop"
    );
}
