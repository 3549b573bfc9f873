//! Forgetting a customer (`POST /v1/customers/{id}/forget`): its personal
//! data is gone from every table, response, export and database dump, while
//! the history keeps its shape, the hash chain verifies, a rebuild matches
//! and other customers are untouched.

use access_projections::{chain, rebuild};
use access_store::testing::{dump_all_tables, test_master_key};
use access_store::{Store, StoreOptions};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// Marks everything personal of the customer to forget.
const TAG: &str = "zqxforget";

async fn store_of(app: &TestApp) -> Store {
    Store::connect(&app.database_url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(test_master_key())
        .await
        .unwrap()
}

async fn text_of(app: &TestApp, path: &str, key: &str) -> (u16, String) {
    let (status, _, body) = app.get_text(path, key).await;
    (status, body)
}

/// Waits until the audit trail shows `kind` for the customer.
async fn wait_for_audit(app: &TestApp, id: &str, kind: &str) -> String {
    for _ in 0..100 {
        let (status, body) = text_of(app, &format!("/v1/customers/{id}/audit"), AUDITOR).await;
        if status == 200 && body.contains(kind) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the audit trail of {id} never showed {kind}");
}

fn pg_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", url])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn a_forgotten_customer_leaves_no_personal_data_and_the_history_still_verifies(db: Db) {
    let app = TestApp::spawn(db).await;
    // A realistic history: registered with a name, access through a setup
    // link, a password, an email change by an administrator with a
    // temporary password; another customer before and after.
    let other = app.customer_with_password("kept.before@example.com").await;
    let id = app
        .post(
            "/v1/customers",
            SERVICE,
            json!({"email": format!("{TAG}.one@example.com"), "name": "Zqxforget Person"}),
        )
        .await
        .expect(201)
        .body["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app
        .token_from_mail(&format!("{TAG}.one@example.com"), "/setup-password")
        .await;
    app.call(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": token, "password": PW, "password_confirm": PW})),
    )
    .await
    .expect(200);
    app.command(
        &id,
        "change-email",
        json!({"email": format!("{TAG}.two@example.com"), "password": PW2,
               "password_confirm": PW2, "send_notification": true}),
    )
    .await
    .expect(200);
    let later = app.customer_with_password("kept.after@example.com").await;
    let before = wait_for_audit(&app, &id, "access_notification_sent").await;
    assert!(before.contains(TAG), "the audit shows the emails before");

    // Only an administrator forgets, and only with a reason.
    app.post(
        &format!("/v1/customers/{id}/forget"),
        SERVICE,
        json!({"reason": "erasure request #1"}),
    )
    .await
    .expect_error(403, "forbidden");
    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "  "}),
    )
    .await
    .expect_error(422, "reason_required");
    app.post(&format!("/v1/customers/{id}/forget"), ADMIN, json!({}))
        .await
        .expect(400);
    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "erasure request #1"}),
    )
    .await
    .expect(200);
    // Final: no more commands, no more logins.
    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "again"}),
    )
    .await
    .expect_error(410, "customer_forgotten");
    app.command(&id, "send-access-notification", json!({}))
        .await
        .expect_error(410, "customer_forgotten");
    app.login(&format!("{TAG}.two@example.com"), PW2)
        .await
        .expect(401);

    // What readers see.
    let audit = wait_for_audit(&app, &id, "customer_forgotten").await;
    assert!(!audit.contains(TAG), "{audit}");
    assert!(audit.contains("[forgotten]"), "{audit}");
    let view = app.customer(&id).await;
    assert_eq!(view["email"], "[forgotten]", "{view}");
    assert_eq!(view["access"]["granted"], false, "{view}");
    let readers = [
        format!("/v1/customers/{id}"),
        format!("/v1/customers/{id}/events"),
        format!("/v1/customers/{id}/events?format=jsonl"),
        format!("/v1/customers/{id}/audit"),
        format!("/v1/customers/{id}?as_of=2099-01-01T00:00:00Z"),
        "/v1/audit?format=csv".to_string(),
        "/v1/audit?format=jsonl".to_string(),
        "/v1/audit".to_string(),
        format!("/v1/customers?email={TAG}.two@example.com"),
        "/v1/access-report?as_of=2099-01-01T00:00:00Z".to_string(),
    ];
    for path in &readers {
        let (status, body) = text_of(&app, path, ADMIN).await;
        assert!(status < 500, "{path}: {status}");
        assert!(!body.to_lowercase().contains(TAG), "{path}: {body}");
        assert!(!body.contains("Zqxforget"), "{path}: {body}");
    }
    let (_, events) = text_of(&app, &format!("/v1/customers/{id}/events"), AUDITOR).await;
    assert!(events.contains("CustomerForgotten"), "{events}");
    assert!(events.contains("[forgotten]"), "{events}");

    // What the database holds.
    let store = store_of(&app).await;
    let dump = dump_all_tables(&store).await;
    let leaked: Vec<&str> = dump
        .lines()
        .filter(|l| l.to_lowercase().contains(TAG))
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    if matches!(db, Db::Postgres) {
        let dump = pg_dump(&app.database_url());
        assert!(dump.contains(&id), "pg_dump shows the customer's rows");
        assert!(!dump.to_lowercase().contains(TAG));
        assert!(!dump.contains("Zqxforget"));
    }

    // The history still verifies, and a rebuild matches the live tables.
    let digest = app.get("/v1/audit/digest", AUDITOR).await.expect(200);
    let report = chain::verify(
        &store,
        Some((
            digest.body["global_position"].as_i64().unwrap(),
            digest.body["hash"].as_str().unwrap().to_string(),
        )),
    )
    .await
    .unwrap();
    assert!(report.is_intact(), "{report:?}");
    let check = rebuild::check(&store, &mut |_| {}).await.unwrap();
    assert!(check.matches(), "{check:?}");

    // Other customers are untouched.
    for (other, email) in [
        (&other, "kept.before@example.com"),
        (&later, "kept.after@example.com"),
    ] {
        let view = app.customer(other).await;
        assert_eq!(view["email"], email, "{view}");
        assert_eq!(view["access"]["granted"], true, "{view}");
        app.login(email, PW).await.expect(201);
    }
}

crate::on_both_stores!(a_forgotten_customer_leaves_no_personal_data_and_the_history_still_verifies);
