//! # access-store
//!
//! Where the Customer events live.
//!
//! - [`postgres`]: PostgreSQL, the production store, in the table shape of
//!   `postgres-es` 0.5 (which can read it), plus a global position and the
//!   inserting transaction id.
//! - [`sqlite`]: the embedded default, a file created on first start (WAL,
//!   one writer), with an implementation of cqrs-es's
//!   `PersistedEventRepository`.
//! - [`Store`]: picks one from the database URL and offers what the service
//!   needs: load a customer (snapshot + newer events), append a command's
//!   events in one transaction with the login-email reservations, the
//!   idempotency record and a snapshot, and read every event in the global
//!   order ([`Store::read_feed`]).
//!
//! The rules (docs/storage.md): the feed never skips an event whose
//! transaction commits late; no two customers hold the same login email
//! (unique index); a refused command leaves nothing behind.

use std::collections::HashMap;

use access_domain::{CommandMetadata, Customer, CustomerEvent, CustomerId};
use chrono::{DateTime, Utc};

/// Runs `$body` with `$exec` bound to the PostgreSQL pool or the SQLite
/// writer/reader pool.
macro_rules! on_pool {
    ($store:expr, write, |$exec:ident| $body:expr) => {
        match $store {
            Store::Postgres(s) => {
                let $exec = s.pool();
                $body
            }
            Store::Sqlite(s) => {
                let $exec = s.writer();
                $body
            }
        }
    };
    ($store:expr, read, |$exec:ident| $body:expr) => {
        match $store {
            Store::Postgres(s) => {
                let $exec = s.pool();
                $body
            }
            Store::Sqlite(s) => {
                let $exec = s.reader();
                $body
            }
        }
    };
}

pub mod accounts;
mod cache;
mod codec;
pub mod error;
pub mod execute;
pub mod keys;
pub mod login_attempts;
pub mod outbox;
pub mod pg_hosts;
mod portable;
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use accounts::{SessionRecord, StoredApiKey};
pub use cache::CacheStats;
pub use codec::AGGREGATE_TYPE;
pub use error::StoreError;
pub use execute::{ExecuteError, Executed, Execution, OutboxInput};
pub use keys::{Keyring, MasterKey};
pub use login_attempts::AccountAttempts;
pub use outbox::{OutboxEntry, OutboxMessage};

/// A place in the global order of events.
///
/// On PostgreSQL an event's global position is taken at insert, not at
/// commit, so the order readers follow is (inserting transaction id,
/// position); a reader never moves past a transaction that may still
/// commit. On SQLite `tx` is always 0 and the position alone is the order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub tx: u64,
    pub global: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position { tx: 0, global: 0 };
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.tx, self.global)
    }
}

/// A stored event with its place in the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: Position,
    pub customer_id: CustomerId,
    /// 1-based sequence within the customer's stream.
    pub sequence: u64,
    pub event: CustomerEvent,
    pub metadata: HashMap<String, String>,
    pub recorded_at: DateTime<Utc>,
}

/// A customer's current state and version (number of events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub customer: Customer,
    pub version: u64,
}

/// The stored response of a command sent with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The caller's name (keys are per caller).
    pub caller: String,
    pub key: String,
    /// A digest of the request (method, path, body), to tell a retry from
    /// a different request under the same key.
    pub request_digest: String,
    pub status: u16,
    pub body: String,
    /// Headers of the response (name, value), e.g. its ETag.
    pub headers: Vec<(String, String)>,
}

/// The part of an idempotent response known only once the command is
/// decided (its version): the body and the headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredReply {
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl From<String> for StoredReply {
    fn from(body: String) -> Self {
        Self {
            body,
            headers: Vec::new(),
        }
    }
}

/// Everything one command writes, in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    pub customer_id: CustomerId,
    /// The version the command was decided on; the append fails with
    /// [`StoreError::Conflict`] if the stream has moved on.
    pub expected_version: u64,
    pub events: &'a [CustomerEvent],
    pub metadata: &'a CommandMetadata,
    /// The state at `expected_version` and after the events: the store
    /// derives the login-email reservations from both.
    pub before: &'a Customer,
    pub after: &'a Customer,
    pub idempotency: Option<&'a IdempotencyRecord>,
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The customer's version after the append.
    pub version: u64,
    /// Position of the last event written (None when there were none).
    pub last_position: Option<Position>,
}

