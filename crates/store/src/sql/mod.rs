//! One way to reach either database.
//!
//! Every statement of the store (and of the projections, through
//! [`crate::Store::sql`]) is written once, against three small types:
//!
//! - [`Query`]: SQL with `$n` placeholders (both databases accept them) and
//!   its arguments as [`Value`]s;
//! - [`Db`]: the database: read (reader pool), write (writer), begin a
//!   [`Tx`], and the dialect's fragments ([`Fragments`]) and hooks;
//! - [`Row`]: a result row, read by column name and kind.
//!
//! What really differs between PostgreSQL and SQLite is the [`Dialect`]
//! (`sql/dialect.rs`), implemented by `postgres.rs` and `sqlite.rs`. The
//! bridge from a dialect to sqlx (`sql/driver.rs`) is generic and holds
//! the one block of sqlx trait bounds; above it nothing is generic.

mod checkpoint;
pub mod dialect;
mod driver;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::{Position, StoreError};
pub use dialect::{Dialect, Fragments, TableCopy};
pub(crate) use driver::{connect, pools_of, Driver, TxDriver};

/// A value bound to a statement or read from a column (`None`: NULL).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    /// A 32-bit integer column (`integer` on PostgreSQL).
    I32(Option<i32>),
    Text(Option<String>),
    Bool(Option<bool>),
    /// JSON: `json` on PostgreSQL, text on SQLite.
    Json(Option<serde_json::Value>),
    /// A timestamp as the dialect stores it: `timestamptz` on PostgreSQL,
    /// RFC 3339 text with 6 fractional digits and `Z` on SQLite (so text
    /// order is time order).
    Stamp(Option<DateTime<Utc>>),
    /// A timestamp in sqlx's own encoding on both databases (sessions and
    /// API keys were written so).
    DateTime(Option<DateTime<Utc>>),
}

impl Value {
    /// A timestamp in the dialect's form ([`Value::Stamp`]).
    pub fn stamp(t: impl Into<Option<DateTime<Utc>>>) -> Self {
        Self::Stamp(t.into())
    }

    /// A number that must fit an `i64` (saturating).
    pub fn count(n: u64) -> Self {
        Self::Int(Some(i64::try_from(n).unwrap_or(i64::MAX)))
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(via $conv:expr)?),* $(,)?) => {
        $(
            impl From<$t> for Value {
                fn from(v: $t) -> Self {
                    Value::$variant(value_from!(@conv v $(, $conv)?))
                }
            }
        )*
    };
    (@conv $v:ident) => { $v.into() };
    (@conv $v:ident, $conv:expr) => { ($conv)($v) };
}

value_from! {
    i64 => Int,
    Option<i64> => Int,
    i32 => I32,
    String => Text,
    Option<String> => Text,
    &str => Text via |v: &str| Some(v.to_string()),
    &String => Text via |v: &String| Some(v.clone()),
    Option<&str> => Text via |v: Option<&str>| v.map(str::to_string),
    bool => Bool,
    Option<bool> => Bool,
    DateTime<Utc> => DateTime,
}

/// The kind of a column to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    I32,
    Text,
    Bool,
    Json,
    Stamp,
    DateTime,
}

/// A statement and its arguments.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub(crate) sql: String,
    pub(crate) args: Vec<Value>,
}

impl Query {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Binds the next `$n` written in the SQL.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends SQL.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        let n = self.args.len();
        self.sql.push_str(&format!("${n}"));
        self
    }

    /// Appends `VALUES (…), (…)`, one tuple per row.
    pub fn push_values<T>(
        &mut self,
        rows: impl IntoIterator<Item = T>,
        mut values: impl FnMut(T) -> Vec<Value>,
    ) -> &mut Self {
        self.sql.push_str("VALUES ");
        for (i, row) in rows.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push('(');
            for (j, value) in values(row).into_iter().enumerate() {
                if j > 0 {
                    self.sql.push_str(", ");
                }
                self.push_bind(value);
            }
            self.sql.push(')');
        }
        self
    }

    /// Appends ` IN ($a, $b, …)`.
    pub fn push_in<V: Into<Value>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        self.sql.push_str(" IN (");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.push_bind(value);
        }
        self.sql.push(')');
        self
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// What a row offers to read (implemented by the driver for each sqlx row
/// type).
pub(crate) trait RowData: Send + Sync {
    fn get(&self, column: &str, kind: Kind) -> Result<Value, sqlx::Error>;
}

/// A result row.
pub struct Row(pub(crate) Box<dyn RowData>);

fn null(column: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: "unexpected NULL".into(),
    }
}

macro_rules! getters {
    ($($name:ident, $opt:ident: $t:ty = $kind:ident;)*) => {
        $(
            #[doc = concat!("A non-NULL `", stringify!($kind), "` column.")]
            pub fn $name(&self, column: &str) -> Result<$t, sqlx::Error> {
                self.$opt(column)?.ok_or_else(|| null(column))
            }

            #[doc = concat!("A `", stringify!($kind), "` column that may be NULL.")]
            pub fn $opt(&self, column: &str) -> Result<Option<$t>, sqlx::Error> {
                match self.0.get(column, Kind::$kind)? {
                    Value::$kind(v) => Ok(v),
                    other => Err(sqlx::Error::ColumnDecode {
                        index: column.to_string(),
                        source: format!("read as {other:?}").into(),
                    }),
                }
            }
        )*
    };
}

