//! Store benchmark: append throughput (1 and 16 concurrent writers) and a
//! full read of the global feed, on fresh PostgreSQL and SQLite databases.
//!
//! ```text
//! cargo run --release -p access-store --features testing --example store_bench -- \
//!     [--events N] [--store postgres|sqlite|both] [--seconds S] [--max-appends N] \
//!     [--batch 1000,5000]
//! ```
//!
//! - PostgreSQL: a throwaway database on the server named by
//!   `ACCESS_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//!   dropped at the end. SQLite: a file in a temporary directory.
//! - Appends go through `Store::append` the way `Store::execute` builds
//!   them (state before and after, expected version), but each writer keeps
//!   the customer's state itself: one `load` per customer, then register
//!   (1 event), grant access with a setup link (2 events) and
//!   `NOTIFICATIONS_PER_CUSTOMER` access notifications (1 event each).
//!   Fake hasher, token generator and clock: no hashing is measured.
//! - Each throughput phase stops after `--seconds` (default 5) or
//!   `--max-appends` appends (default 50000), whichever comes first.
//! - The store is then filled up to `--events` events (default 100000) with
//!   multi-event appends from several writers, and the whole feed is read
//!   through `Store::read_feed` once per batch size in `--batch`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_domain::services::fakes::{CountingTokens, FakeHasher, FixedClock};
use access_domain::{
    Actor, ApiRole, CommandMetadata, Credential, Customer, CustomerCommand, CustomerEvent,
    CustomerId, CustomerServices, EmailAddress, LinkLifetimes, Role,
};
use access_store::testing::TestDatabase;
use access_store::{Append, Position, Store, StoreOptions};
use chrono::Utc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Access notifications per customer in the throughput phases (after the
/// registration and the grant).
const NOTIFICATIONS_PER_CUSTOMER: usize = 8;
/// Events per append while filling (one customer's whole history).
const FILL_EVENTS_PER_APPEND: u64 = 50;
/// Concurrent writers while filling.
const FILL_WRITERS: usize = 8;
/// Writers and duration of the unreported warm-up (opens the pool's
/// connections, warms caches).
const WARMUP_WRITERS: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
/// How long a read may wait for the PostgreSQL feed horizon (a transaction
/// running elsewhere on the server holds the feed back) before failing.
const FEED_HORIZON_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// arguments
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug)]
struct Args {
    events: u64,
    stores: Vec<Kind>,
    seconds: f64,
    max_appends: u64,
    batches: Vec<u32>,
}

const USAGE: &str = "usage: store_bench [--events N] [--store postgres|sqlite|both] \
[--seconds S] [--max-appends N] [--batch SIZE[,SIZE...]]";

