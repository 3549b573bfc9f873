//! `/readyz` means ready: the database answers and every background loop
//! this process runs (projector, hash chain, mail worker) is running. A
//! loop turned off by configuration is no failure.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// Asks `/readyz` until it answers `status` (at most 10 s).
async fn readyz_until(app: &TestApp, status: u16) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.call(Method::GET, "/readyz", None, None).await;
        if answer.status.as_u16() == status || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn part<'a>(answer: &'a Answer, name: &str) -> &'a Value {
    &answer.body["parts"][name]
}

async fn readyz_reports_each_part(db: Db) {
    let app = TestApp::spawn(db).await;
    let ready = app
        .call(Method::GET, "/readyz", None, None)
        .await
        .expect(200);
    assert_eq!(ready.body["status"], "ready", "{}", ready.body);
    assert_eq!(part(&ready, "database")["state"], "ready", "{}", ready.body);
    for name in ["projector", "hash_chain", "mail_worker"] {
        assert_eq!(part(&ready, name)["state"], "running", "{}", ready.body);
    }
    app.stop().await;

    // Turned off by configuration (another process runs them): ready.
    let app = TestApp::spawn_with(db, |c| {
        c.projector = false;
        c.mail_worker = false;
    })
    .await;
    let ready = app
        .call(Method::GET, "/readyz", None, None)
        .await
        .expect(200);
    for name in ["projector", "hash_chain", "mail_worker"] {
        assert_eq!(part(&ready, name)["state"], "disabled", "{}", ready.body);
    }
    app.stop().await;
}

async fn readyz_answers_503_when_the_projector_stopped(db: Db) {
    let app = TestApp::spawn(db).await;
    readyz_until(&app, 200).await.expect(200);
    app.state.projector().unwrap().stop();
    let answer = readyz_until(&app, 503).await.expect(503);
    assert_eq!(answer.code(), "unavailable", "{}", answer.body);
    assert!(answer.message().contains("projector"), "{}", answer.body);
    assert_eq!(
        part(&answer, "projector")["state"],
        "stopped",
        "{}",
        answer.body
    );
    assert_eq!(
        part(&answer, "database")["state"],
        "ready",
        "{}",
        answer.body
    );
    app.stop().await;
}

async fn readyz_answers_503_when_the_hash_chain_failed(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("chained@example.com").await;
    // A read waits for the projections, which wait for the chain.
    app.get(&format!("/v1/customers/{id}"), SERVICE)
        .await
        .expect(200);
    readyz_until(&app, 200).await.expect(200);
    // The chain's last hash disappears: the next batch cannot link to it.
    access_store::testing::exec_sql(app.state.store(), "DELETE FROM event_hashes").await;
    app.register("unchained@example.com").await;
    let answer = readyz_until(&app, 503).await.expect(503);
    assert!(answer.message().contains("hash chain"), "{}", answer.body);
    let chain = part(&answer, "hash_chain");
    assert_eq!(chain["state"], "failed", "{}", answer.body);
    assert!(
        chain["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the log says why"),
        "{}",
        answer.body
    );
    app.stop().await;
}

async fn readyz_answers_503_when_the_mail_worker_stopped(db: Db) {
    let app = TestApp::spawn(db).await;
    readyz_until(&app, 200).await.expect(200);
    app.state.mail().worker().unwrap().stop();
    let answer = readyz_until(&app, 503).await.expect(503);
    assert!(answer.message().contains("mail worker"), "{}", answer.body);
    assert_eq!(
        part(&answer, "mail_worker")["state"],
        "stopped",
        "{}",
        answer.body
    );
    assert_eq!(
        part(&answer, "projector")["state"],
        "running",
        "{}",
        answer.body
    );
    app.stop().await;
}

crate::on_both_stores!(
    readyz_reports_each_part,
    readyz_answers_503_when_the_projector_stopped,
    readyz_answers_503_when_the_hash_chain_failed,
    readyz_answers_503_when_the_mail_worker_stopped,
);
