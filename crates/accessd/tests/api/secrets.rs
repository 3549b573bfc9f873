//! Secrets never leak: the notice's whole story with known passwords, API
//! keys and (read from the mails) link tokens, against the real binary
//! logging at every level (`ACCESS_LOG=trace`); then every log line, every
//! row of every table (`pg_dump`), the audit export, the events endpoint,
//! every response body but the login answers (which carry the session)
//! and every mail are searched. A link token may appear only in the one
//! mail that carries it.

use std::process::Command;

use access_store::testing::TestDatabase;
use reqwest::Method;
use serde_json::{json, Value};

use crate::procs::spawn_accessd;

const SERVICE_KEY: &str = "leakcheck-service-key-5c1e9a7b3d";
const ADMIN_KEY: &str = "leakcheck-admin-key-8f2d4b6a0c9e";
const AUDITOR_KEY: &str = "leakcheck-auditor-key-1a3c5e7b9d";
/// Set through the setup link.
const FIRST_PASSWORD: &str = "Lantern-Quiver-Mosaic-31";
/// The temporary password an agent types (Option 1 of the notice).
const TEMPORARY_PASSWORD: &str = "Harbor-Tulip-Granite-58";
/// The customer's own password after the temporary one.
const SECOND_PASSWORD: &str = "Nimbus-Walnut-Cobalt-64";
/// A wrong guess.
const WRONG_PASSWORD: &str = "Wrong-Guess-Orchid-Pepper-97";

struct Client {
    http: reqwest::Client,
    base: String,
    /// Every response body, but the ones that must carry a session token.
    bodies: Vec<(String, String)>,
}