fn parse_args(raw: &[String]) -> Result<Args> {
    let mut args = Args {
        events: 100_000,
        stores: vec![Kind::Postgres, Kind::Sqlite],
        seconds: 5.0,
        max_appends: 50_000,
        batches: vec![1000, 5000],
    };
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}").into()),
            }
        };
        match flag {
            "--events" => {
                let v = value()?;
                args.events = v
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--events {v}: {e}"))?;
            }
            "--store" => {
                args.stores = match value()?.as_str() {
                    "postgres" | "pg" => vec![Kind::Postgres],
                    "sqlite" => vec![Kind::Sqlite],
                    "both" => vec![Kind::Postgres, Kind::Sqlite],
                    other => {
                        return Err(
                            format!("--store {other}: expected postgres, sqlite or both").into(),
                        )
                    }
                }
            }
            "--seconds" => {
                let v = value()?;
                args.seconds = v.parse().map_err(|e| format!("--seconds {v}: {e}"))?;
                if !(args.seconds > 0.0 && args.seconds.is_finite()) {
                    return Err(format!("--seconds {v}: must be positive").into());
                }
            }
            "--max-appends" => {
                let v = value()?;
                args.max_appends = v
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--max-appends {v}: {e}"))?;
            }
            "--batch" => {
                let v = value()?;
                args.batches = v
                    .split(',')
                    .map(|s| s.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--batch {v}: {e}"))?;
                if args.batches.is_empty() || args.batches.contains(&0) {
                    return Err(format!("--batch {v}: sizes must be positive").into());
                }
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

// ---------------------------------------------------------------------------
// domain helpers
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
    let email = EmailAddress::parse(&format!("bench-{}@example.com", id.as_uuid().simple()))
        .map_err(|e| format!("bench email for {id}: {e}"))?;
    Ok(CustomerCommand::RegisterCustomer {
        customer_id: id,
        email,
        name: None,
    })
}

fn grant_with_link() -> CustomerCommand {
    CustomerCommand::GrantAccess {
        role: Role::CustomerCenter,
        credential: Credential::SetupLink,
    }
}

/// A short name for messages (formatting the whole command on every append
/// would cost more than the decision).
fn label(command: &CustomerCommand) -> &'static str {
    match command {
        CustomerCommand::RegisterCustomer { .. } => "RegisterCustomer",
        CustomerCommand::GrantAccess { .. } => "GrantAccess",
        CustomerCommand::SendAccessNotification => "SendAccessNotification",
        _ => "command",
    }
}

/// Decides `command` on `state` (with fresh services, as `Store::execute`
/// does) and returns the events and the state after them.
async fn decide(
    state: &Customer,
    command: CustomerCommand,
    services: &CustomerServices,
    id: CustomerId,
) -> Result<(Vec<CustomerEvent>, Customer)> {
    let what = label(&command);
    let events = state
        .decide(command, services)
        .await
        .map_err(|e| format!("customer {id}: {what} refused: {e}"))?
        .events;
    let mut after = state.clone();
    for event in &events {
        cqrs_es::Aggregate::apply(&mut after, event.clone());
    }
    Ok((events, after))
}

// ---------------------------------------------------------------------------
// throughput
// ---------------------------------------------------------------------------

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
    latencies: Vec<Duration>,
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
            .map_err(|e| format!("writer {writer_no}: load {id}: {e}"))?;
        let mut state = loaded.customer;
        let mut version = loaded.version;
        let commands = [register(id)?, grant_with_link()]
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
                .map_err(|e| {
                    format!("writer {writer_no}: append to {id} at version {version}: {e}")
                })?;
            stats.latencies.push(started.elapsed());
            let expected = version + events.len() as u64;
            if appended.version != expected {
                return Err(format!(
                    "writer {writer_no}: append to {id} reported version {}, expected {expected}",
                    appended.version
                )
                .into());
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
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Throughput {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
                first_error.get_or_insert(format!("writer task failed: {e}").into());
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut latencies: Vec<Duration> = all
        .iter_mut()
        .flat_map(|s| std::mem::take(&mut s.latencies))
        .collect();
    latencies.sort_unstable();
    Ok(Throughput {
        writers,
        appends: all.iter().map(|s| s.appends).sum(),
        events: all.iter().map(|s| s.events).sum(),
        customers: all.iter().map(|s| s.customers).sum(),
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn print_throughput(kind: Kind, t: &Throughput) {
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
        ms(t.p50),
        ms(t.p99),
        ms(t.max),
    );
}

// ---------------------------------------------------------------------------
// fill
// ---------------------------------------------------------------------------

/// Events the next fill append takes when `remaining` are left: at most
/// `FILL_EVENTS_PER_APPEND`, never exactly 2 (no command sequence of a new
/// customer gives 2 events: register is 1, register + grant is 3).
fn fill_chunk(remaining: u64) -> u64 {
    match remaining.min(FILL_EVENTS_PER_APPEND) {
        2 => 1,
        k => k,
    }
}

/// One new customer's history of exactly `k` events (k != 2), decided
/// command by command.
async fn history(
    id: CustomerId,
    k: u64,
    services: &CustomerServices,
) -> Result<(Vec<CustomerEvent>, Customer)> {
    let mut commands = vec![register(id)?];
    if k >= 3 {
        commands.push(grant_with_link());
        commands.extend(std::iter::repeat_n(
            CustomerCommand::SendAccessNotification,
            (k - 3) as usize,
        ));
    }
    let mut state = Customer::default();
    let mut events = Vec::with_capacity(k as usize);
    for command in commands {
        let (new, after) = decide(&state, command, services, id).await?;
        events.extend(new);
        state = after;
    }
    if events.len() as u64 != k {
        return Err(format!("fill history has {} events, wanted {k}", events.len()).into());
    }
    Ok((events, state))
}

async fn fill_writer(store: Store, writer_no: usize, remaining: Arc<AtomicU64>) -> Result<u64> {
    let services = services();
    let metadata = metadata(1000 + writer_no);
    let empty = Customer::default();
    let mut appends = 0;
    while let Ok(left) = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
        (r > 0).then(|| r - fill_chunk(r))
    }) {
        let k = fill_chunk(left);
        let id = CustomerId::new_random();
        let (events, after) = history(id, k, &services).await?;
        let result = store
            .append(Append {
                customer_id: id,
                expected_version: 0,
                events: &events,
                metadata: &metadata,
                before: &empty,
                after: &after,
                idempotency: None,
            })
            .await;
        match result {
            Ok(appended) if appended.version == k => appends += 1,
            Ok(appended) => {
                remaining.store(0, Ordering::Relaxed);
                return Err(format!(
                    "fill writer {writer_no}: {id} is at version {}, expected {k}",
                    appended.version
                )
                .into());
            }
            Err(e) => {
                remaining.store(0, Ordering::Relaxed);
                return Err(
                    format!("fill writer {writer_no}: append {k} events to {id}: {e}").into(),
                );
            }
        }
    }
    Ok(appends)
}

struct Fill {
    before: u64,
    after: u64,
    appends: u64,
    elapsed: Duration,
}

async fn fill(store: &Store, target: u64) -> Result<Fill> {
    let before = store.count_events().await?;
    let started = Instant::now();
    let remaining = Arc::new(AtomicU64::new(target.saturating_sub(before)));
    let tasks: Vec<_> = (0..FILL_WRITERS)
        .map(|w| tokio::spawn(fill_writer(store.clone(), w, remaining.clone())))
        .collect();
    let mut appends = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(n)) => appends += n,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("fill task failed: {e}").into());
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let after = store.count_events().await?;
    if before < target && after != target {
        return Err(format!("filled to {after} events, wanted exactly {target}").into());
    }
    Ok(Fill {
        before,
        after,
        appends,
        elapsed,
    })
}

