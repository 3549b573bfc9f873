//! The load generator: reqwest clients on the benchmark's own tokio
//! runtime, closed loop (each client sends its next request when the
//! previous one is answered), against one or more `accessd` processes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::report::Latencies;
use crate::service::ADMIN_KEY;
use crate::Phase;

/// A password zxcvbn accepts.
pub const PASSWORD: &str = "Velvet-Tundra-Orbit-42";
const PASSWORD_2: &str = "Quartz-Meadow-Lantern-77";

pub fn client(connections: usize) -> Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(connections.max(1))
        .timeout(Duration::from_secs(120))
        .build()
        .context("build the HTTP client")
}

/// Which commands a customer goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// The issue's mix: register, grant access with a setup link, change
    /// the email with a temporary password (one argon2id hash), revoke.
    Issue,
    /// The same with the email change sending a setup link instead of a
    /// password: no hashing at all.
    NoHash,
}

/// One API call with the admin key; the answer's JSON body, or an error
/// naming the status and body.
pub async fn post(client: &Client, base: &str, path: &str, body: Value) -> Result<Value> {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    answer(response, path).await
}

async fn answer(response: reqwest::Response, path: &str) -> Result<Value> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn version_of(body: &Value) -> i64 {
    body["version"].as_i64().unwrap_or(0)
}

/// The commands of one customer: (path, body).
fn customer_commands(id: &str, mix: Mix) -> Vec<(String, Value)> {
    let change = match mix {
        Mix::Issue => json!({
            "email": format!("bench-{id}-2@example.net"),
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        }),
        Mix::NoHash => json!({
            "email": format!("bench-{id}-2@example.net"),
            "send_notification": true,
        }),
    };
    vec![
        (
            "/v1/customers".to_string(),
            json!({"email": format!("bench-{id}@example.com"), "name": "Bench Customer", "customer_id": id}),
        ),
        (
            format!("/v1/customers/{id}/grant-access"),
            json!({"send_notification": true}),
        ),
        (format!("/v1/customers/{id}/change-email"), change),
        (format!("/v1/customers/{id}/revoke-access"), json!({})),
    ]
}

// ---------------------------------------------------------------------------
// projection lag
// ---------------------------------------------------------------------------

