//! # access-store
//!
//! Where the Customer events live, on PostgreSQL (production) or an
//! embedded SQLite file (the default). A guided tour:
//!
//! - [`Store`]: the one store, whichever the database: it picks the
//!   database from the URL, holds the unlocked keys and the command path's
//!   aggregate cache, and offers the focused interfaces below. A caller
//!   depends on the interface it uses (all are in [`prelude`]):
//!   - [`EventStore`] (`events.rs`, `append.rs`): load a customer (its
//!     snapshot and newer events), append a command's events in one transaction with
//!     the login-email reservations, the idempotency record, the mail and
//!     a snapshot, and read every event in the global order
//!     ([`EventStore::read_feed`]);
//!   - [`Idempotency`]: stored responses of commands sent with a key;
//!   - [`Accounts`]: customer sessions, API keys, lookups by email;
//!   - [`LoginAttempts`]: the soft lock's counts;
//!   - [`Outbox`]: mail written with the events, claimed and sent later;
//!   - [`KeyAdmin`]: rotating the master key, sealing legacy data.
//! - [`execute`]: running a command (load, decide, append, retried on a
//!   concurrent write).
//! - [`sql`]: the one query layer over both databases: statements are
//!   written once; what differs is a [`sql::Dialect`], implemented in
//!   [`postgres`] and [`sqlite`] (and nothing else is there).
//! - [`keys`]: personal data under per-customer keys (crypto-shredding).
//!
//! The rules (docs/storage.md): the feed never skips an event whose
//! transaction commits late; no two customers hold the same login email
//! (unique index); a refused command leaves nothing behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub mod accounts;
mod append;
mod cache;
mod codec;
pub mod console;
pub mod error;
mod events;
pub mod execute;
pub mod idempotency;
pub mod import;
pub mod keys;
pub mod login_attempts;
mod model;
pub mod outbox;
pub mod pg_hosts;
pub mod postgres;
pub mod sql;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod url;
mod writers;

pub use accounts::{Accounts, SessionRecord, StoredApiKey};
pub use cache::CacheStats;
pub use codec::AGGREGATE_TYPE;
pub use console::{Console, ConsoleSession, IntegrityCheck, ABANDONED};
pub use error::StoreError;
pub use events::{EventStore, FeedScan, FeedSelection};
pub use execute::{ExecuteError, Executed, Execution, OutboxInput};
pub use idempotency::Idempotency;
pub use keys::{KeyAdmin, Keyring, MasterKey};
pub use login_attempts::{AccountAttempts, LoginAttempts};
pub use model::{
    Append, Appended, IdempotencyRecord, Loaded, Position, RecordedEvent, StoreOptions, StoredReply,
};
pub use outbox::{Outbox, OutboxEntry, OutboxMessage};
pub use url::redact_url;

/// The store's interfaces, to call them on a [`Store`].
pub mod prelude {
    pub use crate::{Accounts, Console, EventStore, Idempotency, KeyAdmin, LoginAttempts, Outbox};
}

/// The event store, on PostgreSQL or SQLite.
#[derive(Clone)]
pub struct Store {
    db: sql::Db,
    options: StoreOptions,
    keyring: Option<Arc<Keyring>>,
    cache: Option<Arc<cache::AggregateCache>>,
    /// One writer per customer in this process (shared by clones).
    writers: Arc<writers::CustomerWriters>,
    /// How often the database moved to another host (PostgreSQL with a
    /// standby): counted twice per move, before and after the pool points
    /// at the new host (`pg_hosts.rs`).
    switches: Arc<AtomicU64>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (a SQLite file is created
    /// if missing). Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let cache =
            cache::AggregateCache::new(options.aggregate_cache, options.aggregate_cache_ttl);
        // After a failover the store may lack the old primary's last
        // commits (if replication was not synchronous): count the switch
        // (a command that read its state before it does not append after
        // it: `append_keyed`) and empty the cache.
        let switches = Arc::new(AtomicU64::new(0));
        let on_switch: sql::dialect::OnSwitch = {
            let (switches, cache) = (switches.clone(), cache.clone());
            Some(Arc::new(move || {
                switches.fetch_add(1, Ordering::SeqCst);
                if let Some(cache) = &cache {
                    cache.clear();
                }
            }))
        };
        Ok(Self {
            db: sql::connect(url, options.max_connections, on_switch).await?,
            options,
            keyring: None,
            cache,
            writers: Arc::default(),
            switches,
        })
    }

    /// Opens the key store with the master key (creating it on first use):
    /// needed before anything that reads or writes personal data. The
    /// wrong master key is [`StoreError::WrongMasterKey`].
    pub async fn unlock(mut self, master: MasterKey) -> Result<Self, StoreError> {
        self.keyring = Some(Arc::new(keys::unlock(&self.db, master).await?));
        Ok(self)
    }

    /// The unlocked keys ([`StoreError::Locked`] before [`Store::unlock`]).
    pub fn keyring(&self) -> Result<&Keyring, StoreError> {
        self.keyring.as_deref().ok_or(StoreError::Locked)
    }

    /// The database, for statements of the crates that keep tables in it
    /// (the projections).
    pub fn sql(&self) -> &sql::Db {
        &self.db
    }

    /// Which database this is: `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        self.db.kind()
    }

    /// The aggregate cache of the command path (`None`: off).
    /// The failover count now (see `switches`).
    pub(crate) fn switches(&self) -> u64 {
        self.switches.load(Ordering::SeqCst)
    }

    pub(crate) fn cache(&self) -> Option<&cache::AggregateCache> {
        self.cache.as_deref()
    }

    /// Hits, misses and stale entries of the aggregate cache so far.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache().map(cache::AggregateCache::stats)
    }

    /// Applies the migrations under `migrations/<kind>/`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    /// True when the database answers and every migration is applied.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        let latest = self.db.latest_migration();
        let applied =
            sql::Query::new("SELECT max(version) AS v FROM _sqlx_migrations WHERE success");
        let applied = match self.db.read_optional(&applied).await {
            Ok(row) => row.map(|r| r.opt_int("v")).transpose()?.flatten(),
            Err(e) if self.db.is_missing_table(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(applied.unwrap_or(0) >= latest)
    }

    /// After erasing data (a forget and its projection): on SQLite, copies
    /// the write-ahead log into the database file and truncates it, so no
    /// older copy of a page stays in the `-wal` file. Nothing on PostgreSQL
    /// (its WAL and dead tuples go with recycling and vacuum;
    /// docs/privacy.md).
    pub async fn purge_wal(&self) -> Result<(), StoreError> {
        self.db.after_forget().await
    }

    /// Closes the database's connections (waiting for those in use).
    pub async fn close(&self) {
        self.db.close().await
    }

    /// cqrs-es's repository on this store's tables, when it is SQLite.
    pub fn sqlite_repository(&self) -> Option<sqlite::SqliteRepository> {
        let pools = sql::pools_of::<sqlite::Sqlite>(&self.db)?;
        Some(sqlite::SqliteRepository {
            writer: pools.writer.clone(),
            reader: pools.reader.clone(),
        })
    }

    /// postgres-es's repository on this store's tables, when it is
    /// PostgreSQL.
    pub fn postgres_repository(&self) -> Option<postgres_es::PostgresEventRepository> {
        let pools = sql::pools_of::<postgres::Postgres>(&self.db)?;
        Some(postgres_es::PostgresEventRepository::new(
            pools.writer.clone(),
        ))
    }
}
