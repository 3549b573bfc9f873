//! Roles × endpoints: who may do what.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

async fn roles_by_endpoint(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("roles@example.com").await;
    let customer = format!("/v1/customers/{id}");
    let events = format!("/v1/customers/{id}/events");
    let grant = format!("/v1/customers/{id}/grant-access");

    // (method, path, body, [admin, service, auditor] expected statuses)
    let table: Vec<(Method, String, Option<serde_json::Value>, [u16; 3])> = vec![
        (Method::GET, customer.clone(), None, [200, 200, 200]),
        (
            Method::GET,
            "/v1/customers?email=roles@example.com".into(),
            None,
            [200, 200, 200],
        ),
        (Method::GET, events.clone(), None, [200, 403, 200]),
        // 422: the rule refuses it, so the role was accepted.
        (
            Method::POST,
            grant.clone(),
            Some(json!({})),
            [422, 422, 403],
        ),
        (
            Method::POST,
            "/v1/customers".into(),
            Some(json!({"email": "x@example.com"})),
            [201, 201, 403],
        ),
    ];
    for (method, path, body, expected) in table {
        for (key, status) in [ADMIN, SERVICE, AUDITOR].into_iter().zip(expected) {
            let answer = app
                .call(method.clone(), &path, Some(key), body.clone())
                .await;
            assert_eq!(
                answer.status.as_u16(),
                status,
                "{method} {path}: {}",
                answer.body
            );
            if status == 403 {
                assert_eq!(answer.code(), "forbidden");
            }
        }
    }

    // No key, an unknown key, a malformed header: 401.
    for bearer in [None, Some("not-a-key-0123456789")] {
        app.call(Method::GET, &customer, bearer, None)
            .await
            .expect_error(401, "unauthenticated");
    }
    app.call_with(
        Method::GET,
        &customer,
        None,
        None,
        &[("authorization", "Basic abc")],
    )
    .await
    .expect_error(401, "unauthenticated");

    // A customer session is not an API key, and an API key is not a session.
    app.command(
        &id,
        "grant-access",
        json!({"password": PW, "password_confirm": PW}),
    )
    .await
    .expect(200);
    let session = app.session("roles@example.com", PW).await;
    app.call(Method::GET, &customer, Some(&session), None)
        .await
        .expect_error(401, "unauthenticated");
    app.call(Method::GET, "/v1/self", Some(ADMIN), None)
        .await
        .expect_error(401, "unauthenticated");

    // The caller's name is the actor of its events.
    let history = app.get(&events, AUDITOR).await.expect(200);
    let metas: Vec<_> = history.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["metadata"]["actor_name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(metas.iter().all(|name| name == "crm"), "{metas:?}");
    app.stop().await;
}

async fn customers_act_as_themselves(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("self@example.com").await;
    let token = app.session("self@example.com", PW).await;
    app.call(
        Method::POST,
        "/v1/self/change-password",
        Some(&token),
        Some(json!({"current_password": PW, "new_password": PW2, "new_password_confirm": PW2})),
    )
    .await
    .expect(200);
    let history = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let last = history.body["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["event_type"], "PasswordChanged");
    assert_eq!(last["metadata"]["actor_kind"], "customer");
    assert_eq!(last["metadata"]["actor_customer_id"], id);
    app.stop().await;
}

crate::on_both_stores!(roles_by_endpoint, customers_act_as_themselves);
