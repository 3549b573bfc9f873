//! Extending the chain: hashing the events not hashed yet, in batches,
//! each with the chain's checkpoint in one transaction; and starting it
//! over.

use access_store::{Position, Store};
use chrono::Utc;
use sqlx::{QueryBuilder, Row};

use super::read::{read_events, to_i64};
use super::recipe::{event_hash, GENESIS};
use super::{head, ChainHead, CHECKPOINT};
use crate::db::{self, on_store};
use crate::ProjectionError;

/// Events per transaction when extending.
pub const BATCH: u32 = 500;

/// What one [`extend_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extended {
    /// Events hashed (0: the chain was caught up).
    pub hashed: u64,
    /// The chain's checkpoint afterwards.
    pub at: Position,
}

/// Hashes up to `limit` events after the chain's checkpoint and moves the
/// checkpoint, in one transaction. Fails with `CheckpointMoved` (nothing
/// written) when another process extended the chain in the meantime.
pub async fn extend_batch(store: &Store, limit: u32) -> Result<Extended, ProjectionError> {
    let from = db::checkpoint(store, CHECKPOINT).await?;
    let events = read_events(store, from, limit.max(1)).await?;
    let Some(last) = events.last() else {
        return Ok(Extended {
            hashed: 0,
            at: from,
        });
    };
    let to = last.position;
    on_store!(store, write, |pool, ts, _get_ts, _pg| {
        let mut tx = pool.begin().await?;
        // Lock the checkpoint row with a write before any read: a row lock
        // on PostgreSQL (a second extender waits here, then sees the moved
        // checkpoint), the database write lock on SQLite (taken before the
        // transaction reads anything, so another process's commit cannot
        // make it stale).
        let lock = "UPDATE projector_checkpoints SET updated_at = $1 WHERE name = $2 \
                    RETURNING tx, position";
        let mut row = sqlx::query(lock)
            .bind(ts(Utc::now()))
            .bind(CHECKPOINT)
            .fetch_optional(&mut *tx)
            .await?;
        if row.is_none() {
            sqlx::query(
                "INSERT INTO projector_checkpoints (name, tx, position, updated_at) \
                 VALUES ($1, 0, 0, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(CHECKPOINT)
            .bind(ts(Utc::now()))
            .execute(&mut *tx)
            .await?;
            row = sqlx::query(lock)
                .bind(ts(Utc::now()))
                .bind(CHECKPOINT)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let current = match row {
            None => Position::START,
            Some(row) => Position {
                tx: u64::try_from(row.try_get::<i64, _>("tx")?).unwrap_or_default(),
                global: row.try_get("position")?,
            },
        };
        if current != from {
            return Err(ProjectionError::CheckpointMoved {
                expected: from,
                found: current,
            });
        }
        let mut prev = if from == Position::START {
            GENESIS.to_string()
        } else {
            sqlx::query_scalar::<_, String>("SELECT hash FROM event_hashes WHERE position = $1")
                .bind(from.global)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    ProjectionError::Corrupt(format!(
                        "the hash chain's last hash (position {from}) is missing from event_hashes; \
                         run `accessctl audit verify`"
                    ))
                })?
        };
        let mut links = Vec::with_capacity(events.len());
        for event in &events {
            let hash = event_hash(event, &prev).map_err(|detail| {
                ProjectionError::Corrupt(format!(
                    "event at position {} (customer {}, sequence {}) cannot be hashed: {detail}",
                    event.position, event.aggregate_id, event.sequence
                ))
            })?;
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            links.push((event.position, hash, prev_hash));
        }
        // 4 parameters a row: 1,000 rows stay under SQLite's limit.
        for chunk in links.chunks(1000) {
            let mut insert =
                QueryBuilder::new("INSERT INTO event_hashes (position, tx, hash, prev_hash) ");
            insert.push_values(chunk, |mut b, (position, hash, prev_hash)| {
                b.push_bind(position.global)
                    .push_bind(to_i64(position.tx))
                    .push_bind(hash.clone())
                    .push_bind(prev_hash.clone());
            });
            insert.build().execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE projector_checkpoints SET tx = $1, position = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(to_i64(to.tx))
        .bind(to.global)
        .bind(ts(Utc::now()))
        .bind(CHECKPOINT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Extended {
            hashed: events.len() as u64,
            at: to,
        })
    })
}

/// Hashes every event not hashed yet (in batches of [`BATCH`], each in one
/// transaction) and returns the head: the newest hashed event and its hash
/// (None while there are no events).
pub async fn extend(store: &Store) -> Result<Option<ChainHead>, ProjectionError> {
    loop {
        match extend_batch(store, BATCH).await {
            Ok(done) if done.hashed == 0 => break,
            Ok(_) => {}
            // Another process hashed these: go on from where it is.
            Err(ProjectionError::CheckpointMoved { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    head(store).await
}

/// [`extend`] until the chain includes every event committed before the
/// call. On PostgreSQL an event is only hashed once no older transaction
/// is still running (docs/adr/0002-global-order.md), so this may take a
/// moment; fails with `Lagging` after `timeout`.
pub async fn catch_up(
    store: &Store,
    timeout: std::time::Duration,
) -> Result<Option<ChainHead>, ProjectionError> {
    let target = store.head().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let head = extend(store).await?;
        let at = head.as_ref().map_or(Position::START, |h| h.position);
        if at >= target {
            return Ok(head);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProjectionError::Lagging {
                checkpoint: at,
                head: target,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Drops every stored hash so that the chain is computed again from the
/// first event. Only for the one-time migration that seals personal data
/// of events written before encryption (`accessctl keys seal-legacy`):
/// it changes stored events on purpose, so the chain starts over and the
/// operator records the new head (docs/operations.md).
pub async fn restart(store: &Store) -> Result<(), ProjectionError> {
    on_store!(store, write, |pool, _ts, _get_ts, _pg| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM event_hashes")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM projector_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}