impl Row {
    getters! {
        int, opt_int: i64 = Int;
        i32, opt_i32: i32 = I32;
        text, opt_text: String = Text;
        bool, opt_bool: bool = Bool;
        json, opt_json: serde_json::Value = Json;
        stamp, opt_stamp: DateTime<Utc> = Stamp;
        datetime, opt_datetime: DateTime<Utc> = DateTime;
    }

    /// A `(tx, position)` pair of integer columns.
    pub fn position(&self, tx: &str, global: &str) -> Result<Position, sqlx::Error> {
        Ok(Position {
            tx: u64::try_from(self.int(tx)?).unwrap_or_default(),
            global: self.int(global)?,
        })
    }
}

/// The database of a store: a writer and readers (the same pool on
/// PostgreSQL), and its dialect.
#[derive(Clone)]
pub struct Db(pub(crate) std::sync::Arc<dyn Driver>);

impl Db {
    /// `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// The SQL that differs between the databases.
    pub fn sql(&self) -> &'static Fragments {
        self.0.fragments()
    }

    /// Every row of a read (on a reader).
    pub async fn read(&self, q: &Query) -> Result<Vec<Row>, sqlx::Error> {
        self.0.fetch(false, q).await
    }

    /// The first row of a read, if any.
    pub async fn read_optional(&self, q: &Query) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.read(q).await?.into_iter().next())
    }

    /// Runs a write on its own (the writer) and returns the rows it
    /// returns.
    pub async fn write(&self, q: &Query) -> Result<Vec<Row>, sqlx::Error> {
        self.0.fetch(true, q).await
    }

    /// Runs a write on its own; returns the rows affected.
    pub async fn execute(&self, q: &Query) -> Result<u64, sqlx::Error> {
        self.0.execute(q).await
    }

    /// A write transaction (rolled back when dropped uncommitted).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx(self.0.begin(false).await?))
    }

    /// A read transaction that sees one moment of the database (REPEATABLE
    /// READ on PostgreSQL; any SQLite transaction does).
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx(self.0.begin(true).await?))
    }

    /// Appends the feed's condition "after `after`" (with the visibility
    /// watermark where the database needs one) to a statement on `events`.
    pub fn push_feed_after(&self, q: &mut Query, after: Position) {
        self.0.push_feed_after(q, after);
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        self.0.migrate().await
    }

    pub(crate) fn latest_migration(&self) -> i64 {
        self.0.latest_migration()
    }

    pub(crate) fn is_missing_table(&self, err: &sqlx::Error) -> bool {
        self.0.is_missing_table(err)
    }

    pub(crate) async fn after_forget(&self) -> Result<(), StoreError> {
        self.0.after_forget().await
    }

    pub(crate) async fn close(&self) {
        self.0.close().await
    }
}

/// A transaction on the writer.
pub struct Tx(pub(crate) Box<dyn TxDriver>);

impl Tx {
    pub async fn fetch(&mut self, q: &Query) -> Result<Vec<Row>, sqlx::Error> {
        self.0.fetch(q).await
    }

    pub async fn fetch_optional(&mut self, q: &Query) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch(q).await?.into_iter().next())
    }

    pub async fn execute(&mut self, q: &Query) -> Result<u64, sqlx::Error> {
        self.0.execute(q).await
    }

    /// The rows of a read one at a time (for reads too big to hold).
    pub fn stream<'a>(&'a mut self, q: &'a Query) -> BoxStream<'a, Result<Row, sqlx::Error>> {
        self.0.stream(q)
    }

    /// Inserts many rows: `COPY` on PostgreSQL (no statement to parse and
    /// no parameters to bind per row), multi-row `INSERT`s on SQLite.
    /// `columns` as in `INSERT INTO table (columns)`.
    pub async fn bulk_insert(
        &mut self,
        table: &str,
        columns: &str,
        rows: &[Vec<Value>],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        self.0.bulk_insert(table, columns, rows).await
    }

    /// Creates `copy.new` with the columns (and keys) of `copy.live`, and
    /// with its indexes when `indexes` (else add them later with
    /// [`Tx::copy_indexes`]).
    pub async fn clone_table(
        &mut self,
        copy: TableCopy<'_>,
        indexes: bool,
    ) -> Result<(), sqlx::Error> {
        self.0.clone_table(copy, indexes).await
    }

    /// Gives `copy.new` the indexes (and, where the database can add it
    /// later, the primary key) of `copy.live`, read from the catalog.
    pub async fn copy_indexes(&mut self, copy: TableCopy<'_>) -> Result<(), sqlx::Error> {
        self.0.copy_indexes(copy).await
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

/// A boxed future of the driver.
pub(crate) type Fut<'a, T> = BoxFuture<'a, Result<T, sqlx::Error>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_after_the_bound_arguments() {
        let mut q = Query::new("INSERT INTO t (a, b) ").bind(1_i64);
        q.push_values([("x", true), ("y", false)], |(s, b)| {
            vec![s.into(), b.into()]
        });
        q.push(" WHERE c").push_in(["p", "q"]);
        assert_eq!(
            q.sql(),
            "INSERT INTO t (a, b) VALUES ($2, $3), ($4, $5) WHERE c IN ($6, $7)"
        );
        assert_eq!(q.args.len(), 7);
        assert_eq!(q.args[0], Value::Int(Some(1)));
        assert_eq!(q.args[6], Value::Text(Some("q".into())));
    }
}
