//! Scenarios 4 and 5: a store filled with many events through the store's
//! own append (the bulk equivalent of the write path), the plain read of
//! the events table, and the rebuild of the projections.

use access_store::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_domain::services::fakes::{CountingTokens, FakeHasher, FixedClock};
use access_domain::{
    Actor, ApiRole, CommandMetadata, Credential, Customer, CustomerCommand, CustomerEvent,
    CustomerId, CustomerServices, EmailAddress, LinkLifetimes, Role,
};
use access_store::{Append, Store};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;

/// Concurrent writers while filling.
const FILL_WRITERS: usize = 8;
/// The largest customer history (events, one append).
const MAX_CUSTOMER_EVENTS: u64 = 48;
/// One customer in this many is registered without access (1 event).
const REGISTER_ONLY_ONE_IN: u64 = 10;
/// Among the commands after the grant, every this-many-th is an email
/// change (2 events); the others are access notifications (1 event).
const EMAIL_CHANGE_EVERY: usize = 3;
/// Every this-many-th customer's id is kept for the audit queries.
const SAMPLE_EVERY: u64 = 50;

/// A well-mixed hash (splitmix64), to vary the customers deterministically.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn planned_events(seed: u64) -> u64 {
    let h = mix(seed);
    if h % REGISTER_ONLY_ONE_IN == 0 {
        1
    } else {
        3 + (h >> 16) % (MAX_CUSTOMER_EVENTS - 2)
    }
}

/// Events the next customer takes when `remaining` are left: never exactly
/// 2 (register is 1, register + grant is 3).
fn chunk(remaining: u64, planned: u64) -> u64 {
    match remaining.min(planned) {
        2 => 1,
        k => k,
    }
}

fn email(address: &str) -> Result<EmailAddress> {
    EmailAddress::parse(address).map_err(|e| anyhow!("bench email {address}: {e}"))
}

fn commands(id: CustomerId, k: u64) -> Result<Vec<CustomerCommand>> {
    let tag = id.as_uuid().simple();
    let mut commands = vec![CustomerCommand::RegisterCustomer {
        customer_id: id,
        email: email(&format!("bench-{tag}@example.com"))?,
        name: None,
    }];
    if k < 3 {
        return Ok(commands);
    }
    commands.push(CustomerCommand::GrantAccess {
        role: Role::CustomerCenter,
        credential: Credential::SetupLink,
    });
    let mut left = k - 3;
    let mut follow_up = 0usize;
    while left > 0 {
        follow_up += 1;
        if follow_up % EMAIL_CHANGE_EVERY == 0 && left >= 2 {
            commands.push(CustomerCommand::ChangeEmail {
                email: email(&format!("bench-{tag}-{follow_up}@example.net"))?,
                credential: Credential::SetupLink,
            });
            left -= 2;
        } else {
            commands.push(CustomerCommand::SendAccessNotification);
            left -= 1;
        }
    }
    Ok(commands)
}

/// One new customer's history of exactly `k` events, decided command by
/// command by the aggregate (fake hasher, tokens and clock), one hour apart.
async fn history(
    id: CustomerId,
    k: u64,
    start: DateTime<Utc>,
    tokens: &Arc<CountingTokens>,
) -> Result<(Vec<CustomerEvent>, Customer)> {
    let mut state = Customer::default();
    let mut events = Vec::with_capacity(k as usize);
    for (hour, command) in (0i64..).zip(commands(id, k)?) {
        let services = CustomerServices::new(
            Arc::new(FakeHasher),
            tokens.clone(),
            Arc::new(FixedClock(start + chrono::Duration::hours(hour))),
            LinkLifetimes::default(),
        );
        let what = command.name();
        let new = state
            .decide(command, &services)
            .await
            .map_err(|e| anyhow!("customer {id}: {what} refused: {e}"))?
            .events;
        for event in &new {
            cqrs_es::Aggregate::apply(&mut state, event.clone());
        }
        events.extend(new);
    }
    if events.len() as u64 != k {
        bail!("customer history has {} events, wanted {k}", events.len());
    }
    Ok((events, state))
}

async fn fill_writer(
    store: Store,
    writer_no: usize,
    remaining: Arc<AtomicU64>,
) -> Result<(u64, Vec<String>)> {
    let metadata = CommandMetadata::new(
        Actor::Api {
            name: "bench-fill".into(),
            role: ApiRole::Service,
        },
        format!("bench-fill-{writer_no}"),
    );
    let tokens = Arc::new(CountingTokens::default());
    let empty = Customer::default();
    let epoch = Utc::now() - chrono::Duration::days(365);
    let mut customers = 0u64;
    let mut sample = Vec::new();
    loop {
        let seed = ((writer_no as u64) << 40) | customers;
        let planned = planned_events(seed);
        let Ok(left) = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            (r > 0).then(|| r - chunk(r, planned))
        }) else {
            break;
        };
        let k = chunk(left, planned);
        let id = CustomerId::new_random();
        let start = epoch + chrono::Duration::minutes((mix(!seed) % (300 * 24 * 60)) as i64);
        let result = async {
            let (events, after) = history(id, k, start, &tokens).await?;
            store
                .append(Append {
                    customer_id: id,
                    expected_version: 0,
                    events: &events,
                    metadata: &metadata,
                    before: &empty,
                    after: &after,
                    idempotency: None,
                })
                .await
                .with_context(|| format!("fill writer {writer_no}: append {k} events to {id}"))?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = result {
            remaining.store(0, Ordering::Relaxed);
            return Err(e);
        }
        if customers % SAMPLE_EVERY == 0 {
            sample.push(id.to_string());
        }
        customers += 1;
    }
    Ok((customers, sample))
}

pub struct Fill {
    pub events: u64,
    pub customers: u64,
    pub elapsed: Duration,
    /// Some customers' ids, for the audit queries.
    pub sample: Vec<String>,
}

/// Fills the empty store with exactly `target` events.
pub async fn fill(store: &Store, target: u64) -> Result<Fill> {
    let started = Instant::now();
    let remaining = Arc::new(AtomicU64::new(target));
    let tasks: Vec<_> = (0..FILL_WRITERS)
        .map(|w| tokio::spawn(fill_writer(store.clone(), w, remaining.clone())))
        .collect();
    let mut customers = 0;
    let mut sample = Vec::new();
    for task in tasks {
        let (n, ids) = task.await.context("fill task")??;
        customers += n;
        sample.extend(ids);
    }
    let elapsed = started.elapsed();
    let events = store.count_events().await?;
    if events != target {
        bail!("filled to {events} events, wanted exactly {target}");
    }
    Ok(Fill {
        events,
        customers,
        elapsed,
        sample,
    })
}

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
