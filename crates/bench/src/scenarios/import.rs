//! Scenario 11 (issue 17): bulk import. `accessctl import` of a generated
//! JSON-lines file of `--import-rows` customers (each with access and a
//! bcrypt hash, which is stored, never computed) into a fresh database of
//! each `--stores` kind: customers per second, and `accessctl`'s peak
//! resident set size (VmHWM, read from `/proc` while it runs); then the
//! same file again (every row `unchanged`, nothing written): rows per
//! second of a re-run. The
//! `accessctl` binary is the one next to this one (build both in release).
//!
//! Targets (PostgreSQL): at least 5,000 customers/s; peak RSS under
//! 150 MB. SQLite: the figures only.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use access_store::testing::{TestDatabase, TEST_MASTER_KEY};
use access_store::StoreOptions;
use anyhow::{anyhow, bail, Context, Result};

use crate::{Args, StoreKind, Target};

/// A bcrypt hash (cost 4, made by Python's `bcrypt`): every row has it.
const HASH: &str = "$2b$04$Uesxgetxdhk96aNswjELr.Z.98OegIeLsJNRC/HuyYz5jfXFfcO3u";
const GOAL_RATE: f64 = 5_000.0;
const GOAL_RSS_MB: f64 = 150.0;

fn accessctl_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("path of this binary")?;
    let dir = me.parent().context("directory of this binary")?;
    let binary = dir.join("accessctl");
    if !binary.is_file() {
        bail!(
            "no accessctl binary at {} (build it: cargo build --release -p accessctl)",
            binary.display()
        );
    }
    Ok(binary)
}

/// The file: `rows` customers, one JSON object per line.
fn write_file(path: &Path, rows: u64) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for n in 0..rows {
        writeln!(
            out,
            r#"{{"email":"imported{n}@example.com","name":"Imported Customer {n}","external_id":"old-{n}","access":"customer_center","password_hash":"{HASH}"}}"#
        )?;
    }
    out.flush()?;
    Ok(())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One run of `accessctl import`: (seconds, peak RSS in KiB, its summary).
fn run_import(binary: &Path, url: &str, file: &Path) -> Result<(f64, u64, String)> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["import", &file.to_string_lossy(), "--source", "bench"])
        .env("ACCESS_DATABASE_URL", url)
        .env("ACCESS_MASTER_KEY", TEST_MASTER_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start accessctl import")?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output()?;
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !status.success() {
        bail!(
            "accessctl import failed: {summary} {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok((seconds, peak, summary))
}

pub async fn import(args: &Args) -> Result<Vec<Target>> {
    let rows = args.import_rows;
    println!("== scenario 11: accessctl import of {rows} customers (bcrypt hashes, stored) ==");
    let binary = accessctl_binary()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("customers.jsonl");
    write_file(&file, rows)?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "  file: {} ({:.1} MB); accessctl: {}",
        file.display(),
        size as f64 / 1e6,
        binary.display()
    );
    println!(
        "  reproduce: access-bench --scenarios 11 --import-rows {rows} (accessctl import FILE --source bench)"
    );
    let mut targets = Vec::new();
    for kind in &args.stores {
        let name = kind.name();
        let db = match kind {
            StoreKind::Postgres => TestDatabase::postgres()
                .await
                .map_err(|e| anyhow!("create a PostgreSQL database: {e}"))?,
            StoreKind::Sqlite => {
                TestDatabase::sqlite().map_err(|e| anyhow!("create a SQLite database: {e}"))?
            }
        };
        // Migrated, with its keys (the master key is the test key).
        let store = db
            .store(StoreOptions::default())
            .await
            .map_err(|e| anyhow!("[{name}] open and migrate: {e}"))?;
        let (seconds, peak_kib, summary) = run_import(&binary, db.url(), &file)?;
        let events = access_store::EventStore::count_events(&store)
            .await
            .map_err(|e| anyhow!("[{name}] count events: {e}"))?;
        if events != rows {
            bail!("[{name}] {events} events after importing {rows} rows: {summary}");
        }
        let rate = rows as f64 / seconds;
        let rss_mb = peak_kib as f64 / 1024.0;
        println!(
            "  [{name}] {rows} customers in {seconds:.1} s = {rate:.0} customers/s; \
             accessctl peak RSS {rss_mb:.1} MB; {summary}"
        );
        // The same file again: every row `unchanged`, nothing written.
        let (again_seconds, again_kib, again_summary) = run_import(&binary, db.url(), &file)?;
        let after = access_store::EventStore::count_events(&store)
            .await
            .map_err(|e| anyhow!("[{name}] count events: {e}"))?;
        if after != rows || !again_summary.contains(&format!("{rows} unchanged")) {
            bail!(
                "[{name}] the re-run wrote or changed something ({after} events): {again_summary}"
            );
        }
        println!(
            "  [{name}] re-run of the same file: {rows} rows in {again_seconds:.1} s = {:.0} rows/s \
             (all unchanged); accessctl peak RSS {:.1} MB",
            rows as f64 / again_seconds,
            again_kib as f64 / 1024.0
        );
        if *kind == StoreKind::Postgres {
            targets.push(Target {
                name: "11 import into PostgreSQL",
                measured: format!("{rate:.0} customers/s"),
                goal: ">= 5000 customers/s",
                pass: rate >= GOAL_RATE,
            });
            targets.push(Target {
                name: "11 accessctl import peak RSS",
                measured: format!("{rss_mb:.1} MB ({rows} rows)"),
                goal: "< 150 MB",
                pass: rss_mb < GOAL_RSS_MB,
            });
        }
        store.close().await;
    }
    Ok(targets)
}
