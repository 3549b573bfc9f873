//! Mail through a real SMTP server (Python's aiosmtpd, started by the
//! test): delivery, an outage with retries, a final failure and a retry by
//! hand.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// An aiosmtpd server writing what it receives into a Maildir.
pub(crate) struct SmtpServer {
    child: Child,
    _dir: tempfile::TempDir,
    maildir: PathBuf,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpServer {
    pub(crate) fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "python3 with aiosmtpd is needed (pip install aiosmtpd; scripts/test installs it)",
            );
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            _dir: dir,
            maildir,
        }
    }

    /// The raw messages received so far.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                out.push(std::fs::read_to_string(entry.path()).unwrap());
            }
        }
        out
    }

    pub(crate) async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} messages arrived",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

pub(crate) async fn mail_status(app: &TestApp, status: &str) -> Vec<serde_json::Value> {
    app.get(&format!("/v1/mail?status={status}"), ADMIN)
        .await
        .expect(200)
        .body["messages"]
        .as_array()
        .unwrap()
        .clone()
}

async fn a_setup_link_arrives_by_smtp_and_works(db: Db) {
    let port = free_port();
    let server = SmtpServer::start(port);
    let app =
        TestApp::spawn_with(db, |c| c.mail = format!("smtp://127.0.0.1:{port}?tls=none")).await;
    let id = app.register("smtp@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let messages = server.wait_for(1).await;
    let raw = &messages[0];
    assert_eq!(header(raw, "To"), Some("smtp@example.com"));
    assert!(
        header(raw, "Subject")
            .unwrap()
            .contains("choose your password"),
        "{raw}"
    );
    let token = access_mail::extract_token(raw, "/setup-password").expect("a setup link");
    app.call(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": token, "password": PW, "password_confirm": PW})),
    )
    .await
    .expect(200);
    app.login("smtp@example.com", PW).await.expect(201);
    let sent = mail_status(&app, "sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["kind"], "access_notification_with_link");
    app.stop().await;
}

async fn an_smtp_outage_means_retries_and_a_later_delivery(db: Db) {
    let port = free_port(); // nothing listens there yet
    let app = TestApp::spawn_with(db, |c| {
        c.mail = format!("smtp://127.0.0.1:{port}?tls=none");
        c.mail_retry_ms = 100;
        c.mail_max_attempts = 100;
    })
    .await;
    let id = app.register("outage@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    // The command succeeded; the message waits and is retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = mail_status(&app, "pending").await;
        if pending
            .first()
            .is_some_and(|m| m["attempts"].as_u64() >= Some(2))
        {
            assert!(pending[0]["last_error"].as_str().is_some());
            break;
        }
        assert!(Instant::now() < deadline, "no retries seen: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = SmtpServer::start(port);
    let messages = server.wait_for(1).await;
    assert_eq!(header(&messages[0], "To"), Some("outage@example.com"));
    // Exactly one delivery, recorded as sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.messages().len(), 1);
    assert_eq!(mail_status(&app, "sent").await.len(), 1);
    assert!(mail_status(&app, "pending").await.is_empty());
    app.stop().await;
}

async fn a_finally_failed_message_is_visible_and_can_be_retried_by_hand(db: Db) {
    let port = free_port();
    let app = TestApp::spawn_with(db, |c| {
        c.mail = format!("smtp://127.0.0.1:{port}?tls=none");
        c.mail_retry_ms = 50;
        c.mail_max_attempts = 2;
    })
    .await;
    let id = app.register("failed@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let failed = mail_status(&app, "failed").await;
        if !failed.is_empty() {
            break failed;
        }
        assert!(Instant::now() < deadline, "the message never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed[0]["attempts"], 2);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("access_mail_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    // Only admins see the queue.
    app.get("/v1/mail", SERVICE)
        .await
        .expect_error(403, "forbidden");

    let server = SmtpServer::start(port);
    let message_id = failed[0]["id"].as_str().unwrap();
    app.call(
        Method::POST,
        &format!("/v1/mail/{message_id}/retry"),
        Some(ADMIN),
        None,
    )
    .await
    .expect(202);
    server.wait_for(1).await;
    app.call(
        Method::POST,
        &format!("/v1/mail/{message_id}/retry"),
        Some(ADMIN),
        None,
    )
    .await
    .expect_error(404, "not_found");
    app.stop().await;
}

crate::on_both_stores!(
    a_setup_link_arrives_by_smtp_and_works,
    an_smtp_outage_means_retries_and_a_later_delivery,
    a_finally_failed_message_is_visible_and_can_be_retried_by_hand,
);
