//! The load generator: reqwest clients on the benchmark's own tokio
//! runtime, closed loop (each client sends its next request when the
//! previous one is answered), against one or more `accessd` processes.
//! This module holds the API calls and the command loads of scenarios 1
//! and 2; the lag probe (scenario 3), logins (7) and auditor queries (5)
//! are in the submodules.

mod audit;
mod lag;
mod login;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Client;
use serde_json::{json, Value};

pub use audit::{audit_trails, csv_export, wait_for_chain};
pub use lag::LagProbe;
pub use login::{logins, wrong_logins};

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
