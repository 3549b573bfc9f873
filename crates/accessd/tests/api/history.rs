//! Time travel over HTTP: `?as_of=` and the access report.

use serde_json::json;

use crate::helpers::*;

async fn the_state_at_an_instant_and_who_had_access_then(db: Db) {
    let app = TestApp::spawn(db).await;
    let before_anything = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let id = app.register("tt@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let with_old_email = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.command(
        &id,
        "change-email",
        json!({"email": "tt.new@example.com", "send_notification": true}),
    )
    .await
    .expect(200);
    app.command(&id, "revoke-access", json!({}))
        .await
        .expect(200);

    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let then = app
        .get(
            &format!("/v1/customers/{id}?as_of={}", at(with_old_email)),
            AUDITOR,
        )
        .await
        .expect(200);
    assert_eq!(then.body["email"], "tt@example.com");
    assert_eq!(then.body["access"]["granted"], true);
    assert_eq!(then.body["version"], 3);
    let now = app.customer(&id).await;
    assert_eq!(now["email"], "tt.new@example.com");
    assert_eq!(now["access"]["granted"], false);
    app.get(
        &format!("/v1/customers/{id}?as_of={}", at(before_anything)),
        AUDITOR,
    )
    .await
    .expect_error(404, "customer_not_found");
    app.get(&format!("/v1/customers/{id}?as_of=last-week"), AUDITOR)
        .await
        .expect_error(400, "malformed_request");

    let report = app
        .get(
            &format!("/v1/access-report?as_of={}", at(with_old_email)),
            AUDITOR,
        )
        .await
        .expect(200);
    let customers = report.body["customers"].as_array().unwrap();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0]["customer_id"], id);
    assert_eq!(customers[0]["email"], "tt@example.com");
    let today = app.get("/v1/access-report", ADMIN).await.expect(200);
    assert!(today.body["customers"].as_array().unwrap().is_empty());
    app.get("/v1/access-report", SERVICE)
        .await
        .expect_error(403, "forbidden");
    app.stop().await;
}

crate::on_both_stores!(the_state_at_an_instant_and_who_had_access_then);
