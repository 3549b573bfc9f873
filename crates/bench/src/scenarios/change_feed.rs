//! Scenario 10 (issue 16): the change feed.
//!
//! - Latency from a command's commit to a server-sent-events client of
//!   `GET /v1/feed` and to a NATS subscriber of the relay's subjects,
//!   while `--feed-clients` (32) clients send commands. The commit lies
//!   between the request and its answer: the latency is measured from the
//!   answer (the lower bound; an event seen before its answer counts 0)
//!   and from the request (the upper bound, the command's own latency
//!   included). Same-run baseline: the commands' own latency.
//! - Idle: accessd's CPU over 5 s with no commands, one SSE client
//!   connected and the relay on (nothing should poll).
//! - Relay catch-up: a backlog of `--feed-backlog` events written straight
//!   into the store (the history generator), then `accessd` started with
//!   the relay: events per second until JetStream holds them all, against
//!   the same run's full `read_feed` of the backlog (the relay cannot go
//!   faster than it reads).
//!
//! Needs a NATS server with JetStream (`--nats-url`, default
//! `nats://127.0.0.1:4222`); each run uses its own stream and subject
//! prefix and deletes them at the end.

use access_store::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Mutex;

use super::{fresh_store, ms};
use crate::history::{self, Shape};
use crate::report::{f0, print_table, Latencies};
use crate::service::{Service, ServiceOptions, ADMIN_KEY};
use crate::{Args, StoreKind, Target};

/// When each customer's `CustomerRegistered` was seen.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn stream_names() -> (String, String) {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    (format!("ACCESS_BENCH_{tag}"), format!("accessbench.{tag}"))
}

fn with_relay(options: &ServiceOptions, nats: &str, stream: &str, prefix: &str) -> ServiceOptions {
    let mut options = options.clone();
    options.env.extend([
        ("ACCESS_NATS_URL".to_string(), nats.to_string()),
        ("ACCESS_NATS_STREAM".to_string(), stream.to_string()),
        ("ACCESS_NATS_SUBJECT_PREFIX".to_string(), prefix.to_string()),
    ]);
    options
}

async fn delete_stream(nats: &str, stream: &str) {
    if let Ok(client) = async_nats::connect(nats).await {
        let _ = jetstream::new(client).delete_stream(stream).await;
    }
}

