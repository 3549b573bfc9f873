//! Scenario 8 (the store crate's former `store_bench` example): append
//! throughput through `Store::append` with 1 and with 16 concurrent
//! writers, then a full read of the global feed through `Store::read_feed`
//! once per `--batch` size, on a fresh database of each `--stores` kind.
//!
//! - Appends are built the way `Store::execute` builds them (state before
//!   and after, expected version), but each writer keeps the customer's
//!   state itself: one `load` per customer, then register (1 event), grant
//!   access with a setup link (2 events) and [`NOTIFICATIONS_PER_CUSTOMER`]
//!   access notifications (1 event each). Fake hasher, token generator and
//!   clock: no hashing is measured.
//! - Each throughput phase stops after `--append-seconds` or
//!   `--max-appends` appends, whichever comes first.
//! - The store is then filled up to `--store-events` events with customers
//!   of [`FILL_EVENTS_PER_APPEND`] events each (one append per customer,
//!   [`FILL_WRITERS`] writers), and the whole feed is read once per batch
//!   size.

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
use chrono::Utc;

use super::fresh_store;
use crate::feed::{self, Read};
use crate::history::{self, Fill, Shape, FILL_WRITERS};
use crate::report::{header, loadavg, print_table, Latencies};
use crate::{Args, StoreKind, Target};

/// Access notifications per customer in the throughput phases (after the
/// registration and the grant).
pub const NOTIFICATIONS_PER_CUSTOMER: usize = 8;
/// Events per append while filling (one customer's whole history).
pub const FILL_EVENTS_PER_APPEND: u64 = 50;
/// Writers and longest duration of the unreported warm-up (opens the
/// pool's connections, warms caches).
const WARMUP_WRITERS: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);

pub async fn store(args: &Args) -> Result<Vec<Target>> {
    println!(
        "== scenario 8: Store::append throughput (1 and 16 writers) and a full read of the feed =="
    );
    println!(
        "  settings: events {}, stores {:?}, phase budget {} s or {} appends, read batches {:?}, \
         customer = register (1 ev) + grant w/ setup link (2 ev) + {} notifications (1 ev each)",
        args.store_events,
        args.stores.iter().map(|k| k.name()).collect::<Vec<_>>(),
        args.append_seconds,
        args.max_appends,
        args.batch,
        NOTIFICATIONS_PER_CUSTOMER,
    );
    let mut reports = Vec::new();
    for &kind in &args.stores {
        let started = Instant::now();
        let (db, store, version) = fresh_store(kind).await?;
        let result = bench_store(kind, args, &store)
            .await
            .with_context(|| format!("[{}] scenario 8", kind.name()));
        drop(store);
        drop(db);
        let report = result?;
        println!(
            "[{}] done in {:.1} s ({} {version})",
            kind.name(),
            started.elapsed().as_secs_f64(),
            kind.name(),
        );
        reports.push(report);
    }
    println!("  results (loadavg {}):", loadavg());
    print_results(&reports, args);
    println!();
    Ok(vec![])
}

struct Report {
    kind: StoreKind,
    one: Throughput,
    sixteen: Throughput,
    fill: Fill,
    reads: Vec<Read>,
}

async fn bench_store(kind: StoreKind, args: &Args, store: &Store) -> Result<Report> {
    let name = kind.name();
    let duration = Duration::from_secs_f64(args.append_seconds);

    let warm = throughput(store, WARMUP_WRITERS, WARMUP.min(duration), u64::MAX).await?;
    println!(
        "[{name}] warm-up: {} writers, {} appends in {:.2} s (not reported)",
        WARMUP_WRITERS,
        warm.appends,
        warm.elapsed.as_secs_f64()
    );

    let one = throughput(store, 1, duration, args.max_appends).await?;
    print_throughput(kind, &one);
    let sixteen = throughput(store, 16, duration, args.max_appends).await?;
    print_throughput(kind, &sixteen);

    let fill = history::fill(
        store,
        args.store_events,
        Shape::Uniform(FILL_EVENTS_PER_APPEND),
    )
    .await?;
    if fill.before >= args.store_events {
        println!(
            "[{name}] fill: nothing to do, the store already holds {} events (>= {})",
            fill.before, args.store_events
        );
    } else {
        println!(
            "[{name}] fill: {} -> {} events with {} appends ({} writers, up to {} events each) \
             in {:.2} s ({:.0} ev/s)",
            fill.before,
            fill.events,
            fill.customers,
            FILL_WRITERS,
            FILL_EVENTS_PER_APPEND,
            fill.elapsed.as_secs_f64(),
            fill.per_second()
        );
    }

    let mut reads = Vec::new();
    for &batch in &args.batch {
        let read = feed::read_all(store, batch).await?;
        println!(
            "[{name}] read: {} events in {} batches of {} in {:.2} s -> {:.0} ev/s \
             (count_events agrees{})",
            read.events,
            read.batches,
            read.batch,
            read.elapsed.as_secs_f64(),
            read.events_per_sec(),
            read.waits()
        );
        reads.push(read);
    }
    Ok(Report {
        kind,
        one,
        sixteen,
        fill,
        reads,
    })
}

