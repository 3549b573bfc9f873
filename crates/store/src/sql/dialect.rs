//! What differs between PostgreSQL and SQLite, and nothing else: the sqlx
//! driver and how to connect, the migrations, SQL fragments (the feed's
//! order and visibility watermark, JSON and row locks), how JSON and
//! timestamps are bound and read, bulk inserts (`COPY` or batched
//! `INSERT`s), table cloning for rebuilds, error codes, and what follows a
//! forget. Implemented by `postgres::Postgres` and `sqlite::Sqlite`.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{Database, Pool};

use super::{Fut, Query, Value};
use crate::{Position, StoreError};

/// A statement of the dialect's driver, being bound.
pub type SqlxQuery<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// A connection of the dialect's driver.
pub type Conn<D> = <<D as Dialect>::DB as Database>::Connection;

/// The writer and the reader pools of a database.
pub type WriterReader<DB> = (Pool<DB>, Pool<DB>);

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
    /// Appended to a `SELECT` to lock the rows it reads until the
    /// transaction ends (SQLite's writer lock already does).
    pub for_update: &'static str,
    /// Appended to a `SELECT` of queued rows so that concurrent claimers
    /// pass over each other's rows (SQLite has one writer at a time).
    pub skip_locked: &'static str,
}

/// One database's dialect.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type DB: Database;
    /// `postgres` or `sqlite`.
    const KIND: &'static str;

    fn fragments() -> &'static Fragments;

    /// The writer and reader pools (the same pool where one serves both).
    fn connect(
        url: &str,
        max_connections: u32,
    ) -> BoxFuture<'_, Result<WriterReader<Self::DB>, StoreError>>;

    /// The migrations under `migrations/<kind>/`.
    fn migrator() -> &'static sqlx::migrate::Migrator;

    /// The statement run first in a transaction that must see one moment
    /// of the database.
    fn snapshot_read() -> Option<&'static str>;

    fn rows_affected(done: &<Self::DB as Database>::QueryResult) -> u64;

    /// Whether `err` says a table does not exist.
    fn is_missing_table(err: &sqlx::Error) -> bool;

    /// Appends the feed's condition "after `after`": never an event whose
    /// transaction may still commit.
    fn push_feed_after(q: &mut Query, after: Position);

    fn bind_json<'q>(
        q: SqlxQuery<'q, Self::DB>,
        value: Option<serde_json::Value>,
    ) -> SqlxQuery<'q, Self::DB>;

    fn read_json(row: &DbRow<Self>, column: &str)
        -> Result<Option<serde_json::Value>, sqlx::Error>;

    fn bind_stamp<'q>(
        q: SqlxQuery<'q, Self::DB>,
        value: Option<DateTime<Utc>>,
    ) -> SqlxQuery<'q, Self::DB>;

    fn read_stamp(row: &DbRow<Self>, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;

    /// Whether the database has a bulk insert better than multi-row
    /// `INSERT`s ([`Dialect::copy_in`]).
    const BULK_COPY: bool;

    /// The bulk insert (`COPY`) when [`Dialect::BULK_COPY`].
    fn copy_in<'c>(
        conn: &'c mut Conn<Self>,
        table: &'c str,
        columns: &'c str,
        rows: &'c [Vec<Value>],
    ) -> Fut<'c, ()>;

    /// See [`super::Tx::clone_table`].
    fn clone_table<'c>(
        conn: &'c mut Conn<Self>,
        live: &'c str,
        new: &'c str,
        indexes: bool,
        generation: i64,
    ) -> Fut<'c, ()>;

    /// See [`super::Tx::copy_indexes`].
    fn copy_indexes<'c>(
        conn: &'c mut Conn<Self>,
        live: &'c str,
        new: &'c str,
        generation: i64,
    ) -> Fut<'c, ()>;

    /// After a forget is committed (SQLite truncates its write-ahead log).
    fn after_forget(writer: &Pool<Self::DB>) -> BoxFuture<'_, Result<(), StoreError>>;
}
