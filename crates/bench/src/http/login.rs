//! Scenario 7: logins with the right password (sessions per second) and
//! with a wrong one (the known-versus-unknown email timing).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reqwest::{Client, StatusCode};
use serde_json::json;

use super::{run_clients, PASSWORD};
use crate::report::Latencies;
use crate::Phase;

/// `clients` clients logging in (`POST /v1/self/sessions`) as the given
/// customers for `duration`; each 201 is one session.
pub async fn logins(
    http: &Client,
    base: &str,
    emails: &[String],
    clients: usize,
    duration: Duration,
) -> Result<Phase> {
    run_clients(clients, duration, "login", |c, deadline| {
        let http = http.clone();
        let url = format!("{base}/v1/self/sessions");
        let email = emails[c % emails.len()].clone();
        async move {
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
        }
    })
    .await
}

/// `n` logins one after the other with a wrong password for `email` (all
/// must answer 401); their latencies.
pub async fn wrong_logins(http: &Client, base: &str, email: &str, n: usize) -> Result<Latencies> {
    let mut latencies = Latencies::new();
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
