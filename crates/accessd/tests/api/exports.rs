//! A customer's stream as JSON Lines (`GET /v1/customers/{id}/events?format=jsonl`),
//! the input of `accessctl replay` (tested end to end in the accessctl crate).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn a_customers_events_export_as_json_lines_without_secrets(db: Db) {
    let app = TestApp::spawn(db).await;
    // Every event that carries a hash or a digest: a setup link and its use
    // (PasswordSetupCompleted), a manual password (PasswordSet), a
    // self-service email change (EmailChangeRequested), a password change.
    let id = app.customer_with_password("export@example.com").await;
    app.command(
        &id,
        "change-email",
        json!({"email": "export.new@example.com", "password": PW2, "password_confirm": PW2,
               "send_notification": true, "reason": "asked by phone"}),
    )
    .await
    .expect(200);
    let session = app.session("export.new@example.com", PW2).await;
    let changed = app
        .call(
            Method::POST,
            "/v1/self/change-password",
            Some(&session),
            Some(
                json!({"current_password": PW2, "new_password": PW3, "new_password_confirm": PW3}),
            ),
        )
        .await
        .expect(200);
    let session = changed.body["session"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    app.call(
        Method::POST,
        "/v1/self/change-email",
        Some(&session),
        Some(
            json!({"current_password": PW3, "new_email": "export.self@example.com",
                    "new_email_confirm": "export.self@example.com"}),
        ),
    )
    .await
    .expect(202);

    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let events = events.body["events"].as_array().unwrap().clone();
    let types: Vec<_> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for needed in [
        "AccessNotificationSent",
        "PasswordSetupCompleted",
        "PasswordSet",
        "PasswordChanged",
        "EmailChangeRequested",
    ] {
        assert!(types.contains(&needed), "{types:?}");
    }

    let (status, content_type, body) = app
        .get_text(&format!("/v1/customers/{id}/events?format=jsonl"), AUDITOR)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/x-ndjson");
    assert!(body.ends_with('\n'));
    for secret in [
        "password_hash",
        "token_digest",
        "argon2",
        "fake:",
        PW,
        PW2,
        PW3,
    ] {
        assert!(!body.contains(secret), "`{secret}` in {body}");
    }
    // One line per event, each the same object as in the JSON answer.
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, events);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["sequence"], json!(n + 1));
        assert!(line["event_version"].is_string());
        assert!(line["data"].is_object());
        assert!(line["metadata"]["request_id"].is_string());
    }
    assert_eq!(lines[0]["event_type"], "CustomerRegistered");
    assert_eq!(lines[0]["data"]["customer_id"], json!(id));
    let link = lines
        .iter()
        .find(|l| {
            l["event_type"] == "AccessNotificationSent" && l["data"]["setup_link"].is_object()
        })
        .unwrap();
    assert!(link["data"]["setup_link"]["expires_at"].is_string());

    // `format=json` is the default; anything else is refused.
    let (status, content_type, _) = app
        .get_text(&format!("/v1/customers/{id}/events?format=json"), AUDITOR)
        .await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    app.get(&format!("/v1/customers/{id}/events?format=csv"), AUDITOR)
        .await
        .expect_error(400, "malformed_request");
    app.get(&format!("/v1/customers/{id}/events?fromat=jsonl"), AUDITOR)
        .await
        .expect_error(400, "malformed_request");
    // The same roles as the JSON answer, and the same 404.
    app.get(&format!("/v1/customers/{id}/events?format=jsonl"), SERVICE)
        .await
        .expect_error(403, "forbidden");
    let unknown = "0b8f2a54-5d0e-4a53-9b0e-5d2f8f4f7c11";
    app.get(
        &format!("/v1/customers/{unknown}/events?format=jsonl"),
        AUDITOR,
    )
    .await
    .expect_error(404, "customer_not_found");
}

crate::on_both_stores!(a_customers_events_export_as_json_lines_without_secrets);
