//! Issue 19's floods:
//! - scenario 12, contended: 8 clients × 25 email changes of one customer,
//!   through one replica (PostgreSQL and SQLite) and two (PostgreSQL); every
//!   acknowledged change must be in the history exactly once, and nothing
//!   else.
//! - scenario 13, login flood: logins at 10 × the machine's measured argon2id
//!   capacity for a phase, while 4 clients send a non-hashing command every
//!   20 ms; against the same probe idle.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use uuid::Uuid;

use super::{ms, postgres_db, warm_up, warn_errors};
use crate::http;
use crate::report::{f0, header, print_table};
use crate::service::{Service, ServiceOptions};
use crate::{Args, Target};

const CONTENDING_CLIENTS: usize = 8;
const CHANGES_EACH: usize = 25;

pub async fn contended(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!("== scenario 12: one customer, many writers ==");
    println!(
        "  {CONTENDING_CLIENTS} clients × {CHANGES_EACH} email changes (setup link, no hashing) of \
         one customer, no client retries; accessd's default ACCESS_CUSTOMER_QUEUE_WAIT_MS; \
         then the customer's history is read back"
    );
    let mut rows = vec![header(&[&[
        "run",
        "acknowledged",
        "share",
        "refused",
        "in history once",
        "p50 ms",
        "p99 ms",
        "seconds",
    ]])];
    let mut targets = Vec::new();
    let pg = postgres_db().await?;
    let sqlite_dir = tempfile::tempdir().context("a directory for SQLite")?;
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("bench.db").display());
    for (label, url, replicas, goal, floor) in [
        (
            "PostgreSQL, 1 replica",
            pg.url().to_string(),
            1,
            "100 %",
            1.0,
        ),
        ("SQLite, 1 replica", sqlite_url, 1, "100 %", 1.0),
        (
            "PostgreSQL, 2 replicas",
            pg.url().to_string(),
            2,
            ">= 90 %",
            0.9,
        ),
    ] {
        let mut services = Vec::new();
        for _ in 0..replicas {
            services.push(Service::start(options, &url).await?);
        }
        let bases: Vec<String> = services.iter().map(|s| s.base.clone()).collect();
        let client = http::client(CONTENDING_CLIENTS)?;
        let id: Uuid = http::customer_with_access(&client, &bases[0], false)
            .await?
            .parse()
            .map_err(|e| anyhow!("customer id: {e}"))?;
        let each = if args.smoke { 5 } else { CHANGES_EACH };
        let run = http::contend(&client, &bases, id, CONTENDING_CLIENTS, each).await?;
        // The history: each acknowledged email exactly once, nothing else.
        let events: Vec<_> = http::api(&client, &bases[0])
            .events(id, Some(1000))
            .try_collect()
            .await
            .context("read the customer's history")?;
        let mut in_history: BTreeMap<String, u64> = BTreeMap::new();
        for e in events.iter().filter(|e| e.event_type == "EmailChanged") {
            let email = e.data["new_email"].as_str().unwrap_or("?").to_string();
            *in_history.entry(email).or_default() += 1;
        }
        let once = run
            .acknowledged
            .iter()
            .filter(|e| in_history.get(*e) == Some(&1))
            .count();
        let exact = once == run.acknowledged.len() && in_history.len() == run.acknowledged.len();
        for service in services {
            service.stop();
        }
        let total = CONTENDING_CLIENTS * each;
        let share = run.acknowledged.len() as f64 / total as f64;
        let refused: u64 = run.refused.values().sum();
        rows.push(vec![
            label.to_string(),
            format!("{}/{total}", run.acknowledged.len()),
            format!("{:.1} %", share * 100.0),
            if run.refused.is_empty() {
                "0".to_string()
            } else {
                format!("{refused} {:?}", run.refused)
            },
            format!("{once} ({} in history)", in_history.values().sum::<u64>()),
            ms(run.latencies.ms(0.5)),
            ms(run.latencies.ms(0.99)),
            format!("{:.1}", run.elapsed.as_secs_f64()),
        ]);
        targets.push(Target {
            name: if replicas == 1 {
                if label.starts_with("SQLite") {
                    "contended_one_replica_sqlite"
                } else {
                    "contended_one_replica"
                }
            } else {
                "contended_two_replicas"
            },
            measured: format!(
                "{:.1} % acknowledged ({}/{total}), {}",
                share * 100.0,
                run.acknowledged.len(),
                if exact {
                    "each exactly once in the history"
                } else {
                    "HISTORY DIFFERS from the acknowledgements"
                }
            ),
            goal,
            pass: share >= floor && exact,
        });
    }
    print_table(&rows);
    println!();
    Ok(targets)
}

const FLOOD_CUSTOMERS: usize = 16;
const PROBE_CLIENTS: usize = 4;
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// accessd's default `ACCESS_HASH_WAIT_MS`.
const HASH_WAIT_MS: f64 = 1000.0;

