//! The scenarios of issue 7, each next to its same-run baseline.

use access_store::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_store::testing::TestDatabase;
use access_store::{Store, StoreOptions};
use anyhow::{anyhow, bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::postgres::PgPoolOptions;

use crate::framework::Framework;
use crate::http::{self, LagProbe, Mix};
use crate::report::{f0, f2, mib, print_table, Latencies};
use crate::service::{own_cpu_seconds, Service, ServiceOptions};
use crate::{Args, Phase, Target};

/// The level the targets of scenario 1 are read at.
const TARGET_CLIENTS: usize = 32;
/// One sampled command per this interval for the projection lag.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(20);

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

fn header() -> Vec<String> {
    [
        "run",
        "clients",
        "commands",
        "cmd/s",
        "vs framework",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "lag p50 ms",
        "lag p99 ms",
        "accessd CPU s",
        "bench CPU s",
        "db xact/cmd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
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
        vec![
            self.run.clone(),
            self.clients.to_string(),
            p.ok.to_string(),
            f0(p.per_second()),
            self.baseline
                .map_or("-".into(), |b| f2(p.per_second() / b.max(1e-9))),
            ms(p.latencies.ms(0.5)),
            ms(p.latencies.ms(0.99)),
            ms(p.latencies.ms(0.999)),
            p.errors.to_string(),
            lag50,
            lag99,
            self.service_cpu.map_or("-".into(), |c| format!("{c:.1}")),
            format!("{:.1}", self.own_cpu),
            self.xact_per_cmd.map_or("-".into(), |x| format!("{x:.1}")),
        ]
    }
}

fn per_command(before: i64, after: i64, phase: &Phase) -> Option<f64> {
    (before > 0 && phase.ok > 0).then(|| (after - before) as f64 / phase.ok as f64)
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

fn target_level(args: &Args) -> usize {
    if args.clients.contains(&TARGET_CLIENTS) {
        TARGET_CLIENTS
    } else {
        args.clients.iter().copied().max().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------
// scenarios 1 and 3
// ---------------------------------------------------------------------------

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
    let warm = Duration::from_secs_f64((args.seconds / 5.0).clamp(0.2, 2.0));
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

    let mut table = vec![header()];
    table.extend(rows.iter().map(Row::cells));
    print_table(&table);
    println!(
        "  accessd peak RSS (VmHWM) over scenario 1: {} MiB",
        mib(peak_kib)
    );
    println!();

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
// scenario 2
// ---------------------------------------------------------------------------

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
    let mut rows = vec![[
        "run",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "accessd CPU s",
        "bench CPU s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
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
    let warm = Duration::from_secs_f64((args.seconds / 5.0).clamp(0.2, 2.0));
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
        vec![
            format!("hash concurrency {label}: {name}"),
            p.ok.to_string(),
            f0(p.per_second()),
            ms(p.latencies.ms(0.5)),
            ms(p.latencies.ms(0.99)),
            ms(p.latencies.ms(0.999)),
            p.errors.to_string(),
            cpu.map_or("-".into(), |c| format!("{c:.1}")),
            format!("{own:.1}"),
        ]
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

// ---------------------------------------------------------------------------
// scenario 7
// ---------------------------------------------------------------------------

const LOGIN_CLIENTS: usize = 8;
const LOGIN_CUSTOMERS: usize = 16;

fn owasp() -> Result<argon2::Argon2<'static>> {
    let params = argon2::Params::new(
        access_security::OWASP_MEMORY_KIB,
        access_security::OWASP_ITERATIONS,
        access_security::OWASP_PARALLELISM,
        None,
    )
    .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// The bare verification loop: the cost of one verification on one thread,
/// then `threads` threads verifying for `duration`; verifications per second.
fn argon2_baseline(threads: usize, duration: Duration) -> Result<(f64, f64)> {
    let argon = owasp()?;
    let salt = SaltString::encode_b64(b"access-bench-salt").map_err(|e| anyhow!("salt: {e}"))?;
    let phc = argon
        .hash_password(http::PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow!("hash: {e}"))?
        .to_string();
    let verify = |argon: &argon2::Argon2<'_>| -> Result<()> {
        let parsed = PasswordHash::new(&phc).map_err(|e| anyhow!("parse hash: {e}"))?;
        argon
            .verify_password(http::PASSWORD.as_bytes(), &parsed)
            .map_err(|e| anyhow!("verify: {e}"))
    };
    // Cost of one verification, one thread.
    let t = Instant::now();
    let mut n = 0u32;
    while n < 3 || t.elapsed() < duration.min(Duration::from_secs(2)) {
        verify(&argon)?;
        n += 1;
    }
    let cost_ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
    // All threads.
    let started = Instant::now();
    let deadline = started + duration;
    let counts: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let argon = owasp()?;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        verify(&argon)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("verify thread panicked"))?)
            .collect()
    });
    let mut total = 0u64;
    for c in counts {
        total += c?;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), cost_ms))
}