/// Samples acknowledged commands (at most one per `interval`) and polls the
/// database until the command's last audit row is visible: the time from
/// the acknowledgement to that moment is the lag.
pub struct LagProbe {
    pool: sqlx::PgPool,
    started: Instant,
    interval_us: u64,
    next_us: AtomicU64,
    results: Arc<Mutex<Latencies>>,
    timeouts: Arc<AtomicU64>,
    polls: Arc<AtomicU64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

const LAG_POLL: Duration = Duration::from_millis(1);
const LAG_GIVE_UP: Duration = Duration::from_secs(10);

impl LagProbe {
    pub fn new(pool: sqlx::PgPool, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            pool,
            started: Instant::now(),
            interval_us: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
            next_us: AtomicU64::new(0),
            results: Arc::new(Mutex::new(Latencies::new())),
            timeouts: Arc::new(AtomicU64::new(0)),
            polls: Arc::new(AtomicU64::new(0)),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn offer(&self, customer_id: &str, sequence: i64, acked: Instant) {
        let now_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let next = self.next_us.load(Ordering::Relaxed);
        if now_us < next
            || self
                .next_us
                .compare_exchange(
                    next,
                    now_us + self.interval_us,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let pool = self.pool.clone();
        let results = self.results.clone();
        let timeouts = self.timeouts.clone();
        let polls = self.polls.clone();
        let customer_id = customer_id.to_string();
        let task = tokio::spawn(async move {
            loop {
                polls.fetch_add(1, Ordering::Relaxed);
                let visible = sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM audit_trail WHERE customer_id = $1 AND sequence = $2)",
                )
                .bind(&customer_id)
                .bind(sequence)
                .fetch_one(&pool)
                .await
                .unwrap_or(false);
                if visible {
                    if let Ok(mut r) = results.lock() {
                        r.record(acked.elapsed());
                    }
                    return;
                }
                if acked.elapsed() > LAG_GIVE_UP {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(LAG_POLL).await;
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Queries the probe has sent (each one a database transaction).
    pub fn polls(&self) -> i64 {
        i64::try_from(self.polls.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Waits for the probes in flight; the lags and the number of samples
    /// that never became visible within 10 s.
    pub async fn finish(&self) -> (Latencies, u64) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        let lags = self.results.lock().map(|r| r.clone()).unwrap_or_default();
        (lags, self.timeouts.load(Ordering::Relaxed))
    }
}

// ---------------------------------------------------------------------------
// scenario 1: commands
// ---------------------------------------------------------------------------

/// `clients` closed-loop clients for `duration`, each taking new customers
/// through the mix; client `c` talks to `bases[c % bases.len()]`.
pub async fn commands(
    http: &Client,
    bases: &[String],
    clients: usize,
    duration: Duration,
    mix: Mix,
    lag: Option<Arc<LagProbe>>,
) -> Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = http.clone();
            let base = bases[c % bases.len()].clone();
            let lag = lag.clone();
            tokio::spawn(async move { command_client(http, base, deadline, mix, lag).await })
        })
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        let client = task.await.context("load client task")?;
        phase.merge(client);
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

async fn command_client(
    http: Client,
    base: String,
    deadline: Instant,
    mix: Mix,
    lag: Option<Arc<LagProbe>>,
) -> Phase {
    let mut phase = Phase::default();
    'customers: while Instant::now() < deadline {
        let id = uuid::Uuid::new_v4().to_string();
        for (path, body) in customer_commands(&id, mix) {
            if Instant::now() >= deadline {
                break 'customers;
            }
            let started = Instant::now();
            match post(&http, &base, &path, body).await {
                Ok(answer) => {
                    let acked = Instant::now();
                    phase.latencies.record(acked - started);
                    phase.ok += 1;
                    if let Some(lag) = &lag {
                        lag.offer(&id, version_of(&answer), acked);
                    }
                }
                Err(e) => {
                    phase.error(e);
                    // The rest of this customer's commands would fail too.
                    continue 'customers;
                }
            }
        }
    }
    phase
}

// ---------------------------------------------------------------------------
// scenario 2: hashing isolation
// ---------------------------------------------------------------------------

/// Non-hashing commands at a steady pace: `clients` clients, each sending
/// one command every `every` (or as soon as the previous one is answered,
/// if that is later).
pub async fn paced(
    http: &Client,
    base: &str,
    clients: usize,
    every: Duration,
    duration: Duration,
) -> Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let http = http.clone();
            let base = base.to_string();
            tokio::spawn(async move {
                let mut phase = Phase::default();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                'customers: while Instant::now() < deadline {
                    let id = uuid::Uuid::new_v4().to_string();
                    for (path, body) in customer_commands(&id, Mix::NoHash) {
                        tick.tick().await;
                        if Instant::now() >= deadline {
                            break 'customers;
                        }
                        let started = Instant::now();
                        match post(&http, &base, &path, body).await {
                            Ok(_) => {
                                phase.latencies.record(started.elapsed());
                                phase.ok += 1;
                            }
                            Err(e) => {
                                phase.error(e);
                                continue 'customers;
                            }
                        }
                    }
                }
                phase
            })
        })
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        phase.merge(task.await.context("paced client task")?);
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

/// A registered customer with access (setup link sent); its id.
pub async fn customer_with_access(http: &Client, base: &str, password: bool) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    post(
        http,
        base,
        "/v1/customers",
        json!({"email": format!("bench-{id}@example.com"), "customer_id": id}),
    )
    .await?;
    let grant = if password {
        json!({"password": PASSWORD, "password_confirm": PASSWORD})
    } else {
        json!({"send_notification": true})
    };
    post(
        http,
        base,
        &format!("/v1/customers/{id}/grant-access"),
        grant,
    )
    .await?;
    Ok(id)
}

