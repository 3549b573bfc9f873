//! The protocol: error codes, idempotency, If-Match, request ids, limits,
//! reads, operations endpoints.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn every_error_code_of_the_contract(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("err@example.com").await;

    // 400 malformed_request: bad JSON, unknown field, a path id that is no UUID.
    app.call_with(
        Method::POST,
        "/v1/customers",
        Some(SERVICE),
        None,
        &[("content-type", "application/json")],
    )
    .await;
    let raw = app
        .client
        .post(format!("{}/v1/customers", app.base))
        .bearer_auth(SERVICE)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_request");
    let typo = app
        .command(
            &id,
            "set-password",
            json!({"pasword": PW, "password_confirm": PW}),
        )
        .await
        .expect_error(400, "malformed_request");
    assert!(typo.message().contains("pasword"), "{}", typo.message());
    app.get("/v1/customers/not-a-uuid", SERVICE)
        .await
        .expect_error(400, "malformed_request");
    // A value of the wrong type is named without being echoed.
    let wrong = app
        .command(
            &id,
            "grant-access",
            json!({"send_notification": "hunter2-secret"}),
        )
        .await
        .expect_error(400, "malformed_request");
    assert!(!wrong.message().contains("hunter2"), "{}", wrong.message());

    // 415: not JSON.
    let plain = app
        .client
        .post(format!("{}/v1/customers", app.base))
        .bearer_auth(SERVICE)
        .header("content-type", "text/plain")
        .body("email=x")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);

    // 413 payload_too_large.
    let huge = json!({"email": "big@example.com", "name": "x".repeat(70 * 1024)});
    app.post("/v1/customers", SERVICE, huge)
        .await
        .expect_error(413, "payload_too_large");

    // 404.
    let nobody = uuid::Uuid::new_v4();
    app.get(&format!("/v1/customers/{nobody}"), SERVICE)
        .await
        .expect_error(404, "customer_not_found");
    app.command(&nobody.to_string(), "send-access-notification", json!({}))
        .await
        .expect_error(404, "customer_not_found");
    app.get("/v1/nothing-here", SERVICE)
        .await
        .expect_error(404, "not_found");

    // 409 customer_exists, email_in_use.
    app.post(
        "/v1/customers",
        SERVICE,
        json!({"email": "dup@example.com", "customer_id": id}),
    )
    .await
    .expect_error(409, "customer_exists");
    app.command(
        &id,
        "grant-access",
        json!({"password": PW, "password_confirm": PW}),
    )
    .await
    .expect(200);
    let other = app.register("ERR@example.com").await;
    app.command(&other, "grant-access", json!({"send_notification": true}))
        .await
        .expect_error(409, "email_in_use");

    // 422s.
    app.post("/v1/customers", SERVICE, json!({"email": "not an email"}))
        .await
        .expect_error(422, "invalid_email");
    let weak = app
        .command(
            &id,
            "set-password",
            json!({"password": "password123", "password_confirm": "password123"}),
        )
        .await
        .expect_error(422, "weak_password");
    assert!(!weak.message().contains("password123"));
    app.command(
        &id,
        "set-password",
        json!({"password": PW2, "password_confirm": PW3}),
    )
    .await
    .expect_error(422, "password_mismatch");
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect_error(422, "access_already_granted");
    app.command(&other, "revoke-access", json!({}))
        .await
        .expect_error(422, "no_access");
    app.call(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": "junk", "password": PW, "password_confirm": PW})),
    )
    .await
    .expect_error(422, "invalid_token");

    // 401 invalid_credentials: same answer for a wrong password and an
    // unknown email.
    let wrong = app
        .login("err@example.com", PW2)
        .await
        .expect_error(401, "invalid_credentials");
    let unknown = app
        .login("nobody@example.com", PW2)
        .await
        .expect_error(401, "invalid_credentials");
    assert_eq!(wrong.body, unknown.body);
    app.stop().await;
}

async fn password_checks_are_throttled(db: Db) {
    let app = TestApp::spawn_with(db, |c| {
        c.login_attempts_per_account = 3;
        c.login_attempts_per_address = 100;
    })
    .await;
    app.customer_with_password("slow@example.com").await;
    for _ in 0..3 {
        app.login("slow@example.com", PW2)
            .await
            .expect_error(401, "invalid_credentials");
    }
    let limited = app
        .login("slow@example.com", PW)
        .await
        .expect_error(429, "too_many_attempts");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Another account is not affected.
    app.login("other@example.com", PW)
        .await
        .expect_error(401, "invalid_credentials");
    app.stop().await;
}

