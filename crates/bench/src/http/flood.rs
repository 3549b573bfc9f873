//! Loads of issue 19: an open-loop login flood (scenario 13) and many
//! clients changing one customer's email (scenario 12).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use access_client::{ChangeEmailRequest, CommandOptions};
use anyhow::{Context, Result};
use reqwest::Client;
use serde_json::json;
use uuid::Uuid;

use super::{api, PASSWORD};
use crate::report::Latencies;

/// What a flood got back.
#[derive(Default)]
pub struct Flood {
    pub sent: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (timeout or connection error).
    pub unanswered: u64,
    pub first_unanswered: Option<String>,
    /// Latency of every answered request.
    pub latencies: Latencies,
    /// 429 and 503 answers without a `Retry-After`.
    pub refusals_without_retry_after: u64,
}

impl Flood {
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// 5xx answers other than 503.
    pub fn server_errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s >= 500 && **s != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Logins with the right password for `emails`, sent at `rate` per second
/// for `duration` whatever the answers (open loop: a slow service gets
/// more, not fewer, requests in flight), each given up after `timeout`.
pub async fn login_flood(
    http: &Client,
    base: &str,
    emails: &[String],
    rate: f64,
    duration: Duration,
    timeout: Duration,
) -> Result<Flood> {
    // Sent in ticks of 10 ms (tokio's timer resolution is 1 ms).
    let tick = Duration::from_millis(10);
    let per_tick = rate * tick.as_secs_f64();
    let url = format!("{base}/v1/self/sessions");
    let deadline = Instant::now() + duration;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut owed = 0.0;
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while Instant::now() < deadline {
        interval.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let request = http
                .post(&url)
                .timeout(timeout)
                .json(&json!({"email": emails[n % emails.len()], "password": PASSWORD}));
            n += 1;
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response.headers().contains_key("retry-after");
                        let _ = response.bytes().await;
                        Ok((status, retry_after, started.elapsed()))
                    }
                    Err(e) => Err(format!("{e}")),
                }
            }));
        }
    }
    let mut flood = Flood::default();
    for task in tasks {
        flood.sent += 1;
        match task.await.context("login flood task")? {
            Ok((status, retry_after, took)) => {
                *flood.statuses.entry(status).or_default() += 1;
                flood.latencies.record(took);
                if matches!(status, 429 | 503) && !retry_after {
                    flood.refusals_without_retry_after += 1;
                }
            }
            Err(e) => {
                flood.unanswered += 1;
                flood.first_unanswered.get_or_insert(e);
            }
        }
    }
    Ok(flood)
}

/// What `clients` × `each` email changes of one customer came to.
pub struct Contention {
    /// The new emails of the acknowledged changes.
    pub acknowledged: Vec<String>,
    /// Refusals by error code (`concurrent_modification`, …).
    pub refused: BTreeMap<String, u64>,
    pub latencies: Latencies,
    pub elapsed: Duration,
}

/// `clients` clients, client `c` talking to `bases[c % bases.len()]`, each
/// changing customer `id`'s login email `each` times (a setup link each
/// time, no hashing), one after the other, with no retries of their own.
pub async fn contend(
    http: &Client,
    bases: &[String],
    id: Uuid,
    clients: usize,
    each: usize,
) -> Result<Contention> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let api = api(http, &bases[c % bases.len()]);
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused: BTreeMap<String, u64> = BTreeMap::new();
                let mut latencies = Latencies::new();
                for k in 0..each {
                    let email = format!("contended-{id}-{c}-{k}@example.com");
                    let body = ChangeEmailRequest {
                        email: email.clone(),
                        password: None,
                        password_confirm: None,
                        send_notification: Some(true),
                        reason: None,
                    };
                    let t = Instant::now();
                    match api
                        .change_email(id, &body, &CommandOptions::default())
                        .await
                    {
                        Ok(_) => {
                            latencies.record(t.elapsed());
                            acknowledged.push(email);
                        }
                        Err(e) => {
                            let code = match &e {
                                access_client::Error::Api { code, .. } => code.to_string(),
                                other => format!("{other}"),
                            };
                            *refused.entry(code).or_default() += 1;
                        }
                    }
                }
                (acknowledged, refused, latencies)
            })
        })
        .collect();
    let mut all = Contention {
        acknowledged: Vec::new(),
        refused: BTreeMap::new(),
        latencies: Latencies::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (acknowledged, refused, latencies) = task.await.context("contending client")?;
        all.acknowledged.extend(acknowledged);
        for (code, n) in refused {
            *all.refused.entry(code).or_default() += n;
        }
        all.latencies.add(&latencies);
    }
    all.elapsed = started.elapsed();
    Ok(all)
}