/// Hashing load: one task per customer setting its password (argon2id)
/// again and again until `stop`; the number of passwords set.
pub fn hashers(
    http: &Client,
    base: &str,
    customers: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Phase>> {
    customers
        .into_iter()
        .map(|id| {
            let http = http.clone();
            let base = base.to_string();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut phase = Phase::default();
                let started = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let pw = if n % 2 == 0 { PASSWORD } else { PASSWORD_2 };
                    let t = Instant::now();
                    match post(
                        &http,
                        &base,
                        &format!("/v1/customers/{id}/set-password"),
                        json!({"password": pw, "password_confirm": pw}),
                    )
                    .await
                    {
                        Ok(_) => {
                            phase.latencies.record(t.elapsed());
                            phase.ok += 1;
                        }
                        Err(e) => phase.error(e),
                    }
                }
                phase.elapsed = started.elapsed();
                phase
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// scenario 7: login
// ---------------------------------------------------------------------------

/// `clients` clients logging in (`POST /v1/self/sessions`) as the given
/// customers for `duration`; each 201 is one session.
pub async fn logins(
    http: &Client,
    base: &str,
    emails: &[String],
    clients: usize,
    duration: Duration,
) -> Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = http.clone();
            let url = format!("{base}/v1/self/sessions");
            let email = emails[c % emails.len()].clone();
            tokio::spawn(async move {
                let mut phase = Phase::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let result = http
                        .post(&url)
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .send()
                        .await;
                    match result {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            let _ = r.bytes().await;
                            phase.latencies.record(t.elapsed());
                            phase.ok += 1;
                        }
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            phase.error(anyhow::anyhow!("login: {status}: {text}"));
                        }
                        Err(e) => phase.error(anyhow::anyhow!("login: {e}")),
                    }
                }
                phase
            })
        })
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        phase.merge(task.await.context("login client task")?);
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

/// `n` logins one after the other with a wrong password for `email` (all
/// must answer 401); their latencies.
pub async fn wrong_logins(
    http: &Client,
    base: &str,
    email: &str,
    n: usize,
) -> Result<crate::report::Latencies> {
    let mut latencies = crate::report::Latencies::new();
    let url = format!("{base}/v1/self/sessions");
    for _ in 0..n {
        let t = Instant::now();
        let response = http
            .post(&url)
            .json(&json!({"email": email, "password": "Wrong-Password-Guess-1"}))
            .send()
            .await
            .context("login")?;
        let status = response.status();
        let _ = response.bytes().await;
        if status != StatusCode::UNAUTHORIZED {
            anyhow::bail!("a wrong login answered {status}, not 401");
        }
        latencies.record(t.elapsed());
    }
    Ok(latencies)
}

// ---------------------------------------------------------------------------
// scenario 5: audit queries
// ---------------------------------------------------------------------------

/// One client reading customers' audit trails one after the other.
pub async fn audit_trails(
    http: &Client,
    base: &str,
    customers: &[String],
    requests: usize,
) -> Result<(Phase, u64)> {
    let mut phase = Phase::default();
    let mut rows = 0u64;
    let started = Instant::now();
    for i in 0..requests {
        let id = &customers[i % customers.len()];
        let t = Instant::now();
        let response = http
            .get(format!("{base}/v1/customers/{id}/audit?limit=1000"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .context("GET audit trail")?;
        match answer(response, "/v1/customers/{id}/audit").await {
            Ok(body) => {
                phase.latencies.record(t.elapsed());
                phase.ok += 1;
                rows += body["items"].as_array().map_or(0, |a| a.len() as u64);
            }
            Err(e) => phase.error(e),
        }
    }
    phase.elapsed = started.elapsed();
    Ok((phase, rows))
}

/// Waits until the service's hash chain covers the event at global
/// position `head` (`GET /v1/audit/digest`): a service started on a store
/// filled without it hashes every event first, and queries measured
/// meanwhile would measure that catch-up. Returns how long it took.
pub async fn wait_for_chain(
    http: &Client,
    base: &str,
    head: i64,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let response = http
            .get(format!("{base}/v1/audit/digest"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .context("GET /v1/audit/digest")?;
        let body = answer(response, "/v1/audit/digest").await?;
        if body["global_position"].as_i64().unwrap_or(0) >= head {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("the hash chain did not reach position {head} within {timeout:?}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /v1/audit?format=csv`, read to the end: (lines, bytes, time).
pub async fn csv_export(http: &Client, base: &str) -> Result<(u64, u64, Duration)> {
    let started = Instant::now();
    let mut response = http
        .get(format!("{base}/v1/audit?format=csv"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .context("GET /v1/audit?format=csv")?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "csv export: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let mut lines = 0u64;
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await.context("csv export body")? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok((lines, bytes, started.elapsed()))
}
