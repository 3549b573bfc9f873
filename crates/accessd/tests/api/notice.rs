//! The notice's story over HTTP: the error, then Option 1, Option 2 (with
//! the token read from the mail file) and Option 3.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn the_error_then_option_1(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("ann@example.com").await;

    // New access with neither field: refused with the notice's message.
    let answer = app
        .command(&id, "grant-access", json!({}))
        .await
        .expect_error(422, "login_has_no_password");
    assert_eq!(answer.message(), format!("ann@example.com{NOTICE_TAIL}"));

    // Access through a setup link; the customer sets a password.
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let token = app
        .token_from_mail("ann@example.com", "/setup-password")
        .await;
    app.call(
        Method::POST,
        "/v1/self/setup-password",
        None,
        Some(json!({"token": token, "password": PW, "password_confirm": PW})),
    )
    .await
    .expect(200);
    app.login("ann@example.com", PW).await.expect(201);

    // Changing the email of a customer with access, with neither field.
    let answer = app
        .command(&id, "change-email", json!({"email": "ann.new@example.org"}))
        .await
        .expect_error(422, "login_has_no_password");
    assert_eq!(
        answer.message(),
        format!("ann.new@example.org{NOTICE_TAIL}")
    );
    assert_eq!(app.customer(&id).await["email"], "ann@example.com");

    // Option 1: new email, a temporary password typed twice, and the
    // notification (which does not disclose the password).
    app.command(
        &id,
        "change-email",
        json!({"email": "ann.new@example.org", "password": PW2, "password_confirm": PW2, "send_notification": true}),
    )
    .await
    .expect(200);
    let view = app.customer(&id).await;
    assert_eq!(view["email"], "ann.new@example.org");
    assert_eq!(view["access"]["must_change_password"], true);
    let notices = app.wait_for_mails_to("ann.new@example.org", 1).await;
    assert_eq!(notices.len(), 1, "one access notice to the new address");
    let (_, raw) = app
        .mails()
        .into_iter()
        .find(|(_, raw)| raw.contains("ann.new@example.org"))
        .unwrap();
    assert!(
        !raw.contains(PW2),
        "the notification disclosed the password"
    );

    // The old login and password no longer work; the new ones do, and the
    // customer must change the temporary password first.
    app.login("ann@example.com", PW)
        .await
        .expect_error(401, "invalid_credentials");
    let session = app.login("ann.new@example.org", PW2).await.expect(201);
    assert_eq!(session.body["must_change_password"], true);
    let token = session.body["token"].as_str().unwrap().to_string();
    app.call(Method::GET, "/v1/self", Some(&token), None)
        .await
        .expect_error(403, "must_change_password");
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
    // The old session ended; the new one works without restrictions.
    app.call(Method::GET, "/v1/self", Some(&token), None)
        .await
        .expect_error(401, "unauthenticated");
    let fresh = changed.body["session"]["token"].as_str().unwrap();
    let me = app
        .call(Method::GET, "/v1/self", Some(fresh), None)
        .await
        .expect(200);
    assert_eq!(me.body["access"]["must_change_password"], false);
    app.stop().await;
}

async fn option_2_self_service_email_change(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("bob@example.com").await;
    let token = app.session("bob@example.com", PW).await;

    // Wrong current password.
    app.call(
        Method::POST,
        "/v1/self/change-email",
        Some(&token),
        Some(json!({"current_password": PW2, "new_email": "bob@new.example", "new_email_confirm": "bob@new.example"})),
    )
    .await
    .expect_error(403, "wrong_password");
    // Addresses that differ.
    app.call(
        Method::POST,
        "/v1/self/change-email",
        Some(&token),
        Some(json!({"current_password": PW, "new_email": "bob@new.example", "new_email_confirm": "bob@neu.example"})),
    )
    .await
    .expect_error(422, "email_mismatch");

    let accepted = app
        .call(
            Method::POST,
            "/v1/self/change-email",
            Some(&token),
            Some(json!({"current_password": PW, "new_email": "bob@new.example", "new_email_confirm": "BOB@new.example"})),
        )
        .await
        .expect(202);
    assert_eq!(
        accepted.body["message"],
        "Validation email sent successfully."
    );
    assert!(accepted.body["detail"]
        .as_str()
        .unwrap()
        .contains("click the link provided in the validation email sent to bob@new.example"));

    // The old email stays the login until the link is clicked.
    let view = app.customer(&id).await;
    assert_eq!(view["email"], "bob@example.com");
    assert_eq!(view["pending_email"], "bob@new.example");
    // A notice went to the old address, the link to the new one.
    // (1: the access notification; 2: the notice of the change)
    assert_eq!(app.wait_for_mails_to("bob@example.com", 2).await.len(), 2);
    let link_token = app
        .token_from_mail("bob@new.example", "/confirm-email")
        .await;

    // A wrong token changes nothing.
    app.call(
        Method::POST,
        "/v1/self/confirm-email",
        None,
        Some(json!({"token": format!("{id}.deadbeef")})),
    )
    .await
    .expect_error(422, "invalid_token");

    app.call(
        Method::POST,
        "/v1/self/confirm-email",
        None,
        Some(json!({"token": link_token})),
    )
    .await
    .expect(200);
    let view = app.customer(&id).await;
    assert_eq!(view["email"], "bob@new.example");
    assert!(view["pending_email"].is_null());
    // Used up.
    app.call(
        Method::POST,
        "/v1/self/confirm-email",
        None,
        Some(json!({"token": link_token})),
    )
    .await
    .expect_error(422, "invalid_token");
    // The email change ended the session; the new login works.
    app.call(Method::GET, "/v1/self", Some(&token), None)
        .await
        .expect_error(401, "unauthenticated");
    app.login("bob@new.example", PW).await.expect(201);
    app.login("bob@example.com", PW)
        .await
        .expect_error(401, "invalid_credentials");
    app.stop().await;
}

