//! PostgreSQL: the production store.
//!
//! The events table has postgres-es 0.5's columns, so
//! `postgres_es::PostgresEventRepository` reads it as it is (a conformance
//! test checks that), plus `global_position` and `tx_id`. Our own append
//! writes the events, the login-email reservations, the idempotency record
//! and the snapshot in one transaction, which postgres-es cannot (and its
//! snapshot writer applies events twice: see docs/cqrs-es.md).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use access_domain::{CustomerId, EmailAddress};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, QueryBuilder, Row};

use crate::cache::{AggregateCache, Current};
use crate::codec::{self, RawRow, AGGREGATE_TYPE};
use crate::error::{classify, StoreError, Violation};
use crate::keys::{self, KeyState, Keyring, MasterKey, Opener};
use crate::pg_hosts;
use crate::portable;
use crate::{
    replay, Append, Appended, IdempotencyRecord, Loaded, Position, RecordedEvent, StoreOptions,
};

/// The sqlx driver of this store.
type DB = sqlx::Postgres;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL event store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    options: StoreOptions,
    keyring: Option<Arc<Keyring>>,
    cache: Option<Arc<AggregateCache>>,
    /// Follows the primary when the URL names several hosts.
    _monitor: Option<Arc<pg_hosts::Monitor>>,
}

/// Every event column, with the customer's key (to open personal data).
const SELECT_EVENT: &str = "SELECT global_position, tx_id::text AS tx, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, recorded_at, \
     k.wrapped_key, k.customer_id IS NOT NULL AS has_key \
     FROM events LEFT JOIN customer_keys k ON k.customer_id = events.aggregate_id";

impl PgStore {
    /// Connects (lazily) to `url`; with a host list (libpq's
    /// `postgres://h1:p1,h2:p2/db`), to whichever host accepts writes, and
    /// follows it when it moves ([`crate::pg_hosts`]).
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let hosts = pg_hosts::split_hosts(url)?
            .iter()
            .map(|single| {
                PgConnectOptions::from_str(single)
                    .map(|o| o.application_name("accessd"))
                    .map_err(|e| {
                        StoreError::UnsupportedUrl(format!("{}: {e}", crate::redact_url(url)))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(StoreError::UnsupportedUrl(crate::redact_url(url)));
        }
        let mut pool_options = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5));
        let cache = AggregateCache::new(options.aggregate_cache, options.aggregate_cache_ttl);
        let mut monitor = None;
        let pool = if hosts.len() == 1 {
            pool_options.connect_lazy_with(hosts[0].clone())
        } else {
            // Start where writes are accepted now (else on the first host;
            // the monitor moves the pool once a primary answers).
            let current = pg_hosts::first_primary(&hosts).await.unwrap_or(0);
            let following = pg_hosts::Following::new(&hosts[current]);
            let (admit, outdated) = (following.clone(), following.clone());
            pool_options = pool_options
                .after_connect(move |connection, _| {
                    let admit = admit.clone();
                    Box::pin(async move { admit.admit(connection).await })
                })
                .before_acquire(move |_, meta| {
                    let outdated = outdated.outdated(meta.age);
                    Box::pin(async move { Ok(!outdated) })
                });
            let pool = pool_options.connect_lazy_with(hosts[current].clone());
            monitor = Some(pg_hosts::spawn_monitor(
                pool.clone(),
                hosts,
                current,
                following,
                cache.clone(),
            ));
            pool
        };
        Ok(Self {
            pool,
            options,
            keyring: None,
            cache,
            _monitor: monitor,
        })
    }