pub async fn login_flood(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!("== scenario 13: a login flood ==");
    let threads = crate::report::nproc();
    let measure = Duration::from_secs_f64(args.seconds.clamp(0.5, 2.0));
    let (capacity, cost_ms) =
        tokio::task::spawn_blocking(move || super::login::argon2_baseline(threads, measure))
            .await
            .context("argon2 capacity task")??;
    let rate = 10.0 * capacity;
    let d = args.duration();
    println!(
        "  argon2id capacity of this machine: {} verifications/s ({threads} threads, {cost_ms:.1} \
         ms each); flood: {} logins/s (10 ×) with the right password for {FLOOD_CUSTOMERS} \
         customers, open loop, {} s, each given up after 10 s; probe: {PROBE_CLIENTS} clients \
         sending a non-hashing command every {} ms, idle and during the flood; accessd defaults \
         (ACCESS_HASH_CONCURRENCY 2, ACCESS_HASH_QUEUE 8, ACCESS_HASH_WAIT_MS 1000)",
        f0(capacity),
        f0(rate),
        args.seconds,
        PROBE_EVERY.as_millis()
    );
    let db = postgres_db().await?;
    let service = Service::start(options, db.url()).await?;
    let client = http::client(64)?;
    let emails = http::customers_with_password(&client, &service.base, FLOOD_CUSTOMERS).await?;
    let warm = warm_up(args);
    http::paced(&client, &service.base, PROBE_CLIENTS, PROBE_EVERY, warm).await?;
    let idle = http::paced(&client, &service.base, PROBE_CLIENTS, PROBE_EVERY, d).await?;
    warn_errors("probe (idle)", &idle);
    let flood_client = http::client(1024)?;
    let (flood, loaded) = tokio::join!(
        http::login_flood(
            &flood_client,
            &service.base,
            &emails,
            rate,
            d,
            Duration::from_secs(10)
        ),
        async {
            // The probe starts once the flood has filled the queue.
            tokio::time::sleep(Duration::from_millis(200)).await;
            http::paced(&client, &service.base, PROBE_CLIENTS, PROBE_EVERY, d).await
        }
    );
    let (flood, loaded) = (flood?, loaded?);
    warn_errors("probe (during the flood)", &loaded);
    service.stop();
    if flood.sent == 0 {
        bail!("the flood sent nothing");
    }

    let statuses: Vec<String> = flood
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    print_table(&[
        header(&[&[
            "run", "requests", "per s", "p50 ms", "p99 ms", "max ms", "errors",
        ]]),
        probe_row("non-hashing probe, idle", &idle),
        probe_row("non-hashing probe, during the flood", &loaded),
        vec![
            format!("login flood ({})", statuses.join(", ")),
            flood.sent.to_string(),
            f0(flood.sent as f64 / d.as_secs_f64()),
            ms(flood.latencies.ms(0.5)),
            ms(flood.latencies.ms(0.99)),
            ms(flood.latencies.max_ms()),
            flood.unanswered.to_string(),
        ],
    ]);
    if let Some(e) = &flood.first_unanswered {
        println!("  ! first unanswered login: {e}");
    }
    println!(
        "  sessions opened during the flood: {} ({} /s; capacity {} /s)",
        flood.count(201),
        f0(flood.count(201) as f64 / d.as_secs_f64()),
        f0(capacity)
    );
    println!();
    let ratio = loaded.latencies.ms(0.99) / idle.latencies.ms(0.99).max(1e-9);
    let flood_p99 = flood.latencies.ms(0.99);
    Ok(vec![
        Target {
            name: "login_flood_isolation",
            measured: format!(
                "{ratio:.2}x (non-hashing p99 {} ms during the flood, {} ms idle)",
                ms(loaded.latencies.ms(0.99)),
                ms(idle.latencies.ms(0.99))
            ),
            goal: "<= 2.00x",
            pass: ratio <= 2.0 && loaded.errors == 0,
        },
        Target {
            name: "login_flood_answered",
            measured: format!(
                "p99 {} ms; {} unanswered; {} 5xx other than 503; {} refusals without \
                 Retry-After ({})",
                ms(flood_p99),
                flood.unanswered,
                flood.server_errors(),
                flood.refusals_without_retry_after,
                statuses.join(", ")
            ),
            goal: "p99 <= ACCESS_HASH_WAIT_MS + 100 ms (1100), none unanswered, no 5xx but 503",
            pass: flood_p99 <= HASH_WAIT_MS + 100.0
                && flood.unanswered == 0
                && flood.server_errors() == 0
                && flood.refusals_without_retry_after == 0,
        },
    ])
}

fn probe_row(name: &str, p: &crate::Phase) -> Vec<String> {
    vec![
        name.to_string(),
        p.ok.to_string(),
        f0(p.per_second()),
        ms(p.latencies.ms(0.5)),
        ms(p.latencies.ms(0.99)),
        ms(p.latencies.max_ms()),
        p.errors.to_string(),
    ]
}
