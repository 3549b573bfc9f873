//! Rebuilding the projections from the events.
//!
//! - [`rebuild`]: replays every event into fresh tables beside the live
//!   ones, then swaps them in one transaction (readers never see a
//!   half-built table) and points the live checkpoint at the rebuilt
//!   position; the live projector continues from there. The checkpoint
//!   never goes back: if the live projector got further meanwhile, the
//!   rebuild tables catch up with it before the swap.
//! - [`check`]: rebuilds aside up to the live checkpoint (read in the same
//!   snapshot as the live tables) and compares digests of both.

use std::time::{Duration, Instant};

use access_domain::CustomerEvent;
use access_store::prelude::*;
use access_store::sql::{Query, TableCopy};
use access_store::{Position, Store};
use chrono::Utc;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::db::{self, LIVE, REBUILD};
use crate::ProjectionError;

/// Events read per batch while rebuilding.
const BATCH: u32 = 5000;

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub events: u64,
    pub elapsed: Duration,
    pub position: Position,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Drops and recreates the rebuild tables with the live tables' shape.
/// The audit trail's indexes (its primary key too, where the database can
/// add it later) are built after the bulk load ([`index_rebuild_tables`]):
/// one sort each instead of a million random inserts into four B-trees;
/// on SQLite before it, so that no single transaction holds the only
/// write lock for the whole index build.
/// The state table keeps its own: the upsert needs the key. `generation`
/// makes index names unique (after a swap the live tables carry the
/// rebuild tables' index names).
async fn fresh_rebuild_tables(store: &Store, generation: i64) -> Result<(), ProjectionError> {
    let mut tx = store.sql().begin().await?;
    for table in [REBUILD.access_state, REBUILD.audit_trail] {
        tx.execute(&Query::new(format!("DROP TABLE IF EXISTS {table}")))
            .await?;
    }
    tx.clone_table(
        copy(LIVE.access_state, REBUILD.access_state, generation),
        true,
    )
    .await?;
    tx.clone_table(
        copy(LIVE.audit_trail, REBUILD.audit_trail, generation),
        false,
    )
    .await?;
    tx.drop_checkpoint(REBUILD.checkpoint).await?;
    tx.commit().await?;
    Ok(())
}

fn copy<'a>(live: &'a str, new: &'a str, generation: i64) -> TableCopy<'a> {
    TableCopy {
        live,
        new,
        generation,
    }
}