    /// The connection pool (for projections and tools sharing the database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens the key store with `master` (creating it on first use).
    pub async fn unlock(&mut self, master: MasterKey) -> Result<(), StoreError> {
        let keyring = keys::unlock::<DB, _>(&self.pool, master).await?;
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
        MIGRATOR.run(&self.pool).await.map_err(StoreError::from)
    }

    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            match sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
            {
                Ok(v) => v,
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                    return Ok(false)
                }
                Err(e) => return Err(e.into()),
            };
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
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = snapshot {
            let last: i64 = row.try_get("last_sequence")?;
            let payload: serde_json::Value = row.try_get("payload")?;
            let key = KeyState::from_columns(row.try_get("has_key")?, row.try_get("wrapped_key")?);
            if let Some(customer) = portable::open_snapshot(keyring, &id, last, &key, payload)? {
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
    ) -> Result<Vec<PgRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "{SELECT_EVENT} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence"
        ))
        .bind(AGGREGATE_TYPE)
        .bind(customer_id.to_string())
        .bind(after_sequence)
        .fetch_all(&self.pool)
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
        // Rows of a transaction below the oldest running transaction
        // (xmin) are all committed or aborted: none can appear later.
        let rows = sqlx::query(&format!(
            "{SELECT_EVENT} WHERE aggregate_type = $1 \
               AND (tx_id, global_position) > ($2::text::xid8, $3) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, global_position LIMIT $4"
        ))
        .bind(AGGREGATE_TYPE)
        .bind(after.tx.to_string())
        .bind(after.global)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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

    /// [`PgStore::append`] sealing with `known`, the customer's live key
    /// read with its state (else the key is read, or made, in the
    /// transaction). Returns the key used.
    pub(crate) async fn append_keyed(
        &self,
        append: Append<'_>,
        outbox: &[crate::OutboxMessage],
        known: Option<Arc<keys::DataKey>>,
    ) -> Result<(Appended, Option<Arc<keys::DataKey>>), StoreError> {
        let id = append.customer_id.to_string();
        let keyring = self.keyring()?;
        let mut tx = self.pool.begin().await?;
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
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
            );
            insert.push_values(&encoded, |mut b, e| {
                b.push_bind(AGGREGATE_TYPE)
                    .push_bind(&id)
                    .push_bind(e.sequence)
                    .push_bind(&e.event_type)
                    .push_bind(&e.event_version)
                    .push_bind(&e.payload)
                    .push_bind(&e.metadata);
            });
            insert.push(" RETURNING global_position, tx_id::text AS tx");
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
            if let Some(row) = rows.last() {
                last_position = Some(position_of(row)?);
            }
        }

        let version = portable::finish_append::<DB, _>(
            &mut tx,
            &append,
            outbox,
            &id,
            self.options.snapshot_interval,
            keyring,
            key.as_deref(),
            |stored| stored,
        )
        .await?;
        tx.commit().await?;
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
        portable::email_holder::<DB, _>(&self.pool, &self.keyring()?.email_key(email)).await
    }

    pub async fn idempotency_lookup(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        portable::idempotency_lookup::<DB, _>(&self.pool, caller, key).await
    }

    pub async fn idempotency_save(&self, record: &IdempotencyRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        portable::insert_idempotency::<DB>(&mut tx, record, None).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn scan(&self, after: i64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_EVENT} WHERE aggregate_type = $1 AND global_position > $2 ORDER BY global_position LIMIT $3"
        ))
        .bind(AGGREGATE_TYPE)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        decode_rows(rows, self.keyring()?)
    }

    pub async fn head(&self) -> Result<Position, StoreError> {
        let row = sqlx::query(
            "SELECT tx_id::text AS tx, global_position FROM events ORDER BY tx_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map_or(Ok(Position::START), position_of)
    }

    pub async fn version_of(&self, customer_id: CustomerId) -> Result<u64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(customer_id.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    pub async fn count_events(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}

fn position_of(row: &PgRow) -> Result<Position, StoreError> {
    let tx: String = row.try_get("tx")?;
    Ok(Position {
        tx: tx
            .parse()
            .map_err(|_| StoreError::Database(format!("tx_id `{tx}` is not a number")))?,
        global: row.try_get("global_position")?,
    })
}

fn decode_rows(rows: Vec<PgRow>, keyring: &Keyring) -> Result<Vec<RecordedEvent>, StoreError> {
    let upcasters = codec::shared_upcasters();
    let mut opener = Opener::new(keyring);
    rows.iter()
        .map(|row| {
            let position = position_of(row)?;
            let raw = RawRow {
                key: KeyState::from_columns(row.try_get("has_key")?, row.try_get("wrapped_key")?),
                position: position.global,
                tx: position.tx,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
                recorded_at: row.try_get("recorded_at")?,
            };
            codec::decode(raw, &upcasters, &mut opener)
        })
        .collect()
}
