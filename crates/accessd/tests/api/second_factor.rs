//! Issue 22: the TOTP second factor through the API. The codes are
//! computed by an independent implementation (Python's standard library
//! `hmac`, RFC 6238), not by the service's crate.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// The TOTP code of `secret` (base32) for the time step `offset` steps from
/// now, by Python's `hmac` and `base64` (RFC 4226 dynamic truncation).
pub fn python_totp(secret: &str, offset: i64) -> String {
    let script = format!(
        "import base64, hmac, hashlib, struct, time\n\
         key = base64.b32decode({secret:?} + '=' * (-len({secret:?}) % 8))\n\
         step = int(time.time()) // 30 + ({offset})\n\
         mac = hmac.new(key, struct.pack('>Q', step), hashlib.sha1).digest()\n\
         o = mac[-1] & 15\n\
         n = (struct.unpack('>I', mac[o:o + 4])[0] & 0x7fffffff) % 1000000\n\
         print('%06d' % n)\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A code of `secret` that is not `used`: the next step's (one step of
/// tolerance), so that a test never waits for the clock.
fn fresh_code(secret: &str, used: &str) -> String {
    let next = python_totp(secret, 1);
    assert_ne!(next, used, "two steps with one code: run again");
    next
}

async fn self_call(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> Answer {
    app.call(method, path, Some(token), Some(body)).await
}

/// A customer with a password and an enrolled app: (id, secret, the code
/// that confirmed it, the recovery codes).
async fn enrolled(app: &TestApp, email: &str) -> (String, String, String, Vec<String>) {
    let id = app.customer_with_password(email).await;
    let token = app.session(email, PW).await;
    let begun = app
        .call(
            Method::POST,
            "/v1/self/second-factor/totp",
            Some(&token),
            None,
        )
        .await
        .expect(201);
    let secret = begun.body["secret"].as_str().unwrap().to_string();
    let uri = begun.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    let code = python_totp(&secret, 0);
    let confirmed = self_call(
        app,
        Method::POST,
        "/v1/self/second-factor/totp/confirm",
        &token,
        json!({"code": code}),
    )
    .await
    .expect(200);
    let codes: Vec<String> = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{}", confirmed.body);
    (id, secret, code, codes)
}

/// Logs in with the password: the session that waits for the code.
async fn waiting_session(app: &TestApp, email: &str) -> String {
    let answer = app.login(email, PW).await.expect(201);
    assert_eq!(
        answer.body["second_factor_required"], true,
        "{}",
        answer.body
    );
    answer.body["token"].as_str().unwrap().to_string()
}

async fn enroll_then_log_in_with_a_code_or_a_recovery_code(db: Db) {
    let app = TestApp::spawn(db).await;
    let email = "totp@example.com";
    let id = app.customer_with_password(email).await;
    let token = app.session(email, PW).await;
    let begun = app
        .call(
            Method::POST,
            "/v1/self/second-factor/totp",
            Some(&token),
            None,
        )
        .await
        .expect(201);
    let secret = begun.body["secret"].as_str().unwrap().to_string();
    // A wrong code does not confirm.
    self_call(
        &app,
        Method::POST,
        "/v1/self/second-factor/totp/confirm",
        &token,
        json!({"code": "000000"}),
    )
    .await
    .expect_error(403, "invalid_code");
    let code = python_totp(&secret, 0);
    let confirmed = self_call(
        &app,
        Method::POST,
        "/v1/self/second-factor/totp/confirm",
        &token,
        json!({"code": code}),
    )
    .await
    .expect(200);
    let recovery: Vec<String> = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    // Enrolled once: a second enrollment is refused.
    app.call(
        Method::POST,
        "/v1/self/second-factor/totp",
        Some(&token),
        None,
    )
    .await
    .expect_error(409, "second_factor_already_enrolled");

    // The password alone now opens a session that only waits for a code.
    let waiting = waiting_session(&app, email).await;
    app.get("/v1/self", &waiting)
        .await
        .expect_error(403, "second_factor_required");
    self_call(
        &app,
        Method::POST,
        "/v1/self/change-password",
        &waiting,
        json!({"current_password": PW, "new_password": PW2, "new_password_confirm": PW2}),
    )
    .await
    .expect_error(403, "second_factor_required");
    // The code that confirmed the app was accepted once: never again.
    self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &waiting,
        json!({"code": code}),
    )
    .await
    .expect_error(403, "invalid_code");
    // A fresh code: a new, full session; the waiting one has ended.
    let full = self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &waiting,
        json!({"code": fresh_code(&secret, &code)}),
    )
    .await
    .expect(201);
    assert_eq!(full.body["second_factor_required"], false);
    let full = full.body["token"].as_str().unwrap().to_string();
    app.get("/v1/self", &full).await.expect(200);
    app.get("/v1/self", &waiting)
        .await
        .expect_error(401, "unauthenticated");
    // A full session has nothing to verify.
    self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &full,
        json!({"code": "123456"}),
    )
    .await
    .expect_error(409, "no_second_factor_pending");

    // A recovery code works once.
    let waiting = waiting_session(&app, email).await;
    self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &waiting,
        json!({"code": recovery[0]}),
    )
    .await
    .expect(201);
    let waiting = waiting_session(&app, email).await;
    self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &waiting,
        json!({"code": recovery[0]}),
    )
    .await
    .expect_error(403, "invalid_code");

    // The history says what happened, never the secret or a code.
    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200)
        .body;
    let types: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for expected in [
        "TotpEnrollmentBegun",
        "TotpEnrolled",
        "RecoveryCodesIssued",
        "TotpCodeAccepted",
        "RecoveryCodeUsed",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    let audit = app
        .get(&format!("/v1/customers/{id}/audit"), AUDITOR)
        .await
        .expect(200)
        .body;
    for shown in [events.to_string(), audit.to_string()] {
        assert!(!shown.contains(&secret), "the secret is shown: {shown}");
        assert!(!shown.contains(&recovery[1]), "a recovery code is shown");
    }
    app.stop().await;
}

