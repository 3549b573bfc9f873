//! Scenarios 1 and 3 (commands over HTTP on PostgreSQL against the bare
//! framework, with the projection lag sampled meanwhile) and scenario 6
//! (the same load on SQLite). Both print one table of [`Row`]s.

use std::time::Duration;

use access_store::testing::TestDatabase;
use anyhow::{anyhow, bail, Context, Result};
use sqlx::postgres::PgPoolOptions;

use super::{measured, ms, postgres_db, warm_up, warn_errors};
use crate::framework::Framework;
use crate::http::{self, LagProbe, Mix};
use crate::report::{
    self, cpu_cells, f0, f2, latency_cells, mib, print_table, Latencies, CPU_COLUMNS,
    LATENCY_COLUMNS,
};
use crate::service::{Service, ServiceOptions};
use crate::{Args, Phase, Target};

/// The level the targets of scenario 1 are read at.
const TARGET_CLIENTS: usize = 32;
/// One sampled command per this interval for the projection lag.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(20);

fn header() -> Vec<String> {
    report::header(&[
        &["run", "clients", "commands", "cmd/s", "vs framework"],
        &LATENCY_COLUMNS,
        &["lag p50 ms", "lag p99 ms"],
        &CPU_COLUMNS,
        &["db xact/cmd"],
    ])
}

/// Prints a scenario's rows and the service's peak memory over it.
fn print_rows(rows: &[Row], scenario: u32, peak_kib: u64) {
    let mut table = vec![header()];
    table.extend(rows.iter().map(Row::cells));
    print_table(&table);
    println!(
        "  accessd peak RSS (VmHWM) over scenario {scenario}: {} MiB",
        mib(peak_kib)
    );
    println!();
}

/// Transactions committed or rolled back in the pool's database so far
/// (every statement outside an explicit transaction is one): a proxy for
/// the database round trips a command costs. PostgreSQL flushes these
/// counters about once a second, so per phase they are approximate.
async fn xacts(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(0)
}

struct Row {
    run: String,
    clients: usize,
    phase: Phase,
    baseline: Option<f64>,
    lag: Option<(Latencies, u64)>,
    service_cpu: Option<f64>,
    own_cpu: f64,
    xact_per_cmd: Option<f64>,
}

impl Row {
    fn cells(&self) -> Vec<String> {
        let p = &self.phase;
        let (lag50, lag99) = match &self.lag {
            Some((l, timeouts)) if *timeouts > 0 => (
                ms(l.ms(0.5)),
                format!("{} (+{timeouts} >10 s)", ms(l.ms(0.99))),
            ),
            Some((l, _)) => (ms(l.ms(0.5)), ms(l.ms(0.99))),
            None => ("-".into(), "-".into()),
        };
        let mut cells = vec![
            self.run.clone(),
            self.clients.to_string(),
            p.ok.to_string(),
            f0(p.per_second()),
            self.baseline
                .map_or("-".into(), |b| f2(p.per_second() / b.max(1e-9))),
        ];
        cells.extend(latency_cells(&p.latencies, p.errors));
        cells.extend([lag50, lag99]);
        cells.extend(cpu_cells(self.service_cpu, self.own_cpu));
        cells.push(self.xact_per_cmd.map_or("-".into(), |x| format!("{x:.1}")));
        cells
    }
}

fn per_command(before: i64, after: i64, phase: &Phase) -> Option<f64> {
    (before > 0 && phase.ok > 0).then(|| (after - before) as f64 / phase.ok as f64)
}

/// Runs `phase` and measures the CPU time of `service` and of this process.
fn target_level(args: &Args) -> usize {
    if args.clients.contains(&TARGET_CLIENTS) {
        TARGET_CLIENTS
    } else {
        args.clients.iter().copied().max().unwrap_or(1)
    }
}

