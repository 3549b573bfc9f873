//! Reading the chain's inputs as stored: raw event rows in the global
//! order, and the stored links of `event_hashes`.

use access_store::sql::{Query, Value};
use access_store::{Position, Store};

use super::recipe::StoredEvent;
use crate::ProjectionError;

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
    let db = store.sql();
    let sql = db.sql();
    let mut q = Query::new(format!(
        "SELECT {tx} AS tx, global_position, aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload{json} AS payload, metadata{json} AS metadata FROM events WHERE 1 = 1",
        tx = sql.event_tx,
        json = sql.json_as_text,
    ));
    db.push_feed_after(&mut q, after);
    q.push(&format!(" ORDER BY {} LIMIT ", sql.feed_order))
        .push_bind(i64::from(limit));
    let mut out = Vec::new();
    for row in db.read(&q).await? {
        let tx = row.text("tx")?;
        out.push(StoredEvent {
            position: Position {
                tx: tx_of(&tx)?,
                global: row.int("global_position")?,
            },
            aggregate_type: row.text("aggregate_type")?,
            aggregate_id: row.text("aggregate_id")?,
            sequence: row.int("sequence")?,
            event_type: row.text("event_type")?,
            event_version: row.text("event_version")?,
            payload: row.text("payload")?,
            metadata: row.text("metadata")?,
        });
    }
    Ok(out)
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
    let q = Query::new(
        "SELECT position, tx, hash, prev_hash FROM event_hashes \
         WHERE (tx, position) > ($1, $2) AND (tx, position) <= ($3, $4) \
         ORDER BY tx, position LIMIT $5",
    )
    .bind(Value::count(after.tx))
    .bind(after.global)
    .bind(Value::count(up_to.tx))
    .bind(up_to.global)
    .bind(i64::from(limit));
    let mut out = Vec::new();
    for row in store.sql().read(&q).await? {
        out.push(HashRow {
            position: row.position("tx", "position")?,
            hash: row.text("hash")?,
            prev_hash: row.text("prev_hash")?,
        });
    }
    Ok(out)
}

/// The last stored hash row's place (None when there is none).
pub(super) async fn last_hashed(store: &Store) -> Result<Option<Position>, ProjectionError> {
    let q =
        Query::new("SELECT tx, position FROM event_hashes ORDER BY tx DESC, position DESC LIMIT 1");
    let row = store.sql().read_optional(&q).await?;
    Ok(row.map(|r| r.position("tx", "position")).transpose()?)
}

/// The stored hash of the event at `global`.
pub(super) async fn stored_hash(
    store: &Store,
    global: i64,
) -> Result<Option<String>, ProjectionError> {
    let q = Query::new("SELECT hash FROM event_hashes WHERE position = $1").bind(global);
    let row = store.sql().read_optional(&q).await?;
    Ok(row.map(|r| r.text("hash")).transpose()?)
}