async fn option_3_revoke_then_change_email(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("cara@example.com").await;
    let token = app.session("cara@example.com", PW).await;

    app.command(&id, "revoke-access", json!({"reason": "contract ended"}))
        .await
        .expect(200);
    let view = app.customer(&id).await;
    assert_eq!(view["access"]["granted"], false);
    assert_eq!(view["access"]["password_set"], false);
    // Revoke ends sessions and logins.
    app.call(Method::GET, "/v1/self", Some(&token), None)
        .await
        .expect_error(401, "unauthenticated");
    app.login("cara@example.com", PW)
        .await
        .expect_error(401, "invalid_credentials");

    // Without access, the email changes with no credential.
    app.command(
        &id,
        "change-email",
        json!({"email": "cara@elsewhere.example"}),
    )
    .await
    .expect(200);
    assert_eq!(app.customer(&id).await["email"], "cara@elsewhere.example");
    // A new access again needs a password or a notification.
    app.command(&id, "grant-access", json!({}))
        .await
        .expect_error(422, "login_has_no_password");

    // The reason is in the history.
    let events = app
        .get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200);
    let revoked = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "AccessRevoked")
        .unwrap();
    assert_eq!(revoked["metadata"]["reason"], "contract ended");
    assert_eq!(revoked["metadata"]["actor_name"], "crm");
    app.stop().await;
}

async fn setup_links_are_single_use_and_replaced_by_newer_ones(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("dan@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    let first = app
        .token_from_nth_mail("dan@example.com", "/setup-password", 1)
        .await;
    app.command(&id, "send-access-notification", json!({}))
        .await
        .expect(200);
    let second = app
        .token_from_nth_mail("dan@example.com", "/setup-password", 2)
        .await;
    assert_ne!(first, second);
    let setup = |token: String| {
        app.call(
            Method::POST,
            "/v1/self/setup-password",
            None,
            Some(json!({"token": token, "password": PW, "password_confirm": PW})),
        )
    };
    setup(first).await.expect_error(422, "invalid_token");
    setup(second.clone()).await.expect(200);
    setup(second).await.expect_error(422, "invalid_token");
    app.stop().await;
}

/// An unconfirmed self-service email change whose link expired no longer
/// holds the new address: another customer gets it as a login, the first
/// customer's state shows the change as expired, and its old link is dead.
async fn an_expired_email_change_frees_its_address_and_shows_as_expired(db: Db) {
    let app = TestApp::spawn(db).await;
    let expired = app
        .customer_with_expired_links("hal@example.com", "hal@new.example")
        .await;
    let hal = &expired.customer_id;
    let view = app.customer(hal).await;
    assert_eq!(view["pending_email"], Value::Null, "{view}");
    assert_eq!(view["pending_email_expired"], true, "{view}");

    let ida = app.register("hal@new.example").await;
    app.command(&ida, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);

    let token = |link: &str| link.split("token=").nth(1).unwrap().to_string();
    for (path, body) in [
        (
            "/v1/self/confirm-email",
            json!({"token": token(&expired.confirm)}),
        ),
        (
            "/v1/self/setup-password",
            json!({"token": token(&expired.setup), "password": PW2, "password_confirm": PW2}),
        ),
    ] {
        app.call(Method::POST, path, None, Some(body))
            .await
            .expect_error(422, "invalid_token");
    }
    let view = app.customer(hal).await;
    assert_eq!(view["email"], "hal@example.com", "{view}");
    assert_eq!(view["pending_email_expired"], true, "{view}");
    app.stop().await;
}

crate::on_both_stores!(
    the_error_then_option_1,
    option_2_self_service_email_change,
    option_3_revoke_then_change_email,
    setup_links_are_single_use_and_replaced_by_newer_ones,
    an_expired_email_change_frees_its_address_and_shows_as_expired,
);
