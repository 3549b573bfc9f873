//! Rebuild benchmark: how fast `rebuild::rebuild` replays the whole store
//! into fresh projections, against the floor of a plain sequential read of
//! the feed, on fresh PostgreSQL and SQLite databases.
//!
//! ```text
//! cargo run --release -p access-projections --example rebuild_bench -- \
//!     [--events N] [--store postgres|sqlite|both]
//! ```
//!
//! - PostgreSQL: a throwaway database on the server named by
//!   `ACCESS_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//!   dropped at the end. SQLite: a file in a temporary directory.
//! - Fill: the store is filled to exactly `--events` events (default
//!   100000) through `Store::append`, one append per customer holding its
//!   whole history, from `FILL_WRITERS` concurrent writers. Customers vary
//!   in size: about one in ten is only registered (1 event); the others are
//!   registered (1), granted access with a setup link (2), then get access
//!   notifications (1 each) and admin email changes with a new setup link
//!   (2 each), up to `MAX_CUSTOMER_EVENTS` events. Every command is decided
//!   by the aggregate with the fake hasher, token generator and clock (one
//!   hour between commands); no hashing is measured.
//! - Baseline: the events table read through `Store::read_feed` in batches
//!   of `BATCH` from `Position::START` until empty: the floor of any rebuild.
//! - Rebuild: `rebuild::rebuild` into fresh projections (the live ones are
//!   empty; no projector runs). Afterwards `audit_trail` must hold one row
//!   per event, `access_state` one row per customer, and the live
//!   checkpoint must be at the head of the store; anything else fails the
//!   run.
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
use access_projections::{db, rebuild, LIVE};
use access_store::testing::TestDatabase;
use access_store::{Append, Position, Store, StoreOptions};
use chrono::{DateTime, Utc};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Events per `read_feed` call in the baseline (the rebuild's own batch).
const BATCH: u32 = 5000;
/// Concurrent writers while filling.
const FILL_WRITERS: usize = 8;
/// The largest customer history (events, one append).
const MAX_CUSTOMER_EVENTS: u64 = 48;
/// One customer in this many is registered without access (1 event).
const REGISTER_ONLY_ONE_IN: u64 = 10;
/// Among the commands after the grant, every this-many-th is an email
/// change (2 events); the others are access notifications (1 event).
const EMAIL_CHANGE_EVERY: usize = 3;
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
}

const USAGE: &str = "usage: rebuild_bench [--events N] [--store postgres|sqlite|both]";

fn parse_args(raw: &[String]) -> Result<Args> {
    let mut args = Args {
        events: 100_000,
        stores: vec![Kind::Postgres, Kind::Sqlite],
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
                if args.events == 0 {
                    return Err(format!("--events {v}: must be positive").into());
                }
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
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

// ---------------------------------------------------------------------------
// customers
// ---------------------------------------------------------------------------

/// A well-mixed hash (splitmix64), to vary the customers deterministically.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The planned size of customer `seed`'s history: 1 (registered only) or
/// 3..=MAX_CUSTOMER_EVENTS.
fn planned_events(seed: u64) -> u64 {
    let h = mix(seed);
    if h % REGISTER_ONLY_ONE_IN == 0 {
        1
    } else {
        3 + (h >> 16) % (MAX_CUSTOMER_EVENTS - 2)
    }
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

fn metadata(writer: usize) -> CommandMetadata {
    CommandMetadata::new(
        Actor::Api {
            name: "rebuild-bench".into(),
            role: ApiRole::Service,
        },
        format!("bench-writer-{writer}"),
    )
}

fn email(address: &str) -> Result<EmailAddress> {
    EmailAddress::parse(address).map_err(|e| format!("bench email {address}: {e}").into())
}

/// The commands of a customer of exactly `k` events (k != 2).
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

/// One new customer's history of exactly `k` events (k != 2), decided
/// command by command, one hour apart from `start`.
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
            .map_err(|e| format!("customer {id}: {what} refused: {e}"))?
            .events;
        events.extend(new);
        // The state after, as the store would load it.
        state = access_store::Loaded::from_events(events.iter().cloned()).customer;
    }
    if events.len() as u64 != k {
        return Err(format!("customer history has {} events, wanted {k}", events.len()).into());
    }
    Ok((events, state))
}

// ---------------------------------------------------------------------------
// fill
// ---------------------------------------------------------------------------

async fn fill_writer(store: Store, writer_no: usize, remaining: Arc<AtomicU64>) -> Result<u64> {
    let metadata = metadata(writer_no);
    let tokens = Arc::new(CountingTokens::default());
    let empty = Customer::default();
    let epoch = Utc::now() - chrono::Duration::days(365);
    let mut customers = 0u64;
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
        // Customers start at different times over most of a year.
        let start = epoch + chrono::Duration::minutes((mix(!seed) % (300 * 24 * 60)) as i64);
        let result = async {
            let (events, after) = history(id, k, start, &tokens).await?;
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
                .map_err(|e| format!("fill writer {writer_no}: append {k} events to {id}: {e}"))?;
            if appended.version != k {
                return Err(format!(
                    "fill writer {writer_no}: {id} is at version {}, expected {k}",
                    appended.version
                )
                .into());
            }
            Ok::<_, BoxError>(())
        }
        .await;
        if let Err(e) = result {
            remaining.store(0, Ordering::Relaxed);
            return Err(e);
        }
        customers += 1;
    }
    Ok(customers)
}

