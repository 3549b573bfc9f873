//! Several PostgreSQL hosts, one primary: libpq's multi-host URLs
//! (`postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write`)
//! for a primary with a standby, and failover without a restart.
//!
//! sqlx connects to one host per connection and rejects a host list
//! ("invalid port number"), so the store picks the host itself:
//!
//! - [`split_hosts`] cuts the host list into one single-host URL per host
//!   (each then parsed by sqlx itself). Written by hand: the `url` crate
//!   cannot parse a host list either, and tokio-postgres, which can, would be
//!   a second PostgreSQL driver for this one split.
//! - At start the hosts are tried in order (as libpq does) and the pool
//!   starts on the first that accepts writes.
//! - Every new pooled connection checks that it reached the host the pool
//!   currently follows (server address and port) and that this host
//!   accepts writes as libpq's `read-write` means it (not in recovery,
//!   `transaction_read_only` off); otherwise it is refused. A connect that began before a
//!   switch and finished after it therefore never joins the pool.
//! - A monitor task keeps one connection to the current host and asks it
//!   every [`PROBE_EVERY`] whether it still accepts writes. When it does not
//!   (gone, in recovery, or read-only), the monitor tries every host in turn until one
//!   does, points the pool at it (`Pool::set_connect_options`) and marks the
//!   time of the switch: connections opened before it are dropped at their
//!   next checkout instead of being handed out, and the aggregate cache is
//!   emptied (after a failover with lost commits it could be ahead of the
//!   new primary). Meanwhile commands fail as `Unavailable` (503 with
//!   `Retry-After`; a request may first wait up to the pool's acquire
//!   timeout) and background loops retry.
//! - What this cannot fence: an old primary that still accepts writes
//!   after another host was promoted (split brain). A transaction already
//!   running on it may still commit there; with synchronous replication
//!   such a commit waits for its standby, which now follows nobody, so it
//!   is never acknowledged. Stop (fence) the old primary before promoting:
//!   pg_auto_failover does.
//! - The monitor ends when the last clone of the store is dropped, or the
//!   store is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use crate::sql::dialect::OnSwitch;
use sqlx::{ConnectOptions, PgPool};

use crate::StoreError;

/// How often the monitor asks the current host whether it is the primary.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How long one probe may take (connect and query).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The single-host URLs of a libpq URL with a host list, in order (one URL
/// for an ordinary URL). `target_session_attrs` is dropped: the store always
/// wants the host that accepts writes.
pub fn split_hosts(url: &str) -> Result<Vec<String>, StoreError> {
    let bad = |why: &str| StoreError::UnsupportedUrl(format!("{}: {why}", crate::redact_url(url)));
    let Some(scheme_end) = url.find("://") else {
        return Ok(vec![url.to_string()]);
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let tail = drop_parameter(tail, "target_session_attrs");
    if !hosts.contains(',') {
        return Ok(vec![format!("{scheme}{userinfo}{hosts}{tail}")]);
    }
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                Err(bad("an empty host in the host list"))
            } else {
                Ok(format!("{scheme}{userinfo}{host}{tail}"))
            }
        })
        .collect()
}

