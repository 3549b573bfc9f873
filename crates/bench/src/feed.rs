//! Reading the whole store, the floor of any rebuild: a plain `SELECT`
//! of the events table (scenario 4, PostgreSQL) and `Store::read_feed`
//! from the start in batches (scenarios 8 and 9, both databases).

use access_store::prelude::*;
use std::time::{Duration, Instant};

use access_store::{Position, Store};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;

/// How long a read may wait for the PostgreSQL feed horizon (a transaction
/// running elsewhere on the server holds the feed back) before failing.
const FEED_HORIZON_WAIT: Duration = Duration::from_secs(30);

/// The floor of any rebuild: one plain sequential `SELECT` of the events
/// table, every column a projection needs decoded (the JSON parsed).
pub async fn plain_read(pool: &sqlx::PgPool) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT aggregate_id, sequence, event_type, event_version, payload, metadata, \
         global_position, tx_id::text AS tx, recorded_at FROM events",
    )
    .fetch(pool);
    let mut n = 0u64;
    let mut check = 0i64;
    while let Some(row) = rows.try_next().await.context("read the events table")? {
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let event_type: String = row.try_get("event_type")?;
        let _version: String = row.try_get("event_version")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        let metadata: serde_json::Value = row.try_get("metadata")?;
        let position: i64 = row.try_get("global_position")?;
        let _tx: String = row.try_get("tx")?;
        let _at: DateTime<Utc> = row.try_get("recorded_at")?;
        check = check.wrapping_add(
            sequence
                + position
                + (id.len() + event_type.len()) as i64
                + i64::from(payload.is_object())
                + i64::from(metadata.is_object()),
        );
        n += 1;
    }
    if check == 0 && n > 0 {
        bail!("read nothing of the events");
    }
    Ok((n, started.elapsed()))
}

/// One full read of the feed.
pub struct Read {
    pub batch: u32,
    pub events: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// 20 ms waits for the PostgreSQL feed horizon.
    pub horizon_waits: u32,
}

impl Read {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// "; waited N x 20 ms for the feed horizon", or nothing.
    pub fn waits(&self) -> String {
        if self.horizon_waits > 0 {
            format!(
                "; waited {} x 20 ms for the feed horizon",
                self.horizon_waits
            )
        } else {
            String::new()
        }
    }
}

/// The whole feed through `Store::read_feed` from `Position::START`, in
/// batches of `batch`, until it has given every event `count_events`
/// counts (checked again after the read); positions must increase.
pub async fn read_all(store: &Store, batch: u32) -> Result<Read> {
    let expected = store.count_events().await?;
    let started = Instant::now();
    let mut after = Position::START;
    let mut events = 0u64;
    let mut batches = 0u64;
    let mut horizon_waits = 0u32;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let page = store
            .read_feed(after, batch)
            .await
            .with_context(|| format!("read_feed after {after} (batch {batch})"))?;
        let Some(last) = page.last() else {
            if events >= expected {
                break;
            }
            // PostgreSQL: the feed stops before any transaction still
            // running anywhere on the server; wait a little for it.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() > FEED_HORIZON_WAIT {
                bail!(
                    "the feed ended after {events} events at {after}, but count_events says \
                     {expected} (waited {:?})",
                    since.elapsed()
                );
            }
            horizon_waits += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        waiting_since = None;
        if page.first().map(|e| e.position) <= Some(after)
            || page.windows(2).any(|w| w[0].position >= w[1].position)
        {
            bail!("the feed went backwards or repeated after {after}");
        }
        after = last.position;
        events += page.len() as u64;
        batches += 1;
    }
    let elapsed = started.elapsed();
    let counted = store.count_events().await?;
    if events != expected || events != counted {
        bail!(
            "READ MISMATCH: read {events} events through read_feed, count_events says \
             {expected} before and {counted} after"
        );
    }
    Ok(Read {
        batch,
        events,
        batches,
        elapsed,
        horizon_waits,
    })
}
