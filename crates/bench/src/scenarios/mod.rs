//! The scenarios, each next to its same-run baseline (docs/performance.md):
//!
//! | scenario | module | what |
//! |---|---|---|
//! | 1, 3 and 6 | [`commands`] | commands over HTTP against the bare framework, with the projection lag; the same on SQLite |
//! | 2 | [`hashing`] | non-hashing commands while passwords are hashed |
//! | 4 and 5 | [`rebuild`] | a million-event rebuild against a plain `SELECT`; the auditor's queries on the result |
//! | 7 | [`login`] | sessions per second against a bare argon2id loop |
//! | 8 | [`store`] | `Store::append` throughput (1 and 16 writers) and a full `read_feed`, on both databases |
//! | 9 | [`feed_rebuild`] | `rebuild::rebuild` against a full `read_feed`, on both databases, verified |
//! | 10 | [`change_feed`] | commit → SSE and → JetStream latency under load; the NATS relay's catch-up against a full `read_feed` |
//! | 11 | [`import`] | `accessctl import` of a generated file: customers/s on both databases, peak RSS |
//! | 12 and 13 | [`overload`] | one customer, many writers (1 and 2 replicas); a login flood at 10 × the argon2id capacity against an idle probe |
//!
//! Each returns its targets (scenarios 6, 8 and 9 have none: they only
//! print figures). The helpers they share are here.

pub mod change_feed;
pub mod commands;
pub mod feed_rebuild;
pub mod hashing;
pub mod import;
pub mod login;
pub mod overload;
pub mod rebuild;
pub mod store;

use std::time::Duration;

use access_store::testing::TestDatabase;
use access_store::{Store, StoreOptions};
use anyhow::{anyhow, Result};

use crate::service::{own_cpu_seconds, Service};
use crate::sql::Sql;
use crate::{Args, Phase, StoreKind};

/// Milliseconds with two decimals.
fn ms(x: f64) -> String {
    format!("{x:.2}")
}

fn warn_errors(what: &str, phase: &Phase) {
    if phase.errors > 0 {
        println!(
            "  ! {what}: {} errors, first: {}",
            phase.errors,
            phase.first_error.as_deref().unwrap_or("?")
        );
    }
}

async fn postgres_db() -> Result<TestDatabase> {
    TestDatabase::postgres()
        .await
        .map_err(|e| anyhow!("create a PostgreSQL database: {e}"))
}

/// The unreported warm-up before a measured HTTP phase: a fifth of a
/// phase, 0.2 to 2 s.
fn warm_up(args: &Args) -> Duration {
    Duration::from_secs_f64((args.seconds / 5.0).clamp(0.2, 2.0))
}

/// Runs `phase` and measures the CPU time of `service` and of this process.
async fn measured<F: std::future::Future<Output = Result<Phase>>>(
    service: Option<&Service>,
    phase: F,
) -> Result<(Phase, Option<f64>, f64)> {
    let s0 = service.map(Service::cpu_seconds);
    let o0 = own_cpu_seconds();
    let phase = phase.await?;
    let s1 = service.map(Service::cpu_seconds);
    let o1 = own_cpu_seconds();
    Ok((phase, s0.zip(s1).map(|(a, b)| b - a), o1 - o0))
}

/// A fresh, migrated store of `kind` for scenarios 8 and 9, announced
/// with its database's version; the database lives as long as the guard.
async fn fresh_store(kind: StoreKind) -> Result<(TestDatabase, Store, String)> {
    let name = kind.name();
    let db = match kind {
        StoreKind::Postgres => postgres_db().await?,
        StoreKind::Sqlite => {
            TestDatabase::sqlite().map_err(|e| anyhow!("[{name}] create the test database: {e}"))?
        }
    };
    let options = StoreOptions::default();
    let store = db
        .store(options)
        .await
        .map_err(|e| anyhow!("[{name}] open and migrate: {e}"))?;
    let sql = Sql::open(db.url()).await?;
    let version = sql.version().await;
    sql.close().await;
    println!(
        "[{name}] fresh database {} (version {version}), {options:?}",
        access_store::redact_url(db.url())
    );
    Ok((db, store, version))
}