/// Store settings.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Maximum connections in the pool (PostgreSQL) or readers (SQLite).
    pub max_connections: u32,
    /// Write a snapshot every this many events of a customer (0: never).
    pub snapshot_interval: u64,
    /// Seal personal data under per-customer keys (docs/privacy.md). Off
    /// only to measure what sealing costs (`examples/encryption_cost.rs`):
    /// a store written with it off is like one written before encryption.
    pub seal_personal_data: bool,
    /// Customers whose latest state the command path keeps in memory
    /// (0: none): see `cache.rs`.
    pub aggregate_cache: usize,
    /// How long a cached state may be used after it was written.
    pub aggregate_cache_ttl: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            snapshot_interval: 100,
            seal_personal_data: true,
            aggregate_cache: 10_000,
            aggregate_cache_ttl: std::time::Duration::from_secs(30),
        }
    }
}

/// The event store, on PostgreSQL or SQLite.
#[derive(Clone)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (a SQLite file is created
    /// if missing). Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(
                postgres::PgStore::connect(url, options).await?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(
                sqlite::SqliteStore::connect(url, options).await?,
            ))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Opens the key store with the master key (creating it on first use):
    /// needed before anything that reads or writes personal data. The
    /// wrong master key is [`StoreError::WrongMasterKey`].
    pub async fn unlock(mut self, master: MasterKey) -> Result<Self, StoreError> {
        match &mut self {
            Self::Postgres(s) => s.unlock(master).await?,
            Self::Sqlite(s) => s.unlock(master).await?,
        }
        Ok(self)
    }

    /// The aggregate cache of the command path (`None`: off).
    pub(crate) fn cache(&self) -> Option<&cache::AggregateCache> {
        match self {
            Self::Postgres(s) => s.cache(),
            Self::Sqlite(s) => s.cache(),
        }
    }

    /// Hits, misses and stale entries of the aggregate cache so far.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache().map(cache::AggregateCache::stats)
    }

    /// The customer's state and live data key, for a command.
    pub(crate) async fn load_current(
        &self,
        customer_id: CustomerId,
    ) -> Result<cache::Current, StoreError> {
        match self {
            Self::Postgres(s) => s.load_current(customer_id, true).await,
            Self::Sqlite(s) => s.load_current(customer_id, true).await,
        }
    }

    /// [`Store::append_with_outbox`], sealing with the key read with the
    /// state (if any); returns the key used.
    pub(crate) async fn append_keyed(
        &self,
        append: Append<'_>,
        outbox: &[OutboxMessage],
        known: Option<std::sync::Arc<keys::DataKey>>,
    ) -> Result<(Appended, Option<std::sync::Arc<keys::DataKey>>), StoreError> {
        match self {
            Self::Postgres(s) => s.append_keyed(append, outbox, known).await,
            Self::Sqlite(s) => s.append_keyed(append, outbox, known).await,
        }
    }

    /// The unlocked keys ([`StoreError::Locked`] before [`Store::unlock`]).
    pub fn keyring(&self) -> Result<&Keyring, StoreError> {
        match self {
            Self::Postgres(s) => s.keyring(),
            Self::Sqlite(s) => s.keyring(),
        }
    }

    /// Re-wraps every customer key and the email index key under `new`
    /// (one transaction; events untouched). Afterwards only `new` unlocks
    /// the store: restart every process with it. Returns the number of
    /// customer keys re-wrapped.
    pub async fn rotate_master_key(&self, new: &MasterKey) -> Result<u64, StoreError> {
        let keyring = self.keyring()?;
        match self {
            Self::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let n = keys::rotate_master::<sqlx::Postgres>(&mut tx, keyring, new).await?;
                tx.commit().await?;
                Ok(n)
            }
            Self::Sqlite(s) => {
                let mut tx = s.writer().begin().await?;
                let n = keys::rotate_master::<sqlx::Sqlite>(&mut tx, keyring, new).await?;
                tx.commit().await?;
                Ok(n)
            }
        }
    }

    /// After erasing data (a forget and its projection): on SQLite, copies
    /// the write-ahead log into the database file and truncates it, so no
    /// older copy of a page stays in the `-wal` file
    /// ([`sqlite::SqliteStore::purge_wal`]). Nothing on PostgreSQL (its WAL
    /// and dead tuples go with recycling and vacuum; docs/privacy.md).
    pub async fn purge_wal(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(_) => Ok(()),
            Self::Sqlite(s) => s.purge_wal().await,
        }
    }

    /// Which database this is: `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the migrations under `migrations/<kind>/`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.migrate().await,
            Self::Sqlite(s) => s.migrate().await,
        }
    }

    /// True when the database answers and every migration is applied.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        match self {
            Self::Postgres(s) => s.is_ready().await,
            Self::Sqlite(s) => s.is_ready().await,
        }
    }

    /// The customer's state: the latest snapshot plus newer events (or all
    /// events, if the snapshot is missing or no longer readable).
    pub async fn load(&self, customer_id: CustomerId) -> Result<Loaded, StoreError> {
        match self {
            Self::Postgres(s) => s.load(customer_id).await,
            Self::Sqlite(s) => s.load(customer_id).await,
        }
    }

    /// The customer's state by replaying every event (ignores snapshots).
    pub async fn load_by_replay(&self, customer_id: CustomerId) -> Result<Loaded, StoreError> {
        let events = self.events_of(customer_id).await?;
        Ok(replay(events.into_iter().map(|e| e.event)))
    }

    /// Every event of one customer, in sequence order.
    pub async fn events_of(
        &self,
        customer_id: CustomerId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.events_of(customer_id, 0).await,
            Self::Sqlite(s) => s.events_of(customer_id, 0).await,
        }
    }

    /// Writes a command's events, reservations, idempotency record and (at
    /// the interval) a snapshot, all or nothing.
    pub async fn append(&self, append: Append<'_>) -> Result<Appended, StoreError> {
        self.append_with_outbox(append, &[]).await
    }

    /// [`Store::append`], with the mail the command calls for recorded in
    /// the same transaction (the outbox).
    pub async fn append_with_outbox(
        &self,
        append: Append<'_>,
        outbox: &[OutboxMessage],
    ) -> Result<Appended, StoreError> {
        match self {
            Self::Postgres(s) => s.append(append, outbox).await,
            Self::Sqlite(s) => s.append(append, outbox).await,
        }
    }

    /// Up to `limit` events after `after`, in the global order, never
    /// passing an event whose transaction may still commit.
    pub async fn read_feed(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.read_feed(after, limit).await,
            Self::Sqlite(s) => s.read_feed(after, limit).await,
        }
    }

    /// Up to `limit` committed events with a global position above
    /// `after`, in position order, without the feed's hold-back: for
    /// one-shot reads of everything committed now (reports), never for a
    /// reader that keeps a checkpoint (it could skip a late commit).
    pub async fn scan(&self, after: i64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            Self::Postgres(s) => s.scan(after, limit).await,
            Self::Sqlite(s) => {
                s.read_feed(
                    Position {
                        tx: 0,
                        global: after,
                    },
                    limit,
                )
                .await
            }
        }
    }

    /// The newest committed event's position (START when empty). A feed
    /// reader that has passed it has seen every event committed so far.
    pub async fn head(&self) -> Result<Position, StoreError> {
        match self {
            Self::Postgres(s) => s.head().await,
            Self::Sqlite(s) => s.head().await,
        }
    }

    /// The customer's current version (number of events), from the stream.
    pub async fn version_of(&self, customer_id: CustomerId) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.version_of(customer_id).await,
            Self::Sqlite(s) => s.version_of(customer_id).await,
        }
    }

    /// The customer holding `email` as a login (or pending change target;
    /// an expired pending change counts until a claim releases it).
    pub async fn email_holder(
        &self,
        email: &access_domain::EmailAddress,
    ) -> Result<Option<CustomerId>, StoreError> {
        match self {
            Self::Postgres(s) => s.email_holder(email).await,
            Self::Sqlite(s) => s.email_holder(email).await,
        }
    }

    /// The stored response for (caller, key), if any.
    pub async fn idempotency_lookup(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self {
            Self::Postgres(s) => s.idempotency_lookup(caller, key).await,
            Self::Sqlite(s) => s.idempotency_lookup(caller, key).await,
        }
    }

    /// Stores a response that wrote no events (e.g. a no-op command).
    pub async fn idempotency_save(&self, record: &IdempotencyRecord) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.idempotency_save(record).await,
            Self::Sqlite(s) => s.idempotency_save(record).await,
        }
    }

    /// Number of events in the store.
    pub async fn count_events(&self) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.count_events().await,
            Self::Sqlite(s) => s.count_events().await,
        }
    }
}

