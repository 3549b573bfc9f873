//! GET /v1/audit/digest: the head of the hash chain over the events, for
//! auditors; it covers every event committed before the request and
//! verifies against the events table.

use access_projections::chain;
use access_store::prelude::*;
use access_store::{Store, StoreOptions};

use crate::helpers::*;

async fn the_digest_covers_every_event_and_verifies(db: Db) {
    let app = TestApp::spawn(db).await;
    let empty = app.get("/v1/audit/digest", AUDITOR).await.expect(200);
    assert_eq!(empty.body["position"], "0:0");
    assert_eq!(empty.body["global_position"], 0);
    assert_eq!(empty.body["hash"], "0".repeat(64));

    let id = app.register("digest@example.com").await;
    app.command(
        &id,
        "grant-access",
        serde_json::json!({"send_notification": true}),
    )
    .await
    .expect(200);
    app.register("other@example.com").await;
    let answer = app.get("/v1/audit/digest", AUDITOR).await.expect(200);

    let store = Store::connect(&app.database_url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(access_store::testing::test_master_key())
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    assert_eq!(answer.body["position"], head.to_string(), "{}", answer.body);
    assert_eq!(answer.body["global_position"], head.global);
    let hash = answer.body["hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    let report = chain::verify(&store, Some((head.global, hash)))
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");

    // Auditors and admins; not services.
    app.get("/v1/audit/digest", ADMIN).await.expect(200);
    app.get("/v1/audit/digest", SERVICE)
        .await
        .expect_error(403, "forbidden");
}

crate::on_both_stores!(the_digest_covers_every_event_and_verifies);
