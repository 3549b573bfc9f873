//! Reading the chain's inputs as stored: raw event rows in the global
//! order, and the stored links of `event_hashes`.

use access_store::{Position, Store};
use sqlx::Row;

use super::recipe::StoredEvent;
use crate::db::on_store;
use crate::ProjectionError;

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn tx_of(raw: &str) -> Result<u64, ProjectionError> {
    raw.parse()
        .map_err(|_| ProjectionError::Corrupt(format!("transaction id `{raw}` is not a number")))
}

/// Up to `limit` event rows after `after`, as stored, in the global order
/// (every aggregate type), never passing a transaction that may still
/// commit (the rule of `Store::read_feed`, docs/adr/0002-global-order.md).
pub async fn read_events(
    store: &Store,
    after: Position,
    limit: u32,
) -> Result<Vec<StoredEvent>, ProjectionError> {
    const COLUMNS: &str =
        "global_position, aggregate_type, aggregate_id, sequence, event_type, event_version";
    on_store!(store, read, |pool, _ts, _get_ts, pg| {
        let rows = if pg {
            sqlx::query(&format!(
                "SELECT tx_id::text AS tx, {COLUMNS}, payload::text AS payload, metadata::text AS metadata \
                 FROM events \
                 WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
                   AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx_id, global_position LIMIT $3"
            ))
            .bind(after.tx.to_string())
            .bind(after.global)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        } else {
            sqlx::query(&format!(
                "SELECT '0' AS tx, {COLUMNS}, payload, metadata FROM events \
                 WHERE global_position > $1 ORDER BY global_position LIMIT $2"
            ))
            .bind(after.global)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let tx: String = row.try_get("tx")?;
            out.push(StoredEvent {
                position: Position {
                    tx: tx_of(&tx)?,
                    global: row.try_get("global_position")?,
                },
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
            });
        }
        Ok(out)
    })
}

/// One stored link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HashRow {
    pub(super) position: Position,
    pub(super) hash: String,
    pub(super) prev_hash: String,
}

/// Up to `limit` stored hashes after `after` and at most `up_to`, in the
/// chain's order.
pub(super) async fn read_hashes(
    store: &Store,
    after: Position,
    up_to: Position,
    limit: u32,
) -> Result<Vec<HashRow>, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        let rows = sqlx::query(
            "SELECT position, tx, hash, prev_hash FROM event_hashes \
             WHERE (tx, position) > ($1, $2) AND (tx, position) <= ($3, $4) \
             ORDER BY tx, position LIMIT $5",
        )
        .bind(to_i64(after.tx))
        .bind(after.global)
        .bind(to_i64(up_to.tx))
        .bind(up_to.global)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let tx: i64 = row.try_get("tx")?;
            out.push(HashRow {
                position: Position {
                    tx: u64::try_from(tx).unwrap_or_default(),
                    global: row.try_get("position")?,
                },
                hash: row.try_get("hash")?,
                prev_hash: row.try_get("prev_hash")?,
            });
        }
        Ok(out)
    })
}

/// The last stored hash row's place (None when there is none).
pub(super) async fn last_hashed(store: &Store) -> Result<Option<Position>, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        let row = sqlx::query(
            "SELECT tx, position FROM event_hashes ORDER BY tx DESC, position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(Position {
                tx: u64::try_from(row.try_get::<i64, _>("tx")?).unwrap_or_default(),
                global: row.try_get("position")?,
            })),
        }
    })
}

/// The stored hash of the event at `global`.
pub(super) async fn stored_hash(
    store: &Store,
    global: i64,
) -> Result<Option<String>, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        Ok(
            sqlx::query_scalar("SELECT hash FROM event_hashes WHERE position = $1")
                .bind(global)
                .fetch_optional(pool)
                .await?,
        )
    })
}
