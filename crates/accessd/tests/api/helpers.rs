//! `TestApp`: the real service on port 0 with a fresh database and its own
//! mail directory, and one helper per endpoint. The helpers go through the
//! typed client (`access-client`, [`TestApp::api`]); raw requests
//! ([`TestApp::call`]) stay for what a test sends malformed on purpose or
//! checks byte for byte.

use std::path::PathBuf;

use access_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-secret-0123456789abcdef";
pub const SERVICE: &str = "service-secret-0123456789abcdef";
pub const AUDITOR: &str = "auditor-secret-0123456789abcdef";
pub const SUBSCRIBER: &str = "subscriber-secret-0123456789abcdef";

pub const NOTICE_TAIL: &str =
    " login has no password. A notification email with a password URL must be sent or a new password must be entered manually.";

pub const PW: &str = "correct-Horse-battery-9";
pub const PW2: &str = "Velvet-Tundra-Orbit-42";
pub const PW3: &str = "Quartz-Meadow-Lantern-77";

#[derive(Clone, Copy, Debug)]
pub enum Db {
    Postgres,
    Sqlite,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub mail_dir: tempfile::TempDir,
    /// The running service's state (to reach its background loops).
    pub state: accessd::state::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _db: Option<TestDatabase>,
}

/// A response: status, headers and JSON body (Null when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        self
    }

    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "unexpected answer: {}",
            self.body
        );
        self
    }
}

