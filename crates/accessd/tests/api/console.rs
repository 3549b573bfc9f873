//! The auditors' console over HTTP, with a cookie jar like a browser's:
//! who may sign in, the session cookie, CSRF, no way to a command, the
//! notice's story on a customer's timeline, time travel, the report and
//! the downloads, the integrity check, the throttle. (The real browser's
//! walk through the same pages is in `browser.rs`.)

use reqwest::header::{CONTENT_DISPOSITION, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::pages::{assert_security_headers, Browser, Html};

/// Signs `browser` in to the console with `key`; the page it lands on.
pub(crate) async fn sign_in(browser: &Browser, key: &str) -> Html {
    let page = browser
        .get("/audit/login")
        .await
        .expect(200, "/audit/login");
    browser
        .submit(&page, "/audit/login", &[("api_key", key)])
        .await
}

/// What [`notice_story`] did, for the checks.
pub(crate) struct Story {
    pub id: String,
    /// An instant after Option 2 and before Option 3 (the customer had
    /// access, with the self-service email).
    pub before_revoke: chrono::DateTime<chrono::Utc>,
}

/// The notice's story for one customer, through the API: access with a
/// setup link (the customer sets a password), Option 1 (a new email with
/// a temporary password, which the customer then changes), Option 2 (the
/// customer's own email change with its confirmation link), Option 3
/// (access revoked, then the email changed freely). The refusal of a grant
/// without a password or a link comes first: it is not an event.
pub(crate) async fn notice_story(app: &TestApp) -> Story {
    let id = app.register("dana@example.com").await;
    app.command(&id, "grant-access", json!({}))
        .await
        .expect_error(422, "login_has_no_password");
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app
        .token_from_mail("dana@example.com", "/setup-password")
        .await;
    app.call(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": token, "password": PW, "password_confirm": PW})),
    )
    .await
    .expect(200);
    // Option 1.
    app.command(
        &id,
        "change-email",
        json!({"email": "dana.new@example.org", "password": PW2, "password_confirm": PW2, "send_notification": true}),
    )
    .await
    .expect(200);
    let session = app.login("dana.new@example.org", PW2).await.expect(201);
    let token = session.body["token"].as_str().unwrap().to_string();
    let changed = app
        .call(
            Method::POST,
            "/v1/self/change-password",
            Some(&token),
            Some(
                json!({"current_password": PW2, "new_password": PW3, "new_password_confirm": PW3}),
            ),
        )
        .await
        .expect(200);
    let token = changed.body["session"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Option 2.
    app.call(
        Method::POST,
        "/v1/self/change-email",
        Some(&token),
        Some(json!({"current_password": PW3, "new_email": "dana@self.example", "new_email_confirm": "dana@self.example"})),
    )
    .await
    .expect(202);
    let link = app
        .token_from_mail("dana@self.example", "/confirm-email")
        .await;
    app.call(
        Method::POST,
        "/v1/self/confirm-email",
        None,
        Some(json!({"token": link})),
    )
    .await
    .expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before_revoke = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Option 3, with the caller's request id.
    app.call_with(
        Method::POST,
        &format!("/v1/customers/{id}/revoke-access"),
        Some(SERVICE),
        Some(json!({"reason": "contract ended"})),
        &[("x-request-id", "req-revoke-0042")],
    )
    .await
    .expect(200);
    app.command(
        &id,
        "change-email",
        json!({"email": "dana@elsewhere.example"}),
    )
    .await
    .expect(200);
    Story { id, before_revoke }
}

async fn only_auditor_and_admin_keys_sign_in(db: Db) {
    let app = TestApp::spawn(db).await;
    let browser = Browser::new(&app);
    // Without a session every page leads to the sign-in.
    for path in ["/audit", "/audit/report", "/audit/integrity"] {
        let page = browser.get(path).await.expect(200, "/audit/login");
        assert_security_headers(&page.headers);
        page.has(r#"id="api_key""#)
            .has(r#"autocomplete="current-password""#)
            .has(r#"name="csrf_token""#);
    }
    // Refused: unknown, service, subscriber; a known secret under another
    // name.
    sign_in(&browser, "not-a-key-0123456789abcdef")
        .await
        .expect(401, "/audit/login")
        .has(r#"id="api_key-error""#)
        .has("This API key is not known.")
        .lacks("not-a-key-0123456789abcdef");
    sign_in(&browser, SERVICE)
        .await
        .expect(403, "/audit/login")
        .has("A service key cannot sign in to the audit console")
        .lacks(SERVICE);
    sign_in(&browser, SUBSCRIBER)
        .await
        .expect(403, "/audit/login")
        .has("A subscriber key cannot sign in");
    sign_in(&browser, &format!("crm:admin:{ADMIN}"))
        .await
        .expect(401, "/audit/login");
    browser.get("/audit").await.expect(200, "/audit/login");

    // An auditor's secret; the header names the person.
    let home = sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    home.has(r#"id="console-user""#)
        .has("audit (auditor)")
        .has(r#"id="logout""#)
        .lacks(AUDITOR);
    assert_security_headers(&home.headers);
    // Signed in, the sign-in page goes home.
    browser.get("/audit/login").await.expect(200, "/audit");
    // Signing out ends the session.
    let page = browser.get("/audit").await;
    browser
        .submit(&page, "/audit/logout", &[])
        .await
        .expect(200, "/audit/login?notice=signed_out");
    browser.get("/audit").await.expect(200, "/audit/login");

    // An admin, with the whole `name:role:secret` line.
    sign_in(&Browser::new(&app), &format!("ops:admin:{ADMIN}"))
        .await
        .expect(200, "/audit")
        .has("ops (admin)");
    app.stop().await;
}

/// Signs in as the auditor without following the redirect: the answer.
async fn raw_sign_in(app: &TestApp) -> reqwest::Response {
    let page = Browser::new(app).get("/audit/login").await;
    let csrf = page.csrf();
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/audit/login", app.base))
        .header("cookie", format!("access_csrf={csrf}"))
        .form(&[("api_key", AUDITOR), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap()
}

/// `access_console=<token>` of a new auditor's session.
async fn console_cookie(app: &TestApp) -> String {
    let answer = raw_sign_in(app).await;
    let set = answer.headers()[SET_COOKIE].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

async fn the_console_cookie_is_strict_and_lasts_eight_hours(db: Db) {
    let app = TestApp::spawn(db).await;
    let answer = raw_sign_in(&app).await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()[LOCATION], "/audit");
    let cookie = answer.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(cookie.starts_with("access_console="), "{cookie}");
    for expected in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/audit",
        "Max-Age=28800",
    ] {
        assert!(attributes.contains(&expected), "{expected} in {cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "http: no Secure ({cookie})"
    );
    // The token in the cookie is not the key.
    assert!(!cookie.contains(AUDITOR));

    // With an https public URL the cookie is Secure.
    let secure = TestApp::spawn_with(Db::Sqlite, |c| {
        c.public_url = Some("https://portal.example.com".into());
    })
    .await;
    let answer = raw_sign_in(&secure).await;
    let cookie = answer.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
    secure.stop().await;
    app.stop().await;
}

async fn console_forms_need_their_csrf_token(db: Db) {
    let app = TestApp::spawn(db).await;
    let browser = Browser::new(&app);
    let page = browser.get("/audit/login").await;
    // No token; another origin.
    let bare = browser
        .client
        .post(format!("{}/audit/login", app.base))
        .form(&[("api_key", AUDITOR)])
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    let csrf = page.csrf();
    let cross = browser
        .client
        .post(format!("{}/audit/login", app.base))
        .header("origin", "https://evil.example")
        .form(&[("api_key", AUDITOR), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    browser.get("/audit").await.expect(200, "/audit/login");
    // Signed in, the verify button needs the token too.
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    let forged = browser
        .client
        .post(format!("{}/audit/integrity/verify", app.base))
        .form(&[("csrf_token", "0123456789abcdef0123456789abcdef")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    browser
        .get("/audit/integrity")
        .await
        .expect(200, "/audit/integrity")
        .has("No verification was run from the console yet.");
    app.stop().await;
}

async fn a_console_session_cannot_send_a_command(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("eve@example.com").await;
    let browser = Browser::new(&app);
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    // The API does not take the console's cookie (its cookie path is
    // /audit, and the API reads only Bearer keys): the same jar is refused.
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/customers/{id}/revoke-access"),
            Some(json!({"reason": "by console"})),
        ),
        (Method::GET, "/v1/audit".to_string(), None),
    ] {
        let mut request = browser
            .client
            .request(method.clone(), format!("{}{path}", app.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 401, "{method} {path}");
    }
    // Even with the cookie sent by hand.
    let cookie = console_cookie(&app).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/customers/{id}/revoke-access", app.base))
        .header("cookie", &cookie)
        .json(&json!({"reason": "by console"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    // No page of the console takes a command.
    for path in [
        format!("/audit/customers/{id}"),
        "/audit".to_string(),
        "/audit/report".to_string(),
    ] {
        let answer = browser
            .client
            .post(format!("{}{path}", app.base))
            .form(&[("reason", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 405, "POST {path}");
    }
    assert_eq!(app.customer(&id).await["access"]["granted"], true);
    app.stop().await;
}

async fn the_console_tells_the_notice_story(db: Db) {
    let app = TestApp::spawn(db).await;
    let story = notice_story(&app).await;
    let id = &story.id;
    let browser = Browser::new(&app);
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");

    // Found by its current login email, in any case.
    let path = format!("/audit/customers/{id}");
    let page = browser
        .get("/audit?q=DANA%40Elsewhere.example")
        .await
        .expect(200, &path);
    page.has(r#"id="state-email">dana@elsewhere.example<"#)
        .has(r#"id="state-access">no access<"#);
    // The timeline, in order: registered, the grant with its setup link,
    // the password through the link, Option 1 (email + temporary password
    // + notice), the customer's own password change, Option 2 (request and
    // confirmation), Option 3 (revoke with its reason and request id, then
    // the free email change). The refusal is not there.
    let kinds: Vec<&str> = page
        .text
        .match_indices(r#"class="timeline-row" data-kind=""#)
        .map(|(at, m)| {
            let rest = &page.text[at + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        kinds,
        [
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
            "access_revoked",
            "email_changed",
        ],
        "{}",
        page.text
    );
    page.has("crm (API key, service)")
        .has("the customer")
        .has("contract ended")
        .has("req-revoke-0042")
        .has("dana@example.com → dana.new@example.org")
        .has("dana.new@example.org → dana@self.example")
        .has("dana@self.example → dana@elsewhere.example")
        .has("set by the customer through the setup link")
        .has("set manually by an administrator")
        .has("changed by the customer (self-service)")
        .has("with a password-setup link")
        .lacks("login has no password")
        .lacks("$argon2");

    // As of before the revoke: access, with the self-service email.
    let as_of = story
        .before_revoke
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let then = browser
        .get(&format!("{path}?as_of={}", urlencode(&as_of)))
        .await;
    assert_eq!(then.status, 200, "{}", then.text);
    then.has(r#"id="state-email">dana@self.example<"#)
        .has(r#"id="state-access">Customer Center access"#)
        .has(r#"id="state-as-of""#)
        .lacks("req-revoke-0042");
    // Filters: one kind; a bad time says so.
    let only = browser.get(&format!("{path}?kind=access_revoked")).await;
    assert_eq!(only.text.matches(r#"class="timeline-row""#).count(), 1);
    let bad = browser.get(&format!("{path}?from=yesterday")).await;
    assert_eq!(bad.status, 400);
    bad.has(r#"id="filter-error""#).has("is not a time");

    // The downloads, named after their filters.
    let csv = browser
        .client
        .get(format!(
            "{}/audit/export?customer_id={id}&kind=email_changed&format=csv",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let disposition = csv.headers()[CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"audit-trail_customer-{id}_kind-email_changed.csv\"")
    );
    let body = csv.text().await.unwrap();
    assert_eq!(body.lines().count(), 3, "{body}");
    assert!(body.contains("dana@elsewhere.example"), "{body}");
    let jsonl = browser
        .client
        .get(format!(
            "{}/audit/export?customer_id={id}&format=jsonl",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(jsonl.status(), 200);
    assert_eq!(jsonl.text().await.unwrap().lines().count(), 12);

    // The latest changes: the newest first, across customers.
    let other = app.register("zed@example.com").await;
    let home = browser.get("/audit").await.expect(200, "/audit");
    let first = home.text.find(&other[..8]).unwrap();
    let older = home.text.find(&id[..8]).unwrap();
    assert!(first < older, "the newest change comes first");

    // The access report: before the revoke Dana had access; now not.
    let report = browser
        .get(&format!("/audit/report?as_of={}", urlencode(&as_of)))
        .await;
    report.has("dana@self.example").has("1 customer had access");
    let now = browser.get("/audit/report").await;
    now.lacks("dana@").has("0 customers had access");
    let csv = browser
        .client
        .get(format!(
            "{}/audit/report.csv?as_of={}",
            app.base,
            urlencode(&as_of)
        ))
        .send()
        .await
        .unwrap();
    let disposition = csv.headers()[CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"access-report_as-of-"),
        "{disposition}"
    );
    let body = csv.text().await.unwrap();
    assert!(
        body.starts_with("as_of,customer_id,name,email,role,version"),
        "{body}"
    );
    assert!(body.contains("dana@self.example"), "{body}");

    // The report's pages and downloads: a bad or missing page says so.
    browser
        .get("/audit/report?page=x")
        .await
        .expect(400, "/audit/report?page=x")
        .has("whole number");
    browser
        .get("/audit/report?page=9")
        .await
        .expect(400, "/audit/report?page=9")
        .has("There is no page 9");
    let jsonl = browser
        .client
        .get(format!(
            "{}/audit/report.jsonl?as_of={}",
            app.base,
            urlencode(&as_of)
        ))
        .send()
        .await
        .unwrap();
    let body = jsonl.text().await.unwrap();
    let line: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(line["email"], "dana@self.example");

    // A filter keeps the exact instant of the state it filters.
    let filtered = browser
        .get(&format!(
            "{path}?as_of={}&kind=email_changed",
            urlencode(&as_of)
        ))
        .await;
    filtered.has(&format!(r#"name="as_of" value="{as_of}""#));
    assert_eq!(filtered.text.matches(r#"class="timeline-row""#).count(), 1);
    // Repeated or malformed parameters get a page that says so.
    browser
        .get(&format!("{path}?kind=a&kind=b"))
        .await
        .expect(400, &format!("{path}?kind=a&kind=b"))
        .has("This address is not valid");
    browser
        .get(&format!("{path}?from=2026-02-01&to=2026-01-01"))
        .await
        .has("must be before");

    // Unknown customers and malformed ids.
    browser
        .get("/audit/customers/not-a-uuid")
        .await
        .expect(404, "/audit/customers/not-a-uuid");
    browser
        .get("/audit?q=nobody%40example.com")
        .await
        .expect(200, "/audit?q=nobody%40example.com")
        .has(r#"id="no-match""#);
    app.stop().await;
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A forgotten customer's history keeps its rows with `[forgotten]` for
/// the personal fields; an email a spreadsheet would run as a formula is
/// text in the CSV downloads.
async fn forgotten_customers_and_spreadsheet_formulas(db: Db) {
    let app = TestApp::spawn(db).await;
    let gone = app.customer_with_password("gone@example.com").await;
    app.post(
        &format!("/v1/customers/{gone}/forget"),
        ADMIN,
        json!({"reason": "erasure request"}),
    )
    .await
    .expect(200);
    let formula = app.customer_with_password("=2+5@example.com").await;
    let browser = Browser::new(&app);
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    let page = browser.get(&format!("/audit/customers/{gone}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    page.has("[forgotten]")
        .has("Personal data erased")
        .lacks("gone@example.com");
    let csv = browser
        .client
        .get(format!(
            "{}/audit/export?customer_id={formula}&format=csv",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains(",'=2+5@example.com,"), "{csv}");
    let report = browser
        .client
        .get(format!("{}/audit/report.csv", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(report.contains(",'=2+5@example.com,"), "{report}");
    let jsonl = browser
        .client
        .get(format!(
            "{}/audit/export?customer_id={formula}&format=jsonl",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        jsonl.contains(r#""new_email":"=2+5@example.com""#),
        "JSON keeps values: {jsonl}"
    );
    app.stop().await;
}

/// The latest changes, newest first, 50 a page: following "Older changes"
/// visits every change once, in reverse order.
async fn the_latest_changes_page_backwards_without_gaps(db: Db) {
    let app = TestApp::spawn(db).await;
    for n in 0..40 {
        let id = app.register(&format!("many{n}@example.com")).await;
        app.command(&id, "grant-access", json!({"send_notification": true}))
            .await
            .expect(200);
    }
    let browser = Browser::new(&app);
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    let mut path = "/audit".to_string();
    let mut pages = 0;
    let mut times = Vec::new();
    loop {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        pages += 1;
        let rows = page.text.matches(r#"class="timeline-row""#).count();
        times.push(rows);
        match page.text.split(r#"id="next-page" href=""#).nth(1) {
            Some(rest) => {
                path = rest[..rest.find('"').unwrap()]
                    .replace("&amp;", "&")
                    .replace("&#x2f;", "/");
            }
            None => break,
        }
    }
    assert_eq!(times.iter().sum::<usize>(), 40 * 3, "{times:?}");
    assert_eq!(pages, 3, "{times:?}");
    // The API's audit trail, oldest first, is the same rows reversed.
    let audit = app.get("/v1/audit?limit=1000", AUDITOR).await.expect(200);
    assert_eq!(audit.body["items"].as_array().unwrap().len(), 120);
    app.stop().await;
}

async fn the_integrity_page_verifies_in_the_background(db: Db) {
    let app = TestApp::spawn(db).await;
    app.customer_with_password("ivy@example.com").await;
    let browser = Browser::new(&app);
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    // The digest shown is the API's.
    let digest = app.get("/v1/audit/digest", AUDITOR).await.expect(200);
    let page = browser.get("/audit/integrity").await;
    page.has(&format!(
        "{}:{}",
        digest.body["position"].as_str().unwrap(),
        digest.body["hash"].as_str().unwrap()
    ))
    .has("accessctl audit verify --digest");
    let started = browser
        .submit(&page, "/audit/integrity/verify", &[])
        .await
        .expect(200, "/audit/integrity?notice=started");
    started.has(r#"id="status""#);
    let mut outcome = String::new();
    for _ in 0..200 {
        let page = browser.get("/audit/integrity").await;
        if !page.text.contains(">running<") {
            outcome = page.text;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(outcome.contains(r#"outcome--intact">intact<"#), "{outcome}");
    assert!(outcome.contains("audit"), "who started it");
    app.stop().await;
}

/// Signs in with `key` from `client_ip` (behind the trusted proxy); the
/// status.
async fn sign_in_from(app: &TestApp, client_ip: &str, key: &str) -> (u16, String) {
    let browser = Browser::new(app);
    let page = browser.get("/audit/login").await;
    let answer = browser
        .client
        .post(format!("{}/audit/login", app.base))
        .header("x-forwarded-for", client_ip)
        .form(&[("api_key", key), ("csrf_token", &page.csrf())])
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Sign-ins are rate-limited per client address; wrong keys from one
/// address do not lock auditors elsewhere out (no lock per address that
/// anyone behind the same NAT could keep shut).
async fn console_sign_in_is_rate_limited_per_client_address(db: Db) {
    let app = TestApp::spawn_with(db, |c| {
        c.login_attempts_per_address = 3;
        c.trusted_proxies = "127.0.0.0/8, ::1/128".into();
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let key = format!("wrong-key-{n:02}-0123456789abcdef");
        statuses.push(sign_in_from(&app, "198.51.100.7", &key).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 429], "{statuses:?}");
    let (status, page) = sign_in_from(&app, "198.51.100.7", AUDITOR).await;
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many attempts"), "{page}");
    // Another address is not affected: the auditor there signs in.
    let (status, _) = sign_in_from(&app, "203.0.113.9", AUDITOR).await;
    assert_eq!(status, 200, "the sign-in lands on the console's home");
    app.stop().await;
}

/// A console session stops working when its key is withdrawn (the service
/// restarted without it): the page says so, the sign-in takes a current
/// key, and none of it is a customer event.
async fn withdrawing_a_key_stops_its_console_sessions(db: Db) {
    let app = TestApp::spawn(db).await;
    let browser = Browser::new(&app);
    sign_in(&browser, AUDITOR).await.expect(200, "/audit");
    let url = app.database_url();
    let app = app
        .restart_on_same_database(url, |c| {
            c.api_keys = Some(format!("ops:admin:{ADMIN},crm:service:{SERVICE}"));
        })
        .await;
    let browser = Browser {
        base: app.base.clone(),
        client: browser.client.clone(),
    };
    let refused = browser.get("/audit").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    refused.has("Your key is not known here");
    for path in ["/audit/report", "/audit/export?format=csv"] {
        assert_eq!(browser.get(path).await.status, 403, "{path}");
    }
    sign_in(&browser, AUDITOR)
        .await
        .expect(401, "/audit/login")
        .has("This API key is not known.");
    sign_in(&browser, ADMIN).await.expect(200, "/audit");
    let audit = app.get("/v1/audit", ADMIN).await.expect(200);
    assert_eq!(audit.body["items"].as_array().map(Vec::len), Some(0));
    app.stop().await;
}

/// Behind a load balancer: a session opened on one replica works on the
/// other, a check started on one is shown by the other, and signing out
/// on one ends the session everywhere.
async fn a_console_session_works_on_every_replica(db: Db) {
    let a = TestApp::spawn(db).await;
    let b = a.replica(|_| {}).await;
    let on_a = Browser::new(&a);
    sign_in(&on_a, AUDITOR).await.expect(200, "/audit");
    // The same cookie jar (cookies are per host, not per port).
    let on_b = Browser {
        base: b.base.clone(),
        client: on_a.client.clone(),
    };
    on_b.get("/audit").await.expect(200, "/audit");
    let page = on_a.get("/audit/integrity").await;
    on_a.submit(&page, "/audit/integrity/verify", &[])
        .await
        .expect(200, "/audit/integrity?notice=started");
    let mut shown = false;
    for _ in 0..100 {
        let page = on_b.get("/audit/integrity").await;
        if page.text.contains(r#"outcome--intact">intact<"#) {
            shown = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(shown, "replica B shows the check A ran");
    let page = on_b.get("/audit").await;
    on_b.submit(&page, "/audit/logout", &[])
        .await
        .expect(200, "/audit/login?notice=signed_out");
    on_a.get("/audit").await.expect(200, "/audit/login");
    b.stop().await;
    a.stop().await;
}

/// During a rolling change of the keys, a replica that does not know the
/// key refuses the page but does not end the session: the other replica
/// still takes it.
async fn a_replica_without_the_key_refuses_without_signing_out(db: Db) {
    let a = TestApp::spawn(db).await;
    let b = a
        .replica(|c| c.api_keys = Some(format!("ops:admin:{ADMIN},crm:service:{SERVICE}")))
        .await;
    let on_a = Browser::new(&a);
    sign_in(&on_a, AUDITOR).await.expect(200, "/audit");
    let on_b = Browser {
        base: b.base.clone(),
        client: on_a.client.clone(),
    };
    let refused = on_b.get("/audit").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    refused.has("Your key is not known here");
    assert!(
        refused.headers.get("set-cookie").is_none(),
        "the cookie is kept"
    );
    on_a.get("/audit").await.expect(200, "/audit");
    // The download of an unknown or malformed customer says so.
    on_a.get("/audit/export?customer_id=nope&format=csv")
        .await
        .expect(400, "/audit/export?customer_id=nope&format=csv")
        .has("is not a customer id");
    let unknown = uuid::Uuid::new_v4();
    let path = format!("/audit/export?customer_id={unknown}&format=csv");
    on_a.get(&path).await.expect(404, &path);
    b.stop().await;
    a.stop().await;
}

crate::on_both_stores!(
    only_auditor_and_admin_keys_sign_in,
    the_console_cookie_is_strict_and_lasts_eight_hours,
    console_forms_need_their_csrf_token,
    a_console_session_cannot_send_a_command,
    the_console_tells_the_notice_story,
    forgotten_customers_and_spreadsheet_formulas,
    the_latest_changes_page_backwards_without_gaps,
    the_integrity_page_verifies_in_the_background,
    console_sign_in_is_rate_limited_per_client_address,
    withdrawing_a_key_stops_its_console_sessions,
    a_console_session_works_on_every_replica,
    a_replica_without_the_key_refuses_without_signing_out,
);