impl Client {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let carries_session = (path == "/v1/self/sessions" && status == 201)
            || (path == "/v1/self/change-password" && status == 200);
        if !carries_session {
            self.bodies
                .push((format!("{method} {path} → {status}"), text.clone()));
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn mails(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "eml") {
                out.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    out
}

async fn token_in_mail(dir: &std::path::Path, to: &str, link: &str) -> String {
    for _ in 0..500 {
        for (_, raw) in mails(dir) {
            let parsed = access_mail::parse_eml(&raw);
            if parsed.header("To").is_some_and(|t| t.contains(to)) {
                if let Some(token) = access_mail::extract_token(&raw, link) {
                    return token;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no mail to {to} with {link}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_anywhere() {
    let database = TestDatabase::postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let mut accessd = spawn_accessd(
        dir.path(),
        "leakcheck",
        &[
            ("ACCESS_DATABASE_URL", database.url().to_string()),
            (
                "ACCESS_API_KEYS",
                format!(
                    "crm:service:{SERVICE_KEY},ops:admin:{ADMIN_KEY},audit:auditor:{AUDITOR_KEY}"
                ),
            ),
            ("ACCESS_MAIL", format!("file:{}", mail_dir.display())),
            ("ACCESS_LOG", "trace".to_string()),
            ("ACCESS_MAIL_RETRY_MS", "100".to_string()),
        ],
    )
    .await;
    let mut c = Client {
        http: reqwest::Client::new(),
        base: accessd.base.clone(),
        bodies: Vec::new(),
    };
    let mut sessions = Vec::new();

    // Register, then the notice's error (no password, no link).
    let (status, created) = c
        .call(
            Method::POST,
            "/v1/customers",
            Some(SERVICE_KEY),
            Some(json!({"email": "leak@example.com", "name": "Lea K"})),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["customer_id"].as_str().unwrap().to_string();
    let path = |action: &str| format!("/v1/customers/{id}/{action}");
    assert_eq!(
        c.call(
            Method::POST,
            &path("grant-access"),
            Some(SERVICE_KEY),
            Some(json!({}))
        )
        .await
        .0,
        422
    );

    // Access with a setup link; the password set through it.
    assert_eq!(
        c.call(
            Method::POST,
            &path("grant-access"),
            Some(SERVICE_KEY),
            Some(json!({"send_notification": true}))
        )
        .await
        .0,
        200
    );
    let setup_token = token_in_mail(&mail_dir, "leak@example.com", "/setup-password").await;
    // Wrong confirmation first (an error body that must not echo it).
    assert_eq!(
        c.call(
            Method::POST,
            "/v1/self/setup-password",
            None,
            Some(json!({"token": setup_token, "password": FIRST_PASSWORD, "password_confirm": WRONG_PASSWORD})),
        )
        .await
        .0,
        422
    );
    assert_eq!(
        c.call(
            Method::POST,
            "/v1/self/setup-password",
            None,
            Some(json!({"token": setup_token, "password": FIRST_PASSWORD, "password_confirm": FIRST_PASSWORD})),
        )
        .await
        .0,
        200
    );
    // The used link again.
    assert_eq!(
        c.call(
            Method::POST,
            "/v1/self/setup-password",
            None,
            Some(json!({"token": setup_token, "password": FIRST_PASSWORD, "password_confirm": FIRST_PASSWORD})),
        )
        .await
        .0,
        422
    );

    // Wrong password, secrets in the wrong fields and of the wrong type.
    for body in [
        json!({"email": "leak@example.com", "password": WRONG_PASSWORD}),
        json!({"email": "leak@example.com", "pasword": FIRST_PASSWORD}),
        json!({"email": "leak@example.com", "password": [FIRST_PASSWORD]}),
        json!({"email": FIRST_PASSWORD, "password": FIRST_PASSWORD}),
    ] {
        let (status, _) = c
            .call(Method::POST, "/v1/self/sessions", None, Some(body))
            .await;
        assert!((400..500).contains(&status), "{status}");
    }
    let (status, _) = c
        .call(
            Method::POST,
            &path("grant-access"),
            Some(SERVICE_KEY),
            Some(json!({"send_notification": FIRST_PASSWORD})),
        )
        .await;
    assert_eq!(status, 400);
    // A key of the wrong role, and a key that is nearly right.
    assert_eq!(
        c.call(
            Method::POST,
            &path("revoke-access"),
            Some(AUDITOR_KEY),
            Some(json!({}))
        )
        .await
        .0,
        403
    );
    let near = format!("{}x", &SERVICE_KEY[..SERVICE_KEY.len() - 1]);
    assert_eq!(
        c.call(
            Method::GET,
            &format!("/v1/customers/{id}"),
            Some(&near),
            None
        )
        .await
        .0,
        401
    );

    // Option 1: an agent changes the email with a temporary password.
    assert_eq!(
        c.call(
            Method::POST,
            &path("change-email"),
            Some(SERVICE_KEY),
            Some(json!({"email": "leak.new@example.org", "password": TEMPORARY_PASSWORD, "password_confirm": TEMPORARY_PASSWORD, "send_notification": true})),
        )
        .await
        .0,
        200
    );
    let (status, login) = c
        .call(
            Method::POST,
            "/v1/self/sessions",
            None,
            Some(json!({"email": "leak.new@example.org", "password": TEMPORARY_PASSWORD})),
        )
        .await;
    assert_eq!(status, 201);
    let temporary_session = login["token"].as_str().unwrap().to_string();
    sessions.push(temporary_session.clone());
    let (status, changed) = c
        .call(
            Method::POST,
            "/v1/self/change-password",
            Some(&temporary_session),
            Some(json!({"current_password": TEMPORARY_PASSWORD, "new_password": SECOND_PASSWORD, "new_password_confirm": SECOND_PASSWORD})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let session = changed["session"]["token"].as_str().unwrap().to_string();
    sessions.push(session.clone());

    // Option 2: the customer changes the email; the link confirms it.
    let (status, _) = c
        .call(
            Method::POST,
            "/v1/self/change-email",
            Some(&session),
            Some(json!({"current_password": WRONG_PASSWORD, "new_email": "leak3@example.net", "new_email_confirm": "leak3@example.net"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = c
        .call(
            Method::POST,
            "/v1/self/change-email",
            Some(&session),
            Some(json!({"current_password": SECOND_PASSWORD, "new_email": "leak3@example.net", "new_email_confirm": "leak3@example.net"})),
        )
        .await;
    assert_eq!(status, 202);
    let confirm_token = token_in_mail(&mail_dir, "leak3@example.net", "/confirm-email").await;
    assert_eq!(
        c.call(
            Method::POST,
            "/v1/self/confirm-email",
            None,
            Some(json!({"token": confirm_token}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        c.call(
            Method::POST,
            "/v1/self/confirm-email",
            None,
            Some(json!({"token": confirm_token}))
        )
        .await
        .0,
        422
    );
    // The ended session, then a login; then revoke.
    assert_eq!(
        c.call(Method::GET, "/v1/self", Some(&session), None)
            .await
            .0,
        401
    );
    let (status, login) = c
        .call(
            Method::POST,
            "/v1/self/sessions",
            None,
            Some(json!({"email": "leak3@example.net", "password": SECOND_PASSWORD})),
        )
        .await;
    assert_eq!(status, 201);
    let last_session = login["token"].as_str().unwrap().to_string();
    sessions.push(last_session.clone());
    assert_eq!(
        c.call(Method::GET, "/v1/self", Some(&last_session), None)
            .await
            .0,
        200
    );
    assert_eq!(
        c.call(
            Method::POST,
            &path("revoke-access"),
            Some(ADMIN_KEY),
            Some(json!({"reason": "contract ended"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        c.call(Method::GET, "/v1/self", Some(&last_session), None)
            .await
            .0,
        401
    );

    // Everything that can be read back.
    for (read, key) in [
        (format!("/v1/customers/{id}"), AUDITOR_KEY),
        (format!("/v1/customers/{id}/events"), AUDITOR_KEY),
        (
            format!("/v1/customers/{id}/events?format=jsonl"),
            AUDITOR_KEY,
        ),
        (format!("/v1/customers/{id}/audit"), AUDITOR_KEY),
        ("/v1/audit".to_string(), AUDITOR_KEY),
        ("/v1/audit?format=jsonl".to_string(), AUDITOR_KEY),
        ("/v1/audit?format=csv".to_string(), AUDITOR_KEY),
        ("/v1/access-report".to_string(), AUDITOR_KEY),
        ("/v1/mail".to_string(), ADMIN_KEY),
        ("/metrics".to_string(), ADMIN_KEY),
        ("/openapi.json".to_string(), ADMIN_KEY),
    ] {
        let (status, _) = c.call(Method::GET, &read, Some(key), None).await;
        assert_eq!(status, 200, "{read}");
    }
    // Wait for the mail of the last commands, then stop (SIGTERM) so the
    // logs are complete.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(accessd.terminate().success());

    // The whole database, every table, every row.
    let dump = Command::new("pg_dump")
        .args(["--data-only", "--no-owner", "--dbname", database.url()])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(
        dump.contains("leak3@example.net"),
        "the dump holds the data"
    );
    let logs = accessd.logs();
    assert!(
        logs.lines().count() > 100 && logs.contains("TRACE"),
        "trace logs were captured ({} lines)",
        logs.lines().count()
    );
    let mails = mails(&mail_dir);

    let mut secrets: Vec<(&str, String)> = vec![
        ("service key", SERVICE_KEY.into()),
        ("admin key", ADMIN_KEY.into()),
        ("auditor key", AUDITOR_KEY.into()),
        ("first password", FIRST_PASSWORD.into()),
        ("temporary password", TEMPORARY_PASSWORD.into()),
        ("second password", SECOND_PASSWORD.into()),
        ("wrong password", WRONG_PASSWORD.into()),
        ("setup token", setup_token.clone()),
        ("confirm token", confirm_token.clone()),
    ];
    for s in &sessions {
        secrets.push(("session token", s.clone()));
    }
    let mut leaks = Vec::new();
    let mut searched = 0usize;
    let mut places: Vec<(String, &str)> = vec![
        ("logs (trace)".to_string(), logs.as_str()),
        ("database dump".to_string(), dump.as_str()),
    ];
    for (what, body) in &c.bodies {
        places.push((format!("response {what}"), body.as_str()));
    }
    for (name, secret) in &secrets {
        for (place, text) in &places {
            searched += text.len();
            if text.contains(secret.as_str()) {
                leaks.push(format!("{name} in {place}"));
            }
        }
        // Mails: a link token only in the one mail that carries it.
        let carrying: Vec<_> = mails
            .iter()
            .filter(|(_, raw)| raw.contains(secret.as_str()))
            .map(|(file, _)| file.clone())
            .collect();
        let allowed = usize::from(*name == "setup token" || *name == "confirm token");
        if carrying.len() != allowed {
            leaks.push(format!(
                "{name} in {} mails (allowed {allowed}): {carrying:?}",
                carrying.len()
            ));
        }
    }
    assert!(mails.len() >= 4, "mails written: {}", mails.len());
    println!(
        "searched {} secrets in {} log lines, a {}-byte dump, {} response bodies, {} mails ({} bytes in all): {} leaks",
        secrets.len(),
        logs.lines().count(),
        dump.len(),
        c.bodies.len(),
        mails.len(),
        searched,
        leaks.len()
    );
    // Personal data is not a secret, but it stays out of the logs too
    // (docs/privacy.md: nothing to erase there when a customer is
    // forgotten).
    for email in [
        "leak@example.com",
        "leak.new@example.org",
        "leak3@example.net",
    ] {
        if logs.to_lowercase().contains(email) {
            leaks.push(format!("the email {email} in the logs"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
