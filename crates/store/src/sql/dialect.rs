//! What differs between PostgreSQL and SQLite, and nothing else: the sqlx
//! driver and how to connect, the migrations, SQL fragments (the feed's
//! order and visibility watermark, JSON, skipping locked rows), how JSON and
//! timestamps are bound and read, bulk inserts (`COPY` or batched
//! `INSERT`s), table cloning for rebuilds, error codes, and what follows a
//! forget. Implemented by `postgres::Postgres` and `sqlite::Sqlite`.

use futures::future::BoxFuture;
use sqlx::{Database, Pool};

use chrono::{DateTime, Utc};

use super::{Fut, Query, Value};
use crate::error::ErrorCode;
use crate::{Position, StoreError};

/// A statement of the dialect's driver, being bound.
pub type SqlxQuery<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// A connection of the dialect's driver.
pub type Conn<D> = <<D as Dialect>::DB as Database>::Connection;

/// The writer and the reader pools of a database.
pub type WriterReader<DB> = (Pool<DB>, Pool<DB>, Keepalive);

/// What lives as long as the pools (e.g. the task following a PostgreSQL
/// primary, stopped when dropped).
pub type Keepalive = Option<Box<dyn std::any::Any + Send + Sync>>;

/// What to do when the database moved to another host.
pub type OnSwitch = Option<std::sync::Arc<dyn Fn() + Send + Sync>>;

/// A dialect's connecting: to its writer and reader pools.
pub type Connecting<'a, DB> = BoxFuture<'a, Result<WriterReader<DB>, StoreError>>;

/// A table cloned for a rebuild: from `live` to `new`; `generation` makes
/// index names unique where the database needs them so.
#[derive(Debug, Clone, Copy)]
pub struct TableCopy<'a> {
    pub live: &'a str,
    pub new: &'a str,
    pub generation: i64,
}

/// A row of the dialect's driver.
pub type DbRow<D> = <<D as Dialect>::DB as Database>::Row;

/// SQL that differs between the databases, as fragments to write into
/// statements that are otherwise the same.
#[derive(Debug)]
pub struct Fragments {
    /// An event row's transaction id, as text (`0` where there is none).
    pub event_tx: &'static str,
    /// The feed's order over `events`, ascending and descending.
    pub feed_order: &'static str,
    pub feed_order_desc: &'static str,
    /// Whether the database fills `events.recorded_at` itself.
    pub recorded_at_default: bool,
    /// Appended to a JSON column to read its stored text.
    pub json_as_text: &'static str,
    /// Appended to a text parameter to store it as JSON as given.
    pub text_as_json: &'static str,
    /// Appended to a `SELECT` of queued rows so that concurrent claimers
    /// pass over each other's rows (SQLite has one writer at a time).
    pub skip_locked: &'static str,
    /// Whether a rebuild builds the audit trail's indexes after its bulk
    /// load (one sort each, in one transaction). Not on a one-writer
    /// database: there one long index build would hold the only write
    /// lock, so the indexes are made before the load and filled batch by
    /// batch.
    pub index_after_bulk_load: bool,
}

impl Fragments {
    /// Plain SQL for a database with one writer at a time: positions in
    /// commit order (no transaction ids, no watermark), JSON stored as
    /// text, and nothing to lock (the writer lock is the lock).
    pub const ONE_WRITER: Fragments = Fragments {
        event_tx: "'0'",
        feed_order: "global_position",
        feed_order_desc: "global_position DESC",
        recorded_at_default: false,
        json_as_text: "",
        text_as_json: "",
        skip_locked: "",
        index_after_bulk_load: false,
    };
}

/// A value whose stored form is the dialect's: JSON ([`Value::Json`]) or a
/// timestamp ([`Value::Stamp`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Native {
    Json(Option<serde_json::Value>),
    Stamp(Option<DateTime<Utc>>),
}

impl From<Native> for Value {
    fn from(native: Native) -> Self {
        match native {
            Native::Json(v) => Value::Json(v),
            Native::Stamp(v) => Value::Stamp(v),
        }
    }
}

/// One database's dialect.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type DB: Database;
    /// `postgres` or `sqlite`.
    const KIND: &'static str;

    /// Its SQL fragments.
    const SQL: &'static Fragments;
    /// The statement run first in a transaction that must see one moment
    /// of the database.
    const SNAPSHOT_READ: Option<&'static str>;

    /// The writer and reader pools (the same pool where one serves both).
    /// `on_switch` is called when the database moved to another host (a
    /// PostgreSQL host list: [`crate::pg_hosts`]).
    fn connect(url: &str, max_connections: u32, on_switch: OnSwitch) -> Connecting<'_, Self::DB>;

    /// The migrations under `migrations/<kind>/`.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    fn rows_affected(done: &<Self::DB as Database>::QueryResult) -> u64;

    /// Whether one of the database's error codes says `what`.
    fn code_says(code: &str, what: ErrorCode) -> bool;

    /// Whether `err` says a table does not exist.
    fn is_missing_table(err: &sqlx::Error) -> bool;

    /// Appends the feed's condition "after `after`": never an event whose
    /// transaction may still commit.
    fn push_feed_after(q: &mut Query, after: Position);

    /// Binds a value whose stored form is the dialect's.
    fn bind<'q>(q: SqlxQuery<'q, Self::DB>, value: Native) -> SqlxQuery<'q, Self::DB>;

    /// Reads a JSON column (`json`), else a timestamp column.
    fn read(row: &DbRow<Self>, column: &str, json: bool) -> Result<Native, sqlx::Error>;

    /// Whether the database has a bulk insert better than multi-row
    /// `INSERT`s ([`Dialect::copy_in`]).
    const BULK_COPY: bool = false;

    /// The bulk insert (`COPY`) when [`Dialect::BULK_COPY`].
    fn copy_in<'c>(
        _conn: &'c mut Conn<Self>,
        _table: &'c str,
        _columns: &'c str,
        _rows: &'c [Vec<Value>],
    ) -> Fut<'c, ()> {
        Box::pin(async {
            Err(sqlx::Error::Protocol(
                "no bulk copy in this database".into(),
            ))
        })
    }

    /// See [`super::Tx::clone_table`].
    fn clone_table<'c>(conn: &'c mut Conn<Self>, copy: TableCopy<'c>, indexes: bool)
        -> Fut<'c, ()>;

    /// See [`super::Tx::copy_indexes`].
    fn copy_indexes<'c>(conn: &'c mut Conn<Self>, copy: TableCopy<'c>) -> Fut<'c, ()>;

    /// After a forget is committed: nothing unless the database keeps
    /// older copies of pages that a statement can clear.
    fn after_forget(_writer: &Pool<Self::DB>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
