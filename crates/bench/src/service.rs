//! `accessd` as a child process: the real release binary on a database of
//! the benchmark's, with API keys of its own, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The admin key every benchmark request uses (role admin: commands and
/// audit reads).
pub const ADMIN_KEY: &str = "bench-admin-secret-0123456789abcdef";

/// The master key given to every `accessd` (ACCESS_MASTER_KEY): the test
/// key, so that `accessd` opens the databases the benchmark filled through
/// `TestDatabase::store`.
pub const MASTER_KEY: &str = access_store::testing::TEST_MASTER_KEY;

/// How `accessd` is started.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    pub binary: PathBuf,
    pub pool: u32,
    pub hash_concurrency: Option<usize>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

pub struct Service {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    // Mail files and the log live here until the service is dropped.
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr().context("local address")?.port())
}

impl Service {
    /// Starts `accessd` on `database_url` and waits until `/readyz` answers
    /// 200.
    pub async fn start(options: &ServiceOptions, database_url: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory for accessd")?;
        let log = dir.path().join("accessd.log");
        let log_file = std::fs::File::create(&log).context("accessd log file")?;
        let port = free_port()?;
        let mut command = Command::new(&options.binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ACCESS_DATABASE_URL", database_url)
            .env("ACCESS_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "ACCESS_MAIL",
                format!("file:{}", dir.path().join("mail").display()),
            )
            .env("ACCESS_API_KEYS", format!("bench:admin:{ADMIN_KEY}"))
            .env("ACCESS_MASTER_KEY", MASTER_KEY)
            .env("ACCESS_LOG", "warn")
            .env("ACCESS_DB_POOL", options.pool.to_string())
            // The benchmark logs in thousands of times from one address.
            .env("ACCESS_LOGIN_ATTEMPTS_PER_ADDRESS", "1000000000")
            .env("ACCESS_LOGIN_ATTEMPTS_PER_ACCOUNT", "1000000000")
            // Scenario 7 compares wrong logins for known and unknown emails:
            // without the failure floor (which would pad both to the same
            // time) it measures whether the work itself is the same.
            .env("ACCESS_LOGIN_FAILURE_FLOOR_MS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        for (k, v) in &options.env {
            command.env(k, v);
        }
        if let Some(n) = options.hash_concurrency {
            command.env("ACCESS_HASH_CONCURRENCY", n.to_string());
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", options.binary.display()))?;
        let mut service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        service.wait_ready().await?;
        Ok(service)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().context("accessd status")? {
                bail!(
                    "accessd exited at start ({status}); log: {}",
                    tail(&self.log)
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("accessd not ready after 60 s; log: {}", tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        status_field(self.pid(), "VmHWM:")
    }

    /// Current resident set size (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        status_field(self.pid(), "VmRSS:")
    }

    /// CPU time used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Stops the service (SIGKILL: nothing of it is kept).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn status_field(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parse {line}"))
}

/// User plus system CPU time of a process, in seconds (Linux clock ticks
/// of 1/100 s).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses).
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13
    // after the name and state.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// CPU seconds of this process.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}
