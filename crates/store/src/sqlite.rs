//! SQLite: the embedded default, a single file created on first start.
//!
//! - WAL journal, so readers never block the writer or each other.
//! - `synchronous = FULL`: an acknowledged command survives a power cut
//!   (NORMAL could lose the last transactions; an access service must not
//!   forget a revoke it confirmed).
//! - One writer connection: writes are serialized in the process instead
//!   of fighting over the database lock (`SQLITE_BUSY`); other processes
//!   on the same file wait up to the busy timeout.
//! - With one writer at a time, the AUTOINCREMENT position order is the
//!   commit order, so the feed needs no visibility watermark.
//! - `secure_delete = ON`: deleted and overwritten content is zeroed in the
//!   file, not left in free pages or free space of a page; and a forget
//!   ends with a `wal_checkpoint(TRUNCATE)` ([`SqliteStore::purge_wal`]), so
//!   the `-wal` file keeps no older copy of a page either (docs/storage.md).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use access_domain::{CustomerId, EmailAddress};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, SqlitePool};

use crate::cache::{AggregateCache, Current};
use crate::codec::{self, RawRow, AGGREGATE_TYPE};
use crate::error::{classify, StoreError, Violation};
use crate::keys::{self, KeyState, Keyring, MasterKey, Opener};
use crate::portable;
use crate::{
    replay, Append, Appended, IdempotencyRecord, Loaded, Position, RecordedEvent, StoreOptions,
};

mod repository;

/// The sqlx driver of this store.
type DB = sqlx::Sqlite;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Every event column, with the customer's key (to open personal data).
const SELECT_EVENT: &str = "SELECT global_position, aggregate_id, sequence, event_type, \
     event_version, payload, metadata, recorded_at, \
     k.wrapped_key, k.customer_id IS NOT NULL AS has_key \
     FROM events LEFT JOIN customer_keys k ON k.customer_id = events.aggregate_id";

