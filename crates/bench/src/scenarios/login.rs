//! Scenario 7: logins (sessions per second) against a bare argon2id
//! verification loop with the same parameters, and the timing of wrong
//! logins for known and unknown emails.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::{measured, ms, postgres_db, warm_up, warn_errors};
use crate::http;
use crate::report::{
    cpu_cells, f0, f2, header, latency_cells, print_table, CPU_COLUMNS, LATENCY_COLUMNS,
};
use crate::service::{Service, ServiceOptions};
use crate::{Args, Target};

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
pub(super) fn argon2_baseline(threads: usize, duration: Duration) -> Result<(f64, f64)> {
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
    let emails = http::customers_with_password(&client, &service.base, LOGIN_CUSTOMERS).await?;
    let d = args.duration();
    let warm = warm_up(args);
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
        header(&[
            &["run", "count", "per s", "vs bare"],
            &LATENCY_COLUMNS,
            &CPU_COLUMNS,
        ]),
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
        [
            "accessd sessions (POST /v1/self/sessions)".into(),
            sessions.ok.to_string(),
            f0(sessions.per_second()),
            f2(ratio),
        ]
        .into_iter()
        .chain(latency_cells(&sessions.latencies, sessions.errors))
        .chain(cpu_cells(cpu, own))
        .collect(),
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