struct Fill {
    events: u64,
    customers: u64,
    elapsed: Duration,
}

async fn fill(store: &Store, target: u64) -> Result<Fill> {
    let before = store.count_events().await?;
    if before != 0 {
        return Err(format!("the fresh store already holds {before} events").into());
    }
    let started = Instant::now();
    let remaining = Arc::new(AtomicU64::new(target));
    let tasks: Vec<_> = (0..FILL_WRITERS)
        .map(|w| tokio::spawn(fill_writer(store.clone(), w, remaining.clone())))
        .collect();
    let mut customers = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(n)) => customers += n,
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
    let events = store.count_events().await?;
    if events != target {
        return Err(format!("filled to {events} events, wanted exactly {target}").into());
    }
    Ok(Fill {
        events,
        customers,
        elapsed,
    })
}

// ---------------------------------------------------------------------------
// baseline: a plain read of the feed
// ---------------------------------------------------------------------------

struct Read {
    events: u64,
    batches: u64,
    elapsed: Duration,
    horizon_waits: u32,
}

impl Read {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn read_all(store: &Store, expected: u64) -> Result<Read> {
    let started = Instant::now();
    let mut after = Position::START;
    let mut events = 0u64;
    let mut batches = 0u64;
    let mut horizon_waits = 0u32;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let page = store
            .read_feed(after, BATCH)
            .await
            .map_err(|e| format!("read_feed after {after} (batch {BATCH}): {e}"))?;
        let Some(last) = page.last() else {
            if events >= expected {
                break;
            }
            // PostgreSQL: the feed stops before any transaction still
            // running anywhere on the server; wait a little for it.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() > FEED_HORIZON_WAIT {
                return Err(format!(
                    "the feed ended after {events} events at {after}, but the store holds \
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
    if events != expected {
        return Err(format!(
            "READ MISMATCH: read {events} events through read_feed, the store holds {expected}"
        )
        .into());
    }
    Ok(Read {
        events,
        batches,
        elapsed,
        horizon_waits,
    })
}

// ---------------------------------------------------------------------------
// rebuild
// ---------------------------------------------------------------------------

struct Rebuilt {
    report: rebuild::RebuildReport,
    /// Wall time of the call, as seen from here.
    wall: Duration,
    progress_calls: u64,
    audit_rows: u64,
    state_rows: u64,
}

async fn count(store: &Store, sql: &str) -> Result<u64> {
    let n = store
        .sql()
        .read_optional(&access_store::sql::Query::new(sql))
        .await
        .and_then(|row| row.map(|r| r.int("n")).transpose())
        .map_err(|e| format!("{sql}: {e}"))?
        .unwrap_or(0);
    Ok(u64::try_from(n)?)
}

async fn rebuild_and_verify(store: &Store, fill: &Fill) -> Result<Rebuilt> {
    let mut progress_calls = 0u64;
    let mut replayed = 0u64;
    let started = Instant::now();
    let report = rebuild::rebuild(store, &mut |n| {
        progress_calls += 1;
        replayed = n;
    })
    .await
    .map_err(|e| format!("rebuild after {replayed} events: {e}"))?;
    let wall = started.elapsed();

    let audit_rows = count(store, "SELECT count(*) AS n FROM audit_trail").await?;
    let state_rows = count(store, "SELECT count(*) AS n FROM access_state").await?;
    let distinct_states = count(
        store,
        "SELECT count(DISTINCT customer_id) FROM access_state",
    )
    .await?;
    let streams = count(
        store,
        "SELECT count(DISTINCT aggregate_id) AS n FROM events",
    )
    .await?;
    let head = store.head().await?;
    let checkpoint = db::checkpoint(store, LIVE.checkpoint).await?;

    let mut problems = Vec::new();
    if report.events != fill.events {
        problems.push(format!(
            "the rebuild replayed {} events, the store holds {}",
            report.events, fill.events
        ));
    }
    if audit_rows != fill.events {
        problems.push(format!(
            "SELECT count(*) FROM audit_trail = {audit_rows}, expected {} (one row per event)",
            fill.events
        ));
    }
    if state_rows != fill.customers
        || distinct_states != fill.customers
        || streams != fill.customers
    {
        problems.push(format!(
            "access_state has {state_rows} rows ({distinct_states} customers), expected one per \
             customer: {} appended, {streams} streams in the events table",
            fill.customers
        ));
    }
    if checkpoint != head || report.position != head {
        problems.push(format!(
            "the live checkpoint is at {checkpoint} and the rebuild reached {}, the head is {head}",
            report.position
        ));
    }
    if !problems.is_empty() {
        return Err(format!("REBUILD MISMATCH:\n  - {}", problems.join("\n  - ")).into());
    }
    Ok(Rebuilt {
        report,
        wall,
        progress_calls,
        audit_rows,
        state_rows,
    })
}

// ---------------------------------------------------------------------------
// per store
// ---------------------------------------------------------------------------

struct Report {
    kind: Kind,
    version: String,
    fill: Fill,
    read: Read,
    rebuilt: Rebuilt,
}

impl Report {
    /// Rebuild throughput over baseline read throughput.
    fn ratio(&self) -> f64 {
        self.rebuilt.report.events_per_second() / self.read.events_per_sec().max(1e-9)
    }
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

    let result = bench_store(kind, args, &store, version)
        .await
        .map_err(|e| format!("[{name}] {e}").into());
    close(&store).await;
    drop(db);
    result
}

async fn bench_store(kind: Kind, args: &Args, store: &Store, version: String) -> Result<Report> {
    let name = kind.name();

    let fill = fill(store, args.events).await?;
    println!(
        "[{name}] fill: {} events, {} customers ({:.1} events/customer, one append each) from {} \
         writers in {:.2} s ({:.0} ev/s)",
        fill.events,
        fill.customers,
        fill.events as f64 / fill.customers.max(1) as f64,
        FILL_WRITERS,
        fill.elapsed.as_secs_f64(),
        fill.events as f64 / fill.elapsed.as_secs_f64().max(1e-9)
    );

    let read = read_all(store, fill.events).await?;
    println!(
        "[{name}] baseline read: {} events in {} batches of {BATCH} in {:.2} s -> {:.0} ev/s{}",
        read.events,
        read.batches,
        read.elapsed.as_secs_f64(),
        read.events_per_sec(),
        if read.horizon_waits > 0 {
            format!(
                " (waited {} x 20 ms for the feed horizon)",
                read.horizon_waits
            )
        } else {
            String::new()
        }
    );

    let rebuilt = rebuild_and_verify(store, &fill).await?;
    println!(
        "[{name}] rebuild: {} events in {:.2} s ({:.2} s wall, {} progress calls) -> {:.0} ev/s; \
         verified: audit_trail {} rows = events, access_state {} rows = customers, \
         live checkpoint at head {}",
        rebuilt.report.events,
        rebuilt.report.elapsed.as_secs_f64(),
        rebuilt.wall.as_secs_f64(),
        rebuilt.progress_calls,
        rebuilt.report.events_per_second(),
        rebuilt.audit_rows,
        rebuilt.state_rows,
        rebuilt.report.position,
    );

    let report = Report {
        kind,
        version,
        fill,
        read,
        rebuilt,
    };
    println!();
    print_store_table(&report);
    Ok(report)
}

// ---------------------------------------------------------------------------
// output
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

fn print_store_table(r: &Report) {
    let read_s = r.read.elapsed.as_secs_f64();
    let rebuild_s = r.rebuilt.report.elapsed.as_secs_f64();
    let rows = vec![
        vec![
            format!("{} {}", r.kind.name(), r.version),
            "events".to_string(),
            "seconds".to_string(),
            "ev/s".to_string(),
            "vs baseline".to_string(),
        ],
        vec![
            format!("fill ({} writers, Store::append)", FILL_WRITERS),
            r.fill.events.to_string(),
            format!("{:.2}", r.fill.elapsed.as_secs_f64()),
            format!(
                "{:.0}",
                r.fill.events as f64 / r.fill.elapsed.as_secs_f64().max(1e-9)
            ),
            "-".to_string(),
        ],
        vec![
            format!("baseline read_feed (batch {BATCH})"),
            r.read.events.to_string(),
            format!("{read_s:.2}"),
            format!("{:.0}", r.read.events_per_sec()),
            "1.00".to_string(),
        ],
        vec![
            "rebuild::rebuild".to_string(),
            r.rebuilt.report.events.to_string(),
            format!("{rebuild_s:.2}"),
            format!("{:.0}", r.rebuilt.report.events_per_second()),
            format!("{:.2}", r.ratio()),
        ],
    ];
    print_rows(&rows);
    println!(
        "ratio rebuild/baseline: {:.2} of the read throughput (the rebuild takes {:.1}x the \
         time of the plain read)",
        r.ratio(),
        rebuild_s / read_s.max(1e-9)
    );
}

fn print_summary(reports: &[Report]) {
    let mut rows = vec![vec![
        "store".to_string(),
        "events".to_string(),
        "customers".to_string(),
        "fill s".to_string(),
        "baseline ev/s".to_string(),
        "rebuild ev/s".to_string(),
        "rebuild/baseline".to_string(),
    ]];
    for r in reports {
        rows.push(vec![
            r.kind.name().to_string(),
            r.fill.events.to_string(),
            r.fill.customers.to_string(),
            format!("{:.1}", r.fill.elapsed.as_secs_f64()),
            format!("{:.0}", r.read.events_per_sec()),
            format!("{:.0}", r.rebuilt.report.events_per_second()),
            format!("{:.2}", r.ratio()),
        ]);
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

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().collect();
    let args = parse_args(&raw[1..])?;
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let load_start = loadavg();

    println!("rebuild_bench");
    println!("  command:  {}", raw.join(" "));
    println!(
        "  as cargo: cargo run --release -p access-projections --example rebuild_bench{}",
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
        "  settings: events {}, stores {:?}, read batch {BATCH}, fill {FILL_WRITERS} writers x one \
         append per customer; customer = 1 in {REGISTER_ONLY_ONE_IN} register only (1 ev), else \
         register (1 ev) + grant w/ setup link (2 ev) + notifications (1 ev) and every \
         {EMAIL_CHANGE_EVERY}rd follow-up an email change w/ setup link (2 ev), 3..={MAX_CUSTOMER_EVENTS} ev",
        args.events,
        args.stores.iter().map(|k| k.name()).collect::<Vec<_>>(),
    );
    if args.stores.contains(&Kind::Postgres) {
        println!(
            "  postgres: {}",
            access_store::redact_url(&access_store::testing::server_url())
        );
    }
    println!();

    let mut reports = Vec::new();
    for &kind in &args.stores {
        let started = Instant::now();
        let report = bench(kind, &args).await?;
        println!(
            "[{}] done in {:.1} s",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
        println!();
        reports.push(report);
    }

    println!(
        "== results (nproc {nproc}; loadavg start {load_start}, end {}) ==",
        loadavg()
    );
    print_summary(&reports);
    Ok(())
}