pub async fn login(args: &Args, options: &ServiceOptions) -> Result<Vec<Target>> {
    println!("== scenario 7: login (sessions per second) vs a bare argon2id verification loop ==");
    let threads = crate::report::nproc();
    println!(
        "  {LOGIN_CLIENTS} clients logging in as {LOGIN_CUSTOMERS} customers (right password, \
         POST /v1/self/sessions), {} s; baseline: {threads} threads verifying with the same \
         parameters (m={} KiB, t={}, p={}), {} s; accessd ACCESS_HASH_CONCURRENCY default",
        args.seconds,
        access_security::OWASP_MEMORY_KIB,
        access_security::OWASP_ITERATIONS,
        access_security::OWASP_PARALLELISM,
        args.seconds
    );
    let db = postgres_db().await?;
    let service = Service::start(options, db.url()).await?;
    let client = http::client(32)?;
    let mut emails = Vec::new();
    for _ in 0..LOGIN_CUSTOMERS {
        let id = http::customer_with_access(&client, &service.base, true).await?;
        emails.push(format!("bench-{id}@example.com"));
    }
    let d = args.duration();
    let warm = Duration::from_secs_f64((args.seconds / 5.0).clamp(0.2, 2.0));
    http::logins(&client, &service.base, &emails, LOGIN_CLIENTS, warm).await?;
    let (sessions, cpu, own) = measured(
        Some(&service),
        http::logins(&client, &service.base, &emails, LOGIN_CLIENTS, d),
    )
    .await?;
    warn_errors("login", &sessions);
    // Known and unknown emails must cost the same (no timing oracle).
    let n = if args.smoke { 20 } else { 200 };
    let unknown = format!("bench-unknown-{}@example.com", uuid::Uuid::new_v4());
    let known = http::wrong_logins(&client, &service.base, &emails[0], n).await?;
    let stranger = http::wrong_logins(&client, &service.base, &unknown, n).await?;
    let (known_ms, unknown_ms) = (known.ms(0.5), stranger.ms(0.5));
    let timing_ratio = known_ms / unknown_ms.max(1e-9);
    println!(
        "  {n} wrong logins each, one after the other: median {known_ms:.2} ms for a known \
         email, {unknown_ms:.2} ms for an unknown one (ratio {timing_ratio:.3})"
    );
    service.stop();
    let (bare, cost_ms) = tokio::task::spawn_blocking(move || argon2_baseline(threads, d))
        .await
        .context("argon2 baseline task")??;
    let ratio = sessions.per_second() / bare.max(1e-9);
    print_table(&[
        [
            "run",
            "count",
            "per s",
            "vs bare",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "accessd CPU s",
            "bench CPU s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        vec![
            format!("bare argon2id verify, {threads} threads"),
            "-".into(),
            f0(bare),
            "1.00".into(),
            ms(cost_ms),
            "-".into(),
            "-".into(),
            "0".into(),
            "-".into(),
            "-".into(),
        ],
        vec![
            "accessd sessions (POST /v1/self/sessions)".into(),
            sessions.ok.to_string(),
            f0(sessions.per_second()),
            f2(ratio),
            ms(sessions.latencies.ms(0.5)),
            ms(sessions.latencies.ms(0.99)),
            ms(sessions.latencies.ms(0.999)),
            sessions.errors.to_string(),
            cpu.map_or("-".into(), |c| format!("{c:.1}")),
            format!("{own:.1}"),
        ],
    ]);
    println!(
        "  one verification costs {cost_ms:.1} ms on one thread: {threads} cores can verify at \
         most {:.0}/s",
        threads as f64 * 1000.0 / cost_ms.max(1e-9)
    );
    println!();
    Ok(vec![
        Target {
            name: "login_known_vs_unknown_email",
            measured: format!(
                "{timing_ratio:.3} (median {known_ms:.2} ms known, {unknown_ms:.2} ms unknown)"
            ),
            goal: "within 10 % (0.90 ..= 1.10)",
            pass: (0.90..=1.10).contains(&timing_ratio),
        },
        Target {
            name: "login_vs_argon2",
            measured: format!(
            "{ratio:.2} ({} sessions/s vs {} verifications/s; {cost_ms:.1} ms per verification)",
            f0(sessions.per_second()),
            f0(bare)
        ),
            goal: ">= 0.80",
            pass: ratio >= 0.80 && sessions.errors == 0,
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
    let warm = Duration::from_secs_f64((args.seconds / 5.0).clamp(0.2, 2.0));
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
    let mut table = vec![header()];
    table.extend(rows.iter().map(Row::cells));
    print_table(&table);
    println!(
        "  accessd peak RSS (VmHWM) over scenario 6: {} MiB",
        mib(peak_kib)
    );
    println!();
    Ok(vec![])
}

// ---------------------------------------------------------------------------
// scenarios 4 and 5
// ---------------------------------------------------------------------------

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
    let Some(pool) = access_store::testing::postgres_pool(&store) else {
        bail!("expected a PostgreSQL store");
    };

    let fill = crate::history::fill(&store, args.events).await?;
    println!(
        "  fill: {} events, {} customers through Store::append (one append per customer, 8 \
         writers, fake hasher) in {:.1} s ({} events/s)",
        fill.events,
        fill.customers,
        fill.elapsed.as_secs_f64(),
        f0(fill.events as f64 / fill.elapsed.as_secs_f64().max(1e-9))
    );
    sqlx::query("VACUUM ANALYZE events")
        .execute(&pool)
        .await
        .context("VACUUM ANALYZE events")?;
    let (read_n, read_t) = crate::history::plain_read(&pool).await?;
    let own0 = own_cpu_seconds();
    let report = access_projections::rebuild::rebuild(&store, &mut |_| {})
        .await
        .map_err(|e| anyhow!("rebuild: {e}"))?;
    let rebuild_cpu = own_cpu_seconds() - own0;
    let (read2_n, read2_t) = crate::history::plain_read(&pool).await?;
    if read_n != fill.events || read2_n != fill.events || report.events != fill.events {
        bail!(
            "read {read_n} and {read2_n} events, rebuilt {}, the store holds {}",
            report.events,
            fill.events
        );
    }
    let read_rate = (read_n as f64 / read_t.as_secs_f64().max(1e-9))
        .max(read2_n as f64 / read2_t.as_secs_f64().max(1e-9));
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
        vec![
            "plain SELECT of the events table (before rebuild)".into(),
            read_n.to_string(),
            f2(read_t.as_secs_f64()),
            f0(read_n as f64 / read_t.as_secs_f64().max(1e-9)),
            "-".into(),
        ],
        vec![
            "plain SELECT of the events table (after rebuild)".into(),
            read2_n.to_string(),
            f2(read2_t.as_secs_f64()),
            f0(read2_n as f64 / read2_t.as_secs_f64().max(1e-9)),
            "-".into(),
        ],
        vec![
            format!("rebuild::rebuild into fresh projections (bench CPU {rebuild_cpu:.1} s)"),
            report.events.to_string(),
            f2(report.elapsed.as_secs_f64()),
            f0(rebuild_rate),
            f2(ratio),
        ],
    ]);
    let head = store.head().await?;
    store_close(&store).await;

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

async fn store_close(store: &Store) {
    store.close().await
}