async fn idempotent_retries(db: Db) {
    let app = TestApp::spawn(db).await;
    let body = json!({"email": "idem@example.com"});
    let first = app
        .call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await
        .expect(201);
    let again = app
        .call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await
        .expect(201);
    assert_eq!(first.body, again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let id = first.body["customer_id"].as_str().unwrap();
    let found = app
        .get("/v1/customers?email=idem@example.com", SERVICE)
        .await
        .expect(200);
    assert_eq!(
        found.body["customers"].as_array().unwrap().len(),
        1,
        "one customer, not two"
    );

    // Same key, different body: refused.
    app.call_with(
        Method::POST,
        "/v1/customers",
        Some(SERVICE),
        Some(json!({"email": "other@example.com"})),
        &[("idempotency-key", "k-1")],
    )
    .await
    .expect_error(422, "idempotency_key_reused");
    // Keys are per caller: the admin's k-1 is another key.
    app.call_with(
        Method::POST,
        "/v1/customers",
        Some(ADMIN),
        Some(json!({"email": "admin@example.com"})),
        &[("idempotency-key", "k-1")],
    )
    .await
    .expect(201);

    // A retried command writes its events once.
    let path = format!("/v1/customers/{id}/grant-access");
    let grant = json!({"send_notification": true});
    let headers = [("idempotency-key", "g-1")];
    let a = app
        .call_with(
            Method::POST,
            &path,
            Some(SERVICE),
            Some(grant.clone()),
            &headers,
        )
        .await
        .expect(200);
    let b = app
        .call_with(Method::POST, &path, Some(SERVICE), Some(grant), &headers)
        .await
        .expect(200);
    assert_eq!(a.body, b.body);
    assert_eq!(app.customer(id).await["version"], 3);
    assert_eq!(
        app.wait_for_mails_to("idem@example.com", 1).await.len(),
        1,
        "one notification"
    );
    app.stop().await;
}

async fn if_match_and_etags(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("etag@example.com").await;
    let read = app
        .get(&format!("/v1/customers/{id}"), SERVICE)
        .await
        .expect(200);
    assert_eq!(read.headers["etag"], "\"1\"");
    let path = format!("/v1/customers/{id}/grant-access");
    let stale = app
        .call_with(
            Method::POST,
            &path,
            Some(SERVICE),
            Some(json!({"send_notification": true})),
            &[("if-match", "\"0\"")],
        )
        .await
        .expect_error(412, "version_mismatch");
    assert!(stale.message().contains("version 1"), "{}", stale.message());
    let ok = app
        .call_with(
            Method::POST,
            &path,
            Some(SERVICE),
            Some(json!({"send_notification": true})),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(200);
    assert_eq!(ok.headers["etag"], "\"3\"");
    app.call_with(
        Method::POST,
        &path,
        Some(SERVICE),
        Some(json!({})),
        &[("if-match", "three")],
    )
    .await
    .expect_error(400, "malformed_request");
    app.stop().await;
}

async fn concurrent_commands_are_all_applied(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("busy@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let mut statuses = Vec::new();
    let calls = (0..6).map(|_| app.command(&id, "send-access-notification", json!({})));
    for answer in futures::future::join_all(calls).await {
        statuses.push(answer.status.as_u16());
        assert!(
            answer.status == 200 || answer.code() == "concurrent_modification",
            "{}",
            answer.body
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    // Read-your-writes: every acknowledged command is visible.
    assert_eq!(app.customer(&id).await["version"], 3 + ok);
    app.stop().await;
}

async fn reads_events_and_lookup(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("Reader@Example.com").await;
    let view = app.customer(&id).await;
    assert_eq!(view["customer_id"], id);
    assert_eq!(view["name"], "Ann Smith");
    assert_eq!(view["email"], "Reader@Example.com");
    assert_eq!(view["access"]["granted"], true);
    assert_eq!(view["access"]["role"], "customer_center");
    assert_eq!(view["access"]["password_set"], true);
    assert_eq!(view["access"]["setup_link_pending"], false);
    assert!(view["updated_at"].is_string());

    let found = app
        .get("/v1/customers?email=reader@example.COM", AUDITOR)
        .await
        .expect(200);
    assert_eq!(found.body["customers"][0]["customer_id"], id);
    app.get("/v1/customers?email=nope", AUDITOR)
        .await
        .expect_error(422, "invalid_email");
    // Without `email`, the list (one customer here).
    let list = app.get("/v1/customers", AUDITOR).await.expect(200);
    assert_eq!(list.body["customers"][0]["customer_id"], id);
    assert!(list.body["next_cursor"].is_null());

    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let text = events.body.to_string();
    assert!(
        !text.contains("password_hash")
            && !text.contains("token_digest")
            && !text.contains("argon2"),
        "{text}"
    );
    let types: Vec<_> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "CustomerRegistered",
            "AccessGranted",
            "AccessNotificationSent",
            "PasswordSetupCompleted"
        ]
    );
    assert_eq!(
        events.body["events"][0]["metadata"]["request_id"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    app.stop().await;
}

async fn request_ids_operations_and_docs(db: Db) {
    let app = TestApp::spawn(db).await;
    let answer = app
        .call_with(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "trace-me-42")],
        )
        .await
        .expect(200);
    assert_eq!(answer.headers["x-request-id"], "trace-me-42");
    let generated = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(generated.headers["x-request-id"].len(), 36);
    app.call(Method::GET, "/readyz", None, None)
        .await
        .expect(200);

    // A request id given by the caller lands in the events' metadata.
    let created = app
        .call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(json!({"email": "rid@example.com"})),
            &[("x-request-id", "crm-req-7")],
        )
        .await
        .expect(201);
    let id = created.body["customer_id"].as_str().unwrap();
    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    assert_eq!(
        events.body["events"][0]["metadata"]["request_id"],
        "crm-req-7"
    );

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("access_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/customers\""), "{metrics}");
    assert!(
        metrics.contains("access_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("access_commands_total{command=\"register_customer\",outcome=\"ok\"} 1"),
        "{metrics}"
    );

    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc.body["paths"]["/v1/customers/{id}/change-email"].is_object());
    app.call(Method::DELETE, "/healthz", None, None)
        .await
        .expect_error(405, "method_not_allowed");
    app.stop().await;
}

/// A request id is at most 128 characters of `[A-Za-z0-9._:-]`; any other
/// client value (huge, or with other characters) is replaced by a fresh
/// id, so the permanent history never stores what a client made up at
/// any length.
async fn client_request_ids_are_bounded(db: Db) {
    let app = TestApp::spawn(db).await;
    let huge = "x".repeat(8_000);
    let longest = format!("{}.:_-", "A9".repeat(62));
    assert_eq!(longest.len(), 128);
    for (sent, kept) in [
        (huge.as_str(), false),
        ("has spaces and ; semicolons", false),
        ("tab\there", false),
        (longest.as_str(), true),
        ("crm-req:7.a_b", true),
    ] {
        let email = format!("rid{}@example.com", sent.len());
        let created = app
            .client
            .post(format!("{}/v1/customers", app.base))
            .bearer_auth(SERVICE)
            .header("x-request-id", sent)
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{sent:.40}");
        let answered = created.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body: Value = created.json().await.unwrap();
        let id = body["customer_id"].as_str().unwrap();
        let events = app
            .get(&format!("/v1/customers/{id}/events"), AUDITOR)
            .await
            .expect(200);
        let stored = events.body["events"][0]["metadata"]["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        let audit = app
            .get(&format!("/v1/customers/{id}/audit"), AUDITOR)
            .await
            .expect(200);
        let audited = audit.body["items"][0]["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(stored, answered, "{sent:.40}");
        assert_eq!(audited, answered, "{sent:.40}");
        if kept {
            assert_eq!(stored, sent);
        } else {
            assert_ne!(stored, sent);
            assert!(
                uuid::Uuid::parse_str(&stored).is_ok(),
                "not a fresh id: {stored:.80}"
            );
        }
    }
    app.stop().await;
}

/// HTTP conventions clients and their generators expect (issue 18): `201`
/// with `Location` (kept by an idempotent replay, with its `ETag`), `401`
/// with `WWW-Authenticate: Bearer`, and `/metrics` served with the content
/// type of what it is (OpenMetrics text, ending in `# EOF`).
async fn http_conventions_clients_expect(db: Db) {
    let app = TestApp::spawn(db).await;
    let key = [("idempotency-key", "conventions-1")];
    let created = app
        .call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(json!({"email": "conventions@example.com"})),
            &key,
        )
        .await
        .expect(201);
    let id = created.body["customer_id"].as_str().unwrap().to_string();
    let location = created.headers["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/customers/{id}"));
    app.get(&location, SERVICE).await.expect(200);
    let replay = app
        .call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(json!({"email": "conventions@example.com"})),
            &key,
        )
        .await
        .expect(201);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["location"], location.as_str());
    assert_eq!(replay.headers["etag"], created.headers["etag"]);

    app.customer_with_password("conventions-login@example.com")
        .await;
    let login = app
        .call(
            Method::POST,
            "/v1/self/sessions",
            None,
            Some(json!({"email": "conventions-login@example.com", "password": PW})),
        )
        .await
        .expect(201);
    assert_eq!(login.headers["location"], "/v1/self/sessions/current");

    for unauthorized in [
        app.get("/v1/customers", "no-such-key-0123456789abcdef")
            .await,
        app.call(Method::GET, &location, None, None).await,
        app.call(Method::GET, "/v1/self", None, None).await,
    ] {
        assert_eq!(unauthorized.status, 401);
        let challenge = unauthorized.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let text = metrics.text().await.unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

/// W3C trace context (issue 18): a command sent with `traceparent` keeps
/// its trace id as the correlation id of the events it causes, and every
/// answer carries a `traceparent` of the request's trace (a new one when
/// the caller sent none or an invalid one).
async fn trace_context_follows_a_command(db: Db) {
    let app = TestApp::spawn(db).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = format!("00-{trace}-00f067aa0ba902b7-01");
    let created = app
        .call_with(
            Method::POST,
            "/v1/customers",
            Some(SERVICE),
            Some(json!({"email": "traced@example.com"})),
            &[("traceparent", sent.as_str())],
        )
        .await
        .expect(201);
    let answered = created.headers["traceparent"].to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{trace}-")), "{answered}");
    assert!(answered.ends_with("-01") && answered != sent, "{answered}");
    let id = created.body["customer_id"].as_str().unwrap().to_string();

    // A command without one: a new trace in the answer, no correlation id.
    let untraced = app
        .command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let fresh = untraced.headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(fresh.len(), 55, "{fresh}");
    assert!(!fresh.contains(trace), "{fresh}");
    // An invalid one is ignored, not stored.
    app.call_with(
        Method::POST,
        &format!("/v1/customers/{id}/revoke-access"),
        Some(SERVICE),
        Some(json!({})),
        &[("traceparent", "00-not-a-trace-01")],
    )
    .await
    .expect(200);

    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let correlations: Vec<Value> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["correlation_id"].clone())
        .collect();
    assert_eq!(
        correlations,
        [json!(trace), Value::Null, Value::Null, Value::Null],
        "{}",
        events.body
    );
}

