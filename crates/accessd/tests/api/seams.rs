//! Promises that held in the suite but broke when pushed from outside
//! (issue 14): behind a proxy, under parallel guessing over two replicas,
//! with retries of one idempotency key.

use futures::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_stores;

/// A login attempt for an unknown email (no account lock involved) from a
/// client that a proxy in front names in `X-Forwarded-For`.
async fn login_via_proxy(app: &TestApp, n: usize, forwarded_for: &str) -> u16 {
    app.call_with(
        Method::POST,
        "/v1/self/sessions",
        None,
        Some(json!({"email": format!("nobody{n}@example.com"), "password": PW})),
        &[("x-forwarded-for", forwarded_for)],
    )
    .await
    .status
    .as_u16()
}

/// Behind a trusted proxy every client has its own per-address limit: one
/// client using up its quota does not make the others answer 429.
async fn clients_behind_a_trusted_proxy_have_separate_limits(db: Db) {
    let app = TestApp::spawn_with(db, |c| {
        c.login_attempts_per_address = 3;
        c.trusted_proxies = "127.0.0.0/8, ::1/128".into();
    })
    .await;
    for n in 0..3 {
        // The client's own (spoofed) entry comes first; the proxy appends
        // the address it saw: the right-most untrusted one counts.
        assert_eq!(
            login_via_proxy(&app, n, "198.51.100.9, 203.0.113.1").await,
            401
        );
    }
    assert_eq!(login_via_proxy(&app, 3, "203.0.113.1").await, 429);
    // Another client behind the same proxy still has its whole quota.
    assert_eq!(login_via_proxy(&app, 4, "203.0.113.2").await, 401);
    // A `Forwarded` header the proxy passed through is the client's word:
    // it does not override what the proxy appended to X-Forwarded-For.
    let forwarded = app
        .call_with(
            Method::POST,
            "/v1/self/sessions",
            None,
            Some(json!({"email": "nobody9@example.com", "password": PW})),
            &[
                ("forwarded", "for=198.51.100.200"),
                ("x-forwarded-for", "203.0.113.1"),
            ],
        )
        .await;
    assert_eq!(forwarded.status.as_u16(), 429);
    // IPv6 clients are limited per /64: a neighbour in the same /64 shares
    // the quota, another /64 does not.
    for n in 10..13 {
        assert_eq!(login_via_proxy(&app, n, "2001:db8:1:2::1").await, 401);
    }
    assert_eq!(login_via_proxy(&app, 13, "2001:db8:1:2::ffff").await, 429);
    assert_eq!(login_via_proxy(&app, 14, "2001:db8:1:3::1").await, 401);
    app.stop().await;
}

/// Without trusted proxies, `X-Forwarded-For` is the client's own word and
/// is ignored: a new spoofed address per request does not escape the limit.
async fn a_spoofed_forwarded_for_does_not_escape_the_limit(db: Db) {
    let app = TestApp::spawn_with(db, |c| c.login_attempts_per_address = 3).await;
    for n in 0..3 {
        let spoofed = format!("203.0.113.{n}");
        assert_eq!(login_via_proxy(&app, n, &spoofed).await, 401);
    }
    assert_eq!(login_via_proxy(&app, 3, "203.0.113.77").await, 429);
    assert_eq!(
        login_via_proxy(&app, 4, "for=\"[2001:db8::1]\"").await,
        429,
        "garbage in the header changes nothing"
    );
    app.stop().await;
}

/// Counts answers: (401 invalid_credentials, 429 too_many_attempts).
fn tally(statuses: &[u16]) -> (usize, usize) {
    for s in statuses {
        assert!(*s == 401 || *s == 429, "unexpected status {s}");
    }
    (
        statuses.iter().filter(|s| **s == 401).count(),
        statuses.iter().filter(|s| **s == 429).count(),
    )
}

/// Thirty parallel wrong passwords for one account, spread over two
/// replicas: the soft lock is in the database and an attempt is counted
/// before its hash is checked, so at most the allowance (+1 in flight)
/// reaches argon2.
async fn the_soft_lock_holds_under_parallel_guessing_across_replicas(db: Db) {
    let tune = |c: &mut accessd::Config| {
        c.login_attempts_per_account = 3;
        c.login_attempts_per_address = 1000;
    };
    let a = TestApp::spawn_with(db, tune).await;
    let b = a.replica(tune).await;
    a.customer_with_password("guessed@example.com").await;
    let attempts = (0..30).map(|n| {
        let app = if n % 2 == 0 { &a } else { &b };
        async move { app.login("guessed@example.com", PW2).await.status.as_u16() }
    });
    let statuses = join_all(attempts).await;
    let (checked, refused) = tally(&statuses);
    assert!(
        checked <= 4,
        "{checked} wrong passwords reached argon2 ({refused} refused)"
    );
    b.stop().await;
    a.stop().await;
}

