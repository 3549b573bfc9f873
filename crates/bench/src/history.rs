//! The history generator of scenarios 4, 8 and 9: a store filled with
//! customers whose histories the aggregate itself decides, command by
//! command (fake hasher, token generator and clock: no hashing is
//! measured), each customer's whole history written with one
//! `Store::append` (the bulk equivalent of the write path), from
//! [`FILL_WRITERS`] concurrent writers.

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

/// Concurrent writers while filling.
pub const FILL_WRITERS: usize = 8;
/// The largest customer history of [`Shape::Varied`] (events, one append).
pub const MAX_CUSTOMER_EVENTS: u64 = 48;
/// One customer in this many is registered without access (1 event).
pub const REGISTER_ONLY_ONE_IN: u64 = 10;
/// Among the commands after the grant, every this-many-th is an email
/// change (2 events); the others are access notifications (1 event).
pub const EMAIL_CHANGE_EVERY: usize = 3;
/// Every this-many-th customer's id is kept for the audit queries.
const SAMPLE_EVERY: u64 = 50;

/// What the generated customers look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Scenarios 4 and 9: about one customer in [`REGISTER_ONLY_ONE_IN`]
    /// is only registered (1 event); the others are registered (1),
    /// granted access with a setup link (2), then get access notifications
    /// (1 each) and, every [`EMAIL_CHANGE_EVERY`]th follow-up, an admin
    /// email change with a new setup link (2), 3 to
    /// [`MAX_CUSTOMER_EVENTS`] events in all. Customers start at different
    /// times over most of a year, one hour between commands.
    Varied,
    /// Scenario 8: every customer registered (1 event), granted access
    /// with a setup link (2) and sent access notifications (1 each), this
    /// many events in all (the last customer may have fewer).
    Uniform(u64),
}

impl Shape {
    /// The planned size of customer `seed`'s history: never 2.
    fn planned(self, seed: u64) -> u64 {
        match self {
            Shape::Varied => {
                let h = mix(seed);
                if h % REGISTER_ONLY_ONE_IN == 0 {
                    1
                } else {
                    3 + (h >> 16) % (MAX_CUSTOMER_EVENTS - 2)
                }
            }
            Shape::Uniform(n) => n.max(1),
        }
    }
}

/// A well-mixed hash (splitmix64), to vary the customers deterministically.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Events the next customer takes when `remaining` are left: its plan,
/// capped by what is left, never exactly 2 (no command sequence of a new
/// customer gives 2 events: register is 1, register + grant is 3).
fn chunk(remaining: u64, planned: u64) -> u64 {
    match remaining.min(planned) {
        2 => 1,
        k => k,
    }
}

fn email(address: &str) -> Result<EmailAddress> {
    EmailAddress::parse(address).map_err(|e| anyhow!("bench email {address}: {e}"))
}

/// The commands of a customer of exactly `k` events (k != 2).
fn commands(id: CustomerId, k: u64, shape: Shape) -> Result<Vec<CustomerCommand>> {
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
        if shape == Shape::Varied && follow_up % EMAIL_CHANGE_EVERY == 0 && left >= 2 {
            // EmailChanged + AccessNotificationSent (no password to clear).
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
/// command by the aggregate (fake hasher, tokens and clock), one hour
/// apart from `start`; the events and the state after them.
async fn history(
    id: CustomerId,
    k: u64,
    shape: Shape,
    start: DateTime<Utc>,
    tokens: &Arc<CountingTokens>,
) -> Result<(Vec<CustomerEvent>, Customer)> {
    let mut state = Customer::default();
    let mut events = Vec::with_capacity(k as usize);
    for (hour, command) in (0i64..).zip(commands(id, k, shape)?) {
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
    shape: Shape,
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
        let planned = shape.planned(seed);
        let Ok(left) = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            (r > 0).then(|| r - chunk(r, planned))
        }) else {
            break;
        };
        let k = chunk(left, planned);
        let id = CustomerId::new_random();
        // Customers start at different times over most of a year.
        let start = epoch + chrono::Duration::minutes((mix(!seed) % (300 * 24 * 60)) as i64);
        let result = async {
            let (events, after) = history(id, k, shape, start, &tokens).await?;
            let appended = store
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
            if appended.version != k {
                bail!(
                    "fill writer {writer_no}: {id} is at version {}, expected {k}",
                    appended.version
                );
            }
            Ok(())
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

/// What a fill did.
pub struct Fill {
    /// Events in the store before the fill.
    pub before: u64,
    /// Events in the store after it.
    pub events: u64,
    /// Customers added: one append each.
    pub customers: u64,
    pub elapsed: Duration,
    /// Some customers' ids, for the audit queries.
    pub sample: Vec<String>,
}

impl Fill {
    /// Events added per second.
    pub fn per_second(&self) -> f64 {
        (self.events - self.before) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Fills the store up to exactly `target` events with new customers of
/// `shape` (nothing if it already holds as many).
pub async fn fill(store: &Store, target: u64, shape: Shape) -> Result<Fill> {
    let before = store.count_events().await?;
    let started = Instant::now();
    let remaining = Arc::new(AtomicU64::new(target.saturating_sub(before)));
    let tasks: Vec<_> = (0..FILL_WRITERS)
        .map(|w| tokio::spawn(fill_writer(store.clone(), w, shape, remaining.clone())))
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
    if before < target && events != target {
        bail!("filled to {events} events, wanted exactly {target}");
    }
    Ok(Fill {
        before,
        events,
        customers,
        elapsed,
        sample,
    })
}