// ---------------------------------------------------------------------------
// throughput
// ---------------------------------------------------------------------------

fn services() -> CustomerServices {
    CustomerServices::new(
        Arc::new(FakeHasher),
        Arc::new(CountingTokens::default()),
        Arc::new(FixedClock(Utc::now())),
        LinkLifetimes::default(),
    )
}

fn metadata(writer: usize) -> CommandMetadata {
    CommandMetadata::new(
        Actor::Api {
            name: "store-bench".into(),
            role: ApiRole::Service,
        },
        format!("bench-writer-{writer}"),
    )
}

fn register(id: CustomerId) -> Result<CustomerCommand> {
    let address = format!("bench-{}@example.com", id.as_uuid().simple());
    let email = EmailAddress::parse(&address).map_err(|e| anyhow!("bench email {address}: {e}"))?;
    Ok(CustomerCommand::RegisterCustomer {
        customer_id: id,
        email,
        name: None,
    })
}

/// Decides `command` on `state` (as `Store::execute` does) and returns the
/// events and the state after them.
async fn decide(
    state: &Customer,
    command: CustomerCommand,
    services: &CustomerServices,
    id: CustomerId,
) -> Result<(Vec<CustomerEvent>, Customer)> {
    let what = command.name();
    let events = state
        .decide(command, services)
        .await
        .map_err(|e| anyhow!("customer {id}: {what} refused: {e}"))?
        .events;
    let mut after = state.clone();
    for event in &events {
        cqrs_es::Aggregate::apply(&mut after, event.clone());
    }
    Ok((events, after))
}

/// Shared stop condition of a phase: a deadline and a number of appends.
struct Budget {
    deadline: Instant,
    remaining: AtomicU64,
}

impl Budget {
    fn new(duration: Duration, appends: u64) -> Self {
        Self {
            deadline: Instant::now() + duration,
            remaining: AtomicU64::new(appends),
        }
    }

    /// True if one more append may start.
    fn claim(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                .is_ok()
    }

