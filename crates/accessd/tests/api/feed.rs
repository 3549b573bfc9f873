//! The change feed over HTTP: every event once and in order under a
//! concurrent load, long polls that wake on a commit, server-sent events
//! that resume after `Last-Event-ID`, filters, bad parameters, roles, and
//! forgetting.

use access_store::prelude::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

/// Waits until the feed shows every event in the store (on PostgreSQL a
/// transaction still open anywhere on the server holds newer events back
/// for a moment: the visibility watermark); returns the last position.
async fn settle(app: &TestApp) -> String {
    let total = app.state.store().count_events().await.unwrap() as usize;
    let mut after = "0:0".to_string();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < total {
        assert!(
            Instant::now() < deadline,
            "the feed shows {seen} of {total} events"
        );
        let page = app
            .get(
                &format!("/v1/feed?after={after}&limit=1000&wait=1"),
                SUBSCRIBER,
            )
            .await
            .expect(200);
        seen += page.body["items"].as_array().unwrap().len();
        after = page.body["next"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, total);
    after
}

/// Reads the whole feed from the start once every event is visible, page
/// by page (small pages, so the cursor is used many times).
async fn read_all(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    settle(app).await;
    let mut items = Vec::new();
    let mut after = "0:0".to_string();
    loop {
        let page = app
            .get(&format!("/v1/feed?after={after}&limit=7{query}"), key)
            .await
            .expect(200);
        let batch = page.body["items"].as_array().unwrap().clone();
        let next = page.body["next"].as_str().unwrap().to_string();
        if let Some(last) = batch.last() {
            assert!(
                position_of(&next) >= position(last),
                "next is at or after the last item"
            );
        }
        items.extend(batch.iter().cloned());
        if batch.is_empty() && next == after {
            return items;
        }
        after = next;
    }
}

fn position_of(raw: &str) -> (u64, i64) {
    let (tx, global) = raw.split_once(':').unwrap();
    (tx.parse().unwrap(), global.parse().unwrap())
}

fn position(item: &Value) -> (u64, i64) {
    let (tx, global) = item["position"].as_str().unwrap().split_once(':').unwrap();
    (tx.parse().unwrap(), global.parse().unwrap())
}

/// Every event of a concurrent load appears exactly once, in the global
/// order, to a reader that follows the feed while the load runs.
async fn feed_gives_every_event_of_a_concurrent_load_once_in_order(db: Db) {
    let app = TestApp::spawn(db).await;
    let (expected_tx, expected) = tokio::sync::watch::channel(usize::MAX);
    let follower = {
        let base = app.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut after = "0:0".to_string();
            let mut seen = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) && seen.len() < *expected.borrow() {
                let page: Value = client
                    .get(format!("{base}/v1/feed?after={after}&limit=5&wait=1"))
                    .bearer_auth(SUBSCRIBER)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let items = page["items"].as_array().unwrap();
                after = page["next"].as_str().unwrap().to_string();
                seen.extend(items.iter().cloned());
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..8 {
        let base = app.base.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..5 {
                let answer: Value = client
                    .post(format!("{base}/v1/customers"))
                    .bearer_auth(SERVICE)
                    .json(&json!({"email": format!("load{w}-{i}@example.com"), "name": "Load"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = answer["customer_id"].as_str().unwrap().to_string();
                for action in ["grant-access", "revoke-access"] {
                    let body = if action == "grant-access" {
                        json!({"password": PW, "password_confirm": PW})
                    } else {
                        json!({})
                    };
                    let status = client
                        .post(format!("{base}/v1/customers/{id}/{action}"))
                        .bearer_auth(SERVICE)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert!(status.is_success(), "{action}: {status}");
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = app.state.store().count_events().await.unwrap() as usize;
    expected_tx.send_replace(total);
    let followed = follower.await.unwrap();
    let all = read_all(&app, SUBSCRIBER, "").await;
    for seen in [&followed, &all] {
        assert_eq!(seen.len(), total, "every event, once");
        let positions: Vec<_> = seen.iter().map(position).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "in the global order: {positions:?}"
        );
    }
    let ids: Vec<_> = followed.iter().map(|i| i["position"].clone()).collect();
    let again: Vec<_> = all.iter().map(|i| i["position"].clone()).collect();
    assert_eq!(ids, again, "the follower saw what a later full read sees");
    app.stop().await;
}

/// A long poll returns as soon as an event is committed (not when its wait
/// ends), and empty with the same cursor when nothing happens.
async fn long_poll_returns_when_an_event_is_committed(db: Db) {
    let app = TestApp::spawn(db).await;
    app.register("first@example.com").await;
    let next = settle(&app).await;

    // Nothing new: empty after the wait, same cursor.
    let empty = app
        .get(&format!("/v1/feed?after={next}&wait=1"), SUBSCRIBER)
        .await
        .expect(200);
    assert_eq!(empty.body["items"], json!([]));
    assert_eq!(empty.body["next"], next.as_str());

    let poll = {
        let base = app.base.clone();
        let next = next.clone();
        tokio::spawn(async move {
            let page: Value = reqwest::Client::new()
                .get(format!("{base}/v1/feed?after={next}&wait=25"))
                .bearer_auth(SUBSCRIBER)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = app.register("second@example.com").await;
    let committed = Instant::now();
    let (page, returned) = poll.await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["customer_id"], id.as_str());
    assert_eq!(items[0]["event_type"], "CustomerRegistered");
    // Woken by the commit, far from the end of its 25 s wait (the latency
    // itself is measured by access-bench).
    assert!(
        returned.saturating_duration_since(committed) < Duration::from_secs(5),
        "the long poll was not woken by the commit"
    );
    app.stop().await;
}

/// A commit made by another replica wakes a long poll too (the watcher's
/// poll of the store's head).
async fn long_poll_is_woken_by_another_replicas_commit(db: Db) {
    let app = TestApp::spawn(db).await;
    let other = app.replica(|c| c.projector = false).await;
    let poll = {
        let base = app.base.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let page: Value = reqwest::Client::new()
                .get(format!("{base}/v1/feed?wait=25"))
                .bearer_auth(SUBSCRIBER)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = other.register("elsewhere@example.com").await;
    let (page, took) = poll.await.unwrap();
    assert_eq!(page["items"][0]["customer_id"], id.as_str(), "{page}");
    assert!(took < Duration::from_secs(10), "not woken: {took:?}");
    other.stop().await;
    app.stop().await;
}

/// Reads server-sent events until `count` events arrived (or the stream
/// ends); returns (id, data) pairs and whether a heartbeat comment came.
async fn read_sse(
    app: &TestApp,
    last_event_id: Option<&str>,
    query: &str,
    count: usize,
) -> (Vec<(String, Value)>, bool) {
    let mut request = app
        .client
        .get(format!("{}/v1/feed{query}", app.base))
        .bearer_auth(SUBSCRIBER)
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let mut heartbeat = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time");
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                } else if line.starts_with(':') {
                    heartbeat = true;
                }
            }
            if let Some(id) = id {
                events.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    (events, heartbeat)
}

/// A reconnect with `Last-Event-ID` resumes after it: across the
/// reconnect nothing is lost and nothing repeated; idle streams carry
/// heartbeat comments.
async fn sse_resumes_after_last_event_id_without_loss_or_repeat(db: Db) {
    let app = TestApp::spawn_with(db, |c| c.feed_heartbeat_secs = 1).await;
    for i in 0..3 {
        app.register(&format!("sse{i}@example.com")).await;
    }
    let (first, _) = read_sse(&app, None, "", 2).await;
    assert_eq!(first.len(), 2);
    for (id, data) in &first {
        assert_eq!(data["position"], id.as_str(), "the SSE id is the position");
    }
    // More events while disconnected.
    for i in 3..6 {
        app.register(&format!("sse{i}@example.com")).await;
    }
    let last = first.last().unwrap().0.clone();
    let (second, _) = read_sse(&app, Some(&last), "", 4).await;
    let mut ids: Vec<String> = first.iter().map(|(id, _)| id.clone()).collect();
    ids.extend(second.iter().map(|(id, _)| id.clone()));
    let all: Vec<String> = read_all(&app, SUBSCRIBER, "")
        .await
        .iter()
        .map(|i| i["position"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, all, "nothing lost, nothing repeated");

    // Live: a stream that waits gets the next commit, and heartbeats
    // while idle.
    let reader = {
        let base = app.base.clone();
        let last = all.last().unwrap().clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/feed"))
                .bearer_auth(SUBSCRIBER)
                .header("accept", "text/event-stream")
                .header("last-event-id", last)
                .send()
                .await
                .unwrap();
            let mut body = response.bytes_stream();
            let mut text = String::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !(text.contains("data:") && text.contains(": heartbeat")) {
                match tokio::time::timeout_at(deadline, body.next()).await {
                    Ok(Some(chunk)) => text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                    _ => break,
                }
            }
            text
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = app.register("live@example.com").await;
    let text = reader.await.unwrap();
    assert!(text.contains(": heartbeat"), "{text}");
    assert!(text.contains(&id), "{text}");
    // Open streams do not keep the service from stopping.
    let stream = app
        .client
        .get(format!("{}/v1/feed", app.base))
        .bearer_auth(SUBSCRIBER)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the service stops with a stream open");
    drop(stream);
}

/// `event_type` (repeatable) and `customer_id` select events; the cursor
/// still moves past the events left out.
async fn feed_filters_by_event_type_and_customer(db: Db) {
    let app = TestApp::spawn(db).await;
    let a = app.register("fa@example.com").await;
    let b = app.register("fb@example.com").await;
    for id in [&a, &b] {
        app.command(
            id,
            "grant-access",
            json!({"password": PW, "password_confirm": PW}),
        )
        .await
        .expect(200);
        app.command(id, "revoke-access", json!({"reason": "contract ended"}))
            .await
            .expect(200);
    }
    let revoked = read_all(&app, SUBSCRIBER, "&event_type=AccessRevoked").await;
    assert_eq!(revoked.len(), 2);
    assert!(revoked.iter().all(|i| i["event_type"] == "AccessRevoked"));
    assert_eq!(revoked[0]["metadata"]["reason"], "contract ended");

    let two = read_all(
        &app,
        SUBSCRIBER,
        "&event_type=AccessRevoked&event_type=CustomerRegistered",
    )
    .await;
    assert_eq!(two.len(), 4);

    let of_b = read_all(&app, SUBSCRIBER, &format!("&customer_id={b}")).await;
    assert!(of_b.len() >= 3);
    assert!(of_b.iter().all(|i| i["customer_id"] == b.as_str()));

    let both = read_all(
        &app,
        SUBSCRIBER,
        &format!("&customer_id={a}&event_type=AccessRevoked"),
    )
    .await;
    assert_eq!(both.len(), 1);
    assert_eq!(both[0]["customer_id"], a.as_str());

    // A page that finds nothing still moves the cursor to the head.
    let page = app
        .get(
            &format!("/v1/feed?customer_id={}", uuid_of_nobody()),
            SUBSCRIBER,
        )
        .await
        .expect(200);
    assert_eq!(page.body["items"], json!([]));
    let head = read_all(&app, SUBSCRIBER, "").await;
    assert_eq!(page.body["next"], head.last().unwrap()["position"]);
    app.stop().await;
}

fn uuid_of_nobody() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

/// Each bad parameter is a 400 `malformed_request` naming it.
async fn bad_feed_parameters_are_refused_naming_the_parameter(db: Db) {
    let app = TestApp::spawn(db).await;
    app.register("bad@example.com").await;
    for (query, named) in [
        ("after=12", "after"),
        ("after=x:1", "after"),
        ("after=0:-1", "after"),
        ("after=999999999999:999999", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("wait=31", "wait"),
        ("wait=-1", "wait"),
        ("wait=1.5", "wait"),
        ("event_type=AccessStolen", "event_type"),
        ("customer_id=42", "customer_id"),
        ("limit=1&limit=2", "limit"),
        ("since=0:0", "since"),
    ] {
        let answer = app
            .get(&format!("/v1/feed?{query}"), SUBSCRIBER)
            .await
            .expect_error(400, "malformed_request");
        assert!(
            answer.message().contains(&format!("`{named}`")),
            "{query}: {}",
            answer.message()
        );
    }
    let answer = app
        .call_with(
            reqwest::Method::GET,
            "/v1/feed",
            Some(SUBSCRIBER),
            None,
            &[("accept", "text/event-stream"), ("last-event-id", "nope")],
        )
        .await
        .expect_error(400, "malformed_request");
    assert!(
        answer.message().contains("`Last-Event-ID`"),
        "{}",
        answer.message()
    );
    app.stop().await;
}

/// `subscriber` reads the feed and nothing else; auditor and admin read
/// it too; service does not.
async fn feed_roles(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("roles@example.com").await;
    for key in [SUBSCRIBER, AUDITOR, ADMIN] {
        app.get("/v1/feed", key).await.expect(200);
    }
    app.get("/v1/feed", SERVICE)
        .await
        .expect_error(403, "forbidden");
    app.call(reqwest::Method::GET, "/v1/feed", None, None)
        .await
        .expect_error(401, "unauthenticated");
    for path in [
        format!("/v1/customers/{id}"),
        "/v1/customers?email=roles@example.com".to_string(),
        format!("/v1/customers/{id}/events"),
        "/v1/audit".to_string(),
        "/v1/mail".to_string(),
    ] {
        app.get(&path, SUBSCRIBER)
            .await
            .expect_error(403, "forbidden");
    }
    app.post(
        "/v1/customers",
        SUBSCRIBER,
        json!({"email": "x@example.com"}),
    )
    .await
    .expect_error(403, "forbidden");
    app.stop().await;
}

/// Personal data is open in the feed until the customer is forgotten,
/// then `[forgotten]`; `CustomerForgotten` goes out like every event;
/// password hashes and token digests never.
async fn feed_carries_forgetting_and_no_secrets(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("forget.me@example.com").await;
    app.command(&id, "grant-access", json!({"send_notification": true}))
        .await
        .expect(200);
    app.command(
        &id,
        "set-password",
        json!({"password": PW, "password_confirm": PW}),
    )
    .await
    .expect(200);
    let before = serde_json::to_string(&read_all(&app, SUBSCRIBER, "").await).unwrap();
    assert!(before.contains("forget.me@example.com"), "{before}");
    for secret in ["password_hash", "token_digest", "argon2", PW] {
        assert!(!before.contains(secret), "{secret} in the feed: {before}");
    }
    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "erasure request"}),
    )
    .await
    .expect(200);
    let after = read_all(&app, SUBSCRIBER, "").await;
    let text = serde_json::to_string(&after).unwrap();
    assert!(!text.contains("forget.me@example.com"), "{text}");
    assert!(text.contains("[forgotten]"), "{text}");
    assert_eq!(after.last().unwrap()["event_type"], "CustomerForgotten");
    let types: HashSet<_> = after.iter().map(|i| i["event_type"].clone()).collect();
    assert!(types.contains(&json!("CustomerRegistered")));
    app.stop().await;
}

crate::on_both_stores!(
    feed_gives_every_event_of_a_concurrent_load_once_in_order,
    long_poll_returns_when_an_event_is_committed,
    long_poll_is_woken_by_another_replicas_commit,
    sse_resumes_after_last_event_id_without_loss_or_repeat,
    feed_filters_by_event_type_and_customer,
    bad_feed_parameters_are_refused_naming_the_parameter,
    feed_roles,
    feed_carries_forgetting_and_no_secrets,
);