/// `tail` (path and query) without the query parameter `name`.
fn drop_parameter(tail: &str, name: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// The host the pool follows, and when it last moved; connections older
/// than the move, or connected to another host, are not used.
#[derive(Debug)]
pub(crate) struct Following {
    since: Instant,
    /// Milliseconds after `since` of the last switch (0: none yet).
    last_ms: AtomicU64,
    /// (host, port) of the followed server.
    target: Mutex<(String, u16)>,
}

impl Following {
    pub(crate) fn new(target: &PgConnectOptions) -> Arc<Self> {
        Arc::new(Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            target: Mutex::new(host_port(target)),
        })
    }

    /// Whether a connection opened `age` ago predates the last switch.
    pub(crate) fn outdated(&self, age: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Acquire);
        if last == 0 {
            return false;
        }
        let opened = self.since.elapsed().saturating_sub(age);
        opened < Duration::from_millis(last)
    }

    fn target(&self) -> (String, u16) {
        self.target
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn switch_to(&self, target: &PgConnectOptions) {
        match self.target.lock() {
            Ok(mut t) => *t = host_port(target),
            Err(poisoned) => *poisoned.into_inner() = host_port(target),
        }
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now.max(1), Ordering::Release);
    }

    /// Checks a new connection: it must reach the followed host, and that
    /// host must accept writes.
    pub(crate) async fn admit(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let (host, port) = self.target();
        let (address, server_port): (Option<String>, Option<i32>) =
            sqlx::query_as("SELECT host(inet_server_addr()), inet_server_port()")
                .fetch_one(&mut *connection)
                .await?;
        let same_host = match (address, server_port) {
            // A Unix socket: the target is its directory.
            (None, _) | (_, None) => host.starts_with('/'),
            (Some(address), Some(server_port)) => {
                i32::from(port) == server_port && resolves_to(&host, port, &address).await
            }
        };
        if !same_host {
            return Err(sqlx::Error::Io(std::io::Error::other(
                "the connection reached a database host the pool no longer follows",
            )));
        }
        if !is_primary(connection).await? {
            return Err(standby_refused());
        }
        Ok(())
    }
}

fn host_port(options: &PgConnectOptions) -> (String, u16) {
    (options.get_host().to_string(), options.get_port())
}

/// Whether `host` (a name or an address) is `address`.
async fn resolves_to(host: &str, port: u16, address: &str) -> bool {
    let Ok(wanted) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return ip == wanted;
    }
    match tokio::net::lookup_host((bare, port)).await {
        Ok(mut addresses) => addresses.any(|a| a.ip() == wanted),
        Err(_) => false,
    }
}

/// The first of `hosts` that accepts writes, tried in order (None when
/// none answers as a primary now).
pub(crate) async fn first_primary(hosts: &[PgConnectOptions]) -> Option<usize> {
    for (i, host) in hosts.iter().enumerate() {
        if probe(host).await.is_some() {
            return Some(i);
        }
    }
    None
}

/// Whether the server behind `connection` accepts writes: libpq's test for
/// `target_session_attrs=read-write` (not in recovery, and
/// `transaction_read_only` off). The second half matters: pg_auto_failover
/// fences a standby it is promoting with `default_transaction_read_only`
/// until the old primary is known to be down, and a host fenced that way
/// must not be followed.
pub(crate) async fn is_primary(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
    )
    .fetch_one(connection)
    .await
}

/// The refusal of a new connection to a standby (an I/O error, so the store
/// reports `Unavailable` and callers retry).
pub(crate) fn standby_refused() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(
        "the database host is a standby (read-only): waiting for the primary",
    ))
}

