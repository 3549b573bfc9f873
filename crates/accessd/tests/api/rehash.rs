//! Password hashes are upgraded at the next successful login when the
//! argon2id parameters change (ACCESS_ARGON2_*): the same password, hashed
//! again with the current parameters, as a `PasswordRehashed` event by the
//! system; sessions stay open, nothing happens on a wrong password or when
//! the hash is already current.

use access_domain::CustomerId;
use access_store::prelude::*;
use access_store::testing::test_master_key;
use access_store::{Store, StoreOptions};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// Cheaper than OWASP's parameters: the "old" deployment.
fn cheap(config: &mut accessd::Config) {
    config.argon2_memory_kib = 4096;
    config.argon2_iterations = 1;
}

async fn stored_hash(app: &TestApp, id: &str) -> String {
    let store = Store::connect(&app.database_url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(test_master_key())
        .await
        .unwrap();
    let id: CustomerId = id.parse().unwrap();
    let loaded = store.load(id).await.unwrap();
    loaded
        .customer
        .password_hash()
        .unwrap()
        .as_str()
        .to_string()
}

async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    app.get(&format!("/v1/customers/{id}/events"), AUDITOR)
        .await
        .expect(200)
        .body["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn rehashes(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event_type"] == "PasswordRehashed")
        .collect()
}

async fn a_login_upgrades_a_hash_made_with_older_parameters(db: Db) {
    let app = TestApp::spawn_with(db, cheap).await;
    let id = app.customer_with_password("rehash@example.com").await;
    let other = app.customer_with_password("other@example.com").await;
    assert!(stored_hash(&app, &id).await.contains("m=4096,t=1,p=1"));
    let old_session = app.session("rehash@example.com", PW).await;

    // A new deployment with OWASP's parameters (the defaults).
    let url = app.database_url();
    let app = app.restart_on_same_database(url, |_| {}).await;
    let before = events_of(&app, &id).await.len();

    // A wrong password changes nothing.
    app.login("rehash@example.com", PW2)
        .await
        .expect_error(401, "invalid_credentials");
    assert_eq!(events_of(&app, &id).await.len(), before);
    assert!(stored_hash(&app, &id).await.contains("m=4096,t=1,p=1"));

    // The right one logs in and upgrades the hash.
    let new_session = app.session("rehash@example.com", PW).await;
    let events = events_of(&app, &id).await;
    let upgraded = rehashes(&events);
    assert_eq!(upgraded.len(), 1, "{events:#?}");
    assert_eq!(upgraded[0]["metadata"]["actor_kind"], "system");
    assert_eq!(upgraded[0]["metadata"]["actor_name"], "login");
    assert!(
        upgraded[0]["data"].get("password_hash").is_none(),
        "the events endpoint shows no hash: {}",
        upgraded[0]
    );
    let hash = stored_hash(&app, &id).await;
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );

    // Not a change of the login: both sessions still work.
    for token in [&old_session, &new_session] {
        app.call(Method::GET, "/v1/self", Some(token), None)
            .await
            .expect(200);
    }
    // The audit trail records it, without the hash.
    let audit = app
        .get(&format!("/v1/customers/{id}/audit"), AUDITOR)
        .await
        .expect(200);
    let text = audit.body.to_string();
    assert!(text.contains("password_rehashed"), "{text}");
    assert!(!text.contains("argon2"), "{text}");

    // The next login has nothing to upgrade; the password still works.
    app.session("rehash@example.com", PW).await;
    assert_eq!(rehashes(&events_of(&app, &id).await).len(), 1);
    // Another customer is upgraded only at its own login.
    assert!(rehashes(&events_of(&app, &other).await).is_empty());
    assert!(stored_hash(&app, &other).await.contains("m=4096,t=1,p=1"));
    app.stop().await;
}

async fn a_current_hash_is_never_rehashed(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.customer_with_password("current@example.com").await;
    for _ in 0..2 {
        app.session("current@example.com", PW).await;
    }
    assert!(rehashes(&events_of(&app, &id).await).is_empty());
    app.stop().await;
}

crate::on_both_stores!(
    a_login_upgrades_a_hash_made_with_older_parameters,
    a_current_hash_is_never_rehashed
);