// ---------------------------------------------------------------------------
// read
// ---------------------------------------------------------------------------

struct Read {
    batch: u32,
    events: u64,
    batches: u64,
    elapsed: Duration,
    horizon_waits: u32,
}

impl Read {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

async fn read_all(store: &Store, batch: u32) -> Result<Read> {
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
            .map_err(|e| format!("read_feed after {after} (batch {batch}): {e}"))?;
        let Some(last) = page.last() else {
            if events >= expected {
                break;
            }
            // PostgreSQL: the feed stops before any transaction still
            // running anywhere on the server; wait a little for it.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() > FEED_HORIZON_WAIT {
                return Err(format!(
                    "the feed ended after {events} events at {after}, but count_events says \
                     {expected} (waited {:?})",
                    since.elapsed()
                )
                .into());
            }
            horizon_waits += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        waiting_since = None;
        if page.first().map(|e| e.position) <= Some(after)
            || page.windows(2).any(|w| w[0].position >= w[1].position)
        {
            return Err(format!("the feed went backwards or repeated after {after}").into());
        }
        after = last.position;
        events += page.len() as u64;
        batches += 1;
    }
    let elapsed = started.elapsed();
    let counted = store.count_events().await?;
    if events != expected || events != counted {
        return Err(format!(
            "READ MISMATCH: read {events} events through read_feed, count_events says \
             {expected} before and {counted} after"
        )
        .into());
    }
    Ok(Read {
        batch,
        events,
        batches,
        elapsed,
        horizon_waits,
    })
}

// ---------------------------------------------------------------------------
// per store
// ---------------------------------------------------------------------------

struct Report {
    kind: Kind,
    version: String,
    one: Throughput,
    sixteen: Throughput,
    fill: Fill,
    reads: Vec<Read>,
}

async fn database_version(store: &Store) -> String {
    let sql = match store.kind() {
        "postgres" => "SHOW server_version",
        _ => "SELECT sqlite_version()",
    };
    access_store::testing::query_texts(store, sql)
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| "unknown".into())
}

async fn close(store: &Store) {
    store.close().await
}

async fn bench(kind: Kind, args: &Args) -> Result<Report> {
    let name = kind.name();
    let db = match kind {
        Kind::Postgres => TestDatabase::postgres()
            .await
            .map_err(|e| format!("[{name}] create the test database: {e}"))?,
        Kind::Sqlite => {
            TestDatabase::sqlite().map_err(|e| format!("[{name}] create the test database: {e}"))?
        }
    };
    let options = StoreOptions::default();
    let store = db
        .store(options)
        .await
        .map_err(|e| format!("[{name}] open and migrate: {e}"))?;
    let version = database_version(&store).await;
    println!(
        "[{name}] fresh database {} (version {version}), {options:?}",
        access_store::redact_url(db.url())
    );

    let result = bench_store(kind, args, &store, version).await;
    close(&store).await;
    drop(db);
    result
}

