//! `access-bench`: the benchmark of issue 7 and the project's one
//! benchmark harness. Sets up its own databases, runs the real `accessd`
//! binary as a child process, runs every scenario next to its same-run
//! baseline, prints tables and one summary line per target
//! (`target NAME: measured X, goal Y, PASS|FAIL`).
//!
//! ```text
//! cargo build --release -p accessd -p access-bench
//! target/release/access-bench                  # the full run (minutes)
//! target/release/access-bench --smoke          # everything tiny (seconds)
//! target/release/access-bench --scenarios 8,9  # the store alone (no accessd needed)
//! ```
//!
//! PostgreSQL: databases are created on the server named by
//! `--database-url` (default `ACCESS_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped at the end.
//!
//! A tour: [`scenarios`] holds one module per scenario; they drive
//! `accessd` through [`service`] (the child process) and [`http`] (the
//! load generator), or the store directly through [`history`] (the
//! generated customers), [`feed`] (full reads) and [`sql`] (raw counts);
//! [`framework`] is scenario 1's baseline; [`report`] the histograms and
//! tables.

mod feed;
mod framework;
mod history;
mod http;
mod report;
mod scenarios;
mod service;
mod sql;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use crate::report::Latencies;

/// The project's benchmark harness: the scenarios of issue 7 and the
/// store on its own (see docs/performance.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "access-bench", version)]
pub struct Args {
    /// Everything tiny: a check that the benchmark runs (seconds).
    #[arg(long)]
    pub smoke: bool,

    /// A PostgreSQL server the benchmark may create databases on.
    #[arg(long, env = "ACCESS_TEST_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The `accessd` binary (default: next to this one).
    #[arg(long)]
    pub accessd: Option<PathBuf>,

    /// Concurrent clients of scenario 1 (and 6).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub clients: Vec<usize>,

    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,

    /// Events generated for the rebuild and the audit queries.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,

    /// Database connections of `accessd` and of the baseline framework.
    #[arg(long, default_value_t = 10)]
    pub pool: u32,

    /// Audit-trail requests in scenario 5.
    #[arg(long, default_value_t = 2000)]
    pub audit_requests: usize,

    /// Replicas of `accessd` for the extra run of scenario 1 at 32 clients
    /// (0 or 1: no extra run).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,

    /// Extra environment for every `accessd` started (KEY=VALUE, repeatable),
    /// e.g. to try an allocator setting.
    #[arg(long = "accessd-env", value_name = "KEY=VALUE")]
    pub accessd_env: Vec<String>,

    /// Scenarios to run (1..=13; 3 runs with 1, 5 with 4). 8 and 9 use
    /// the store directly and need no `accessd`; 10 needs NATS; 11 runs
    /// `accessctl` (next to this binary).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,6,7,8,9,10,12,13")]
    pub scenarios: Vec<u32>,

    /// The databases of scenarios 8, 9 and 11.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    pub stores: Vec<StoreKind>,

    /// Events in each store of scenarios 8 and 9 (filled up to this).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub store_events: u64,

    /// Seconds per append phase of scenario 8 (1 and 16 writers).
    #[arg(long, default_value_t = 5.0)]
    pub append_seconds: f64,

    /// Appends per append phase of scenario 8, at most.
    #[arg(long, default_value_t = 50_000)]
    pub max_appends: u64,

    /// Clients sending commands in scenario 10 (the change feed).
    #[arg(long, default_value_t = 32)]
    pub feed_clients: usize,

    /// Events of scenario 10's relay backlog (the issue's figure is
    /// 1,000,000: `--feed-backlog 1000000`).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_backlog: u64,

    /// NATS with JetStream for scenario 10.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Rows of scenario 11's import file.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub import_rows: u64,

    /// Batch sizes of scenario 8's full reads of the feed (one read each).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Vec<u32>,
}

/// A database kind of scenarios 8 and 9.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgres",
            StoreKind::Sqlite => "sqlite",
        }
    }
}

/// The scenarios that run `accessd`.
/// Every scenario that runs on its own, in the order they run (3 runs
/// with 1, 5 with 4).
const RUN_ORDER: [u32; 11] = [1, 2, 7, 6, 4, 8, 9, 10, 11, 12, 13];

const SERVICE_SCENARIOS: [u32; 8] = [1, 2, 4, 6, 7, 10, 12, 13];

impl Args {
    fn adjusted(mut self) -> Self {
        if self.smoke {
            self.clients = vec![1, 4];
            self.seconds = 1.0;
            self.events = 3000;
            self.audit_requests = 20;
            self.store_events = 2000;
            self.append_seconds = 0.5;
            self.max_appends = 2000;
            self.feed_clients = 4;
            self.feed_backlog = 2000;
            self.import_rows = 2000;
        }
        self
    }