/// The SQLite event store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    options: StoreOptions,
    keyring: Option<Arc<Keyring>>,
    cache: Option<Arc<AggregateCache>>,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::UnsupportedUrl(format!("{url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await?;
        // An in-memory database exists once per connection: share the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(connect.read_only(true))
                .await?
        };
        Ok(Self {
            writer,
            reader,
            options,
            keyring: None,
            cache: AggregateCache::new(options.aggregate_cache, options.aggregate_cache_ttl),
        })
    }

    /// Copies the write-ahead log into the database file and truncates it
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`), so that no older copy of a page,
    /// holding data since deleted or scrubbed, stays in the `-wal` file.
    /// Waits for readers up to the busy timeout; a checkpoint they keep from
    /// completing is logged and tried again at the next forget.
    pub async fn purge_wal(&self) -> Result<(), StoreError> {
        let (busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.writer)
            .await?;
        if busy != 0 {
            tracing::warn!(
                wal_frames = log,
                checkpointed = done,
                "the WAL checkpoint after a forget did not complete (readers busy): \
                 deleted data may stay in the -wal file until the next checkpoint"
            );
        }
        Ok(())
    }

    /// The writer pool (one connection).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The reader pool.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Opens the key store with `master` (creating it on first use).
    pub async fn unlock(&mut self, master: MasterKey) -> Result<(), StoreError> {
        let keyring = keys::unlock::<DB, _>(&self.writer, master).await?;
        self.keyring = Some(Arc::new(keyring));
        Ok(())
    }

    pub(crate) fn cache(&self) -> Option<&AggregateCache> {
        self.cache.as_deref()
    }

    pub fn keyring(&self) -> Result<&Keyring, StoreError> {
        self.keyring.as_deref().ok_or(StoreError::Locked)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await.map_err(StoreError::from)
    }

    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.reader)
        .await?;
        if has_table == 0 {
            return Ok(false);
        }
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.reader)
                .await?;
        Ok(applied.unwrap_or(0) >= latest)
    }

    pub async fn load(&self, customer_id: CustomerId) -> Result<Loaded, StoreError> {
        self.load_current(customer_id, false)
            .await
            .map(|current| current.loaded)
    }

    /// The customer's state, and with `with_key` its live data key (for a
    /// command's append).
    pub(crate) async fn load_current(
        &self,
        customer_id: CustomerId,
        with_key: bool,
    ) -> Result<Current, StoreError> {
        let id = customer_id.to_string();
        let keyring = self.keyring()?;
        let key_of = |state: &KeyState| match with_key {
            true => keys::live_key(keyring, &id, state),
            false => Ok(None),
        };
        let snapshot = sqlx::query(
            "SELECT last_sequence, payload, k.wrapped_key, k.customer_id IS NOT NULL AS has_key \
             FROM snapshots LEFT JOIN customer_keys k ON k.customer_id = snapshots.aggregate_id \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(&id)
        .fetch_optional(&self.reader)
        .await?;
        if let Some(row) = snapshot {
            let last: i64 = row.try_get("last_sequence")?;
            let payload: String = row.try_get("payload")?;
            let key = KeyState::from_columns(row.try_get("has_key")?, row.try_get("wrapped_key")?);
            let customer = match serde_json::from_str(&payload) {
                Ok(payload) => portable::open_snapshot(keyring, &id, last, &key, payload)?,
                Err(e) => {
                    portable::snapshot_unreadable(&id, &e);
                    None
                }
            };
            if let Some(customer) = customer {
                let newer = self.events_of(customer_id, last).await?;
                return Ok(Current {
                    loaded: portable::from_snapshot(customer, last, newer),
                    key: key_of(&key)?,
                });
            }
        }
        let rows = self.event_rows(customer_id, 0).await?;
        let key = match rows.first() {
            Some(row) => {
                KeyState::from_columns(row.try_get("has_key")?, row.try_get("wrapped_key")?)
            }
            None => KeyState::Missing,
        };
        let events = decode_rows(rows, keyring)?;
        Ok(Current {
            loaded: replay(events.into_iter().map(|e| e.event)),
            key: key_of(&key)?,
        })
    }

    async fn event_rows(
        &self,
        customer_id: CustomerId,
        after_sequence: i64,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "{SELECT_EVENT} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence"
        ))
        .bind(AGGREGATE_TYPE)
        .bind(customer_id.to_string())
        .bind(after_sequence)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn events_of(
        &self,
        customer_id: CustomerId,
        after_sequence: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self.event_rows(customer_id, after_sequence).await?;
        decode_rows(rows, self.keyring()?)
    }

    pub async fn read_feed(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_EVENT} WHERE aggregate_type = $1 AND global_position > $2 ORDER BY global_position LIMIT $3"
        ))
        .bind(AGGREGATE_TYPE)
        .bind(after.global)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        decode_rows(rows, self.keyring()?)
    }

    pub async fn append(
        &self,
        append: Append<'_>,
        outbox: &[crate::OutboxMessage],
    ) -> Result<Appended, StoreError> {
        self.append_keyed(append, outbox, None)
            .await
            .map(|(appended, _)| appended)
    }

    /// [`SqliteStore::append`] sealing with `known`, the customer's live
    /// key read with its state (else the key is read, or made, in the
    /// transaction). Returns the key used.
    pub(crate) async fn append_keyed(
        &self,
        append: Append<'_>,
        outbox: &[crate::OutboxMessage],
        known: Option<Arc<keys::DataKey>>,
    ) -> Result<(Appended, Option<Arc<keys::DataKey>>), StoreError> {
        let id = append.customer_id.to_string();
        let keyring = self.keyring()?;
        let mut tx = self.writer.begin().await?;
        let key = if self.options.seal_personal_data {
            Some(match known {
                Some(key) => key,
                None => Arc::new(keys::key_for_append::<DB>(&mut tx, keyring, &id).await?),
            })
        } else {
            None
        };
        let sealed = match &key {
            Some(key) => keys::seal_events(key, &id, append.expected_version + 1, append.events)?,
            None => append.events.to_vec(),
        };
        let encoded = codec::encode(&sealed, append.expected_version + 1, append.metadata)?;
        let mut last_position = None;

        if !encoded.is_empty() {
            let mut insert = QueryBuilder::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) ",
            );
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            insert.push_values(&encoded, |mut b, e| {
                b.push_bind(AGGREGATE_TYPE)
                    .push_bind(&id)
                    .push_bind(e.sequence)
                    .push_bind(&e.event_type)
                    .push_bind(&e.event_version)
                    .push_bind(e.payload.to_string())
                    .push_bind(e.metadata.to_string())
                    .push_bind(&now);
            });
            insert.push(" RETURNING global_position");
            let rows = insert.build().fetch_all(&mut *tx).await.map_err(|e| {
                if classify(&e) == Some(Violation::EventSequence) {
                    StoreError::Conflict {
                        customer_id: id.clone(),
                        expected: append.expected_version,
                    }
                } else {
                    e.into()
                }
            })?;
            // RETURNING order is not guaranteed by SQLite: take the largest.
            let mut last = None;
            for row in &rows {
                let p: i64 = row.try_get("global_position")?;
                last = last.max(Some(p));
            }
            last_position = last.map(|global| Position { tx: 0, global });
        }

        let version = portable::finish_append::<DB, _>(
            &mut tx,
            &append,
            outbox,
            &id,
            self.options.snapshot_interval,
            keyring,
            key.as_deref(),
            |stored| stored.to_string(),
        )
        .await?;
        tx.commit().await?;
        if append.after.is_forgotten() && !append.before.is_forgotten() {
            // The forget is committed: a checkpoint that fails is only
            // logged (the projector's, after its scrub, follows).
            if let Err(e) = self.purge_wal().await {
                tracing::warn!(error = %e, "WAL checkpoint after a forget failed");
            }
        }
        Ok((
            Appended {
                version,
                last_position,
            },
            key,
        ))
    }

    pub async fn email_holder(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<CustomerId>, StoreError> {
        portable::email_holder::<DB, _>(&self.reader, &self.keyring()?.email_key(email)).await
    }

    pub async fn idempotency_lookup(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        portable::idempotency_lookup::<DB, _>(&self.reader, caller, key).await
    }

    pub async fn idempotency_save(&self, record: &IdempotencyRecord) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        portable::insert_idempotency::<DB>(&mut tx, record, None).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn head(&self) -> Result<Position, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(global_position) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(Position {
            tx: 0,
            global: max.unwrap_or(0),
        })
    }

    pub async fn version_of(&self, customer_id: CustomerId) -> Result<u64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(customer_id.to_string())
        .fetch_one(&self.reader)
        .await?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    pub async fn count_events(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}

fn raw_row(row: &SqliteRow) -> Result<RawRow, StoreError> {
    let position: i64 = row.try_get("global_position")?;
    let aggregate_id: String = row.try_get("aggregate_id")?;
    let sequence: i64 = row.try_get("sequence")?;
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    let mut raw = RawRow {
        key: KeyState::from_columns(row.try_get("has_key")?, row.try_get("wrapped_key")?),
        position,
        tx: 0,
        aggregate_id,
        sequence,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: serde_json::Value::Null,
        metadata: serde_json::Value::Null,
        recorded_at: DateTime::<Utc>::MIN_UTC,
    };
    raw.payload = serde_json::from_str(&payload)
        .map_err(|e| codec::corrupt(&raw, format!("payload is not JSON: {e}")))?;
    raw.metadata = serde_json::from_str(&metadata)
        .map_err(|e| codec::corrupt(&raw, format!("metadata is not JSON: {e}")))?;
    raw.recorded_at = DateTime::parse_from_rfc3339(&recorded_at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| codec::corrupt(&raw, format!("recorded_at `{recorded_at}`: {e}")))?;
    Ok(raw)
}

fn decode_rows(rows: Vec<SqliteRow>, keyring: &Keyring) -> Result<Vec<RecordedEvent>, StoreError> {
    let upcasters = codec::shared_upcasters();
    let mut opener = Opener::new(keyring);
    rows.iter()
        .map(|row| codec::decode(raw_row(row)?, &upcasters, &mut opener))
        .collect()
}
