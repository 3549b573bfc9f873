//! The customer's pages in a real browser (headless Chromium driven through
//! chromedriver with fantoccini): the access notification's link → set a
//! password → log in; log in → change email → the validation link → log in
//! with the new email (the old one no longer works); an expired link.
//!
//! `ACCESS_UPDATE_SCREENSHOTS=1` writes the screenshots under docs/img/.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "Chromium and chromedriver are needed (apt-get install chromium chromium-driver; scripts/test installs them)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    async fn browser(&self) -> Client {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--no-first-run",
                    "--disable-sync", "--disable-quic", "--window-size=1024,900",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": self.downloads().display().to_string(),
                    "download.prompt_for_download": false,
                }
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        // Several rustls providers are compiled in: pick one for this process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

impl Driver {
    /// Where the browser saves downloads.
    fn downloads(&self) -> std::path::PathBuf {
        self._profile.path().join("downloads")
    }

    /// The file the browser downloaded whose name starts with `prefix`,
    /// once complete.
    async fn downloaded(&self, prefix: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let done = std::fs::read_dir(self.downloads())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .find(|n| n.starts_with(prefix) && !n.ends_with(".crdownload"));
            if let Some(name) = done {
                let text = std::fs::read_to_string(self.downloads().join(&name)).unwrap();
                return (name, text);
            }
            assert!(Instant::now() < deadline, "no download named {prefix}…");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fill(browser: &Client, id: &str, value: &str) {
    let field = browser
        .find(Locator::Css(&format!("#{id}")))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Clicks `#submit` and waits until the browser has left the page (the old
/// page's body goes stale), so the next read sees the answer.
async fn submit(browser: &Client) {
    click_and_wait(browser, "#submit").await;
}

/// Clicks a download link (the page stays).
async fn click_and_wait_download(browser: &Client, selector: &str) {
    browser
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Clicks the element and waits until the browser has left the page.
async fn click_and_wait(browser: &Client, selector: &str) {
    let old_body = browser.find(Locator::Css("body")).await.unwrap();
    browser
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while old_body.text().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the form submission never loaded a page"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    browser
        .wait()
        .for_element(Locator::Css("body"))
        .await
        .unwrap();
}

async fn text(browser: &Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn shot(browser: &Client, name: &str) {
    if std::env::var("ACCESS_UPDATE_SCREENSHOTS").is_ok() {
        let png = browser.screenshot().await.unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/img");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

async fn flows(app: &TestApp, browser: &Client) {
    // The access notification's link → set a password → log in.
    let id = app.register("browser@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app
        .token_from_mail("browser@example.com", "/setup-password")
        .await;
    browser
        .goto(&format!("{}/setup-password?token={token}", app.base))
        .await
        .unwrap();
    shot(browser, "setup-password").await;
    fill(browser, "password", PW).await;
    fill(browser, "password_confirm", PW).await;
    submit(browser).await;
    let page = text(browser).await;
    assert!(page.to_lowercase().contains("password"), "{page}");

    browser.goto(&format!("{}/login", app.base)).await.unwrap();
    shot(browser, "login").await;
    fill(browser, "email", "browser@example.com").await;
    fill(browser, "password", PW).await;
    submit(browser).await;
    let url = browser.current_url().await.unwrap();
    assert!(url.path().starts_with("/account"), "after login: {url}");
    shot(browser, "account").await;

    // Change email → the validation link → the new email is the login.
    browser
        .goto(&format!("{}/account/change-email", app.base))
        .await
        .unwrap();
    fill(browser, "current_password", PW).await;
    fill(browser, "new_email", "browser.new@example.com").await;
    fill(browser, "new_email_confirm", "browser.new@example.com").await;
    submit(browser).await;
    let status = browser
        .find(Locator::Css("#status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.contains("Validation email sent successfully."),
        "{status}"
    );
    shot(browser, "change-email-sent").await;
    let token = app
        .token_from_mail("browser.new@example.com", "/confirm-email")
        .await;
    browser
        .goto(&format!("{}/confirm-email?token={token}", app.base))
        .await
        .unwrap();
    submit(browser).await;
    let page = text(browser).await;
    assert!(page.contains("browser.new@example.com"), "{page}");
    shot(browser, "email-confirmed").await;

    // The old email no longer logs in; the new one does.
    browser.goto(&format!("{}/login", app.base)).await.unwrap();
    fill(browser, "email", "browser@example.com").await;
    fill(browser, "password", PW).await;
    submit(browser).await;
    assert!(!browser
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/account"));
    shot(browser, "login-failed").await;
    fill(browser, "email", "browser.new@example.com").await;
    fill(browser, "password", PW).await;
    submit(browser).await;
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/account"));

    // A wrong (or used, or expired) link says so at once.
    dead_at_once(
        app,
        browser,
        &format!("/setup-password?token={id}.0123456789abcdef"),
    )
    .await;
    shot(browser, "link-expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_pages_work_in_a_real_browser() {
    let driver = Driver::start();
    let app = TestApp::spawn(Db::Sqlite).await;
    let browser = driver.browser().await;
    // Close the browser on failure too (no Chromium left behind).
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(flows(&app, &browser))).await;
    let _ = browser.close().await;
    app.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Issue 22: set up an authenticator app on the account page (the QR code
/// and the key, a code to confirm, the recovery codes shown once), log
/// out, then log in with the password and a code (computed from the key
/// shown on the page by Python's `hmac`).
async fn second_factor(app: &TestApp, browser: &Client) {
    let email = "twostep@example.com";
    app.customer_with_password(email).await;
    browser.goto(&format!("{}/login", app.base)).await.unwrap();
    fill(browser, "email", email).await;
    fill(browser, "password", PW).await;
    submit(browser).await;
    click_and_wait(browser, "#second-factor-link").await;
    assert!(text(browser)
        .await
        .contains("Two-step verification protects"));
    shot(browser, "second-factor-off").await;
    submit(browser).await;
    let secret = browser
        .find(Locator::Css("#totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(secret.len(), 32, "a 160-bit key in base32: {secret}");
    browser
        .find(Locator::Css("#totp-qr svg"))
        .await
        .expect("the QR code is drawn");
    shot(browser, "second-factor-setup").await;
    // A wrong code first: said next to the field.
    fill(browser, "code", "000000").await;
    submit(browser).await;
    assert!(text(browser).await.contains("This code is wrong"));
    let code = crate::second_factor::python_totp(&secret, 0);
    fill(browser, "code", &code).await;
    submit(browser).await;
    let codes = browser
        .find_all(Locator::Css("#recovery-codes li"))
        .await
        .unwrap();
    assert_eq!(codes.len(), 10);
    let recovery = codes[0].text().await.unwrap();
    shot(browser, "recovery-codes").await;

    // Log out, log in again: the password, then the second step.
    browser
        .goto(&format!("{}/account", app.base))
        .await
        .unwrap();
    click_and_wait(browser, "#logout").await;
    fill(browser, "email", email).await;
    fill(browser, "password", PW).await;
    submit(browser).await;
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/login/second-factor", "{url}");
    // The account is out of reach until the code.
    browser
        .goto(&format!("{}/account", app.base))
        .await
        .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/login/second-factor"
    );
    shot(browser, "login-second-factor").await;
    // The code that turned it on was used: refused.
    fill(browser, "code", &code).await;
    submit(browser).await;
    assert!(text(browser).await.contains("This code is wrong"));
    let fresh = crate::second_factor::python_totp(&secret, 1);
    fill(browser, "code", &fresh).await;
    submit(browser).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/account");
    assert!(text(browser).await.contains("On: logging in also asks"));

    // A recovery code logs in once.
    click_and_wait(browser, "#logout").await;
    fill(browser, "email", email).await;
    fill(browser, "password", PW).await;
    submit(browser).await;
    fill(browser, "code", &recovery).await;
    submit(browser).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_factor_works_in_a_real_browser() {
    let driver = Driver::start();
    let app = TestApp::spawn(Db::Sqlite).await;
    let browser = driver.browser().await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(second_factor(
        &app, &browser,
    )))
    .await;
    let _ = browser.close().await;
    app.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Opens `path` and expects the "no longer valid" page at once: no form
/// to fill in first.
async fn dead_at_once(app: &TestApp, browser: &Client, path: &str) {
    browser.goto(&format!("{}{path}", app.base)).await.unwrap();
    let page = text(browser).await;
    assert!(
        page.contains("This link is no longer valid"),
        "{path}: {page}"
    );
    for field in ["#password", "#submit"] {
        assert!(
            browser.find(Locator::Css(field)).await.is_err(),
            "{path}: {field} on the page of a dead link"
        );
    }
}

async fn dead_links(app: &TestApp, browser: &Client) {
    // A used setup link.
    app.customer_with_password("used@example.com").await;
    let token = app
        .token_from_mail("used@example.com", "/setup-password")
        .await;
    dead_at_once(app, browser, &format!("/setup-password?token={token}")).await;
    // A used confirmation link.
    let session = app.session("used@example.com", PW).await;
    app.call(
        reqwest::Method::POST,
        "/v1/self/change-email",
        Some(&session),
        Some(json!({"current_password": PW, "new_email": "used@new.example", "new_email_confirm": "used@new.example"})),
    )
    .await
    .expect(202);
    let token = app
        .token_from_mail("used@new.example", "/confirm-email")
        .await;
    let link = format!("/confirm-email?token={token}");
    browser.goto(&format!("{}{link}", app.base)).await.unwrap();
    submit(browser).await;
    dead_at_once(app, browser, &link).await;
    // Expired links, both kinds.
    let expired = app
        .customer_with_expired_links("old@example.com", "old@new.example")
        .await;
    dead_at_once(app, browser, &expired.setup).await;
    dead_at_once(app, browser, &expired.confirm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_links_say_so_when_their_page_opens_in_a_real_browser() {
    let driver = Driver::start();
    let app = TestApp::spawn(Db::Sqlite).await;
    let browser = driver.browser().await;
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(dead_links(&app, &browser)))
            .await;
    let _ = browser.close().await;
    app.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The auditors' console in a real browser: sign in with the auditor's
/// key, find a customer by email, read the notice's story on the
/// timeline, open the state as of a past instant, download the CSV, see
/// the access report and the integrity page (its verification's result
/// arrives by the page's own refresh, without JavaScript).
async fn console(app: &TestApp, driver: &Driver, browser: &Client) {
    let story = crate::console::notice_story(app).await;
    // Two more customers with access, for the report.
    app.customer_with_password("erin@example.com").await;
    app.customer_with_password("finn@example.com").await;
    // Wide and tall enough for a whole timeline in the screenshots.
    browser.set_window_size(1400, 1700).await.unwrap();
    browser.goto(&format!("{}/audit", app.base)).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/audit/login");
    shot(browser, "audit-login").await;
    fill(browser, "api_key", AUDITOR).await;
    submit(browser).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/audit");
    shot(browser, "audit-home").await;

    // Find the customer by the login email.
    fill(browser, "q", "Dana@Elsewhere.example").await;
    click_and_wait(browser, "#search").await;
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), format!("/audit/customers/{}", story.id));
    let rows = browser
        .find_all(Locator::Css("#timeline .timeline-row"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 12);
    let page = text(browser).await;
    for told in [
        "Access granted",
        "with a password-setup link",
        "Password set through the setup link",
        "Login email changed by an administrator",
        "Password set by an administrator",
        "Email change requested by the customer",
        "Email change confirmed through the validation link",
        "Access revoked",
        "contract ended",
        "req-revoke-0042",
        "crm (API key, service)",
    ] {
        assert!(page.contains(told), "{told} not on the timeline:\n{page}");
    }
    shot(browser, "audit-customer").await;

    // The state as of a past instant, through the form.
    let as_of = story
        .before_revoke
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string();
    browser
        .execute(
            "document.getElementById('as_of').value = arguments[0];",
            vec![serde_json::Value::String(as_of)],
        )
        .await
        .unwrap();
    click_and_wait(browser, "#show-as-of").await;
    let email = browser
        .find(Locator::Css("#state-email"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(email, "dana@self.example");
    let access = browser
        .find(Locator::Css("#state-access"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(access.starts_with("Customer Center access"), "{access}");
    shot(browser, "audit-as-of").await;

    // The CSV download of this view: the browser saves it.
    click_and_wait_download(browser, "#download-csv").await;
    let (name, body) = driver
        .downloaded(&format!("audit-trail_customer-{}", story.id))
        .await;
    assert!(name.contains("_as-of-") && name.ends_with(".csv"), "{name}");
    assert!(body.starts_with("position,customer_id"), "{body}");
    assert!(body.lines().count() > 5, "{body}");
    assert!(
        !body.contains("req-revoke-0042"),
        "after the instant: {body}"
    );

    // The access report.
    click_and_wait(browser, "#nav-report").await;
    let report = text(browser).await;
    assert!(report.contains("2 customers had access"), "{report}");
    assert!(
        report.contains("erin@example.com") && !report.contains("dana@"),
        "{report}"
    );
    shot(browser, "audit-report").await;

    // Integrity: the digest, and a verification whose result the page
    // shows by refreshing itself.
    click_and_wait(browser, "#nav-integrity").await;
    let digest = browser
        .find(Locator::Css("#digest"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(digest.split(':').count(), 3, "{digest}");
    click_and_wait(browser, "#verify").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcome = match browser
            .find(Locator::Css(".check-row .check-outcome"))
            .await
        {
            Ok(cell) => cell.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if outcome == "intact" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no result on the page: {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(browser, "audit-integrity").await;

    // Sign out.
    click_and_wait(browser, "#logout").await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/audit/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_console_works_in_a_real_browser() {
    let driver = Driver::start();
    let app = TestApp::spawn(Db::Sqlite).await;
    let browser = driver.browser().await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(console(
        &app, &driver, &browser,
    )))
    .await;
    let _ = browser.close().await;
    app.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