    fn validate(&self) -> Result<()> {
        if let Some(n) = self
            .scenarios
            .iter()
            .find(|n| !(RUN_ORDER.contains(*n) || [3, 5].contains(*n)))
        {
            anyhow::bail!("--scenarios: no scenario {n} (1..=13)");
        }
        if !(self.append_seconds > 0.0 && self.append_seconds.is_finite()) {
            anyhow::bail!("--append-seconds {}: must be positive", self.append_seconds);
        }
        Ok(())
    }

    fn needs_accessd(&self) -> bool {
        self.scenarios.iter().any(|n| SERVICE_SCENARIOS.contains(n))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.max(0.1))
    }

    pub fn server_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(access_store::testing::server_url)
    }

    fn accessd_binary(&self) -> Result<PathBuf> {
        if let Some(path) = &self.accessd {
            return Ok(path.clone());
        }
        let me = std::env::current_exe().context("path of this binary")?;
        let dir = me.parent().context("directory of this binary")?;
        Ok(dir.join("accessd"))
    }
}

/// The outcome of one measured phase.
#[derive(Default)]
pub struct Phase {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl Phase {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    pub fn merge(&mut self, other: Phase) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.add(&other.latencies);
    }
}

/// One target: name, measured value, goal, pass.
pub struct Target {
    pub name: &'static str,
    pub measured: String,
    pub goal: &'static str,
    pub pass: bool,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().collect();
    let args = Args::parse().adjusted();
    args.validate()?;
    // The test-database helpers read the server from the environment.
    std::env::set_var("ACCESS_TEST_DATABASE_URL", args.server_url());
    let binary = args.accessd_binary()?;
    if args.needs_accessd() && !binary.is_file() {
        anyhow::bail!(
            "no accessd binary at {} (build it: cargo build --release -p accessd, or pass --accessd)",
            binary.display()
        );
    }

    println!("access-bench");
    println!("  command:  {}", raw.join(" "));
    println!("  accessd:  {}", binary.display());
    println!(
        "  machine:  nproc {}, cpu {}, loadavg at start {}",
        report::nproc(),
        report::cpu_model(),
        report::loadavg()
    );
    if cfg!(debug_assertions) {
        println!("  WARNING:  debug build of the load generator; use --release for real numbers");
    }
    println!(
        "  settings: clients {:?}, {} s per phase, {} events, pool {}, replicas {}, scenarios {:?}{}",
        args.clients,
        args.seconds,
        args.events,
        args.pool,
        args.replicas,
        args.scenarios,
        if args.smoke { " (smoke)" } else { "" }
    );
    if args.scenarios.iter().any(|n| [8, 9].contains(n)) {
        println!(
            "  store:    stores {:?}, {} events, append phases {} s or {} appends, read batches {:?}",
            args.stores.iter().map(|k| k.name()).collect::<Vec<_>>(),
            args.store_events,
            args.append_seconds,
            args.max_appends,
            args.batch
        );
    }
    if !args.accessd_env.is_empty() {
        println!("  accessd env: {}", args.accessd_env.join(" "));
    }
    println!(
        "  postgres: {}",
        access_store::redact_url(&args.server_url())
    );
    println!();

    let options = service::ServiceOptions {
        binary,
        pool: args.pool,
        hash_concurrency: None,
        env: args
            .accessd_env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--accessd-env {kv}: expected KEY=VALUE"))
            })
            .collect::<Result<_>>()?,
    };
    let mut targets = Vec::new();
    let started = std::time::Instant::now();
    // In this order, whatever order `--scenarios` names them in.
    for n in RUN_ORDER.iter().filter(|n| args.scenarios.contains(n)) {
        let (a, o) = (&args, &options);
        targets.extend(match n {
            1 => scenarios::commands::commands(a, o).await?,
            2 => scenarios::hashing::hashing(a, o).await?,
            7 => scenarios::login::login(a, o).await?,
            6 => scenarios::commands::sqlite(a, o).await?,
            4 => scenarios::rebuild::rebuild_and_audit(a, o).await?,
            8 => scenarios::store::store(a).await?,
            9 => scenarios::feed_rebuild::feed_rebuild(a).await?,
            10 => scenarios::change_feed::change_feed(a, o).await?,
            11 => scenarios::import::import(a).await?,
            12 => scenarios::overload::contended(a, o).await?,
            13 => scenarios::overload::login_flood(a, o).await?,
            _ => Vec::new(),
        });
    }

    println!(
        "== summary (nproc {}, loadavg at end {}, {:.0} s) ==",
        report::nproc(),
        report::loadavg(),
        started.elapsed().as_secs_f64()
    );
    for t in &targets {
        println!(
            "target {}: measured {}, goal {}, {}",
            t.name,
            t.measured,
            t.goal,
            if t.pass { "PASS" } else { "FAIL" }
        );
    }
    Ok(())
}
