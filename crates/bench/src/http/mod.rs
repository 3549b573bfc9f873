//! The load generator: the typed client (`access-client`, over one shared
//! reqwest connection pool) on the benchmark's own tokio runtime, closed loop (each client sends its next request when the
//! previous one is answered), against one or more `accessd` processes.
//! This module holds the API calls and the command loads of scenarios 1
//! and 2; the lag probe (scenario 3), logins (7) and auditor queries (5)
//! are in the submodules.

mod audit;
mod flood;
mod lag;
mod login;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_client::{
    ChangeEmailRequest, CommandOptions, GrantAccessRequest, ReasonRequest, RegisterRequest,
    SetPasswordRequest,
};
use anyhow::{bail, Context, Result};
use reqwest::Client;
use serde_json::Value;
use uuid::Uuid;

pub use audit::{audit_trails, csv_export, wait_for_chain};
pub use flood::{contend, login_flood};
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

/// The typed client of the service at `base` with the admin key, over the
/// benchmark's connection pool.
pub fn api(http: &Client, base: &str) -> access_client::Client {
    access_client::Client::with_http(http.clone(), base, Some(ADMIN_KEY.to_string()))
}

/// The answer's JSON body, or an error naming the status and body (for the
/// reads the client has no typed call for: digest, CSV export).
async fn answer(response: reqwest::Response, path: &str) -> Result<Value> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One command of the load.
enum Command {
    Register(RegisterRequest),
    Grant(GrantAccessRequest),
    ChangeEmail(ChangeEmailRequest),
    Revoke(ReasonRequest),
    SetPassword(SetPasswordRequest),
}

/// Sends `command` for customer `id`; the customer's version after it.
async fn send(api: &access_client::Client, id: Uuid, command: &Command) -> Result<u64> {
    let none = CommandOptions::default();
    let reply = match command {
        Command::Register(body) => api.register(body, &none).await,
        Command::Grant(body) => api.grant_access(id, body, &none).await,
        Command::ChangeEmail(body) => api.change_email(id, body, &none).await,
        Command::Revoke(body) => api.revoke_access(id, body, &none).await,
        Command::SetPassword(body) => api.set_password(id, body, &none).await,
    }
    .with_context(|| format!("customer {id}"))?;
    Ok(reply.body.version)
}

fn notification() -> GrantAccessRequest {
    GrantAccessRequest {
        send_notification: Some(true),
        ..Default::default()
    }
}

fn password(pw: &str) -> SetPasswordRequest {
    SetPasswordRequest {
        password: pw.to_string(),
        password_confirm: pw.to_string(),
        send_notification: None,
        reason: None,
    }
}

/// The commands of one customer.
fn customer_commands(id: Uuid, mix: Mix) -> Vec<Command> {
    let email = format!("bench-{id}-2@example.net");
    let change = match mix {
        Mix::Issue => ChangeEmailRequest {
            email,
            password: Some(PASSWORD.to_string()),
            password_confirm: Some(PASSWORD.to_string()),
            send_notification: None,
            reason: None,
        },
        Mix::NoHash => ChangeEmailRequest {
            email,
            password: None,
            password_confirm: None,
            send_notification: Some(true),
            reason: None,
        },
    };
    vec![
        Command::Register(RegisterRequest {
            email: format!("bench-{id}@example.com"),
            name: Some("Bench Customer".to_string()),
            customer_id: Some(id.to_string()),
            reason: None,
        }),
        Command::Grant(notification()),
        Command::ChangeEmail(change),
        Command::Revoke(ReasonRequest::default()),
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
    run_clients(clients, duration, "load", |c, deadline| {
        let http = http.clone();
        let base = bases[c % bases.len()].clone();
        command_client(http, base, deadline, mix, lag.clone())
    })
    .await
}

async fn command_client(
    http: Client,
    base: String,
    deadline: Instant,
    mix: Mix,
    lag: Option<Arc<LagProbe>>,
) -> Phase {
    let mut phase = Phase::default();
    let api = api(&http, &base);
    'customers: while Instant::now() < deadline {
        let id = Uuid::new_v4();
        for command in customer_commands(id, mix) {
            if Instant::now() >= deadline {
                break 'customers;
            }
            let started = Instant::now();
            match send(&api, id, &command).await {
                Ok(version) => {
                    let acked = Instant::now();
                    phase.latencies.record(acked - started);
                    phase.ok += 1;
                    if let Some(lag) = &lag {
                        let version = i64::try_from(version).unwrap_or(i64::MAX);
                        lag.offer(&id.to_string(), version, acked);
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
    run_clients(clients, duration, "paced", |_, deadline| {
        let api = api(http, base);
        async move {
            let mut phase = Phase::default();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            'customers: while Instant::now() < deadline {
                let id = Uuid::new_v4();
                for command in customer_commands(id, Mix::NoHash) {
                    tick.tick().await;
                    if Instant::now() >= deadline {
                        break 'customers;
                    }
                    let started = Instant::now();
                    match send(&api, id, &command).await {
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
        }
    })
    .await
}

/// Runs `clients` clients at once, each on its own task, until
/// `duration` has passed: client `c` is `client(c, deadline)`. Their
/// phases merged; the phase lasted until the last client ended.
async fn run_clients<F, C>(
    clients: usize,
    duration: Duration,
    what: &str,
    mut client: F,
) -> Result<Phase>
where
    F: FnMut(usize, Instant) -> C,
    C: std::future::Future<Output = Phase> + Send + 'static,
{
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(c, deadline)))
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        phase.merge(task.await.with_context(|| format!("{what} client task"))?);
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

/// A registered customer with access (setup link sent); its id.
pub async fn customer_with_access(
    http: &Client,
    base: &str,
    with_password: bool,
) -> Result<String> {
    let api = api(http, base);
    let id = Uuid::new_v4();
    let register = RegisterRequest {
        email: format!("bench-{id}@example.com"),
        name: None,
        customer_id: Some(id.to_string()),
        reason: None,
    };
    send(&api, id, &Command::Register(register)).await?;
    let grant = if with_password {
        GrantAccessRequest {
            password: Some(PASSWORD.to_string()),
            password_confirm: Some(PASSWORD.to_string()),
            ..Default::default()
        }
    } else {
        notification()
    };
    send(&api, id, &Command::Grant(grant)).await?;
    Ok(id.to_string())
}

/// `n` customers with access and a password ([`PASSWORD`]); their login
/// emails.
pub async fn customers_with_password(http: &Client, base: &str, n: usize) -> Result<Vec<String>> {
    let mut emails = Vec::with_capacity(n);
    for _ in 0..n {
        let id = customer_with_access(http, base, true).await?;
        emails.push(format!("bench-{id}@example.com"));
    }
    Ok(emails)
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
            let api = api(http, base);
            let stop = stop.clone();
            tokio::spawn(async move {
                let id: Uuid = match id.parse() {
                    Ok(id) => id,
                    Err(e) => {
                        let mut phase = Phase::default();
                        phase.error(anyhow::anyhow!("customer id {id}: {e}"));
                        return phase;
                    }
                };
                let mut phase = Phase::default();
                let started = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let pw = if n % 2 == 0 { PASSWORD } else { PASSWORD_2 };
                    let t = Instant::now();
                    match send(&api, id, &Command::SetPassword(password(pw))).await {
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