/// Rebuilds a customer from events.
pub fn replay(events: impl IntoIterator<Item = CustomerEvent>) -> Loaded {
    use cqrs_es::Aggregate;
    let mut loaded = Loaded::default();
    for event in events {
        loaded.customer.apply(event);
        loaded.version += 1;
    }
    loaded
}

/// The reservations a customer should hold at `now`: (address, kind,
/// when it expires in milliseconds since the epoch: a pending change's
/// link expiry, none for a login).
pub(crate) fn reservations(
    customer: &Customer,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(access_domain::EmailAddress, &'static str, Option<i64>)> {
    customer
        .reserved_emails(now)
        .into_iter()
        .map(|(email, kind)| {
            let expires = match kind {
                access_domain::ReservationKind::Login => None,
                access_domain::ReservationKind::PendingChange => customer
                    .pending_email_change()
                    .map(|p| p.expires_at.timestamp_millis()),
            };
            (email, kind.as_str(), expires)
        })
        .collect()
}

/// True when this append crosses a multiple of the snapshot interval.
pub(crate) fn snapshot_due(interval: u64, before: u64, after: u64) -> bool {
    interval > 0 && after / interval > before / interval
}

/// A URL without its secrets, for messages and help: the password of the
/// user part (`user:***@`) and the value of every query parameter whose
/// name speaks of a secret (`password`, `sslpassword`, `pwd`, `token`,
/// `secret`, …: `name=***`).
pub fn redact_url(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    };
    let Some(query_start) = url.find('?') else {
        return url;
    };
    let (head, rest) = url.split_at(query_start + 1);
    let (query, fragment) = match rest.find('#') {
        Some(hash) => rest.split_at(hash),
        None => (rest, ""),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}{fragment}", query.join("&"))
}