async fn wrong_codes_count_against_the_login_lock(db: Db) {
    let app = TestApp::spawn(db).await;
    let email = "locked@example.com";
    let (_, secret, used, _) = enrolled(&app, email).await;
    // Four wrong codes, then the right password again: it does not forget
    // them (only a right code does), so one more wrong code is allowed.
    let first = waiting_session(&app, email).await;
    for _ in 0..4 {
        self_call(
            &app,
            Method::POST,
            "/v1/self/sessions/verify",
            &first,
            json!({"code": "000000"}),
        )
        .await
        .expect_error(403, "invalid_code");
    }
    let waiting = waiting_session(&app, email).await;
    let mut refused = None;
    for attempt in 5..=10 {
        let answer = self_call(
            &app,
            Method::POST,
            "/v1/self/sessions/verify",
            &waiting,
            json!({"code": "000000"}),
        )
        .await;
        if answer.status == 429 {
            assert_eq!(answer.code(), "too_many_attempts");
            assert!(answer.headers.contains_key("retry-after"));
            refused = Some(attempt);
            break;
        }
        answer.expect_error(403, "invalid_code");
    }
    assert_eq!(
        refused,
        Some(6),
        "5 wrong codes are allowed, the 6th waits, a right password in between or not"
    );
    // The lock is the login's: the password waits too.
    app.login(email, PW)
        .await
        .expect_error(429, "too_many_attempts");
    // And a right code waits as well (it is not checked).
    self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &waiting,
        json!({"code": fresh_code(&secret, &used)}),
    )
    .await
    .expect_error(429, "too_many_attempts");
    app.stop().await;
}

async fn an_admin_resets_the_second_factor_and_the_customer_is_told(db: Db) {
    let app = TestApp::spawn(db).await;
    let email = "reset@example.com";
    let (id, _, _, _) = enrolled(&app, email).await;
    let waiting = waiting_session(&app, email).await;
    let path = format!("/v1/customers/{id}/reset-second-factor");
    app.post(&path, SERVICE, json!({"reason": "lost phone"}))
        .await
        .expect_error(403, "forbidden");
    app.post(&path, ADMIN, json!({"reason": "lost phone"}))
        .await
        .expect(200);
    // Nothing left to reset.
    app.post(&path, ADMIN, json!({}))
        .await
        .expect_error(422, "no_second_factor");
    // Every session ended; the password alone logs in again.
    app.get("/v1/self", &waiting)
        .await
        .expect_error(401, "unauthenticated");
    let answer = app.login(email, PW).await.expect(201);
    assert_eq!(answer.body["second_factor_required"], false);
    // The notice went to the login email (after the setup link's mail
    // and the "turned on" notice).
    let subjects = mail_subjects(&app, email, 3).await;
    assert!(
        subjects[2].contains("two-step verification was reset"),
        "{subjects:?}"
    );
    // The audit trail shows who reset it and why.
    let audit = app
        .get(&format!("/v1/customers/{id}/audit"), AUDITOR)
        .await
        .expect(200)
        .body
        .to_string();
    assert!(audit.contains("second_factor_reset"), "{audit}");
    assert!(audit.contains("lost phone"), "{audit}");
    app.stop().await;
}

