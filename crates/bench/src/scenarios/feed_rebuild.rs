//! Scenario 9 (the projections crate's former `rebuild_bench` example):
//! how fast `rebuild::rebuild` replays the whole store into fresh
//! projections, against the floor of a plain sequential read of the feed,
//! on a fresh database of each `--stores` kind.
//!
//! - Fill: exactly `--store-events` events of [`Shape::Varied`] customers
//!   (the generator of scenario 4), one append per customer.
//! - Baseline: the feed read through `Store::read_feed` in batches of
//!   [`BATCH`] from the start until it is empty.
//! - Rebuild: `rebuild::rebuild` into fresh projections (the live ones are
//!   empty; no projector runs). Afterwards `audit_trail` must hold one row
//!   per event, `access_state` one row per customer, and the live
//!   checkpoint must be at the head of the store; anything else fails the
//!   run.
//!
//! Scenario 4 measures the same rebuild on PostgreSQL against a plain
//! `SELECT` instead, at a million events by default.

use access_store::prelude::*;
use std::time::{Duration, Instant};

use access_projections::{db, rebuild, LIVE};
use access_store::Store;
use anyhow::{anyhow, bail, Result};

use super::fresh_store;
use crate::feed::{self, Read};
use crate::history::{
    self, Fill, Shape, EMAIL_CHANGE_EVERY, FILL_WRITERS, MAX_CUSTOMER_EVENTS, REGISTER_ONLY_ONE_IN,
};
use crate::report::{loadavg, print_table};
use crate::sql::Sql;
use crate::{Args, StoreKind, Target};

/// Events per `read_feed` call in the baseline (the rebuild's own batch).
const BATCH: u32 = 5000;

pub async fn feed_rebuild(args: &Args) -> Result<Vec<Target>> {
    println!(
        "== scenario 9: rebuild of {} events vs a full read of the feed, per store ==",
        args.store_events
    );
    println!(
        "  settings: events {}, stores {:?}, read batch {BATCH}, fill {FILL_WRITERS} writers x one \
         append per customer; customer = 1 in {REGISTER_ONLY_ONE_IN} register only (1 ev), else \
         register (1 ev) + grant w/ setup link (2 ev) + notifications (1 ev) and every \
         {EMAIL_CHANGE_EVERY}rd follow-up an email change w/ setup link (2 ev), 3..={MAX_CUSTOMER_EVENTS} ev",
        args.store_events,
        args.stores.iter().map(|k| k.name()).collect::<Vec<_>>(),
    );
    let mut reports = Vec::new();
    for &kind in &args.stores {
        let started = Instant::now();
        let (db, store, version) = fresh_store(kind).await?;
        let result = bench_store(kind, args, &store, db.url()).await;
        drop(store);
        drop(db);
        let report = result.map_err(|e| anyhow!("[{}] {e:#}", kind.name()))?;
        println!();
        print_store_table(&report, &version);
        println!(
            "[{}] done in {:.1} s",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
        reports.push(report);
    }
    println!("  results (loadavg {}):", loadavg());
    print_summary(&reports);
    println!();
    Ok(vec![])
}

struct Report {
    kind: StoreKind,
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

async fn bench_store(kind: StoreKind, args: &Args, store: &Store, url: &str) -> Result<Report> {
    let name = kind.name();
    let fill = history::fill(store, args.store_events, Shape::Varied).await?;
    if fill.before != 0 {
        bail!("the fresh store already held {} events", fill.before);
    }
    println!(
        "[{name}] fill: {} events, {} customers ({:.1} events/customer, one append each) from {} \
         writers in {:.2} s ({:.0} ev/s)",
        fill.events,
        fill.customers,
        fill.events as f64 / fill.customers.max(1) as f64,
        FILL_WRITERS,
        fill.elapsed.as_secs_f64(),
        fill.per_second()
    );

    let read = feed::read_all(store, BATCH).await?;
    println!(
        "[{name}] baseline read: {} events in {} batches of {BATCH} in {:.2} s -> {:.0} ev/s{}",
        read.events,
        read.batches,
        read.elapsed.as_secs_f64(),
        read.events_per_sec(),
        read.waits()
    );

    let rebuilt = rebuild_and_verify(store, url, &fill).await?;
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
    Ok(Report {
        kind,
        fill,
        read,
        rebuilt,
    })
}

struct Rebuilt {
    report: rebuild::RebuildReport,
    /// Wall time of the call, as seen from here.
    wall: Duration,
    progress_calls: u64,
    audit_rows: u64,
    state_rows: u64,
}

async fn rebuild_and_verify(store: &Store, url: &str, fill: &Fill) -> Result<Rebuilt> {
    let mut progress_calls = 0u64;
    let mut replayed = 0u64;
    let started = Instant::now();
    let report = rebuild::rebuild(store, &mut |n| {
        progress_calls += 1;
        replayed = n;
    })
    .await
    .map_err(|e| anyhow!("rebuild after {replayed} events: {e}"))?;
    let wall = started.elapsed();

    let sql = Sql::open(url).await?;
    let audit_rows = sql.count("SELECT count(*) FROM audit_trail").await?;
    let state_rows = sql.count("SELECT count(*) FROM access_state").await?;
    let distinct_states = sql
        .count("SELECT count(DISTINCT customer_id) FROM access_state")
        .await?;
    let streams = sql
        .count("SELECT count(DISTINCT aggregate_id) FROM events")
        .await?;
    sql.close().await;
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
        bail!("REBUILD MISMATCH:\n  - {}", problems.join("\n  - "));
    }
    Ok(Rebuilt {
        report,
        wall,
        progress_calls,
        audit_rows,
        state_rows,
    })
}

fn print_store_table(r: &Report, version: &str) {
    let read_s = r.read.elapsed.as_secs_f64();
    let rebuild_s = r.rebuilt.report.elapsed.as_secs_f64();
    print_table(&[
        vec![
            format!("{} {version}", r.kind.name()),
            "events".to_string(),
            "seconds".to_string(),
            "ev/s".to_string(),
            "vs baseline".to_string(),
        ],
        vec![
            format!("fill ({FILL_WRITERS} writers, Store::append)"),
            r.fill.events.to_string(),
            format!("{:.2}", r.fill.elapsed.as_secs_f64()),
            format!("{:.0}", r.fill.per_second()),
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
    ]);
    println!(
        "ratio rebuild/baseline: {:.2} of the read throughput (the rebuild takes {:.1}x the \
         time of the plain read)",
        r.ratio(),
        rebuild_s / read_s.max(1e-9)
    );
}

fn print_summary(reports: &[Report]) {
    let mut rows = vec![[
        "store",
        "events",
        "customers",
        "fill s",
        "baseline ev/s",
        "rebuild ev/s",
        "rebuild/baseline",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
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
    print_table(&rows);
}
