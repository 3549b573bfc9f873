//! Extending the chain: hashing the events not hashed yet, in batches,
//! each with the chain's checkpoint in one transaction; and starting it
//! over.

use access_store::prelude::*;
use access_store::sql::{Query, Value};
use access_store::{Position, Store};

use super::read::read_events;
use super::recipe::{event_hash, GENESIS};
use super::{head, ChainHead, CHECKPOINT};
use crate::db;
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
    let mut tx = store.sql().begin().await?;
    // A second extender waits here, then sees the moved checkpoint.
    let current = tx.lock_checkpoint(CHECKPOINT).await?;
    if current != from {
        return Err(ProjectionError::CheckpointMoved {
            expected: from,
            found: current,
        });
    }
    let mut prev = if from == Position::START {
        GENESIS.to_string()
    } else {
        let q = Query::new("SELECT hash FROM event_hashes WHERE position = $1").bind(from.global);
        tx.fetch_optional(&q)
            .await?
            .map(|row| row.text("hash"))
            .transpose()?
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
        let mut insert = Query::new("INSERT INTO event_hashes (position, tx, hash, prev_hash) ");
        insert.push_values(chunk, |(position, hash, prev_hash)| {
            vec![
                position.global.into(),
                Value::count(position.tx),
                hash.clone().into(),
                prev_hash.clone().into(),
            ]
        });
        tx.execute(&insert).await?;
    }
    tx.set_checkpoint(CHECKPOINT, to).await?;
    tx.commit().await?;
    Ok(Extended {
        hashed: events.len() as u64,
        at: to,
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
    let mut tx = store.sql().begin().await?;
    tx.execute(&Query::new("DELETE FROM event_hashes")).await?;
    tx.drop_checkpoint(CHECKPOINT).await?;
    tx.commit().await?;
    Ok(())
}