async fn probe(options: &PgConnectOptions) -> Option<PgConnection> {
    let attempt = async {
        let mut connection = options.connect().await.ok()?;
        match is_primary(&mut connection).await {
            Ok(true) => Some(connection),
            _ => None,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// The task following the primary; it stops when this is dropped (with
/// the store's pools) or when the pool is closed.
#[derive(Debug)]
pub(crate) struct Monitor(tokio::task::JoinHandle<()>);

impl Drop for Monitor {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pool on the first of `hosts` that accepts writes now (else on the
/// first host), admitting only connections to the host it follows, with a
/// monitor task that moves it when the primary moves; `on_switch` runs at
/// each move.
pub(crate) async fn follow(
    options: PgPoolOptions,
    hosts: Vec<PgConnectOptions>,
    on_switch: OnSwitch,
) -> (PgPool, Monitor) {
    let current = first_primary(&hosts).await.unwrap_or(0);
    let following = Following::new(&hosts[current]);
    let (admit, outdated) = (following.clone(), following.clone());
    let pool = options
        .after_connect(move |connection, _| {
            let admit = admit.clone();
            Box::pin(async move { admit.admit(connection).await })
        })
        .before_acquire(move |_, meta| {
            let outdated = outdated.outdated(meta.age);
            Box::pin(async move { Ok(!outdated) })
        })
        .connect_lazy_with(hosts[current].clone());
    let task = tokio::spawn(follow_primary(
        pool.clone(),
        hosts,
        current,
        following,
        on_switch,
    ));
    (pool, Monitor(task))
}

/// The monitor's loop (see the module header).
async fn follow_primary(
    pool: PgPool,
    hosts: Vec<PgConnectOptions>,
    mut current: usize,
    following: Arc<Following>,
    on_switch: OnSwitch,
) {
    let mut watch: Option<PgConnection> = None;
    let closed = pool.close_event();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
        let healthy = match watch.as_mut() {
            Some(connection) => matches!(
                tokio::time::timeout(PROBE_TIMEOUT, is_primary(connection)).await,
                Ok(Ok(true))
            ),
            None => false,
        };
        if healthy {
            continue;
        }
        watch = None;
        // The current host first (a restart keeps it primary), then the others.
        for offset in 0..hosts.len() {
            let candidate = (current + offset) % hosts.len();
            if let Some(connection) = probe(&hosts[candidate]).await {
                if candidate != current {
                    tracing::warn!(
                        from = current,
                        to = candidate,
                        "the primary database moved to another host: following it"
                    );
                    // Before and after the move: a command that read its
                    // state before either count appends on no host after
                    // the move (the store compares the counts).
                    if let Some(on_switch) = &on_switch {
                        on_switch();
                    }
                    following.switch_to(&hosts[candidate]);
                    pool.set_connect_options(hosts[candidate].clone());
                    if let Some(on_switch) = &on_switch {
                        on_switch();
                    }
                    current = candidate;
                }
                watch = Some(connection);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_list_becomes_one_url_per_host_without_target_session_attrs() {
        assert_eq!(
            split_hosts(
                "postgres://app:pw@10.0.0.1:5432,10.0.0.2:5433/access?target_session_attrs=read-write&sslmode=require"
            )
            .unwrap(),
            [
                "postgres://app:pw@10.0.0.1:5432/access?sslmode=require",
                "postgres://app:pw@10.0.0.2:5433/access?sslmode=require",
            ]
        );
        assert_eq!(
            split_hosts("postgresql://h1,h2:6000?target_session_attrs=read-write").unwrap(),
            ["postgresql://h1", "postgresql://h2:6000"]
        );
        assert_eq!(
            split_hosts("postgres://[::1]:5432,[::2]:5432/db").unwrap(),
            ["postgres://[::1]:5432/db", "postgres://[::2]:5432/db"]
        );
    }

    #[test]
    fn an_ordinary_url_stays_one_host() {
        assert_eq!(
            split_hosts("postgres://u@h:5432/db?sslmode=disable").unwrap(),
            ["postgres://u@h:5432/db?sslmode=disable"]
        );
    }

    #[test]
    fn an_empty_host_in_the_list_is_refused_without_the_password() {
        let err = split_hosts("postgres://u:secret@h1,,h3/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty host"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn connections_opened_before_a_switch_are_outdated() {
        let first: PgConnectOptions = "postgres://h1:5432/db".parse().unwrap();
        let second: PgConnectOptions = "postgres://h2:5433/db".parse().unwrap();
        let following = Following::new(&first);
        assert_eq!(following.target(), ("h1".to_string(), 5432));
        assert!(!following.outdated(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(20));
        following.switch_to(&second);
        assert_eq!(following.target(), ("h2".to_string(), 5433));
        // Opened long before the switch: outdated; opened just now: kept.
        assert!(following.outdated(Duration::from_secs(10)));
        assert!(!following.outdated(Duration::ZERO));
    }

    #[tokio::test]
    async fn hosts_resolve_to_their_addresses() {
        assert!(resolves_to("127.0.0.1", 5432, "127.0.0.1").await);
        assert!(resolves_to("[::1]", 5432, "::1").await);
        assert!(!resolves_to("127.0.0.1", 5432, "127.0.0.2").await);
        assert!(!resolves_to("127.0.0.1", 5432, "not an address").await);
        let localhost = resolves_to("localhost", 5432, "127.0.0.1").await
            || resolves_to("localhost", 5432, "::1").await;
        assert!(localhost);
    }
}