/// The customer's own commands keep the trace id too: a password set
/// through a link and a password changed with a session.
async fn a_trace_id_follows_the_customers_own_commands(db: Db) {
    let app = TestApp::spawn(db).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let traced = format!("00-{trace}-b7ad6b7169203331-01");
    let headers = [("traceparent", traced.as_str())];
    let email = "own-trace@example.com";
    let id = app.register(email).await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app.token_from_mail(email, "/setup-password").await;
    app.call_with(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": token, "password": PW, "password_confirm": PW})),
        &headers,
    )
    .await
    .expect(200);
    let session = app.session(email, PW).await;
    app.call_with(
        Method::POST,
        "/v1/self/change-password",
        Some(&session),
        Some(json!({"current_password": PW, "new_password": PW2, "new_password_confirm": PW2})),
        &headers,
    )
    .await
    .expect(200);
    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let traced_types: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["correlation_id"] == trace)
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        traced_types,
        ["PasswordSetupCompleted", "PasswordChanged"],
        "{}",
        events.body
    );
}

crate::on_both_stores!(
    a_trace_id_follows_the_customers_own_commands,
    every_error_code_of_the_contract,
    password_checks_are_throttled,
    idempotent_retries,
    if_match_and_etags,
    concurrent_commands_are_all_applied,
    reads_events_and_lookup,
    request_ids_operations_and_docs,
    client_request_ids_are_bounded,
    http_conventions_clients_expect,
    trace_context_follows_a_command,
);

/// Client generators need one operationId per operation, and a server to
/// send requests to (issue 18).
#[test]
fn openapi_operation_ids_are_unique_and_a_server_is_named() {
    let document: Value =
        serde_json::from_str(&accessd::openapi::document_json().unwrap()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                panic!("operationId {id} is used by {other} and {method} {path}");
            }
        }
    }
    assert!(seen.len() > 20, "{seen:?}");
    assert_eq!(document["servers"][0]["url"], "/");
}

/// The committed OpenAPI document matches the code
/// (`ACCESS_UPDATE_OPENAPI=1 cargo test -p accessd openapi` rewrites it).
#[test]
fn committed_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let current = accessd::openapi::document_json().unwrap();
    if std::env::var("ACCESS_UPDATE_OPENAPI").is_ok() {
        std::fs::write(path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is stale: run `ACCESS_UPDATE_OPENAPI=1 cargo test -p accessd --test api committed_openapi` and commit it"
    );
}
