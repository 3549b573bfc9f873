//! From a [`Dialect`] to sqlx: binding [`Value`]s, reading [`Row`]s,
//! pools and transactions. The only generic code of the store, and the one
//! place its sqlx trait bounds are written ([`Bridge`]); everything above
//! goes through the object-safe [`Driver`] and [`TxDriver`].

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::migrate::Migrate;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row as _, Transaction,
    Type,
};

use super::dialect::{Conn, DbRow, Native, SqlxQuery};
use super::TableCopy;
use super::{Db, Dialect, Fragments, Fut, Kind, Query, Row, RowData, Value};
use crate::{Position, StoreError};

/// sqlx's side of a dialect. Implemented once, for every dialect whose
/// driver has what the store uses.
pub(crate) trait Bridge: Dialect {
    fn fetch_on<'c>(conn: &'c mut Conn<Self>, q: &'c Query) -> Fut<'c, Vec<Row>>;
    fn execute_on<'c>(conn: &'c mut Conn<Self>, q: &'c Query) -> Fut<'c, u64>;
    fn stream_on<'c>(
        conn: &'c mut Conn<Self>,
        q: &'c Query,
    ) -> BoxStream<'c, Result<Row, sqlx::Error>>;
    fn decode(row: &DbRow<Self>, column: &str, kind: Kind) -> Result<Value, sqlx::Error>;
    fn migrate_on(writer: &Pool<Self::DB>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// `q` as a statement of the driver.
    fn build(q: &Query) -> SqlxQuery<'_, Self::DB>;
}

impl<D: Dialect> Bridge for D
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::DB>,
    for<'q> <D::DB as Database>::Arguments<'q>: IntoArguments<'q, D::DB>,
    for<'q> Option<i64>: Encode<'q, D::DB> + Decode<'q, D::DB> + Type<D::DB>,
    for<'q> Option<i32>: Encode<'q, D::DB> + Decode<'q, D::DB> + Type<D::DB>,
    for<'q> Option<String>: Encode<'q, D::DB> + Decode<'q, D::DB> + Type<D::DB>,
    for<'q> Option<bool>: Encode<'q, D::DB> + Decode<'q, D::DB> + Type<D::DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, D::DB> + Decode<'q, D::DB> + Type<D::DB>,
    for<'a> &'a str: ColumnIndex<DbRow<D>>,
    Conn<D>: Migrate,
{
    fn fetch_on<'c>(conn: &'c mut Conn<Self>, q: &'c Query) -> Fut<'c, Vec<Row>> {
        Box::pin(async move {
            let rows = D::build(q).fetch_all(conn).await?;
            Ok(rows.into_iter().map(row::<D>).collect())
        })
    }

    fn execute_on<'c>(conn: &'c mut Conn<Self>, q: &'c Query) -> Fut<'c, u64> {
        Box::pin(async move {
            let done = D::build(q).execute(conn).await?;
            Ok(D::rows_affected(&done))
        })
    }

    fn stream_on<'c>(
        conn: &'c mut Conn<Self>,
        q: &'c Query,
    ) -> BoxStream<'c, Result<Row, sqlx::Error>> {
        D::build(q).fetch(conn).map_ok(row::<D>).boxed()
    }

    fn decode(row: &DbRow<Self>, column: &str, kind: Kind) -> Result<Value, sqlx::Error> {
        Ok(match kind {
            Kind::Int => Value::Int(row.try_get(column)?),
            Kind::I32 => Value::I32(row.try_get(column)?),
            Kind::Text => Value::Text(row.try_get(column)?),
            Kind::Bool => Value::Bool(row.try_get(column)?),
            Kind::DateTime => Value::DateTime(row.try_get(column)?),
            Kind::Json => D::read(row, column, true)?.into(),
            Kind::Stamp => D::read(row, column, false)?.into(),
        })
    }

    fn migrate_on(writer: &Pool<Self::DB>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { D::migrator().run(writer).await.map_err(StoreError::from) })
    }

    fn build(q: &Query) -> SqlxQuery<'_, Self::DB> {
        let mut query = sqlx::query::<D::DB>(&q.sql);
        for value in &q.args {
            query = match value.clone() {
                Value::Int(v) => query.bind(v),
                Value::I32(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
                Value::Bool(v) => query.bind(v),
                Value::DateTime(v) => query.bind(v),
                Value::Json(v) => D::bind(query, Native::Json(v)),
                Value::Stamp(v) => D::bind(query, Native::Stamp(v)),
            };
        }
        query
    }
}