async fn with_the_policy_required_a_customer_enrolls_before_anything_else(db: Db) {
    let app = TestApp::spawn_with(db, |c| {
        c.second_factor = accessd::config::SecondFactorPolicy::Required;
    })
    .await;
    let email = "policy@example.com";
    app.customer_with_password(email).await;
    let token = app.session(email, PW).await;
    app.get("/v1/self", &token)
        .await
        .expect_error(403, "second_factor_enrollment_required");
    let begun = app
        .call(
            Method::POST,
            "/v1/self/second-factor/totp",
            Some(&token),
            None,
        )
        .await
        .expect(201);
    let secret = begun.body["secret"].as_str().unwrap().to_string();
    self_call(
        &app,
        Method::POST,
        "/v1/self/second-factor/totp/confirm",
        &token,
        json!({"code": python_totp(&secret, 0)}),
    )
    .await
    .expect(200);
    app.get("/v1/self", &token).await.expect(200);
    app.stop().await;
}

async fn remove_needs_the_password_and_a_code(db: Db) {
    let app = TestApp::spawn(db).await;
    let email = "remove@example.com";
    let (_, secret, used, recovery) = enrolled(&app, email).await;
    let waiting = waiting_session(&app, email).await;
    let full = self_call(
        &app,
        Method::POST,
        "/v1/self/sessions/verify",
        &waiting,
        json!({"code": recovery[0]}),
    )
    .await
    .expect(201)
    .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    // New recovery codes: the earlier ones stop working.
    let fresh = self_call(
        &app,
        Method::POST,
        "/v1/self/second-factor/recovery-codes",
        &full,
        json!({"code": recovery[1]}),
    )
    .await
    .expect(200);
    let renewed: Vec<String> = fresh.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(renewed.len(), 10);
    self_call(
        &app,
        Method::DELETE,
        "/v1/self/second-factor/totp",
        &full,
        json!({"current_password": PW3, "code": renewed[0]}),
    )
    .await
    .expect_error(403, "wrong_password");
    self_call(
        &app,
        Method::DELETE,
        "/v1/self/second-factor/totp",
        &full,
        json!({"current_password": PW, "code": recovery[2]}),
    )
    .await
    .expect_error(403, "invalid_code");
    self_call(
        &app,
        Method::DELETE,
        "/v1/self/second-factor/totp",
        &full,
        json!({"current_password": PW, "code": fresh_code(&secret, &used)}),
    )
    .await
    .expect(200);
    let answer = app.login(email, PW).await.expect(201);
    assert_eq!(answer.body["second_factor_required"], false);
    // The customer was told both times, at the login email.
    let subjects = mail_subjects(&app, email, 3).await;
    assert!(
        subjects[1].ends_with("two-step verification was turned on"),
        "{subjects:?}"
    );
    assert!(
        subjects[2].ends_with("two-step verification was turned off"),
        "{subjects:?}"
    );
    app.stop().await;
}

/// The subjects of the first `count` mails to `to`, in order.
async fn mail_subjects(app: &TestApp, to: &str, count: usize) -> Vec<String> {
    app.wait_for_mails_to(to, count)
        .await
        .iter()
        .map(|m| m.header("subject").unwrap_or_default().to_string())
        .collect()
}

/// Two right codes at once on one waiting session (the app's and a
/// recovery code): one full session, not two.
async fn one_waiting_session_gives_one_full_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let email = "race@example.com";
    let (_, secret, used, recovery) = enrolled(&app, email).await;
    let waiting = waiting_session(&app, email).await;
    let code = fresh_code(&secret, &used);
    let verify = |code: String| {
        let (app, waiting) = (&app, waiting.clone());
        async move {
            self_call(
                app,
                Method::POST,
                "/v1/self/sessions/verify",
                &waiting,
                json!({"code": code}),
            )
            .await
            .status
            .as_u16()
        }
    };
    let (a, b) = tokio::join!(verify(code), verify(recovery[0].clone()));
    let mut statuses = [a, b];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 401]);
    app.stop().await;
}

crate::on_both_stores!(
    one_waiting_session_gives_one_full_session,
    enroll_then_log_in_with_a_code_or_a_recovery_code,
    wrong_codes_count_against_the_login_lock,
    an_admin_resets_the_second_factor_and_the_customer_is_told,
    with_the_policy_required_a_customer_enrolls_before_anything_else,
    remove_needs_the_password_and_a_code
);
