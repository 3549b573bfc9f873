//! The `accessd` binary as a child process, for tests that need a real
//! process: its logs on stderr (any level), SIGKILL, several replicas.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `accessd` process.
pub struct Accessd {
    pub child: Child,
    pub base: String,
    pub stderr: PathBuf,
}

/// Starts accessd in `dir` (its stderr goes to `dir/<name>.stderr`) with
/// `env` on top of a clean environment; returns once it listens.
pub async fn spawn_accessd(dir: &Path, name: &str, env: &[(&str, String)]) -> Accessd {
    let stderr = dir.join(format!("{name}.stderr"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_accessd"));
    command
        .current_dir(dir)
        .env_remove("ACCESS_DATABASE_URL")
        .env_remove("ACCESS_API_KEYS")
        .env_remove("ACCESS_API_KEYS_FILE")
        .env_remove("ACCESS_LOG")
        .env_remove("ACCESS_MASTER_KEY_FILE")
        .env("ACCESS_MASTER_KEY", access_store::testing::TEST_MASTER_KEY)
        .env("ACCESS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&stderr)
                .unwrap(),
        ));
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(start) = line.find("listening on http://") {
                let rest = &line[start + "listening on ".len()..];
                base = Some(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
                break;
            }
        }
        // Keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        base
    })
    .await
    .unwrap()
    .unwrap_or_else(|| {
        panic!(
            "accessd {name} did not start: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });
    Accessd {
        child,
        base,
        stderr,
    }
}

impl Accessd {
    /// SIGKILL: no shutdown, no cleanup, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (at most 15 s) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "accessd did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Accessd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
