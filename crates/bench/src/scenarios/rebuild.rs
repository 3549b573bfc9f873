//! Scenarios 4 and 5: a store of `--events` events (PostgreSQL) rebuilt
//! into fresh projections, against a plain `SELECT` of the events table;
//! then `accessd` on the rebuilt database answering the auditor's queries.

use access_store::prelude::*;
use std::time::Duration;

use access_store::StoreOptions;
use anyhow::{anyhow, bail, Context, Result};
use sqlx::postgres::PgPoolOptions;

use super::{ms, postgres_db, warn_errors};
use crate::feed;
use crate::history::{self, Shape};
use crate::http;
use crate::report::{f0, f2, mib, per_second, print_table};
use crate::service::{own_cpu_seconds, Service, ServiceOptions};
use crate::{Args, Target};

pub async fn rebuild_and_audit(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!(
        "== scenario 4: rebuild of {} events vs a plain read; scenario 5: auditor queries ==",
        args.events
    );
    let db = postgres_db().await?;
    let store = db
        .store(StoreOptions::default())
        .await
        .map_err(|e| anyhow!("open the store: {e}"))?;
    // Raw SQL (VACUUM, the plain read) on a pool of the benchmark's own.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .context("connect to the scenario 4 database")?;

    let fill = history::fill(&store, args.events, Shape::Varied).await?;
    println!(
        "  fill: {} events, {} customers through Store::append (one append per customer, 8 \
         writers, fake hasher) in {:.1} s ({} events/s)",
        fill.events,
        fill.customers,
        fill.elapsed.as_secs_f64(),
        f0(per_second(fill.events, fill.elapsed))
    );
    sqlx::query("VACUUM ANALYZE events")
        .execute(&pool)
        .await
        .context("VACUUM ANALYZE events")?;
    let (read_n, read_t) = feed::plain_read(&pool).await?;
    let own0 = own_cpu_seconds();
    let report = access_projections::rebuild::rebuild(&store, &mut |_| {})
        .await
        .map_err(|e| anyhow!("rebuild: {e}"))?;
    let rebuild_cpu = own_cpu_seconds() - own0;
    let (read2_n, read2_t) = feed::plain_read(&pool).await?;
    if read_n != fill.events || read2_n != fill.events || report.events != fill.events {
        bail!(
            "read {read_n} and {read2_n} events, rebuilt {}, the store holds {}",
            report.events,
            fill.events
        );
    }
    let read_rate = per_second(read_n, read_t).max(per_second(read2_n, read2_t));
    let plain_read = |when: &str, n: u64, t: Duration| {
        vec![
            format!("plain SELECT of the events table ({when} rebuild)"),
            n.to_string(),
            f2(t.as_secs_f64()),
            f0(per_second(n, t)),
            "-".into(),
        ]
    };
    let rebuild_rate = report.events_per_second();
    let ratio = rebuild_rate / read_rate.max(1e-9);
    print_table(&[
        vec![
            "run".into(),
            "events".into(),
            "seconds".into(),
            "events/s".into(),
            "vs plain read".into(),
        ],
        plain_read("before", read_n, read_t),
        plain_read("after", read2_n, read2_t),
        vec![
            format!("rebuild::rebuild into fresh projections (bench CPU {rebuild_cpu:.1} s)"),
            report.events.to_string(),
            f2(report.elapsed.as_secs_f64()),
            f0(rebuild_rate),
            f2(ratio),
        ],
    ]);
    let head = store.head().await?;
    pool.close().await;
    // The benchmark's connections go before the service's come.
    drop(store);

    // Scenario 5: the service on the rebuilt database, once its hash chain
    // has caught up with the events (filled without the service).
    let service = Service::start(options, db.url()).await?;
    let client = http::client(4)?;
    let chain_t = http::wait_for_chain(
        &client,
        &service.base,
        head.global,
        Duration::from_secs(600),
    )
    .await?;
    println!(
        "  accessd's hash chain caught up with {} events in {:.1} s after start (queries below measured after it)",
        fill.events,
        chain_t.as_secs_f64()
    );
    let sample = &fill.sample;
    if sample.is_empty() {
        bail!("no sampled customers");
    }
    http::audit_trails(&client, &service.base, sample, 50.min(args.audit_requests)).await?;
    let (trails, rows) =
        http::audit_trails(&client, &service.base, sample, args.audit_requests).await?;
    warn_errors("audit trails", &trails);
    let rss_before = service.rss_kib()?;
    let (lines, bytes, export_t) = http::csv_export(&client, &service.base).await?;
    let peak_kib = service.peak_rss_kib()?;
    service.stop();
    print_table(&[
        vec![
            "query".into(),
            "requests".into(),
            "rows".into(),
            "p50 ms".into(),
            "p99 ms".into(),
            "p99.9 ms".into(),
            "seconds".into(),
            "accessd RSS MiB".into(),
        ],
        vec![
            "GET /v1/customers/{id}/audit (one client)".into(),
            trails.ok.to_string(),
            rows.to_string(),
            ms(trails.latencies.ms(0.5)),
            ms(trails.latencies.ms(0.99)),
            ms(trails.latencies.ms(0.999)),
            f2(trails.elapsed.as_secs_f64()),
            mib(rss_before),
        ],
        vec![
            format!("GET /v1/audit?format=csv ({} MiB)", mib(bytes / 1024)),
            "1".into(),
            lines.saturating_sub(1).to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            f2(export_t.as_secs_f64()),
            format!("peak {}", mib(peak_kib)),
        ],
    ]);
    println!();
    if lines.saturating_sub(1) != fill.events {
        println!(
            "  ! the CSV export has {} rows, the store {} events",
            lines.saturating_sub(1),
            fill.events
        );
    }
    let trail99 = trails.latencies.ms(0.99);
    let n = fill.events;
    Ok(vec![
        Target {
            name: "rebuild_events_per_s",
            measured: format!("{} events/s ({n} events)", f0(rebuild_rate)),
            goal: ">= 100000 events/s",
            pass: rebuild_rate >= 100_000.0,
        },
        Target {
            name: "rebuild_vs_plain_read",
            measured: format!(
                "{ratio:.2} ({} vs {} events/s)",
                f0(rebuild_rate),
                f0(read_rate)
            ),
            goal: ">= 0.15",
            pass: ratio >= 0.15,
        },
        Target {
            name: "audit_trail_p99",
            measured: format!("{trail99:.2} ms ({n} events)"),
            goal: "< 5 ms",
            pass: trail99 < 5.0 && trails.errors == 0,
        },
        Target {
            name: "csv_export_peak_rss",
            measured: format!(
                "{} MiB ({} rows in {:.1} s)",
                mib(peak_kib),
                lines.saturating_sub(1),
                export_t.as_secs_f64()
            ),
            goal: "< 100 MB",
            pass: (peak_kib as f64) * 1024.0 < 100e6 && lines.saturating_sub(1) == n,
        },
    ])
}
