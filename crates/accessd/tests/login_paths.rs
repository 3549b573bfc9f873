//! Login takes the same path for known and unknown emails (issue 14): the
//! statements the store sends to the database for a known email with a
//! wrong password, an unknown email and a malformed one are the same, in
//! the same order. Counted at the source, through sqlx's statement log
//! (`sqlx::query` events), not by timing.
//!
//! Its own test binary: it installs a process-wide tracing subscriber and
//! runs the service with no background loop, so every statement seen
//! while a login is under way belongs to that login.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use access_store::testing::TestDatabase;
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const SERVICE: &str = "service-secret-0123456789abcdef";
const PW: &str = "Velvet-Tundra-Orbit-42";

/// Collects the SQL of every statement while switched on.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Option<Vec<String>>>>);

impl Statements {
    fn start(&self) {
        *self.0.lock().unwrap() = Some(Vec::new());
    }

    fn take(&self) -> Vec<String> {
        self.0.lock().unwrap().take().unwrap_or_default()
    }
}

struct Sql(String);

impl Visit for Sql {
    fn record_str(&mut self, field: &Field, value: &str) {
        // `db.statement` is the whole text when it is longer than the
        // summary (the first words); otherwise empty.
        if field.name() == "db.statement" && !value.trim().is_empty() {
            self.0 = value.split_whitespace().collect::<Vec<_>>().join(" ");
        } else if field.name() == "summary" && self.0.is_empty() {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        if let Some(seen) = self.0.lock().unwrap().as_mut() {
            let mut sql = Sql(String::new());
            event.record(&mut sql);
            // A new pooled SQLite connection sets itself up: not the
            // login's doing.
            if !sql.0.starts_with("PRAGMA") {
                seen.push(sql.0);
            }
        }
    }
}

async fn post(client: &reqwest::Client, url: String, key: Option<&str>, body: Value) -> u16 {
    let mut request = client.post(url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn same_statements_for_known_and_unknown_emails(database: TestDatabase, log: &Statements) {
    let mail = tempfile::tempdir().unwrap();
    let mut config = accessd::Config::defaults();
    config.database_url = database.url().to_string();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.mail = format!("file:{}", mail.path().display());
    config.api_keys = Some(format!("crm:service:{SERVICE}"));
    config.master_key = Some(access_store::testing::TEST_MASTER_KEY.to_string());
    // No background loop: every statement is the request's.
    config.projector = false;
    config.mail_worker = false;
    config.login_attempts_per_account = 1000;
    config.login_attempts_per_address = 1000;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = accessd::start(config, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let server = tokio::spawn(running.wait());
    let client = reqwest::Client::new();

    let created = client
        .post(format!("{base}/v1/customers"))
        .bearer_auth(SERVICE)
        .json(&json!({"email": "known@example.com", "name": "Known"}))
        .send()
        .await
        .unwrap();
    let id = created.json::<Value>().await.unwrap()["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let granted = post(
        &client,
        format!("{base}/v1/customers/{id}/grant-access"),
        Some(SERVICE),
        json!({"password": PW, "password_confirm": PW}),
    )
    .await;
    assert_eq!(granted, 200);

    let login = |email: &'static str| {
        post(
            &client,
            format!("{base}/v1/self/sessions"),
            None,
            json!({"email": email, "password": "Wrong-Password-Guess-1"}),
        )
    };
    // Once each first (nothing warm on one path only), then measured.
    for email in ["known@example.com", "unknown@example.com", "not an email"] {
        assert_eq!(login(email).await, 401);
    }
    let mut paths = Vec::new();
    for email in ["known@example.com", "unknown@example.com", "not an email"] {
        log.start();
        assert_eq!(login(email).await, 401);
        paths.push((email, log.take()));
    }
    let (_, known) = &paths[0];
    assert!(
        known.iter().any(|s| s.contains("login_emails")),
        "the statement log works: {known:#?}"
    );
    for (email, statements) in &paths[1..] {
        assert_eq!(
            statements, known,
            "`{email}` takes another path than a known email with a wrong password"
        );
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_takes_the_same_path_for_known_and_unknown_emails() {
    let log = Statements::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log.clone()))
        .expect("the only subscriber of this test binary");
    let postgres = TestDatabase::postgres().await.unwrap();
    same_statements_for_known_and_unknown_emails(postgres, &log).await;
    let sqlite = TestDatabase::sqlite().unwrap();
    same_statements_for_known_and_unknown_emails(sqlite, &log).await;
}