struct RowOf<D: Dialect>(DbRow<D>);

impl<D: Bridge> RowData for RowOf<D> {
    fn get(&self, column: &str, kind: Kind) -> Result<Value, sqlx::Error> {
        D::decode(&self.0, column, kind)
    }
}

fn row<D: Bridge>(row: DbRow<D>) -> Row {
    Row(Box::new(RowOf::<D>(row)))
}

/// The object-safe face of a database's pools.
pub(crate) trait Driver: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn fragments(&self) -> &'static Fragments;
    fn fetch<'a>(&'a self, write: bool, q: &'a Query) -> Fut<'a, Vec<Row>>;
    fn execute<'a>(&'a self, q: &'a Query) -> Fut<'a, u64>;
    fn begin(&self, read: bool) -> Fut<'_, Box<dyn TxDriver>>;
    fn push_feed_after(&self, q: &mut Query, after: Position);
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    fn latest_migration(&self) -> i64;
    fn is_missing_table(&self, err: &sqlx::Error) -> bool;
    fn after_forget(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    fn close(&self) -> BoxFuture<'_, ()>;
    /// For test helpers that need the driver's own pools.
    fn as_any(&self) -> &dyn Any;
}

/// The object-safe face of a transaction.
pub(crate) trait TxDriver: Send {
    fn fetch<'a>(&'a mut self, q: &'a Query) -> Fut<'a, Vec<Row>>;
    fn execute<'a>(&'a mut self, q: &'a Query) -> Fut<'a, u64>;
    fn stream<'a>(&'a mut self, q: &'a Query) -> BoxStream<'a, Result<Row, sqlx::Error>>;
    fn bulk_insert<'a>(
        &'a mut self,
        table: &'a str,
        columns: &'a str,
        rows: &'a [Vec<Value>],
    ) -> Fut<'a, ()>;
    fn clone_table<'a>(&'a mut self, copy: TableCopy<'a>, indexes: bool) -> Fut<'a, ()>;
    fn copy_indexes<'a>(&'a mut self, copy: TableCopy<'a>) -> Fut<'a, ()>;
    fn commit(self: Box<Self>) -> Fut<'static, ()>;
}

/// A dialect's pools: one writer (one connection on SQLite) and readers.
pub(crate) struct Pools<D: Dialect> {
    pub(crate) writer: Pool<D::DB>,
    pub(crate) reader: Pool<D::DB>,
    /// Dropped with the pools (the last clone of the store).
    _keepalive: super::dialect::Keepalive,
}