impl TestApp {
    pub async fn spawn(db: Db) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: Db, adjust: impl FnOnce(&mut accessd::Config)) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber_init();
        }
        let database = match db {
            Db::Postgres => TestDatabase::postgres().await.unwrap(),
            Db::Sqlite => TestDatabase::sqlite().unwrap(),
        };
        let mail_dir = tempfile::tempdir().unwrap();
        Self::start_on(database, mail_dir, adjust).await
    }

    pub fn database_url(&self) -> String {
        self._db
            .as_ref()
            .map(|d| d.url().to_string())
            .unwrap_or_default()
    }

    /// Stops this service and starts a new one on the same database and
    /// mail directory (as after a crash or a deploy).
    pub async fn restart_on_same_database(
        mut self,
        url: String,
        adjust: impl FnOnce(&mut accessd::Config),
    ) -> Self {
        assert_eq!(url, self.database_url());
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        let database = self._db.take().unwrap();
        let mail_dir = std::mem::replace(&mut self.mail_dir, tempfile::tempdir().unwrap());
        Self::start_on(database, mail_dir, adjust).await
    }

    /// A second replica: another service on this one's database (its own
    /// mail directory), as behind a load balancer.
    pub async fn replica(&self, adjust: impl FnOnce(&mut accessd::Config)) -> Self {
        let url = self.database_url();
        Self::start_with_url(&url, None, tempfile::tempdir().unwrap(), adjust).await
    }

    async fn start_on(
        database: TestDatabase,
        mail_dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut accessd::Config),
    ) -> Self {
        let url = database.url().to_string();
        Self::start_with_url(&url, Some(database), mail_dir, adjust).await
    }

    async fn start_with_url(
        url: &str,
        database: Option<TestDatabase>,
        mail_dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut accessd::Config),
    ) -> Self {
        let mut config = accessd::Config::defaults();
        config.database_url = url.to_string();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.public_url = None;
        config.mail = format!("file:{}", mail_dir.path().display());
        config.api_keys = Some(format!(
            "ops:admin:{ADMIN},crm:service:{SERVICE},audit:auditor:{AUDITOR},feed:subscriber:{SUBSCRIBER}"
        ));
        config.api_keys_file = None;
        config.master_key = Some(access_store::testing::TEST_MASTER_KEY.to_string());
        config.master_key_file = None;
        config.mail_templates = None;
        adjust(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let running = accessd::start(config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let base = format!("http://{}", running.addr);
        let state = running.state.clone();
        let server = tokio::spawn(running.wait());
        Self {
            base,
            state,
            client: reqwest::Client::new(),
            mail_dir,
            shutdown: Some(tx),
            server: Some(server),
            _db: database,
        }
    }

    /// Stops the service and hands over its database, which lives on until
    /// the returned guard drops (to look at the files after a stop).
    pub async fn stop_keeping_database(mut self) -> TestDatabase {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        self._db.take().unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(method, path, bearer, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// The raw answer of a GET: status, content type, body text.
    pub async fn get_text(&self, path: &str, key: &str) -> (u16, String, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, content_type, response.text().await.unwrap())
    }

    /// The typed client with API key `key` (or, for `/v1/self/*`, a
    /// session's token).
    pub fn api(&self, key: &str) -> access_client::Client {
        access_client::Client::with_http(
            self.client.clone(),
            self.base.clone(),
            Some(key.to_string()),
        )
    }

    /// The typed client without a credential (the link-token endpoints,
    /// logging in).
    pub fn anonymous(&self) -> access_client::Client {
        access_client::Client::with_http(self.client.clone(), self.base.clone(), None)
    }

    pub async fn register(&self, email: &str) -> String {
        let answer = self
            .api(SERVICE)
            .register(
                &access_client::RegisterRequest {
                    email: email.to_string(),
                    name: Some("Ann Smith".to_string()),
                    customer_id: None,
                    reason: None,
                },
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 201);
        answer.body.customer_id.to_string()
    }

    pub async fn customer(&self, id: &str) -> Value {
        let view = self
            .api(AUDITOR)
            .customer(id.parse().unwrap())
            .await
            .unwrap();
        serde_json::to_value(view.body).unwrap()
    }

    pub async fn command(&self, id: &str, action: &str, body: Value) -> Answer {
        self.post(&format!("/v1/customers/{id}/{action}"), SERVICE, body)
            .await
    }

    /// A customer with access and a permanent password `PW`, set through
    /// the setup link of the access notification.
    pub async fn customer_with_password(&self, email: &str) -> String {
        let id = self.register(email).await;
        self.api(SERVICE)
            .grant_access(
                id.parse().unwrap(),
                &access_client::GrantAccessRequest {
                    send_notification: Some(true),
                    ..Default::default()
                },
                &Default::default(),
            )
            .await
            .unwrap();
        let token = self.token_from_mail(email, "/setup-password").await;
        self.anonymous()
            .setup_password(
                &access_client::SetupPasswordRequest {
                    token,
                    password: PW.to_string(),
                    password_confirm: PW.to_string(),
                },
                &Default::default(),
            )
            .await
            .unwrap();
        id
    }

    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.call(
            Method::POST,
            "/v1/self/sessions",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    pub async fn session(&self, email: &str, password: &str) -> String {
        let answer = self
            .anonymous()
            .create_session(&access_client::SessionRequest {
                email: email.to_string(),
                password: password.to_string(),
            })
            .await
            .unwrap();
        assert_eq!(answer.status, 201);
        answer.body.token
    }

    /// Every mail written so far, as (file, raw text), oldest first.
    pub fn mails(&self) -> Vec<(PathBuf, String)> {
        let mut files: Vec<_> = std::fs::read_dir(self.mail_dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect()
    }

    /// Mails addressed to `to`, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<access_mail::ParsedEml> {
        self.mails()
            .into_iter()
            .map(|(_, raw)| access_mail::parse_eml(&raw))
            .filter(|m| {
                m.header("To")
                    .is_some_and(|t| t.to_lowercase().contains(&to.to_lowercase()))
            })
            .collect()
    }

    /// Mails to `to` once there are `count` of them (mail is delivered by
    /// the outbox worker, shortly after the command); fails after 10 s.
    pub async fn wait_for_mails_to(&self, to: &str, count: usize) -> Vec<access_mail::ParsedEml> {
        for _ in 0..500 {
            let mails = self.mails_to(to);
            if mails.len() >= count {
                // A little longer, to catch a mail too many.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                return self.mails_to(to);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("fewer than {count} mails to {to} arrived");
    }

    /// The token of the `n`-th (1-based) mail to `to` with a link to `path`.
    pub async fn token_from_nth_mail(&self, to: &str, path: &str, n: usize) -> String {
        for _ in 0..500 {
            let tokens: Vec<String> = self
                .mails()
                .into_iter()
                .filter(|(_, raw)| {
                    access_mail::parse_eml(raw)
                        .header("To")
                        .is_some_and(|t| t.to_lowercase().contains(&to.to_lowercase()))
                })
                .filter_map(|(_, raw)| access_mail::extract_token(&raw, path))
                .collect();
            if let Some(token) = tokens.get(n - 1) {
                return token.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no mail number {n} to {to} with a link to {path}");
    }

    /// The token of the newest link to `path` in a mail to `to`.
    pub async fn token_from_mail(&self, to: &str, path: &str) -> String {
        for _ in 0..500 {
            let raws: Vec<String> = self
                .mails()
                .into_iter()
                .map(|(_, raw)| raw)
                .filter(|raw| {
                    access_mail::parse_eml(raw)
                        .header("To")
                        .is_some_and(|t| t.to_lowercase().contains(&to.to_lowercase()))
                })
                .collect();
            if let Some(token) = raws
                .iter()
                .rev()
                .find_map(|raw| access_mail::extract_token(raw, path))
            {
                return token;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no mail to {to} with a link to {path}");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn tracing_subscriber_init() -> Result<(), ()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_default())
        .with_test_writer()
        .try_init()
        .map_err(|_| ())
}

/// Links that expired an hour ago (a link cannot be aged through the API).
pub struct ExpiredLinks {
    pub customer_id: String,
    /// `/setup-password?token=…`
    pub setup: String,
    /// `/confirm-email?token=…`
    pub confirm: String,
}

impl TestApp {
    /// A customer written through a second store on this database whose
    /// clock says 25 hours ago: registered as `email` with access and a
    /// temporary password, an email change to `new_email` requested, and
    /// an access notification sent; both links (24 hours) expired an hour
    /// ago. The service has never loaded this customer.
    pub async fn customer_with_expired_links(&self, email: &str, new_email: &str) -> ExpiredLinks {
        use access_domain::services::fakes::{FakeHasher, FixedClock};
        use access_domain::{
            Actor, CommandMetadata, Credential, CustomerCommand, CustomerId, CustomerServices,
            EmailAddress, LinkLifetimes, Password, Role, Secret,
        };
        use std::sync::Arc;

        let store = access_store::Store::connect(
            &self.database_url(),
            access_store::StoreOptions::default(),
        )
        .await
        .unwrap()
        .unlock(access_store::testing::test_master_key())
        .await
        .unwrap();
        let then = chrono::Utc::now() - chrono::Duration::hours(25);
        let id = CustomerId::new_random();
        let meta = CommandMetadata::new(
            Actor::System {
                name: "test".into(),
            },
            "aged",
        );
        let address = |s: &str| EmailAddress::parse(s).unwrap();
        let commands = [
            CustomerCommand::RegisterCustomer {
                customer_id: id,
                email: address(email),
                name: None,
            },
            CustomerCommand::GrantAccess {
                role: Role::CustomerCenter,
                credential: Credential::ManualPassword {
                    password: Password::parse(PW, &[]).unwrap(),
                    password_confirm: Secret::new(PW),
                    send_notification: false,
                },
            },
            CustomerCommand::RequestEmailChange {
                current_password: Secret::new(PW),
                new_email: address(new_email),
                new_email_confirm: address(new_email),
            },
            CustomerCommand::SendAccessNotification,
        ];
        let mut tokens = Vec::new();
        for command in commands {
            // Two writers on one SQLite file: the service's may hold the
            // lock for a moment (SQLITE_BUSY): try again.
            let mut attempts = 0;
            let executed = loop {
                let services = CustomerServices::new(
                    Arc::new(FakeHasher),
                    Arc::new(access_security::OsRandomTokens),
                    Arc::new(FixedClock(then)),
                    LinkLifetimes::default(),
                );
                let result = store
                    .execute(
                        &services,
                        access_store::Execution {
                            customer_id: id,
                            command: command.clone(),
                            metadata: &meta,
                            expected_version: None,
                            idempotency: None,
                        },
                        |_| String::new(),
                    )
                    .await;
                match result {
                    Err(access_store::ExecuteError::Store(
                        access_store::StoreError::Unavailable(_),
                    )) if attempts < 50 => {
                        attempts += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    other => break other.unwrap(),
                }
            };
            tokens.extend(executed.issued_tokens);
        }
        let link = |purpose| {
            let issued = tokens.iter().find(|t| t.purpose == purpose).unwrap();
            assert!(issued.expires_at < chrono::Utc::now());
            format!("{id}.{}", issued.token.expose())
        };
        ExpiredLinks {
            customer_id: id.to_string(),
            setup: format!(
                "/setup-password?token={}",
                link(access_domain::TokenPurpose::PasswordSetup)
            ),
            confirm: format!(
                "/confirm-email?token={}",
                link(access_domain::TokenPurpose::EmailChange)
            ),
        }
    }
}
