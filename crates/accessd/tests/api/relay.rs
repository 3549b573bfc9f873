//! The NATS JetStream relay against a real NATS server: every event once
//! and in order in the stream, after a SIGKILL mid-relay and a restart,
//! with NATS stopped under load and started again, and with two replicas.
//!
//! The machine's NATS (127.0.0.1:4222, started by `.ci/run` when missing)
//! serves the tests that only publish, each with its own stream and
//! subject prefix; the test that stops NATS starts its own throwaway
//! `nats-server -js` on a free port.

use access_store::prelude::*;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::procs::spawn_accessd;

const MACHINE_NATS: &str = "nats://127.0.0.1:4222";

/// A stream and subject prefix of this test alone.
struct Names {
    stream: String,
    prefix: String,
}

fn names() -> Names {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    Names {
        stream: format!("ACCESS_TEST_{tag}"),
        prefix: format!("accesstest.{tag}"),
    }
}

fn relay_to(c: &mut accessd::Config, url: &str, names: &Names) {
    c.nats_url = Some(url.to_string());
    c.nats_stream = names.stream.clone();
    c.nats_subject_prefix = names.prefix.clone();
}

/// A throwaway `nats-server -js` on a free port, its store in a temp dir.
struct OwnNats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnNats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stream's messages: (Nats-Msg-Id, subject, body).
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = match js.get_stream(stream).await {
        Ok(stream) => stream,
        Err(_) => return Vec::new(),
    };
    let state = stream.info().await.unwrap().state.clone();
    let mut messages = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        // Purged messages leave gaps.
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| panic!("no Nats-Msg-Id: {:?}", m.headers));
        messages.push((
            id,
            m.subject.to_string(),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    messages
}

async fn stream_count(url: &str, stream: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn delete_stream(url: &str, stream: &str) {
    if let Ok(client) = async_nats::connect(url).await {
        let _ = jetstream::new(client).delete_stream(stream).await;
    }
}

/// Every item of the feed, once all the store's events are visible (on
/// PostgreSQL an open transaction anywhere on the server holds newer
/// events back for a moment).
async fn feed_items(app: &TestApp) -> Vec<Value> {
    let total = app.state.store().count_events().await.unwrap() as usize;
    let mut items = Vec::new();
    let mut after = "0:0".to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while items.len() < total {
        assert!(
            Instant::now() < deadline,
            "the feed shows {} of {total}",
            items.len()
        );
        let page = app
            .get(&format!("/v1/feed?after={after}&limit=1000&wait=1"), ADMIN)
            .await
            .expect(200);
        items.extend(page.body["items"].as_array().unwrap().iter().cloned());
        after = page.body["next"].as_str().unwrap().to_string();
    }
    items
}

/// The feed's positions (the truth the stream must match).
async fn feed_positions(app: &TestApp) -> Vec<String> {
    feed_items(app)
        .await
        .iter()
        .map(|i| i["position"].as_str().unwrap().to_string())
        .collect()
}

/// The feed's positions less the messages a forget purges from the
/// stream (a forgotten customer's events before `CustomerForgotten`).
async fn expected_in_stream(app: &TestApp) -> Vec<String> {
    let items = feed_items(app).await;
    let forgotten: Vec<Value> = items
        .iter()
        .filter(|i| i["event_type"] == "CustomerForgotten")
        .map(|i| i["customer_id"].clone())
        .collect();
    items
        .iter()
        .filter(|i| {
            i["event_type"] == "CustomerForgotten" || !forgotten.contains(&i["customer_id"])
        })
        .map(|i| i["position"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the stream holds `count` messages (at most 60 s).
async fn wait_for_stream(url: &str, stream: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = stream_count(url, stream).await;
        if now >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {now} of {count} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream holds each of the feed's events exactly once, in the feed's
/// order, with the position as message id and the documented subject.
async fn assert_exactly_once(app: &TestApp, url: &str, names: &Names) {
    let positions = expected_in_stream(app).await;
    wait_for_stream(url, &names.stream, positions.len() as u64).await;
    // A duplicate would show as one message more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = stream_messages(url, &names.stream).await;
    let ids: Vec<String> = messages.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids, positions, "each event once, in order");
    for (id, subject, body) in &messages {
        assert_eq!(body["position"], id.as_str());
        let expected = format!(
            "{}.{}.{}",
            names.prefix,
            snake(body["event_type"].as_str().unwrap()),
            body["customer_id"].as_str().unwrap()
        );
        assert_eq!(subject, &expected);
        let text = body.to_string();
        assert!(!text.contains("password_hash") && !text.contains("token_digest"));
    }
}

fn snake(name: &str) -> String {
    accessd::feed::snake_case(name)
}

async fn some_events(app: &TestApp, tag: &str, n: usize) {
    for i in 0..n {
        let id = app.register(&format!("{tag}{i}@example.com")).await;
        if i % 3 == 0 {
            app.command(&id, "grant-access", json!({"send_notification": true}))
                .await
                .expect(200);
        }
    }
}

/// Every event goes into JetStream once, in order, on the documented
/// subject, the checkpoint following; forgetting travels too.
async fn relay_publishes_every_event_once_in_order(db: Db) {
    let names = names();
    let app = TestApp::spawn_with(db, |c| relay_to(c, MACHINE_NATS, &names)).await;
    some_events(&app, "relay", 12).await;
    let id = app.register("forgotten@example.com").await;
    app.post(
        &format!("/v1/customers/{id}/forget"),
        ADMIN,
        json!({"reason": "erasure request"}),
    )
    .await
    .expect(200);
    assert_exactly_once(&app, MACHINE_NATS, &names).await;
    let messages = stream_messages(MACHINE_NATS, &names.stream).await;
    assert_eq!(
        messages.last().unwrap().2["event_type"],
        "CustomerForgotten"
    );
    // The forgotten customer's earlier messages were purged: no copy of
    // its email stays in the stream.
    let text = serde_json::to_string(&messages.iter().map(|m| &m.2).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("forgotten@example.com"), "{text}");
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.2["customer_id"] == id.as_str())
            .count(),
        1
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
    assert!(metrics.contains("access_relay_lag_events"), "{metrics}");
    app.stop().await;
    delete_stream(MACHINE_NATS, &names.stream).await;
}

/// NATS stopped under load: commands still succeed, `/readyz` stays
/// ready, the relay counts errors; NATS started again: the relay catches
/// up and the stream is complete, each event once.
async fn relay_catches_up_after_nats_is_stopped_and_started_under_load(db: Db) {
    let mut nats = OwnNats::start();
    let names = names();
    let url = nats.url();
    let app = TestApp::spawn_with(db, |c| relay_to(c, &url, &names)).await;
    some_events(&app, "before", 5).await;
    wait_for_stream(&url, &names.stream, 5).await;

    nats.stop();
    some_events(&app, "during", 15).await;
    let ready = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status, 200,
        "NATS down does not fail readiness: {}",
        ready.body
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = app.state.relay().unwrap().status();
        if status.errors > 0 && status.events_behind() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no relay error seen: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nats.restart();
    some_events(&app, "after", 5).await;
    assert_exactly_once(&app, &url, &names).await;
    app.stop().await;
}

/// Two replicas with the relay on, both taking commands: still each event
/// once in the stream, in order. PostgreSQL only: SQLite is for one
/// process (docs/operations.md); a second process's writes make the
/// first's deferred transactions answer `database is locked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_relay_each_event_once_on_postgres() {
    let db = Db::Postgres;
    let names = names();
    let app = TestApp::spawn_with(db, |c| relay_to(c, MACHINE_NATS, &names)).await;
    let other = app
        .replica(|c| {
            relay_to(c, MACHINE_NATS, &names);
            c.projector = false;
        })
        .await;
    let (a, b) = tokio::join!(some_events(&app, "one", 10), some_events(&other, "two", 10));
    let _ = (a, b);
    assert_exactly_once(&app, MACHINE_NATS, &names).await;
    other.stop().await;
    app.stop().await;
    delete_stream(MACHINE_NATS, &names.stream).await;
}

/// accessd killed (SIGKILL) while it relays a backlog one event per batch,
/// then started again: the stream holds each event exactly once, in order
/// (re-sent messages are dropped by their `Nats-Msg-Id`).
async fn relay_is_exactly_once_after_sigkill_mid_relay(db: Db) {
    let names = names();
    let app = TestApp::spawn(db).await;
    let url = app.database_url();
    let mut writers = Vec::new();
    for w in 0..4 {
        let base = app.base.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..75 {
                let status = client
                    .post(format!("{base}/v1/customers"))
                    .bearer_auth(SERVICE)
                    .json(&json!({"email": format!("kill{w}-{i}@example.com")}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(status.is_success());
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let positions = feed_positions(&app).await;
    let total = positions.len() as u64;
    let database = app.stop_keeping_database().await;

    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ACCESS_DATABASE_URL", url.clone()),
        ("ACCESS_API_KEYS", format!("ops:admin:{ADMIN}")),
        (
            "ACCESS_MAIL",
            format!("file:{}", dir.path().join("mail").display()),
        ),
        ("ACCESS_NATS_URL", MACHINE_NATS.to_string()),
        ("ACCESS_NATS_STREAM", names.stream.clone()),
        ("ACCESS_NATS_SUBJECT_PREFIX", names.prefix.clone()),
        ("ACCESS_NATS_BATCH", "1".to_string()),
        ("ACCESS_LOG", "warn".to_string()),
    ];
    let mut first = spawn_accessd(dir.path(), "relay-1", &env).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let count = stream_count(MACHINE_NATS, &names.stream).await;
        if count >= 10 {
            first.kill();
            break count;
        }
        assert!(Instant::now() < deadline, "the relay did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        at_kill < total,
        "killed after the relay finished ({at_kill} of {total})"
    );
    let second = spawn_accessd(dir.path(), "relay-2", &env).await;
    wait_for_stream(MACHINE_NATS, &names.stream, total).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = stream_messages(MACHINE_NATS, &names.stream)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids, positions, "each event exactly once, in order");
    drop(second);
    drop(database);
    delete_stream(MACHINE_NATS, &names.stream).await;
}

/// The stream the relay would create, made by the test first (the relay
/// uses a stream it finds) so that the test can set its limits.
async fn make_stream(
    url: &str,
    names: &Names,
    adjust: impl FnOnce(&mut jetstream::stream::Config),
) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut config = jetstream::stream::Config {
        name: names.stream.clone(),
        subjects: vec![format!("{}.>", names.prefix)],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    adjust(&mut config);
    js.create_stream(config).await.unwrap();
}

async fn update_stream(
    url: &str,
    names: &Names,
    adjust: impl FnOnce(&mut jetstream::stream::Config),
) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream(&names.stream).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    adjust(&mut config);
    js.update_stream(config).await.unwrap();
}

/// Waits until the relay has counted an error.
async fn wait_for_relay_error(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = app.state.relay().unwrap().status();
        if status.errors > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no relay error seen: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// JetStream refuses one message of a batch (here: too large for the
/// stream) while the ones after it would be taken: the relay must not let
/// later events into the stream before it, so once the message fits the
/// stream still holds every event once, in position order.
async fn relay_keeps_position_order_when_jetstream_refuses_a_message(db: Db) {
    let names = names();
    make_stream(MACHINE_NATS, &names, |_| {}).await;
    let app = TestApp::spawn_with(db, |c| relay_to(c, MACHINE_NATS, &names)).await;
    some_events(&app, "small", 3).await;
    let before = expected_in_stream(&app).await.len() as u64;
    wait_for_stream(MACHINE_NATS, &names.stream, before).await;
    let largest = stream_messages(MACHINE_NATS, &names.stream)
        .await
        .iter()
        .map(|(_, _, body)| body.to_string().len())
        .max()
        .unwrap();
    // Room for the small events (and their headers), not for the big one.
    let limit = i32::try_from(largest + 200).unwrap();
    update_stream(MACHINE_NATS, &names, |c| c.max_message_size = limit).await;
    app.post(
        "/v1/customers",
        SERVICE,
        json!({"email": "big@example.com", "name": "B".repeat(200), "reason": "r".repeat(400)}),
    )
    .await
    .expect(201);
    wait_for_relay_error(&app).await;
    // Small events after the refused one, and time for the relay's
    // retries to offer them to JetStream.
    some_events(&app, "later", 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    update_stream(MACHINE_NATS, &names, |c| c.max_message_size = -1).await;
    assert_exactly_once(&app, MACHINE_NATS, &names).await;
    app.stop().await;
    delete_stream(MACHINE_NATS, &names.stream).await;
}

/// The relay's checkpoint lags the stream (as after a crash between
/// JetStream's acknowledgement and the checkpoint's move) for longer than
/// the stream's duplicate window: the relay resumes after the stream's
/// last message, so nothing is stored twice.
async fn relay_resumes_after_the_streams_last_message_past_the_duplicate_window(db: Db) {
    let names = names();
    make_stream(MACHINE_NATS, &names, |c| {
        c.duplicate_window = Duration::from_millis(500)
    })
    .await;
    let app = TestApp::spawn_with(db, |c| relay_to(c, MACHINE_NATS, &names)).await;
    some_events(&app, "first", 4).await;
    let before = expected_in_stream(&app).await.len() as u64;
    wait_for_stream(MACHINE_NATS, &names.stream, before).await;
    // The checkpoint back at the start; the duplicate window passes.
    let checkpoint = format!("nats:{}", names.stream);
    let mut tx = app.state.store().sql().begin().await.unwrap();
    tx.set_checkpoint(&checkpoint, access_store::Position::START)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    some_events(&app, "then", 2).await;
    assert_exactly_once(&app, MACHINE_NATS, &names).await;
    app.stop().await;
    delete_stream(MACHINE_NATS, &names.stream).await;
}

/// The relay's rounds (each a look at the store) over `period`.
async fn rounds_over(app: &TestApp, period: Duration) -> u64 {
    let before = app.state.relay().unwrap().status().rounds;
    tokio::time::sleep(period).await;
    app.state.relay().unwrap().status().rounds - before
}

/// With nothing to relay the relay rests: a round per second at most
/// (its fallback look), not a poll every few milliseconds.
async fn an_idle_relay_rests(db: Db) {
    let names = names();
    let app = TestApp::spawn_with(db, |c| relay_to(c, MACHINE_NATS, &names)).await;
    some_events(&app, "idle", 2).await;
    let total = expected_in_stream(&app).await.len() as u64;
    wait_for_stream(MACHINE_NATS, &names.stream, total).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rounds = rounds_over(&app, Duration::from_secs(3)).await;
    assert!(rounds <= 4, "{rounds} relay rounds in 3 idle seconds");
    // A commit still wakes it: relayed well before the 1-second look
    // (measured from the command's answer; a loaded machine's watermark
    // may hold the event back a little).
    app.register("wake@example.com").await;
    let answered = Instant::now();
    wait_for_stream(MACHINE_NATS, &names.stream, total + 1).await;
    assert!(
        answered.elapsed() < Duration::from_millis(800),
        "relayed {:?} after the answer",
        answered.elapsed()
    );
    app.stop().await;
    delete_stream(MACHINE_NATS, &names.stream).await;
}

/// A replica that does not hold the relay tries for it at a slow pace,
/// not at every commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_relay_tries_for_it_slowly_on_postgres() {
    let names = names();
    let app = TestApp::spawn_with(Db::Postgres, |c| relay_to(c, MACHINE_NATS, &names)).await;
    some_events(&app, "lead", 1).await;
    wait_for_stream(MACHINE_NATS, &names.stream, 1).await;
    let other = app
        .replica(|c| {
            relay_to(c, MACHINE_NATS, &names);
            c.projector = false;
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (leader, follower) = if app.state.relay().unwrap().status().leader {
        (&app, &other)
    } else {
        (&other, &app)
    };
    let before = follower.state.relay().unwrap().status().rounds;
    let load = async {
        for round in 0..3 {
            some_events(leader, &format!("load{round}-"), 3).await;
            some_events(follower, &format!("load{round}+"), 3).await;
        }
    };
    let ((), ()) = tokio::join!(load, tokio::time::sleep(Duration::from_secs(3)));
    let rounds = follower.state.relay().unwrap().status().rounds - before;
    assert!(!follower.state.relay().unwrap().status().leader);
    assert!(rounds <= 3, "the follower looked {rounds} times in 3 s");
    assert_exactly_once(&app, MACHINE_NATS, &names).await;
    other.stop().await;
    app.stop().await;
    delete_stream(MACHINE_NATS, &names.stream).await;
}

crate::on_both_stores!(
    relay_publishes_every_event_once_in_order,
    relay_keeps_position_order_when_jetstream_refuses_a_message,
    relay_resumes_after_the_streams_last_message_past_the_duplicate_window,
    an_idle_relay_rests,
    relay_catches_up_after_nats_is_stopped_and_started_under_load,
    relay_is_exactly_once_after_sigkill_mid_relay,
);