impl<D: Bridge> Driver for Pools<D> {
    fn kind(&self) -> &'static str {
        D::KIND
    }

    fn fragments(&self) -> &'static Fragments {
        D::SQL
    }

    fn fetch<'a>(&'a self, write: bool, q: &'a Query) -> Fut<'a, Vec<Row>> {
        let pool = if write { &self.writer } else { &self.reader };
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            D::fetch_on(&mut *conn, q).await
        })
    }

    fn execute<'a>(&'a self, q: &'a Query) -> Fut<'a, u64> {
        Box::pin(async move {
            let mut conn = self.writer.acquire().await?;
            D::execute_on(&mut *conn, q).await
        })
    }

    fn begin(&self, read: bool) -> Fut<'_, Box<dyn TxDriver>> {
        Box::pin(async move {
            let pool = if read { &self.reader } else { &self.writer };
            let mut tx = pool.begin().await?;
            if let (true, Some(sql)) = (read, D::SNAPSHOT_READ) {
                D::execute_on(&mut *tx, &Query::new(sql)).await?;
            }
            Ok(Box::new(TxOf::<D>(tx)) as Box<dyn TxDriver>)
        })
    }

    fn push_feed_after(&self, q: &mut Query, after: Position) {
        D::push_feed_after(q, after);
    }

    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        D::migrate_on(&self.writer)
    }

    fn latest_migration(&self) -> i64 {
        D::migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    fn is_missing_table(&self, err: &sqlx::Error) -> bool {
        D::is_missing_table(err)
    }

    fn after_forget(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        D::after_forget(&self.writer)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writer.close().await;
            self.reader.close().await;
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct TxOf<D: Dialect>(Transaction<'static, D::DB>);

impl<D: Bridge> TxDriver for TxOf<D> {
    fn fetch<'a>(&'a mut self, q: &'a Query) -> Fut<'a, Vec<Row>> {
        D::fetch_on(&mut *self.0, q)
    }

    fn execute<'a>(&'a mut self, q: &'a Query) -> Fut<'a, u64> {
        D::execute_on(&mut *self.0, q)
    }

    fn stream<'a>(&'a mut self, q: &'a Query) -> BoxStream<'a, Result<Row, sqlx::Error>> {
        D::stream_on(&mut *self.0, q)
    }

    fn bulk_insert<'a>(
        &'a mut self,
        table: &'a str,
        columns: &'a str,
        rows: &'a [Vec<Value>],
    ) -> Fut<'a, ()> {
        if D::BULK_COPY {
            return D::copy_in(&mut *self.0, table, columns, rows);
        }
        Box::pin(async move {
            // At most ~1,000 rows per statement keeps under the databases'
            // parameter limits.
            for chunk in rows.chunks(1000) {
                let mut insert = Query::new(format!("INSERT INTO {table} ({columns}) "));
                insert.push_values(chunk, Clone::clone);
                D::execute_on(&mut *self.0, &insert).await?;
            }
            Ok(())
        })
    }

    fn clone_table<'a>(&'a mut self, copy: TableCopy<'a>, indexes: bool) -> Fut<'a, ()> {
        D::clone_table(&mut *self.0, copy, indexes)
    }

    fn copy_indexes<'a>(&'a mut self, copy: TableCopy<'a>) -> Fut<'a, ()> {
        D::copy_indexes(&mut *self.0, copy)
    }

    fn commit(self: Box<Self>) -> Fut<'static, ()> {
        Box::pin(self.0.commit())
    }
}

/// Connects to `postgres://…` or `sqlite://…` (a SQLite file is created
/// if missing).
pub(crate) async fn connect(
    url: &str,
    max_connections: u32,
    on_switch: super::dialect::OnSwitch,
) -> Result<Db, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        open::<crate::postgres::Postgres>(url, max_connections, on_switch).await
    } else if url.starts_with("sqlite:") {
        open::<crate::sqlite::Sqlite>(url, max_connections, on_switch).await
    } else {
        Err(StoreError::UnsupportedUrl(crate::redact_url(url)))
    }
}

async fn open<D: Bridge>(
    url: &str,
    max_connections: u32,
    on_switch: super::dialect::OnSwitch,
) -> Result<Db, StoreError> {
    let (writer, reader, keepalive) = D::connect(url, max_connections, on_switch).await?;
    Ok(Db(Arc::new(Pools::<D> {
        writer,
        reader,
        _keepalive: keepalive,
    })))
}

/// The pools of a database of dialect `D`, for test helpers.
pub(crate) fn pools_of<D: Bridge>(db: &Db) -> Option<&Pools<D>> {
    db.0.as_any().downcast_ref::<Pools<D>>()
}
