//! A throwaway PostgreSQL cluster of our own (initdb + pg_ctl on a free
//! port in a temporary directory), so a test can really stop and restart
//! the database server without touching the machine's server.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
    /// Server options added to the command line.
    extra: &'static str,
}

/// The settings of a primary or a standby in streaming replication.
const REPLICATION: &str =
    " -c wal_level=replica -c max_wal_senders=10 -c wal_keep_size=256MB -c hot_standby=on";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// initdb and start. Run as the `postgres` user when we are root
    /// (initdb refuses root).
    pub fn start() -> Self {
        Self::init("")
    }

    /// A primary for streaming replication: WAL for standbys, replication
    /// connections from 127.0.0.1 (initdb's pg_hba.conf allows them with
    /// trust). Which standby is synchronous is set with SQL
    /// (`ALTER SYSTEM SET synchronous_standby_names`).
    pub fn start_primary() -> Self {
        Self::init(REPLICATION)
    }

    /// A standby of `primary` (`pg_basebackup -R`), streaming as
    /// `application_name=standby1`, started and replaying.
    pub fn standby_of(primary: &Cluster) -> Self {
        Self::standby_on(primary, free_port())
    }

    /// [`Cluster::standby_of`] listening on `port` (e.g. where an old
    /// primary listened, so clients keep their host list).
    pub fn standby_on(primary: &Cluster, port: u16) -> Self {
        let mut cluster = Self::empty(REPLICATION);
        cluster.port = port;
        let data = cluster.data().display().to_string();
        let port = primary.port.to_string();
        let out = cluster.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // -R writes primary_conninfo without application_name, which the
        // primary's synchronous_standby_names needs: the last line wins.
        let auto = cluster.data().join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap();
        conf.push_str(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name=standby1'\n\
             synchronous_standby_names = ''\n"
        ));
        std::fs::write(&auto, conf).unwrap();
        cluster.start_server();
        cluster
    }

    /// Promotes this standby to primary (`pg_ctl promote`).
    pub fn promote(&self) {
        let data = self.data().display().to_string();
        let out = self.run("pg_ctl", &["-D", &data, "-w", "-t", "30", "promote"]);
        assert!(
            out.status.success(),
            "pg_ctl promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs one statement with `psql` and returns its unaligned output
    /// (works on a standby too, which the store refuses to follow).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server at once, like a crash (`-m immediate`).
    pub fn crash(&self) {
        let data = self.data().display().to_string();
        let out = self.run(
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn empty(extra: &'static str) -> Self {
        assert!(
            std::path::Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 server binaries are needed in {BIN}"
        );
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::tempdir().unwrap();
        let cluster = Self {
            dir,
            port: free_port(),
            as_postgres,
            extra,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        cluster
    }

    fn init(extra: &'static str) -> Self {
        let cluster = Self::empty(extra);
        let data = cluster.data().display().to_string();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let program = format!("{BIN}/{tool}");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            Command::new(&program)
        };
        command.args(args).output().unwrap()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// (Re)starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60{}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "30", "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast: connections are terminated, as in a
    /// restart or failover).
    pub fn stop_server(&self) {
        let data = self.data().display().to_string();
        let out = self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