pub async fn commands(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!("== scenario 1: commands over HTTP (PostgreSQL) vs the bare framework; scenario 3: projection lag ==");
    println!(
        "  mix per customer: register, grant access with setup link, change email with a \
         temporary password (argon2id), revoke; distinct customers; {} s per level; \
         framework: cqrs-es 0.5 + postgres-es 0.5, one event per command, pool {}",
        args.seconds, args.pool
    );
    let db = postgres_db().await?;
    let framework_db = postgres_db().await?;
    let service = Service::start(options, db.url()).await?;
    let framework = Framework::open(framework_db.url(), args.pool).await?;
    let lag_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(db.url())
        .await
        .context("connect the lag probe")?;
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let client = http::client(max_clients * 2)?;
    let bases = vec![service.base.clone()];
    let d = args.duration();

    // Warm-up, not reported: connections, caches, JIT of nothing.
    let warm = warm_up(args);
    framework.run(8, warm).await?;
    http::commands(&client, &bases, 8, warm, Mix::Issue, None).await?;

    let mut rows = Vec::new();
    let mut at_target: Option<(f64, f64, f64, Latencies, u64)> = None;
    for &clients in &args.clients {
        let x0 = xacts(framework.pool()).await;
        let (base, _, base_cpu) = measured(None, framework.run(clients, d)).await?;
        let base_xact = per_command(x0, xacts(framework.pool()).await, &base);
        warn_errors("framework", &base);
        let base_rate = base.per_second();
        let lag = LagProbe::new(lag_pool.clone(), LAG_SAMPLE_EVERY);
        let x0 = xacts(&lag_pool).await;
        let (ours, service_cpu, own_cpu) = measured(
            Some(&service),
            http::commands(&client, &bases, clients, d, Mix::Issue, Some(lag.clone())),
        )
        .await?;
        warn_errors("accessd", &ours);
        let lags = lag.finish().await;
        // The lag probe's own queries are not the service's.
        let probes = lag.polls();
        let ours_xact = per_command(x0, xacts(&lag_pool).await - probes, &ours);
        if clients == target_level(args) {
            at_target = Some((
                ours.per_second(),
                base_rate,
                ours.latencies.ms(0.99),
                lags.0.clone(),
                lags.1,
            ));
        }
        rows.push(Row {
            run: "framework (cqrs-es + postgres-es, no HTTP)".into(),
            clients,
            phase: base,
            baseline: Some(base_rate),
            lag: None,
            service_cpu: None,
            own_cpu: base_cpu,
            xact_per_cmd: base_xact,
        });
        rows.push(Row {
            run: "accessd HTTP, issue mix".into(),
            clients,
            phase: ours,
            baseline: Some(base_rate),
            lag: Some(lags),
            service_cpu,
            own_cpu,
            xact_per_cmd: ours_xact,
        });
        println!(
            "  level {clients} done (loadavg {})",
            crate::report::loadavg()
        );
    }
    let level = target_level(args);
    let base_rate = at_target.as_ref().map_or(0.0, |t| t.1);
    // The same level without any hashing, to separate argon2id from the rest.
    let x0 = xacts(&lag_pool).await;
    let (nohash, service_cpu, own_cpu) = measured(
        Some(&service),
        http::commands(&client, &bases, level, d, Mix::NoHash, None),
    )
    .await?;
    warn_errors("accessd no-hash mix", &nohash);
    let nohash_xact = per_command(x0, xacts(&lag_pool).await, &nohash);
    rows.push(Row {
        run: "accessd HTTP, no-hash mix (email change w/ setup link)".into(),
        clients: level,
        phase: nohash,
        baseline: Some(base_rate),
        lag: None,
        service_cpu,
        own_cpu,
        xact_per_cmd: nohash_xact,
    });
    let peak_kib = service.peak_rss_kib()?;

    // Several replicas on the same database, counted the same way.
    if args.replicas >= 2 {
        let mut replicas = vec![];
        for _ in 1..args.replicas {
            replicas.push(Service::start(options, db.url()).await?);
        }
        let mut all_bases = bases.clone();
        all_bases.extend(replicas.iter().map(|r| r.base.clone()));
        for (mix, name) in [(Mix::Issue, "issue mix"), (Mix::NoHash, "no-hash mix")] {
            let lag = LagProbe::new(lag_pool.clone(), LAG_SAMPLE_EVERY);
            let s0: f64 = replicas.iter().map(Service::cpu_seconds).sum();
            let (phase, service_cpu, own_cpu) = measured(
                Some(&service),
                http::commands(&client, &all_bases, level, d, mix, Some(lag.clone())),
            )
            .await?;
            let s1: f64 = replicas.iter().map(Service::cpu_seconds).sum();
            warn_errors("replicas", &phase);
            rows.push(Row {
                run: format!("{} accessd replicas, one database, {name}", args.replicas),
                clients: level,
                phase,
                baseline: Some(base_rate),
                lag: Some(lag.finish().await),
                service_cpu: service_cpu.map(|c| c + s1 - s0),
                own_cpu,
                xact_per_cmd: None,
            });
        }
        for r in replicas {
            r.stop();
        }
    }
    service.stop();
    framework.close().await;
    lag_pool.close().await;

    print_rows(&rows, 1, peak_kib);

    let Some((ours, base, p99, lags, timeouts)) = at_target else {
        bail!("no run at {level} clients");
    };
    let ratio = ours / base.max(1e-9);
    let lag99 = lags.ms(0.99);
    Ok(vec![
        Target {
            name: "commands_http_vs_framework",
            measured: format!(
                "{ratio:.2} ({} cmd/s vs {} cmd/s at {level} clients)",
                f0(ours),
                f0(base)
            ),
            goal: ">= 0.70 (aim >= 1.00)",
            pass: ratio >= 0.70,
        },
        Target {
            name: "commands_http_p99",
            measured: format!("{p99:.1} ms at {level} clients"),
            goal: "< 25 ms",
            pass: p99 < 25.0,
        },
        Target {
            name: "projection_lag_p99",
            measured: format!(
                "{lag99:.1} ms at {level} clients ({} samples{})",
                lags.count(),
                if timeouts > 0 {
                    format!(", {timeouts} not visible after 10 s")
                } else {
                    String::new()
                }
            ),
            goal: "< 100 ms",
            pass: lag99 < 100.0 && timeouts == 0 && lags.count() > 0,
        },
        Target {
            name: "accessd_peak_rss_scenario1",
            measured: format!("{} MiB", mib(peak_kib)),
            goal: "< 150 MB",
            pass: (peak_kib as f64) * 1024.0 < 150e6,
        },
    ])
}

// ---------------------------------------------------------------------------
// scenario 6
// ---------------------------------------------------------------------------

pub async fn sqlite(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!("== scenario 6: scenario 1 on the embedded default (SQLite) ==");
    let db = TestDatabase::sqlite().map_err(|e| anyhow!("create a SQLite database: {e}"))?;
    let service = Service::start(options, db.url()).await?;
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let client = http::client(max_clients)?;
    let bases = vec![service.base.clone()];
    let d = args.duration();
    let warm = warm_up(args);
    http::commands(&client, &bases, 8, warm, Mix::Issue, None).await?;
    let mut rows = Vec::new();
    for &clients in &args.clients {
        let (phase, service_cpu, own_cpu) = measured(
            Some(&service),
            http::commands(&client, &bases, clients, d, Mix::Issue, None),
        )
        .await?;
        warn_errors("accessd sqlite", &phase);
        rows.push(Row {
            run: "accessd HTTP on SQLite, issue mix".into(),
            clients,
            phase,
            baseline: None,
            lag: None,
            service_cpu,
            own_cpu,
            xact_per_cmd: None,
        });
    }
    let peak_kib = service.peak_rss_kib()?;
    service.stop();
    print_rows(&rows, 6, peak_kib);
    Ok(vec![])
}