/// Ten sequential wrong passwords, alternating between two replicas: the
/// second replica sees the failures counted by the first.
async fn the_soft_lock_is_shared_by_replicas(db: Db) {
    let tune = |c: &mut accessd::Config| {
        c.login_attempts_per_account = 3;
        c.login_attempts_per_address = 1000;
    };
    let a = TestApp::spawn_with(db, tune).await;
    let b = a.replica(tune).await;
    a.customer_with_password("alternating@example.com").await;
    let mut statuses = Vec::new();
    for n in 0..10 {
        let app = if n % 2 == 0 { &a } else { &b };
        statuses.push(
            app.login("alternating@example.com", PW2)
                .await
                .status
                .as_u16(),
        );
    }
    let (checked, _) = tally(&statuses);
    assert!(
        checked <= 4,
        "{checked} wrong passwords checked: {statuses:?}"
    );
    // Never a permanent lock-out: the right password works once the wait
    // is over, and resets the count.
    let wait: u64 = b
        .login("alternating@example.com", PW)
        .await
        .expect_error(429, "too_many_attempts")
        .headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait));
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    a.login("alternating@example.com", PW).await.expect(201);
    b.login("alternating@example.com", PW2)
        .await
        .expect_error(401, "invalid_credentials");
    b.stop().await;
    a.stop().await;
}

/// Eight parallel requests with one key for a command that hashes a
/// password (so they overlap): one effect, every answer the same 2xx with
/// the same body and ETag, no domain refusal.
async fn one_idempotency_key_in_parallel_has_one_effect_and_one_answer(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("parallel@example.com").await;
    let answers = grants_with_one_key(&[&app], &id).await;
    same_answers_one_grant(&app, &id, &answers).await;
    app.stop().await;
}

/// The same over two replicas: the key is unique in the database, and a
/// request refused because the other replica's request took effect
/// answers that request's stored response.
async fn one_idempotency_key_over_two_replicas_has_one_effect_and_one_answer(db: Db) {
    let app = TestApp::spawn(db).await;
    let other = app.replica(|_| {}).await;
    let id = app.register("parallel2@example.com").await;
    let answers = grants_with_one_key(&[&app, &other], &id).await;
    same_answers_one_grant(&app, &id, &answers).await;
    other.stop().await;
    app.stop().await;
}

/// Eight grants with a password and one idempotency key at once, spread
/// over `replicas`.
async fn grants_with_one_key(replicas: &[&TestApp], id: &str) -> Vec<Answer> {
    let path = format!("/v1/customers/{id}/grant-access");
    let body = json!({"password": PW2, "password_confirm": PW2});
    let calls = (0..8).map(|n| {
        replicas[n % replicas.len()].call_with(
            Method::POST,
            &path,
            Some(SERVICE),
            Some(body.clone()),
            &[("idempotency-key", "grant-once")],
        )
    });
    join_all(calls).await
}

async fn same_answers_one_grant(app: &TestApp, id: &str, answers: &[Answer]) {
    let first = &answers[0];
    for answer in answers {
        assert_eq!(answer.status.as_u16(), 200, "answer: {}", answer.body);
        assert_eq!(answer.body, first.body);
        assert_eq!(answer.headers.get("etag"), first.headers.get("etag"));
        assert!(answer.headers.get("etag").is_some());
    }
    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let granted = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "AccessGranted")
        .count();
    assert_eq!(granted, 1, "events: {}", events.body);
}

/// The same for a registration (which refuses a second customer with the
/// same id): one customer, one answer.
async fn parallel_registrations_with_one_key_create_one_customer(db: Db) {
    let app = TestApp::spawn(db).await;
    let body = json!({"email": "once@example.com", "name": "Once"});
    let calls = (0..8).map(|_| {
        app.call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(body.clone()),
            &[("idempotency-key", "register-once")],
        )
    });
    let answers = join_all(calls).await;
    for answer in &answers {
        assert_eq!(answer.status.as_u16(), 201, "answer: {}", answer.body);
        assert_eq!(answer.body, answers[0].body);
        assert_eq!(answer.headers.get("etag"), answers[0].headers.get("etag"));
    }
    let found = app
        .get("/v1/customers?email=once@example.com", SERVICE)
        .await
        .expect(200);
    assert_eq!(found.body["customers"].as_array().unwrap().len(), 1);
    app.stop().await;
}

/// A replay of the self-service email change answers exactly what the
/// first answer said: 202, the notice's body, the ETag.
async fn a_replay_answers_exactly_the_original_response(db: Db) {
    let app = TestApp::spawn(db).await;
    app.customer_with_password("replay@example.com").await;
    let session = app.session("replay@example.com", PW).await;
    let body = json!({
        "current_password": PW,
        "new_email": "replay.new@example.com",
        "new_email_confirm": "replay.new@example.com",
    });
    let send = || {
        app.call_with(
            Method::POST,
            "/v1/self/change-email",
            Some(&session),
            Some(body.clone()),
            &[("idempotency-key", "move-1")],
        )
    };
    let first = send().await.expect(202);
    let again = send().await.expect(202);
    assert_eq!(again.body, first.body);
    assert_eq!(
        first.body["message"], "Validation email sent successfully.",
        "{}",
        first.body
    );
    assert!(
        first.headers.get("etag").is_some(),
        "the first answer has an ETag"
    );
    assert_eq!(again.headers.get("etag"), first.headers.get("etag"));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    app.stop().await;
}

on_both_stores!(
    clients_behind_a_trusted_proxy_have_separate_limits,
    a_spoofed_forwarded_for_does_not_escape_the_limit,
    the_soft_lock_holds_under_parallel_guessing_across_replicas,
    the_soft_lock_is_shared_by_replicas,
    one_idempotency_key_in_parallel_has_one_effect_and_one_answer,
    one_idempotency_key_over_two_replicas_has_one_effect_and_one_answer,
    parallel_registrations_with_one_key_create_one_customer,
    a_replay_answers_exactly_the_original_response,
);