    fn stop(&self) {
        self.remaining.store(0, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct WriterStats {
    appends: u64,
    events: u64,
    customers: u64,
    latencies: Latencies,
}

async fn writer(store: Store, writer_no: usize, budget: Arc<Budget>) -> Result<WriterStats> {
    let result = writer_loop(&store, writer_no, &budget).await;
    if result.is_err() {
        budget.stop();
    }
    result
}

async fn writer_loop(store: &Store, writer_no: usize, budget: &Budget) -> Result<WriterStats> {
    let services = services();
    let metadata = metadata(writer_no);
    let mut stats = WriterStats::default();
    'customers: loop {
        let id = CustomerId::new_random();
        // Loaded once per customer; afterwards the writer tracks the state
        // and version itself.
        let loaded = store
            .load(id)
            .await
            .with_context(|| format!("writer {writer_no}: load {id}"))?;
        let mut state = loaded.customer;
        let mut version = loaded.version;
        let grant = CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        };
        let commands = [register(id)?, grant]
            .into_iter()
            .chain(std::iter::repeat_n(
                CustomerCommand::SendAccessNotification,
                NOTIFICATIONS_PER_CUSTOMER,
            ));
        for command in commands {
            if !budget.claim() {
                break 'customers;
            }
            let (events, after) = decide(&state, command, &services, id).await?;
            let started = Instant::now();
            let appended = store
                .append(Append {
                    customer_id: id,
                    expected_version: version,
                    events: &events,
                    metadata: &metadata,
                    before: &state,
                    after: &after,
                    idempotency: None,
                })
                .await
                .with_context(|| {
                    format!("writer {writer_no}: append to {id} at version {version}")
                })?;
            stats.latencies.record(started.elapsed());
            let expected = version + events.len() as u64;
            if appended.version != expected {
                bail!(
                    "writer {writer_no}: append to {id} reported version {}, expected {expected}",
                    appended.version
                );
            }
            stats.appends += 1;
            stats.events += events.len() as u64;
            state = after;
            version = appended.version;
        }
        stats.customers += 1;
    }
    Ok(stats)
}

struct Throughput {
    writers: usize,
    appends: u64,
    events: u64,
    customers: u64,
    elapsed: Duration,
    latencies: Latencies,
}

impl Throughput {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn throughput(
    store: &Store,
    writers: usize,
    duration: Duration,
    max_appends: u64,
) -> Result<Throughput> {
    let budget = Arc::new(Budget::new(duration, max_appends));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(writer(store.clone(), w, budget.clone())))
        .collect();
    let mut all = Vec::with_capacity(writers);
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => all.push(stats),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("writer task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut latencies = Latencies::new();
    for stats in &all {
        latencies.add(&stats.latencies);
    }
    Ok(Throughput {
        writers,
        appends: all.iter().map(|s| s.appends).sum(),
        events: all.iter().map(|s| s.events).sum(),
        customers: all.iter().map(|s| s.customers).sum(),
        elapsed,
        latencies,
    })
}

fn ms(x: f64) -> String {
    format!("{x:.2} ms")
}

fn print_throughput(kind: StoreKind, t: &Throughput) {
    println!(
        "[{}] {:>2} writer(s): {} appends, {} events ({} customers completed) in {:.2} s \
         -> {:.0} ev/s, {:.0} appends/s; append latency p50 {} p99 {} max {}",
        kind.name(),
        t.writers,
        t.appends,
        t.events,
        t.customers,
        t.elapsed.as_secs_f64(),
        t.events_per_sec(),
        t.appends_per_sec(),
        ms(t.latencies.ms(0.5)),
        ms(t.latencies.ms(0.99)),
        ms(t.latencies.max_ms()),
    );
}

fn print_results(reports: &[Report], args: &Args) {
    let mut columns = header(&[&["store", "1 writer ev/s", "16 writers ev/s"]]);
    for batch in &args.batch {
        columns.push(format!("read ev/s (batch {batch})"));
    }
    columns.push("events read".to_string());
    columns.push("fill s".to_string());
    let mut rows = vec![columns];
    for r in reports {
        let mut row = vec![
            r.kind.name().to_string(),
            format!("{:.0}", r.one.events_per_sec()),
            format!("{:.0}", r.sixteen.events_per_sec()),
        ];
        for read in &r.reads {
            row.push(format!("{:.0}", read.events_per_sec()));
        }
        row.push(r.reads.first().map_or(0, |x| x.events).to_string());
        row.push(if r.fill.before >= args.store_events {
            "-".to_string()
        } else {
            format!("{:.1}", r.fill.elapsed.as_secs_f64())
        });
        rows.push(row);
    }
    print_table(&rows);
    println!();

    let mut rows = vec![header(&[&[
        "store",
        "writers",
        "appends",
        "events",
        "seconds",
        "appends/s",
        "ev/s",
        "p50",
        "p99",
        "max",
    ]])];
    for r in reports {
        for t in [&r.one, &r.sixteen] {
            rows.push(vec![
                r.kind.name().to_string(),
                t.writers.to_string(),
                t.appends.to_string(),
                t.events.to_string(),
                format!("{:.2}", t.elapsed.as_secs_f64()),
                format!("{:.0}", t.appends_per_sec()),
                format!("{:.0}", t.events_per_sec()),
                ms(t.latencies.ms(0.5)),
                ms(t.latencies.ms(0.99)),
                ms(t.latencies.max_ms()),
            ]);
        }
    }
    print_table(&rows);
}
