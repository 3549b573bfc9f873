//! Scenario 5: the auditor's queries against a service started on a
//! filled store (audit trails, the CSV export), after its hash chain has
//! caught up.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Client;

use super::answer;
use crate::service::ADMIN_KEY;
use crate::Phase;

/// One client reading customers' audit trails one after the other.
pub async fn audit_trails(
    http: &Client,
    base: &str,
    customers: &[String],
    requests: usize,
) -> Result<(Phase, u64)> {
    let api = super::api(http, base);
    let mut phase = Phase::default();
    let mut rows = 0u64;
    let started = Instant::now();
    for i in 0..requests {
        let id = &customers[i % customers.len()];
        let t = Instant::now();
        let query = access_client::AuditQuery {
            customer_id: Some(id.parse().context("a customer id")?),
            page_size: Some(1000),
            ..Default::default()
        };
        match api.audit_page(&query, None).await {
            Ok(page) => {
                phase.latencies.record(t.elapsed());
                phase.ok += 1;
                rows += page.items.len() as u64;
            }
            Err(e) => phase.error(e.into()),
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
