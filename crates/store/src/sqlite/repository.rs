//! cqrs-es's `PersistedEventRepository` on the SQLite store, for any
//! aggregate type: the same tables, the same conflict rule as postgres-es
//! (a taken (type, id, sequence) is an optimistic-lock error), and streams
//! that report database errors instead of panicking (unlike postgres-es
//! 0.5, whose stream task unwraps them).
//!
//! The service itself appends through [`crate::Store::append`], which also
//! writes reservations and idempotency records in the same transaction.
//! Do not combine this repository with cqrs-es's snapshotting
//! `PersistedEventStore` (0.5.0 applies new events twice there).

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, SqlitePool};

use crate::error::{classify, StoreError, Violation};

const STREAM_CHANNEL: usize = 256;

fn to_persistence(err: StoreError) -> PersistenceError {
    match err {
        StoreError::Conflict { .. } => PersistenceError::OptimisticLockError,
        StoreError::Unavailable(m) => PersistenceError::ConnectionError(m.into()),
        StoreError::Corrupt { .. } | StoreError::CorruptSnapshot { .. } => {
            PersistenceError::DeserializationError(Box::new(err))
        }
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

fn sqlx_to_persistence(err: sqlx::Error) -> PersistenceError {
    if classify(&err) == Some(Violation::EventSequence) {
        return PersistenceError::OptimisticLockError;
    }
    to_persistence(StoreError::from(err))
}

fn serialized(row: &SqliteRow, aggregate_type: &str) -> Result<SerializedEvent, PersistenceError> {
    let get = |name: &str| -> Result<String, PersistenceError> {
        row.try_get::<String, _>(name).map_err(sqlx_to_persistence)
    };
    let sequence: i64 = row.try_get("sequence").map_err(sqlx_to_persistence)?;
    let aggregate_id = get("aggregate_id")?;
    let parse = |what: &str, text: String| -> Result<Value, PersistenceError> {
        serde_json::from_str(&text).map_err(|e| {
            PersistenceError::DeserializationError(
                format!("{what} of {aggregate_type} {aggregate_id} at sequence {sequence}: {e}")
                    .into(),
            )
        })
    };
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.clone(),
        sequence: usize::try_from(sequence).unwrap_or_default(),
        aggregate_type: aggregate_type.to_string(),
        event_type: get("event_type")?,
        event_version: get("event_version")?,
        payload: parse("payload", get("payload")?)?,
        metadata: parse("metadata", get("metadata")?)?,
    })
}

/// cqrs-es's repository on a SQLite store's pools
/// ([`crate::Store::sqlite_repository`]).
#[derive(Clone)]
pub struct SqliteRepository {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
}

const SELECT: &str =
    "SELECT aggregate_id, sequence, event_type, event_version, payload, metadata FROM events";

impl SqliteRepository {
    async fn select<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after: i64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence"
        ))
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(after)
        .fetch_all(&self.reader)
        .await
        .map_err(sqlx_to_persistence)?;
        rows.iter().map(|r| serialized(r, A::TYPE)).collect()
    }

    fn stream(&self, aggregate_type: &'static str, aggregate_id: Option<String>) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(STREAM_CHANNEL);
        let pool = self.reader.clone();
        tokio::spawn(async move {
            let sql = match aggregate_id {
                Some(_) => format!(
                    "{SELECT} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
                ),
                None => format!("{SELECT} WHERE aggregate_type = $1 ORDER BY global_position"),
            };
            let mut query = sqlx::query(&sql).bind(aggregate_type);
            if let Some(id) = &aggregate_id {
                query = query.bind(id.clone());
            }
            let mut rows = query.fetch(&pool);
            loop {
                let item = match rows.try_next().await {
                    Ok(Some(row)) => serialized(&row, aggregate_type),
                    Ok(None) => return,
                    Err(e) => Err(sqlx_to_persistence(e)),
                };
                let failed = item.is_err();
                if feed.push(item).await.is_err() || failed {
                    // The reader went away, or the error was delivered.
                    return;
                }
            }
        });
        stream
    }
}

impl PersistedEventRepository for SqliteRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select::<A>(
            aggregate_id,
            i64::try_from(last_sequence).unwrap_or(i64::MAX),
        )
        .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let row = sqlx::query(
            "SELECT last_sequence, current_snapshot, payload FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(sqlx_to_persistence)?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload").map_err(sqlx_to_persistence)?;
        let last: i64 = row.try_get("last_sequence").map_err(sqlx_to_persistence)?;
        let current: i64 = row
            .try_get("current_snapshot")
            .map_err(sqlx_to_persistence)?;
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_string(),
            aggregate: serde_json::from_str(&payload)
                .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?,
            current_sequence: usize::try_from(last).unwrap_or_default(),
            current_snapshot: usize::try_from(current).unwrap_or_default(),
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let mut tx = self.writer.begin().await.map_err(sqlx_to_persistence)?;
        let mut last_sequence = 0usize;
        if !events.is_empty() {
            let mut insert = QueryBuilder::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
            );
            insert.push_values(events, |mut b, e| {
                b.push_bind(A::TYPE)
                    .push_bind(&e.aggregate_id)
                    .push_bind(i64::try_from(e.sequence).unwrap_or(i64::MAX))
                    .push_bind(&e.event_type)
                    .push_bind(&e.event_version)
                    .push_bind(e.payload.to_string())
                    .push_bind(e.metadata.to_string());
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sqlx_to_persistence)?;
            last_sequence = events.iter().map(|e| e.sequence).max().unwrap_or_default();
        }
        if let Some((aggregate_id, aggregate, current_snapshot)) = snapshot_update {
            // Same rule as postgres-es: snapshot n replaces snapshot n-1.
            let result = sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                 SET last_sequence = excluded.last_sequence, current_snapshot = excluded.current_snapshot, payload = excluded.payload \
                 WHERE snapshots.current_snapshot = excluded.current_snapshot - 1",
            )
            .bind(A::TYPE)
            .bind(&aggregate_id)
            .bind(i64::try_from(last_sequence).unwrap_or(i64::MAX))
            .bind(i64::try_from(current_snapshot).unwrap_or(i64::MAX))
            .bind(aggregate.to_string())
            .execute(&mut *tx)
            .await
            .map_err(sqlx_to_persistence)?;
            if result.rows_affected() != 1 {
                return Err(PersistenceError::OptimisticLockError);
            }
        }
        tx.commit().await.map_err(sqlx_to_persistence)?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Ok(self.stream(A::TYPE, Some(aggregate_id.to_string())))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Ok(self.stream(A::TYPE, None))
    }
}
