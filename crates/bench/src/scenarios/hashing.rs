//! Scenario 2: hashing does not stall the service. A paced probe of
//! non-hashing commands, idle and while other clients set passwords.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{measured, ms, postgres_db, warm_up, warn_errors};
use crate::http;
use crate::report::{
    cpu_cells, f0, header, latency_cells, print_table, CPU_COLUMNS, LATENCY_COLUMNS,
};
use crate::service::{Service, ServiceOptions};
use crate::{Args, Phase, Target};

const HASH_CLIENTS: usize = 8;
const PROBE_CLIENTS: usize = 4;
const PROBE_EVERY: Duration = Duration::from_millis(20);

pub async fn hashing(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!("== scenario 2: hashing does not stall the service ==");
    println!(
        "  probe: {PROBE_CLIENTS} clients each sending a non-hashing command every {} ms \
         (no-hash mix); load: {HASH_CLIENTS} clients setting passwords (argon2id) in a \
         closed loop; {} s each; first with accessd's default ACCESS_HASH_CONCURRENCY, then \
         with 1 (one core left for everything else)",
        PROBE_EVERY.as_millis(),
        args.seconds
    );
    let mut rows = vec![header(&[
        &["run", "requests", "req/s"],
        &LATENCY_COLUMNS,
        &CPU_COLUMNS,
    ])];
    let mut target = None;
    for concurrency in [None, Some(1)] {
        let options = ServiceOptions {
            hash_concurrency: concurrency,
            ..options.clone()
        };
        let label = concurrency.map_or("default".to_string(), |c| c.to_string());
        let (mut table, t) = hashing_once(args, &options, &label).await?;
        rows.append(&mut table);
        target.get_or_insert(t);
    }
    print_table(&rows);
    println!();
    Ok(target.into_iter().collect())
}

async fn hashing_once(
    args: &Args,
    options: &ServiceOptions,
    label: &str,
) -> Result<(Vec<Vec<String>>, Target)> {
    let db = postgres_db().await?;
    let service = Service::start(options, db.url()).await?;
    let client = http::client(32)?;
    let mut customers = Vec::new();
    for _ in 0..HASH_CLIENTS {
        customers.push(http::customer_with_access(&client, &service.base, false).await?);
    }
    let d = args.duration();
    let warm = warm_up(args);
    http::paced(&client, &service.base, PROBE_CLIENTS, PROBE_EVERY, warm).await?;

    let (idle, idle_cpu, idle_own) = measured(
        Some(&service),
        http::paced(&client, &service.base, PROBE_CLIENTS, PROBE_EVERY, d),
    )
    .await?;
    warn_errors("probe (idle)", &idle);

    let stop = Arc::new(AtomicBool::new(false));
    let hashers = http::hashers(&client, &service.base, customers, stop.clone());
    tokio::time::sleep(warm).await;
    let (loaded, loaded_cpu, loaded_own) = measured(
        Some(&service),
        http::paced(&client, &service.base, PROBE_CLIENTS, PROBE_EVERY, d),
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut hashing = Phase::default();
    let mut hash_elapsed = Duration::ZERO;
    for h in hashers {
        let p = h.await.context("hasher task")?;
        hash_elapsed = hash_elapsed.max(p.elapsed);
        hashing.merge(p);
    }
    hashing.elapsed = hash_elapsed;
    warn_errors("probe (under hashing)", &loaded);
    warn_errors("hashers", &hashing);
    service.stop();

    let row = |name: &str, p: &Phase, cpu: Option<f64>, own: f64| {
        let mut cells = vec![
            format!("hash concurrency {label}: {name}"),
            p.ok.to_string(),
            f0(p.per_second()),
        ];
        cells.extend(latency_cells(&p.latencies, p.errors));
        cells.extend(cpu_cells(cpu, own));
        cells
    };
    let table = vec![
        row("non-hashing commands, idle", &idle, idle_cpu, idle_own),
        row(
            "non-hashing commands, under password load",
            &loaded,
            loaded_cpu,
            loaded_own,
        ),
        row(
            "set-password (argon2id) during the load",
            &hashing,
            None,
            0.0,
        ),
    ];
    let ratio = loaded.latencies.ms(0.99) / idle.latencies.ms(0.99).max(1e-9);
    let target = Target {
        name: "hashing_isolation",
        measured: format!(
            "{ratio:.2}x (non-hashing p99 {} ms under {} passwords/s, {} ms idle; hash \
             concurrency {label})",
            ms(loaded.latencies.ms(0.99)),
            f0(hashing.per_second()),
            ms(idle.latencies.ms(0.99))
        ),
        goal: "<= 2.00x",
        pass: ratio <= 2.0 && loaded.errors == 0,
    };
    Ok((table, target))
}
