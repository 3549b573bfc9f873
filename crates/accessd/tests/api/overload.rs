//! A flood of password checks does not stall the service (issue 19): the
//! hasher takes `ACCESS_HASH_QUEUE` waiting requests for at most
//! `ACCESS_HASH_WAIT_MS`; beyond, a login is answered 429 and a command 503,
//! both at once and with `Retry-After`, while commands that hash nothing go
//! on as if nothing happened.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

const WAIT_MS: u64 = 300;
const FLOOD: usize = 24;

fn small_hash_queue(config: &mut accessd::Config) {
    config.hash_concurrency = 1;
    config.hash_queue = Some(2);
    config.hash_wait_ms = WAIT_MS;
    // The throttles would refuse some of the flood themselves: off, so
    // that every 429 here is the hasher's.
    config.login_attempts_per_account = 1_000_000;
    config.login_attempts_per_address = 1_000_000;
}

/// (status, Retry-After, code, seconds taken) of each answer.
type Answers = Vec<(u16, Option<String>, String, f64)>;

async fn flood(
    app: &TestApp,
    requests: Vec<(Method, String, Option<&'static str>, serde_json::Value)>,
) -> Answers {
    let calls = requests.into_iter().map(|(method, path, key, body)| {
        let client = app.client.clone();
        let url = format!("{}{path}", app.base);
        async move {
            let started = Instant::now();
            let mut request = client.request(method, url).json(&body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or("").to_string();
            (status, retry_after, code, started.elapsed().as_secs_f64())
        }
    });
    futures::future::join_all(calls).await
}

fn assert_refused_at_once(answers: &Answers, ok: u16, refused: u16, code: &str) {
    let admitted = answers.iter().filter(|a| a.0 == ok).count();
    let turned_away: Vec<_> = answers.iter().filter(|a| a.0 == refused).collect();
    assert_eq!(
        admitted + turned_away.len(),
        answers.len(),
        "only {ok} and {refused}: {answers:?}"
    );
    assert!(admitted >= 1, "some are admitted: {answers:?}");
    assert!(!turned_away.is_empty(), "a full queue refuses: {answers:?}");
    for (_, retry_after, c, _) in &turned_away {
        assert_eq!(c, code, "{answers:?}");
        let secs: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(secs >= 1, "{answers:?}");
    }
    // Refused requests waited at most the deadline (plus one hash and the
    // debug build's slack), never in an unbounded queue.
    let slowest_refusal = turned_away.iter().map(|a| a.3).fold(0.0, f64::max);
    assert!(
        slowest_refusal < (WAIT_MS as f64 / 1000.0) + 2.0,
        "refusals waited {slowest_refusal:.2} s: {answers:?}"
    );
}

async fn a_login_flood_is_answered_429_at_once_and_commands_go_on(db: Db) {
    let app = TestApp::spawn_with(db, small_hash_queue).await;
    let email = "flood@example.com";
    let id = app.customer_with_password(email).await;
    let other = app.register("bystander@example.com").await;

    let logins = (0..FLOOD)
        .map(|_| {
            (
                Method::POST,
                "/v1/self/sessions".to_string(),
                None,
                json!({"email": email, "password": PW}),
            )
        })
        .collect();
    let (answers, bystander) = tokio::join!(flood(&app, logins), async {
        // A command that hashes nothing, during the flood.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let answer = app
            .command(
                &other,
                "change-email",
                json!({"email": "moved@example.com"}),
            )
            .await;
        (answer.status, started.elapsed())
    });
    assert_refused_at_once(&answers, 201, 429, "too_many_attempts");
    assert_eq!(bystander.0, 200, "a non-hashing command is not refused");

    // A refused login is not counted as a failure: the customer still logs
    // in, and the hash queue is free again.
    app.login(email, PW).await.expect(201);
    let _ = id;
}

async fn a_password_flood_is_answered_503_at_once(db: Db) {
    let app = TestApp::spawn_with(db, small_hash_queue).await;
    let mut requests = Vec::new();
    for n in 0..FLOOD {
        let id = app.register(&format!("p{n}@example.com")).await;
        requests.push((
            Method::POST,
            format!("/v1/customers/{id}/grant-access"),
            Some(SERVICE),
            json!({"password": PW, "password_confirm": PW}),
        ));
    }
    let answers = flood(&app, requests).await;
    assert_refused_at_once(&answers, 200, 503, "unavailable");
    // Nothing half-written: each customer has a password exactly when its
    // command was acknowledged.
    let with_password = app
        .get("/v1/customers?limit=100", AUDITOR)
        .await
        .expect(200)
        .body["customers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["access"]["password_set"] == true)
        .count();
    let acknowledged = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(with_password, acknowledged, "{answers:?}");
}

crate::on_both_stores!(
    a_login_flood_is_answered_429_at_once_and_commands_go_on,
    a_password_flood_is_answered_503_at_once,
);