/// Gives the rebuilt audit trail the live one's indexes (and primary key
/// on PostgreSQL), read from the catalog so they follow the migrations.
async fn index_rebuild_tables(store: &Store, generation: i64) -> Result<(), ProjectionError> {
    let mut tx = store.sql().begin().await?;
    tx.copy_indexes(copy(LIVE.audit_trail, REBUILD.audit_trail, generation))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The bulk load of a rebuild or a check: every event from the start (up
/// to `until`) into fresh rebuild tables, with the forgotten customers'
/// audit rows scrubbed and the indexes built once at the end.
async fn bulk_replay(
    store: &Store,
    until: Option<Position>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Position, u64), ProjectionError> {
    let generation = Utc::now().timestamp_millis();
    fresh_rebuild_tables(store, generation).await?;
    let index_after = store.sql().sql().index_after_bulk_load;
    if !index_after {
        index_rebuild_tables(store, generation).await?;
    }
    let mut forgotten = Vec::new();
    let reached = replay_into_rebuild(
        store,
        Position::START,
        until,
        false,
        &mut forgotten,
        progress,
    )
    .await?;
    if index_after {
        index_rebuild_tables(store, generation).await?;
    }
    db::scrub_forgotten(store, REBUILD, &forgotten).await?;
    Ok(reached)
}

/// Projects events into the rebuild tables from `from` up to `until`
/// (inclusive; `None`: everything readable now). Returns the position
/// reached and the number of events. The next batch is read (and decoded)
/// while the current one is written: the read's database time and
/// decoding overlap the write's.
/// With `scrub` false, forgotten customers are not scrubbed but added to
/// `forgotten` (for [`db::scrub_forgotten`] once the tables are indexed).
async fn replay_into_rebuild(
    store: &Store,
    mut from: Position,
    until: Option<Position>,
    scrub: bool,
    forgotten: &mut Vec<access_domain::CustomerId>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Position, u64), ProjectionError> {
    let mut count = 0u64;
    let mut events = store.read_feed(from, BATCH).await?;
    loop {
        let mut done = events.is_empty();
        if let Some(limit) = until {
            let before = events.len();
            events.retain(|e| e.position <= limit);
            done =
                done || events.len() < before || events.last().is_some_and(|e| e.position >= limit);
        }
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok((from, count));
        };
        if !scrub {
            forgotten.extend(
                events
                    .iter()
                    .filter(|e| matches!(e.event, CustomerEvent::CustomerForgotten { .. }))
                    .map(|e| e.customer_id),
            );
        }
        let (projected, next) = if done {
            (
                db::project_batch_with(store, REBUILD, from, &events, scrub).await,
                Ok(Vec::new()),
            )
        } else {
            tokio::join!(
                db::project_batch_with(store, REBUILD, from, &events, scrub),
                store.read_feed(last, BATCH)
            )
        };
        from = projected?;
        count += events.len() as u64;
        progress(count);
        if done {
            return Ok((from, count));
        }
        events = next?;
    }
}

/// How long a rebuild waits for the feed to pass events committed before
/// it started.
const HELD_BACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Rebuilds the live projections from every event and swaps them in.
/// `progress` is called with the number of events replayed so far.
pub async fn rebuild(
    store: &Store,
    progress: &mut dyn FnMut(u64),
) -> Result<RebuildReport, ProjectionError> {
    let prepared = prepare(store, progress).await?;
    swap_in(store, prepared, progress).await
}

/// A rebuild whose tables are filled but not yet swapped in: the first
/// half of [`rebuild`] ([`prepare`], then [`swap_in`]); separate so that
/// a test can let the live projector move in between.
#[derive(Debug)]
pub struct Prepared {
    started: Instant,
    position: Position,
    events: u64,
}

impl Prepared {
    /// The position the rebuild tables hold.
    pub fn position(&self) -> Position {
        self.position
    }
}

/// Replays every event committed before the call into fresh rebuild
/// tables, beside the live ones (which are not touched).
pub async fn prepare(
    store: &Store,
    progress: &mut dyn FnMut(u64),
) -> Result<Prepared, ProjectionError> {
    let started = Instant::now();
    // Every event committed before the rebuild starts is in the result:
    // the feed may hold back behind a transaction still open anywhere on
    // the database server (docs/adr/0002-global-order.md), so wait for it
    // rather than stop short.
    let head = store.head().await?;
    let (mut position, mut events) = bulk_replay(store, None, progress).await?;
    // Catch up with what arrived meanwhile (until nothing new).
    let deadline = Instant::now() + HELD_BACK_LIMIT;
    loop {
        let (p, n) =
            replay_into_rebuild(store, position, None, true, &mut Vec::new(), progress).await?;
        position = p;
        events += n;
        if n == 0 && position >= head {
            break;
        }
        if n == 0 {
            if Instant::now() > deadline {
                return Err(ProjectionError::Lagging {
                    checkpoint: position,
                    head,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(Prepared {
        started,
        position,
        events,
    })
}

/// Swaps prepared rebuild tables in place of the live ones. The live
/// checkpoint never goes back: when the live projector has got further
/// than the rebuild (events committed after the rebuild's last read), the
/// rebuild tables catch up with it first, and the swap, under the
/// checkpoint's lock, tries again.
pub async fn swap_in(
    store: &Store,
    prepared: Prepared,
    progress: &mut dyn FnMut(u64),
) -> Result<RebuildReport, ProjectionError> {
    let Prepared {
        started,
        mut position,
        mut events,
    } = prepared;
    let deadline = Instant::now() + HELD_BACK_LIMIT;
    while let Some(live) = swap(store, position).await? {
        if Instant::now() > deadline {
            return Err(ProjectionError::Lagging {
                checkpoint: position,
                head: live,
            });
        }
        let done = events;
        let (p, n) = replay_into_rebuild(store, position, None, true, &mut Vec::new(), &mut |n| {
            progress(done + n)
        })
        .await?;
        tracing::info!(rebuilt = %p, %live, events = n, "rebuild: caught up with the live projector before the swap");
        position = p;
        events += n;
        if n == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(RebuildReport {
        events,
        elapsed: started.elapsed(),
        position,
    })
}

/// Puts the rebuild tables in place of the live ones, and the live
/// checkpoint at `position` (what the rebuild tables hold), atomically,
/// unless the live checkpoint is already further: then nothing changes
/// and the live checkpoint is returned.
async fn swap(store: &Store, position: Position) -> Result<Option<Position>, ProjectionError> {
    let mut tx = store.sql().begin().await?;
    // Hold the live projector off while the tables change.
    let live = tx.lock_checkpoint(LIVE.checkpoint).await?;
    if live > position {
        return Ok(Some(live));
    }
    for (live, rebuilt) in [
        (LIVE.access_state, REBUILD.access_state),
        (LIVE.audit_trail, REBUILD.audit_trail),
    ] {
        for statement in [
            format!("ALTER TABLE {live} RENAME TO {live}_old"),
            format!("ALTER TABLE {rebuilt} RENAME TO {live}"),
            format!("DROP TABLE {live}_old"),
        ] {
            tx.execute(&Query::new(statement)).await?;
        }
    }
    tx.set_checkpoint(LIVE.checkpoint, position).await?;
    tx.drop_checkpoint(REBUILD.checkpoint).await?;
    tx.commit().await?;
    Ok(None)
}

/// Digests of the two projections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub access_state: String,
    pub audit_trail: String,
    /// Rows in each.
    pub access_state_rows: u64,
    pub audit_trail_rows: u64,
}

/// What `check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub position: Position,
    pub live: Digests,
    pub rebuilt: Digests,
}

impl CheckReport {
    pub fn matches(&self) -> bool {
        self.live == self.rebuilt
    }
}

/// Digest of a table's rows in key order, each row as its JSON form.
async fn digests_of(
    store: &Store,
    tables: db::Tables,
) -> Result<(Digests, Position), ProjectionError> {
    // One transaction: the checkpoint and the rows of the same moment.
    let mut tx = store.sql().begin_read().await?;
    let position = match tx
        .fetch_optional(
            &Query::new("SELECT tx, position FROM projector_checkpoints WHERE name = $1")
                .bind(tables.checkpoint),
        )
        .await?
    {
        Some(row) => row.position("tx", "position")?,
        None => Position::START,
    };
    let state = Query::new(format!(
        "SELECT {} FROM {} ORDER BY customer_id",
        db::STATE_COLUMNS,
        tables.access_state
    ));
    let (access_state, access_state_rows) = digest(tx.stream(&state), db::state_row).await?;
    let audit = Query::new(format!(
        "SELECT {} FROM {} ORDER BY tx, position",
        db::AUDIT_COLUMNS,
        tables.audit_trail
    ));
    let (audit_trail, audit_trail_rows) = digest(tx.stream(&audit), db::audit_from_row).await?;
    tx.commit().await?;
    Ok((
        Digests {
            access_state,
            audit_trail,
            access_state_rows,
            audit_trail_rows,
        },
        position,
    ))
}

/// The SHA-256 of rows read as `T`, each as its JSON form and a newline,
/// and their number.
async fn digest<T: serde::Serialize>(
    mut rows: futures::stream::BoxStream<'_, Result<access_store::sql::Row, sqlx::Error>>,
    read: impl Fn(&access_store::sql::Row) -> Result<T, ProjectionError>,
) -> Result<(String, u64), ProjectionError> {
    let mut hash = Sha256::new();
    let mut count = 0u64;
    while let Some(row) = rows.try_next().await? {
        hash.update(
            serde_json::to_vec(&read(&row)?)
                .map_err(|e| ProjectionError::Corrupt(e.to_string()))?,
        );
        hash.update(b"\n");
        count += 1;
    }
    Ok((hex::encode(hash.finalize()), count))
}

/// Rebuilds aside up to the live checkpoint and compares digests. The
/// live tables are not touched.
pub async fn check(
    store: &Store,
    progress: &mut dyn FnMut(u64),
) -> Result<CheckReport, ProjectionError> {
    let (live, position) = digests_of(store, LIVE).await?;
    let (reached, _) = bulk_replay(store, Some(position), progress).await?;
    if reached != position {
        return Err(ProjectionError::Corrupt(format!(
            "the rebuild reached {reached}, not the live checkpoint {position}"
        )));
    }
    let (rebuilt, _) = digests_of(store, REBUILD).await?;
    drop_rebuild_tables(store).await?;
    Ok(CheckReport {
        position,
        live,
        rebuilt,
    })
}

async fn drop_rebuild_tables(store: &Store) -> Result<(), ProjectionError> {
    let mut tx = store.sql().begin().await?;
    for table in [REBUILD.access_state, REBUILD.audit_trail] {
        tx.execute(&Query::new(format!("DROP TABLE IF EXISTS {table}")))
            .await?;
    }
    tx.drop_checkpoint(REBUILD.checkpoint).await?;
    tx.commit().await?;
    Ok(())
}