/// Reads the SSE stream of the feed from `after`, noting when each
/// registration arrives.
async fn sse_reader(base: String, after: String, seen: Seen) -> Result<()> {
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/feed?event_type=CustomerRegistered"))
        .bearer_auth(ADMIN_KEY)
        .header("accept", "text/event-stream")
        .header("last-event-id", after)
        .send()
        .await
        .context("open the SSE stream")?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk.context("SSE chunk")?));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let item: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                    if let Some(id) = item["customer_id"].as_str() {
                        seen.lock().await.insert(id.to_string(), now);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Subscribes to the relay's registrations.
async fn nats_reader(client: async_nats::Client, prefix: String, seen: Seen) -> Result<()> {
    let mut sub = client
        .subscribe(format!("{prefix}.customer_registered.>"))
        .await
        .map_err(|e| anyhow!("subscribe: {e}"))?;
    while let Some(message) = sub.next().await {
        let now = Instant::now();
        if let Some(id) = message.subject.as_str().rsplit('.').next() {
            seen.lock().await.insert(id.to_string(), now);
        }
    }
    Ok(())
}

pub async fn change_feed(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!(
        "== scenario 10: change feed: commit → SSE and → JetStream at {} clients; relay catch-up from {} events ==",
        args.feed_clients, args.feed_backlog
    );
    let nats = args.nats_url.clone();
    let mut targets = Vec::new();

    // Latency under load.
    let (stream, prefix) = stream_names();
    let db = super::postgres_db().await?;
    let service = Service::start(&with_relay(options, &nats, &stream, &prefix), db.url()).await?;
    let http = crate::http::client(args.feed_clients)?;
    let head: Value = http
        .get(format!("{}/v1/feed?limit=1000", service.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await?
        .json()
        .await?;
    let after = head["next"].as_str().unwrap_or("0:0").to_string();
    let sse_seen: Seen = Arc::default();
    let nats_seen: Seen = Arc::default();
    let nats_client = async_nats::connect(&nats)
        .await
        .map_err(|e| anyhow!("connect to NATS at {nats}: {e}"))?;
    let sse = tokio::spawn(sse_reader(service.base.clone(), after, sse_seen.clone()));
    let sub = tokio::spawn(nats_reader(nats_client, prefix.clone(), nats_seen.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deadline = Instant::now() + args.duration();
    let mut clients = Vec::new();
    for _ in 0..args.feed_clients {
        let http = http.clone();
        let base = service.base.clone();
        clients.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let id = uuid::Uuid::new_v4().to_string();
                let started = Instant::now();
                let register = access_client::RegisterRequest {
                    email: format!("feed-{id}@example.com"),
                    name: Some("Feed Bench".into()),
                    customer_id: Some(id.clone()),
                    reason: None,
                };
                let result = crate::http::api(&http, &base)
                    .register(&register, &access_client::CommandOptions::default())
                    .await;
                match result {
                    Ok(_) => sent.push((id, started, Instant::now())),
                    Err(_) => errors += 1,
                }
            }
            (sent, errors)
        }));
    }
    let mut sent = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (s, e) = c.await?;
        sent.extend(s);
        errors += e;
    }
    // Stragglers.
    let wait_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < wait_until {
        let (a, b) = (sse_seen.lock().await.len(), nats_seen.lock().await.len());
        if a >= sent.len() && b >= sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle: nothing committed, the SSE client still connected and the
    // relay on; accessd's CPU over a few seconds (~0 when nothing polls).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_for = Duration::from_secs(5);
    let cpu_before = service.cpu_seconds();
    tokio::time::sleep(idle_for).await;
    let idle_cpu = (service.cpu_seconds() - cpu_before) / idle_for.as_secs_f64() * 100.0;
    println!(
        "  idle (one SSE client, the relay on, no commands): accessd CPU {idle_cpu:.2} % of a core over {} s",
        idle_for.as_secs()
    );
    targets.push(Target {
        name: "feed_idle_cpu_percent",
        measured: format!("{idle_cpu:.2} % of a core"),
        goal: "~0 (< 1 %)",
        pass: idle_cpu < 1.0,
    });
    sse.abort();
    sub.abort();
    let mut command = Latencies::new();
    let mut rows = vec![vec![
        "path".to_string(),
        "seen".to_string(),
        "p50 ms (from answer)".to_string(),
        "p99 ms (from answer)".to_string(),
        "p99 ms (from request)".to_string(),
        "max ms (from answer)".to_string(),
    ]];
    for (id, started, answered) in &sent {
        let _ = id;
        command.record(answered.duration_since(*started));
    }
    let mut p99s = Vec::new();
    for (name, seen) in [("SSE", &sse_seen), ("JetStream", &nats_seen)] {
        let seen = seen.lock().await;
        let mut from_answer = Latencies::new();
        let mut from_request = Latencies::new();
        for (id, started, answered) in &sent {
            if let Some(at) = seen.get(id) {
                from_answer.record(at.saturating_duration_since(*answered));
                from_request.record(at.saturating_duration_since(*started));
            }
        }
        rows.push(vec![
            name.to_string(),
            format!("{}/{}", from_answer.count(), sent.len()),
            ms(from_answer.ms(0.5)),
            ms(from_answer.ms(0.99)),
            ms(from_request.ms(0.99)),
            ms(from_answer.max_ms()),
        ]);
        p99s.push((
            name,
            from_answer.ms(0.99),
            from_answer.count() as usize == sent.len(),
        ));
    }
    rows.push(vec![
        "baseline: the command itself".to_string(),
        format!("{}", command.count()),
        ms(command.ms(0.5)),
        ms(command.ms(0.99)),
        "".to_string(),
        ms(command.max_ms()),
    ]);
    print_table(&rows);
    if errors > 0 {
        println!("  ! {errors} commands failed");
    }
    for (name, p99, complete) in p99s {
        targets.push(Target {
            name: if name == "SSE" {
                "feed_commit_to_sse_p99_ms"
            } else {
                "feed_commit_to_jetstream_p99_ms"
            },
            measured: format!(
                "{} ms{}",
                ms(p99),
                if complete { "" } else { " (events missing)" }
            ),
            goal: "< 50 ms at 32 clients",
            pass: complete && p99 < 50.0,
        });
    }
    service.stop();
    delete_stream(&nats, &stream).await;
    drop(db);

    // Relay catch-up from a backlog.
    let (db, store, _) = fresh_store(StoreKind::Postgres).await?;
    let fill = history::fill(&store, args.feed_backlog, Shape::Varied).await?;
    let total = store.count_events().await?;
    println!(
        "  backlog: {total} events written in {:.1} s",
        fill.elapsed.as_secs_f64()
    );
    // Fresh planner statistics, as autovacuum gives a real database after
    // a bulk load: without them (a server with autovacuum off) the feed's
    // read plans a scan of every later event per batch.
    store
        .sql()
        .execute(&access_store::sql::Query::new("ANALYZE"))
        .await?;
    let read_started = Instant::now();
    let mut at = access_store::Position::START;
    let mut read = 0u64;
    loop {
        let batch = store.read_feed(at, 1000).await?;
        let Some(last) = batch.last() else { break };
        at = last.position;
        read += batch.len() as u64;
    }
    let read_rate = read as f64 / read_started.elapsed().as_secs_f64().max(1e-9);
    store.close().await;
    let (stream, prefix) = stream_names();
    let started = Instant::now();
    let service = Service::start(&with_relay(options, &nats, &stream, &prefix), db.url()).await?;
    let js = jetstream::new(
        async_nats::connect(&nats)
            .await
            .map_err(|e| anyhow!("connect to NATS: {e}"))?,
    );
    let limit = Instant::now() + Duration::from_secs(600);
    let mut held = 0;
    // (when, messages) at the first poll that saw messages: the relay's
    // rate is measured from there (accessd's start-up left out).
    let mut first: Option<(Instant, u64)> = None;
    while Instant::now() < limit {
        if let Ok(mut s) = js.get_stream(&stream).await {
            held = s.info().await.map(|i| i.state.messages).unwrap_or(0);
            if held > 0 && first.is_none() {
                first = Some((Instant::now(), held));
            }
            if held >= total {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (rate, relay_secs) = match first {
        Some((at, n)) if held > n => {
            let s = at.elapsed().as_secs_f64();
            ((held - n) as f64 / s.max(1e-9), s)
        }
        _ => (held as f64 / secs.max(1e-9), secs),
    };
    println!("  accessd started and relayed everything in {secs:.2} s");
    print_table(&[
        vec![
            "".to_string(),
            "events".to_string(),
            "s".to_string(),
            "events/s".to_string(),
        ],
        vec![
            "relay catch-up into JetStream (from its first message)".to_string(),
            held.to_string(),
            format!("{relay_secs:.2}"),
            f0(rate),
        ],
        vec![
            "baseline: read_feed of the backlog (batches of 1000)".to_string(),
            read.to_string(),
            "".to_string(),
            f0(read_rate),
        ],
    ]);
    targets.push(Target {
        name: "relay_catch_up_events_per_s",
        measured: format!("{} events/s over {held} of {total} events", f0(rate)),
        goal: "≥ 20000 events/s",
        pass: held >= total && rate >= 20_000.0,
    });
    service.stop();
    delete_stream(&nats, &stream).await;
    drop(db);
    Ok(targets)
}