async fn bench_store(kind: Kind, args: &Args, store: &Store, version: String) -> Result<Report> {
    let name = kind.name();
    let duration = Duration::from_secs_f64(args.seconds);

    let warm = throughput(store, WARMUP_WRITERS, WARMUP, u64::MAX).await?;
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

    let fill = fill(store, args.events).await?;
    if fill.before >= args.events {
        println!(
            "[{name}] fill: nothing to do, the store already holds {} events (>= {})",
            fill.before, args.events
        );
    } else {
        let added = fill.after - fill.before;
        println!(
            "[{name}] fill: {} -> {} events with {} appends ({} writers, up to {} events each) \
             in {:.2} s ({:.0} ev/s)",
            fill.before,
            fill.after,
            fill.appends,
            FILL_WRITERS,
            FILL_EVENTS_PER_APPEND,
            fill.elapsed.as_secs_f64(),
            added as f64 / fill.elapsed.as_secs_f64()
        );
    }

    let mut reads = Vec::new();
    for &batch in &args.batches {
        let read = read_all(store, batch).await?;
        println!(
            "[{name}] read: {} events in {} batches of {} in {:.2} s -> {:.0} ev/s \
             (count_events agrees{})",
            read.events,
            read.batches,
            read.batch,
            read.elapsed.as_secs_f64(),
            read.events_per_sec(),
            if read.horizon_waits > 0 {
                format!(
                    "; waited {} x 20 ms for the feed horizon",
                    read.horizon_waits
                )
            } else {
                String::new()
            }
        );
        reads.push(read);
    }
    Ok(Report {
        kind,
        version,
        one,
        sixteen,
        fill,
        reads,
    })
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

fn first_line(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| l.split_once(':').map_or(l, |(_, v)| v).trim().to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn print_table(reports: &[Report], args: &Args) {
    let mut header = vec![
        "store".to_string(),
        "1 writer ev/s".to_string(),
        "16 writers ev/s".to_string(),
    ];
    for batch in &args.batches {
        header.push(format!("read ev/s (batch {batch})"));
    }
    header.push("events read".to_string());
    header.push("fill s".to_string());
    let mut rows = vec![header];
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
        row.push(if r.fill.before >= args.events {
            "-".to_string()
        } else {
            format!("{:.1}", r.fill.elapsed.as_secs_f64())
        });
        rows.push(row);
    }
    print_rows(&rows);

    println!();
    let mut rows = vec![vec![
        "store".to_string(),
        "writers".to_string(),
        "appends".to_string(),
        "events".to_string(),
        "seconds".to_string(),
        "appends/s".to_string(),
        "ev/s".to_string(),
        "p50".to_string(),
        "p99".to_string(),
        "max".to_string(),
    ]];
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
                ms(t.p50),
                ms(t.p99),
                ms(t.max),
            ]);
        }
    }
    print_rows(&rows);
}

fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("{}", rule.join("-|-"));
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().collect();
    let args = parse_args(&raw[1..])?;
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let load_start = loadavg();

    println!("store_bench");
    println!("  command:  {}", raw.join(" "));
    println!(
        "  as cargo: cargo run --release -p access-store --features testing --example store_bench{}",
        if raw.len() > 1 {
            format!(" -- {}", raw[1..].join(" "))
        } else {
            String::new()
        }
    );
    println!(
        "  machine:  nproc {nproc}, cpu {cpu}, tokio multi-thread runtime ({nproc} workers), \
         loadavg at start {load_start}"
    );
    if cfg!(debug_assertions) {
        println!("  WARNING:  debug build; run with --release for meaningful numbers");
    }
    println!(
        "  settings: events {}, stores {:?}, phase budget {} s or {} appends, read batches {:?}, \
         customer = register (1 ev) + grant w/ setup link (2 ev) + {} notifications (1 ev each)",
        args.events,
        args.stores.iter().map(|k| k.name()).collect::<Vec<_>>(),
        args.seconds,
        args.max_appends,
        args.batches,
        NOTIFICATIONS_PER_CUSTOMER,
    );
    println!(
        "  postgres: {}",
        access_store::redact_url(&access_store::testing::server_url())
    );
    println!();

    let mut reports = Vec::new();
    for &kind in &args.stores {
        let started = Instant::now();
        let report = bench(kind, &args).await?;
        println!(
            "[{}] done in {:.1} s ({} {})",
            kind.name(),
            started.elapsed().as_secs_f64(),
            kind.name(),
            report.version
        );
        println!();
        reports.push(report);
    }

    println!(
        "== results (nproc {nproc}; loadavg start {load_start}, end {}) ==",
        loadavg()
    );
    print_table(&reports, &args);
    Ok(())
}