/// Whether a URL query parameter's name (percent-decoded, any case) names
/// something secret.
fn is_secret_parameter(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let name = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "auth", "credential"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("mysql://x"), "mysql://x");
    }

    #[test]
    fn secret_query_parameters_are_redacted_in_urls() {
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?sslpassword=s3cret#frag"),
            "postgres://u:***@h/db?sslpassword=***#frag"
        );
        assert_eq!(
            redact_url("smtp://h:587?PassWord=a&Token=b&auth_secret=c&pwd=d"),
            "smtp://h:587?PassWord=***&Token=***&auth_secret=***&pwd=***"
        );
        assert_eq!(
            redact_url("postgres://h/db?pass%77ord=x"),
            "postgres://h/db?pass%77ord=***"
        );
        assert_eq!(
            redact_url("sqlite://access.db?mode=rwc"),
            "sqlite://access.db?mode=rwc"
        );
    }

    #[test]
    fn snapshots_fall_due_at_each_multiple_of_the_interval() {
        assert!(!snapshot_due(0, 0, 1000));
        assert!(!snapshot_due(100, 0, 99));
        assert!(snapshot_due(100, 99, 100));
        assert!(snapshot_due(100, 98, 103));
        assert!(!snapshot_due(100, 100, 199));
    }

    #[test]
    fn positions_order_by_transaction_then_position() {
        let a = Position { tx: 5, global: 10 };
        let b = Position { tx: 6, global: 3 };
        assert!(a < b);
        assert!(Position::START < a);
    }
}
