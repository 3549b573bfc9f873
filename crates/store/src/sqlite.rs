//! SQLite, the embedded default (a single file created on first start):
//! its dialect.
//!
//! - WAL journal, so readers never block the writer or each other.
//! - `synchronous = FULL`: an acknowledged command survives a power cut
//!   (NORMAL could lose the last transactions; an access service must not
//!   forget a revoke it confirmed).
//! - One writer connection: writes are serialized in the process instead
//!   of fighting over the database lock (`SQLITE_BUSY`); other processes
//!   on the same file wait up to the busy timeout.
//! - With one writer at a time, the AUTOINCREMENT position order is the
//!   commit order, so the feed needs no visibility watermark, and row locks
//!   are the writer lock.
//! - JSON and timestamps are text (timestamps RFC 3339 with 6 fractional
//!   digits and `Z`, so text order is time order).
//! - `secure_delete = ON`: deleted and overwritten content is zeroed in the
//!   file, not left in free pages or free space of a page; and a forget
//!   ends with a `wal_checkpoint(TRUNCATE)` ([`purge_wal`]), so the `-wal`
//!   file keeps no older copy of a page either (docs/storage.md).
//! - [`SqliteRepository`]: cqrs-es's `PersistedEventRepository` on the
//!   same tables.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::error::ErrorCode;
use crate::sql::dialect::{Connecting, Native, OnSwitch, SqlxQuery, TableCopy};
use crate::sql::{Dialect, Fragments, Fut, Query};
use crate::{Position, StoreError};

mod repository;

pub use repository::SqliteRepository;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's dialect.
pub struct Sqlite;

/// A timestamp as SQLite stores it: always 6 fractional digits, `Z`.
fn stamp_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode_error(column: &str, detail: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: detail.into(),
    }
}

impl Dialect for Sqlite {
    type DB = sqlx::Sqlite;
    const KIND: &'static str = "sqlite";
    const SQL: &'static Fragments = &Fragments::ONE_WRITER;
    const SNAPSHOT_READ: Option<&'static str> = None;

    fn connect(url: &str, max_connections: u32, _: OnSwitch) -> Connecting<'_, sqlx::Sqlite> {
        Box::pin(async move {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::UnsupportedUrl(format!("{url}: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(BUSY_TIMEOUT)
                .foreign_keys(true)
                .pragma("secure_delete", "ON");
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(connect.clone())
                .await?;
            // An in-memory database exists once per connection: share the
            // writer.
            let reader = if in_memory {
                writer.clone()
            } else {
                SqlitePoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(connect.read_only(true))
                    .await?
            };
            Ok((writer, reader, None))
        })
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Extended codes 1555 (primary key) and 2067 (unique); 5 and 6 (busy,
    /// locked) and 517 (busy snapshot) after the busy timeout.
    fn code_says(code: &str, what: ErrorCode) -> bool {
        let codes: &[&str] = match what {
            ErrorCode::UniqueViolation => &["1555", "2067"],
            ErrorCode::Unavailable => &["5", "6", "517"],
            // One writer at a time: transactions queue, never deadlock.
            ErrorCode::Contention => &[],
        };
        codes.contains(&code)
    }

    fn is_missing_table(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.message().starts_with("no such table"))
    }

    fn push_feed_after(q: &mut Query, after: Position) {
        q.push(" AND global_position > ").push_bind(after.global);
    }

    /// JSON as its text, times as [`stamp_text`].
    fn bind<'q>(q: SqlxQuery<'q, sqlx::Sqlite>, value: Native) -> SqlxQuery<'q, sqlx::Sqlite> {
        q.bind(match value {
            Native::Json(json) => json.map(|v| v.to_string()),
            Native::Stamp(t) => t.map(stamp_text),
        })
    }

    fn read(row: &SqliteRow, column: &str, json: bool) -> Result<Native, sqlx::Error> {
        let text: Option<String> = row.try_get(column)?;
        if json {
            let parse = |text: String| serde_json::from_str(&text);
            return text
                .map(parse)
                .transpose()
                .map(Native::Json)
                .map_err(|e| decode_error(column, e.to_string()));
        }
        text.map(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| decode_error(column, format!("timestamp `{raw}`: {e}")))
        })
        .transpose()
        .map(Native::Stamp)
    }

    /// The table's DDL from `sqlite_master` under the new name (keys come
    /// with it: SQLite cannot add them later).
    fn clone_table<'c>(
        conn: &'c mut SqliteConnection,
        copy: TableCopy<'c>,
        indexes: bool,
    ) -> Fut<'c, ()> {
        Box::pin(async move {
            let TableCopy { live, new, .. } = copy;
            let ddl: String = sqlx::query_scalar(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1",
            )
            .bind(live)
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query(&ddl.replacen(live, new, 1))
                .execute(&mut *conn)
                .await?;
            if indexes {
                Self::copy_indexes(conn, copy).await?;
            }
            Ok(())
        })
    }

    /// The indexes of `live` from `sqlite_master`, on `new`, named
    /// `ix<generation>_<new>_<n>`: index names are global in SQLite and
    /// stay with a table that is renamed.
    fn copy_indexes<'c>(conn: &'c mut SqliteConnection, copy: TableCopy<'c>) -> Fut<'c, ()> {
        let TableCopy {
            live,
            new,
            generation,
        } = copy;
        Box::pin(async move {
            let definitions: Vec<String> = sqlx::query_scalar(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 \
                 AND sql IS NOT NULL ORDER BY name",
            )
            .bind(live)
            .fetch_all(&mut *conn)
            .await?;
            for (n, definition) in definitions.iter().enumerate() {
                // `CREATE [UNIQUE] INDEX name ON table (columns)`.
                let Some(columns) = definition.find('(').map(|at| &definition[at..]) else {
                    return Err(sqlx::Error::Protocol(format!(
                        "index definition without columns: {definition}"
                    )));
                };
                let unique = if definition.to_ascii_uppercase().starts_with("CREATE UNIQUE") {
                    "UNIQUE "
                } else {
                    ""
                };
                sqlx::query(&format!(
                    "CREATE {unique}INDEX ix{generation}_{new}_{n} ON {new} {columns}"
                ))
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        })
    }

    fn after_forget(writer: &SqlitePool) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(purge_wal(writer))
    }
}

/// Copies the write-ahead log into the database file and truncates it
/// (`PRAGMA wal_checkpoint(TRUNCATE)`), so that no older copy of a page,
/// holding data since deleted or scrubbed, stays in the `-wal` file.
/// Waits for readers up to the busy timeout; a checkpoint they keep from
/// completing is logged and tried again at the next forget.
async fn purge_wal(writer: &SqlitePool) -> Result<(), StoreError> {
    let (busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(writer)
        .await?;
    if busy != 0 {
        tracing::warn!(
            wal_frames = log,
            checkpointed = done,
            "the WAL checkpoint after a forget did not complete (readers busy): \
             deleted data may stay in the -wal file until the next checkpoint"
        );
    }
    Ok(())
}
