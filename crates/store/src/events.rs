//! [`EventStore`]: a customer's events and state, and every event in the
//! global order. (The append, the write side of it, is in `append.rs`.)

use access_domain::{CustomerId, EmailAddress};
use async_trait::async_trait;

use crate::cache::Current;
use crate::codec::{self, RawRow, AGGREGATE_TYPE};
use crate::keys::{self, KeyState, Keyring, Opener};
use crate::sql::{Db, Query, Row};
use crate::{Append, Appended, Loaded, OutboxMessage, Position, RecordedEvent, Store, StoreError};

/// Events and appends.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// The customer's state: the latest snapshot plus newer events (or all
    /// events, if the snapshot is missing or no longer readable).
    async fn load(&self, customer_id: CustomerId) -> Result<Loaded, StoreError>;

    /// The customer's state by replaying every event (ignores snapshots).
    async fn load_by_replay(&self, customer_id: CustomerId) -> Result<Loaded, StoreError> {
        let events = self.events_of(customer_id).await?;
        Ok(Loaded::from_events(events.into_iter().map(|e| e.event)))
    }

    /// Every event of one customer, in sequence order.
    async fn events_of(&self, customer_id: CustomerId) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Writes a command's events, reservations, idempotency record and (at
    /// the interval) a snapshot, all or nothing.
    async fn append(&self, append: Append<'_>) -> Result<Appended, StoreError> {
        self.append_with_outbox(append, &[]).await
    }

    /// [`EventStore::append`], with the mail the command calls for recorded
    /// in the same transaction (the outbox).
    async fn append_with_outbox(
        &self,
        append: Append<'_>,
        outbox: &[OutboxMessage],
    ) -> Result<Appended, StoreError>;

    /// Up to `limit` events after `after`, in the global order, never
    /// passing an event whose transaction may still commit.
    async fn read_feed(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` committed events with a global position above
    /// `after`, in position order, without the feed's hold-back: for
    /// one-shot reads of everything committed now (reports), never for a
    /// reader that keeps a checkpoint (it could skip a late commit).
    async fn scan(&self, after: i64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The newest committed event's position (START when empty). A feed
    /// reader that has passed it has seen every event committed so far.
    async fn head(&self) -> Result<Position, StoreError>;

    /// The customer's current version (number of events), from the stream.
    async fn version_of(&self, customer_id: CustomerId) -> Result<u64, StoreError>;

    /// The customer holding `email` as a login (or pending change target;
    /// an expired pending change counts until a claim releases it).
    async fn email_holder(&self, email: &EmailAddress) -> Result<Option<CustomerId>, StoreError>;

    /// Number of events in the store.
    async fn count_events(&self) -> Result<u64, StoreError>;
}

/// Every event column, with the customer's key (to open personal data).
fn select_event(db: &Db) -> String {
    format!("SELECT {} {}", event_columns(db), event_source(""))
}

/// The columns of [`select_event`].
fn event_columns(db: &Db) -> String {
    format!(
        "global_position, {} AS tx, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, recorded_at, k.wrapped_key, k.customer_id IS NOT NULL AS has_key",
        db.sql().event_tx
    )
}

/// The `FROM` of [`select_event`], with `join` (a join on `events`) before
/// the key's.
fn event_source(join: &str) -> String {
    format!("FROM events{join} LEFT JOIN customer_keys k ON k.customer_id = events.aggregate_id")
}

/// Which events a filtered feed read wants (empty: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedSelection<'a> {
    /// Any of these event types.
    pub event_types: &'a [String],
    pub customer_id: Option<CustomerId>,
}

/// What a filtered feed read found.
#[derive(Debug, Default)]
pub struct FeedScan {
    /// The matching events, in the global order.
    pub events: Vec<RecordedEvent>,
    /// After every event looked at (the last match when `limit` stopped
    /// the read); the `after` given when there was nothing to look at.
    pub next: Position,
    /// Events looked at (matching or not).
    pub scanned: u64,
}

impl FeedSelection<'_> {
    /// The condition, its values bound into `q`.
    fn push_condition(&self, q: &mut Query) {
        q.push("(1 = 1");
        if !self.event_types.is_empty() {
            q.push(" AND event_type");
            q.push_in(self.event_types.iter().map(String::as_str));
        }
        if let Some(id) = self.customer_id {
            q.push(" AND aggregate_id = ").push_bind(id.to_string());
        }
        q.push(")");
    }
}

/// A row's place in the global order (`tx` as text: PostgreSQL's xid8).
pub(crate) fn position_of(row: &Row) -> Result<Position, StoreError> {
    let tx = row.text("tx")?;
    Ok(Position {
        tx: tx
            .parse()
            .map_err(|_| StoreError::Database(format!("tx_id `{tx}` is not a number")))?,
        global: row.int("global_position")?,
    })
}

fn raw_row(row: &Row) -> Result<RawRow, StoreError> {
    let position = position_of(row)?;
    let mut raw = RawRow {
        key: KeyState::from_columns(row.bool("has_key")?, row.opt_text("wrapped_key")?),
        position: position.global,
        tx: position.tx,
        aggregate_id: row.text("aggregate_id")?,
        sequence: row.int("sequence")?,
        event_type: row.text("event_type")?,
        event_version: row.text("event_version")?,
        payload: serde_json::Value::Null,
        metadata: serde_json::Value::Null,
        recorded_at: chrono::DateTime::<chrono::Utc>::MIN_UTC,
    };
    raw.payload = row
        .json("payload")
        .map_err(|e| codec::corrupt(&raw, format!("payload is not JSON: {e}")))?;
    raw.metadata = row
        .json("metadata")
        .map_err(|e| codec::corrupt(&raw, format!("metadata is not JSON: {e}")))?;
    raw.recorded_at = row
        .stamp("recorded_at")
        .map_err(|e| codec::corrupt(&raw, format!("recorded_at: {e}")))?;
    Ok(raw)
}

fn decode_rows(rows: &[Row], keyring: &Keyring) -> Result<Vec<RecordedEvent>, StoreError> {
    let upcasters = codec::shared_upcasters();
    let mut opener = Opener::new(keyring);
    rows.iter()
        .map(|row| codec::decode(raw_row(row)?, &upcasters, &mut opener))
        .collect()
}

impl Store {
    /// Up to `limit` events after `after` that match `selection`, looking
    /// at no more than `scan` events of the feed (the filter runs in the
    /// database): a rare filter cannot make one read go through the whole
    /// store. Never passes an event whose transaction may still commit
    /// (as [`EventStore::read_feed`]).
    pub async fn read_feed_matching(
        &self,
        after: Position,
        scan: u32,
        limit: u32,
        selection: FeedSelection<'_>,
    ) -> Result<FeedScan, StoreError> {
        let sql = self.db.sql();
        // The window: the next `scan` events, numbered; then its matches
        // and its last event (where the cursor goes when the matches do
        // not fill `limit`).
        let mut q = Query::new(format!(
            "WITH w AS (SELECT global_position, row_number() OVER (ORDER BY {}) AS n \
             FROM events WHERE aggregate_type = $1",
            sql.feed_order
        ))
        .bind(AGGREGATE_TYPE);
        self.db.push_feed_after(&mut q, after);
        q.push(&format!(" ORDER BY {} LIMIT ", sql.feed_order))
            .push_bind(i64::from(scan.max(1)));
        q.push(&format!(") SELECT {}, w.n AS n, ", event_columns(&self.db)));
        selection.push_condition(&mut q);
        q.push(&format!(
            " AS matched {} WHERE ",
            event_source(" JOIN w USING (global_position)")
        ));
        selection.push_condition(&mut q);
        q.push(" OR w.n = (SELECT max(n) FROM w) ORDER BY w.n LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = self.db.read(&q).await?;
        let mut found = FeedScan {
            next: after,
            ..FeedScan::default()
        };
        let keyring = self.keyring()?;
        let upcasters = codec::shared_upcasters();
        let mut opener = Opener::new(keyring);
        for row in &rows {
            if found.events.len() >= limit as usize {
                break;
            }
            found.next = position_of(row)?;
            found.scanned = u64::try_from(row.int("n")?).unwrap_or_default();
            if row.bool("matched")? {
                found
                    .events
                    .push(codec::decode(raw_row(row)?, &upcasters, &mut opener)?);
            }
        }
        Ok(found)
    }

    /// The newest event the feed shows now (START when none): a reader that
    /// starts after it misses no event that commits later.
    pub async fn feed_head(&self) -> Result<Position, StoreError> {
        let sql = self.db.sql();
        let mut q = Query::new(format!(
            "SELECT {} AS tx, global_position FROM events WHERE aggregate_type = $1",
            sql.event_tx
        ))
        .bind(AGGREGATE_TYPE);
        self.db.push_feed_after(&mut q, Position::START);
        q.push(&format!(" ORDER BY {} LIMIT 1", sql.feed_order_desc));
        let row = self.db.read_optional(&q).await?;
        row.as_ref().map_or(Ok(Position::START), position_of)
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
        let snapshot = Query::new(
            "SELECT last_sequence, payload, k.wrapped_key, k.customer_id IS NOT NULL AS has_key \
             FROM snapshots LEFT JOIN customer_keys k ON k.customer_id = snapshots.aggregate_id \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(&id);
        if let Some(row) = self.db.read_optional(&snapshot).await? {
            let last = row.int("last_sequence")?;
            let key = KeyState::from_columns(row.bool("has_key")?, row.opt_text("wrapped_key")?);
            let customer = match row.json("payload") {
                Ok(payload) => crate::append::open_snapshot(keyring, &id, last, &key, payload)?,
                Err(e) => {
                    crate::append::snapshot_unreadable(&id, &e);
                    None
                }
            };
            if let Some(customer) = customer {
                let newer = self.events_after(customer_id, last).await?;
                return Ok(Current {
                    loaded: crate::append::from_snapshot(customer, last, newer),
                    key: key_of(&key)?,
                });
            }
        }
        let rows = self.event_rows(customer_id, 0).await?;
        let key = match rows.first() {
            Some(row) => KeyState::from_columns(row.bool("has_key")?, row.opt_text("wrapped_key")?),
            None => KeyState::Missing,
        };
        let events = decode_rows(&rows, keyring)?;
        Ok(Current {
            loaded: Loaded::from_events(events.into_iter().map(|e| e.event)),
            key: key_of(&key)?,
        })
    }

    async fn event_rows(
        &self,
        customer_id: CustomerId,
        after_sequence: i64,
    ) -> Result<Vec<Row>, StoreError> {
        let q = Query::new(format!(
            "{} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence",
            select_event(&self.db)
        ))
        .bind(AGGREGATE_TYPE)
        .bind(customer_id.to_string())
        .bind(after_sequence);
        Ok(self.db.read(&q).await?)
    }

    /// The customer's events after `after_sequence`.
    async fn events_after(
        &self,
        customer_id: CustomerId,
        after_sequence: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self.event_rows(customer_id, after_sequence).await?;
        decode_rows(&rows, self.keyring()?)
    }

    /// The states of several customers, each rebuilt from all its events
    /// (snapshots are not read), in one read: for deciding many commands
    /// at once that write nothing (a re-run of an import). A customer
    /// without events is absent.
    pub(crate) async fn load_replayed(
        &self,
        customer_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Loaded>, StoreError> {
        let mut states = std::collections::HashMap::new();
        if customer_ids.is_empty() {
            return Ok(states);
        }
        // The key of each event's customer by a lookup on its own (not a
        // join, for which PostgreSQL may read the whole key table).
        let mut q = Query::new(format!(
            "SELECT global_position, {} AS tx, aggregate_id, sequence, event_type, \
             event_version, payload, metadata, recorded_at, \
             (SELECT k.wrapped_key FROM customer_keys k \
              WHERE k.customer_id = events.aggregate_id) AS wrapped_key, \
             EXISTS (SELECT 1 FROM customer_keys k \
              WHERE k.customer_id = events.aggregate_id) AS has_key \
             FROM events WHERE aggregate_type = $1 AND aggregate_id",
            self.db.sql().event_tx
        ))
        .bind(AGGREGATE_TYPE);
        q.push_in(customer_ids.iter().copied());
        q.push(" ORDER BY aggregate_id, sequence");
        for recorded in self.read_events(q).await? {
            let loaded: &mut Loaded = states.entry(recorded.customer_id.to_string()).or_default();
            cqrs_es::Aggregate::apply(&mut loaded.customer, recorded.event);
            loaded.version += 1;
        }
        Ok(states)
    }

    async fn read_events(&self, q: Query) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = self.db.read(&q).await?;
        decode_rows(&rows, self.keyring()?)
    }
}

#[async_trait]
impl EventStore for Store {
    async fn load(&self, customer_id: CustomerId) -> Result<Loaded, StoreError> {
        self.load_current(customer_id, false)
            .await
            .map(|current| current.loaded)
    }

    async fn events_of(&self, customer_id: CustomerId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.events_after(customer_id, 0).await
    }

    async fn append_with_outbox(
        &self,
        append: Append<'_>,
        outbox: &[OutboxMessage],
    ) -> Result<Appended, StoreError> {
        self.append_keyed(append, outbox, None, None)
            .await
            .map(|(appended, _)| appended)
    }

    async fn read_feed(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut q = Query::new(format!(
            "{} WHERE aggregate_type = $1",
            select_event(&self.db)
        ))
        .bind(AGGREGATE_TYPE);
        self.db.push_feed_after(&mut q, after);
        q.push(&format!(" ORDER BY {} LIMIT ", self.db.sql().feed_order))
            .push_bind(i64::from(limit));
        self.read_events(q).await
    }

    async fn scan(&self, after: i64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let q = Query::new(format!(
            "{} WHERE aggregate_type = $1 AND global_position > $2 ORDER BY global_position LIMIT $3",
            select_event(&self.db)
        ))
        .bind(AGGREGATE_TYPE)
        .bind(after)
        .bind(i64::from(limit));
        self.read_events(q).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let sql = self.db.sql();
        let q = Query::new(format!(
            "SELECT {} AS tx, global_position FROM events ORDER BY {} LIMIT 1",
            sql.event_tx, sql.feed_order_desc
        ));
        let row = self.db.read_optional(&q).await?;
        row.as_ref().map_or(Ok(Position::START), position_of)
    }

    async fn version_of(&self, customer_id: CustomerId) -> Result<u64, StoreError> {
        let q = Query::new(
            "SELECT max(sequence) AS v FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(AGGREGATE_TYPE)
        .bind(customer_id.to_string());
        let v = match self.db.read_optional(&q).await? {
            Some(row) => row.opt_int("v")?,
            None => None,
        };
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    async fn email_holder(&self, email: &EmailAddress) -> Result<Option<CustomerId>, StoreError> {
        let q = Query::new("SELECT customer_id FROM login_emails WHERE email_key = $1")
            .bind(self.keyring()?.email_key(email));
        let Some(row) = self.db.read_optional(&q).await? else {
            return Ok(None);
        };
        let holder = row.text("customer_id")?;
        holder.parse().map(Some).map_err(|_| {
            StoreError::Database(format!("login_emails holds a bad customer id `{holder}`"))
        })
    }

    async fn count_events(&self) -> Result<u64, StoreError> {
        let row = self
            .db
            .read_optional(&Query::new("SELECT count(*) AS n FROM events"))
            .await?;
        let n = row.map(|r| r.int("n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or_default())
    }
}
