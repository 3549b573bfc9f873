//! PostgreSQL, the production store: its dialect.
//!
//! The events table has postgres-es 0.5's columns, so
//! `postgres_es::PostgresEventRepository` reads it as it is (a conformance
//! test checks that; [`crate::Store::postgres_repository`]), plus
//! `global_position` and `tx_id`. The store's own append writes the
//! events, the login-email reservations, the idempotency record and the
//! snapshot in one transaction, which postgres-es cannot (and its snapshot
//! writer applies events twice: see docs/cqrs-es.md).
//!
//! What is PostgreSQL's own here: the feed's order (inserting transaction,
//! then position) and its visibility watermark, `json` and `timestamptz`
//! columns, claiming rows others have not locked (`FOR UPDATE SKIP LOCKED`),
//! `COPY` for bulk loads, tables cloned with `LIKE` and indexes copied from
//! the catalog, and its error codes. (Its WAL and dead tuples go with recycling and vacuum:
//! nothing to do after a forget; docs/privacy.md.)

use std::str::FromStr;
use std::time::Duration;

use chrono::SecondsFormat;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{PgConnection, Row};

use crate::error::ErrorCode;
use crate::pg_hosts;
use crate::sql::dialect::{Connecting, Keepalive, Native, OnSwitch, SqlxQuery, TableCopy};
use crate::sql::{Dialect, Fragments, Fut, Query, Value};
use crate::{Position, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// PostgreSQL's dialect.
pub struct Postgres;

impl Dialect for Postgres {
    type DB = sqlx::Postgres;
    const KIND: &'static str = "postgres";
    const BULK_COPY: bool = true;
    const SQL: &'static Fragments = &Fragments {
        event_tx: "tx_id::text",
        feed_order: "tx_id, global_position",
        feed_order_desc: "tx_id DESC, global_position DESC",
        recorded_at_default: true,
        json_as_text: "::text",
        text_as_json: "::json",
        skip_locked: " FOR UPDATE SKIP LOCKED",
        index_after_bulk_load: true,
    };
    const SNAPSHOT_READ: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");

    /// One pool (writer and reader alike). With a host list (libpq's
    /// `postgres://h1:p1,h2:p2/db`), on whichever host accepts writes, and
    /// following it when it moves ([`crate::pg_hosts`]).
    fn connect(
        url: &str,
        max_connections: u32,
        on_switch: OnSwitch,
    ) -> Connecting<'_, sqlx::Postgres> {
        Box::pin(async move {
            let hosts = pg_hosts::split_hosts(url)?
                .iter()
                .map(|single| {
                    PgConnectOptions::from_str(single)
                        .map(|o| o.application_name("accessd"))
                        .map_err(|e| {
                            StoreError::UnsupportedUrl(format!("{}: {e}", crate::redact_url(url)))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let pool_options = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(5));
            let (pool, monitor): (_, Keepalive) = match hosts.as_slice() {
                [] => return Err(StoreError::UnsupportedUrl(crate::redact_url(url))),
                [one] => (pool_options.connect_lazy_with(one.clone()), None),
                _ => {
                    let (pool, monitor) = pg_hosts::follow(pool_options, hosts, on_switch).await;
                    (pool, Some(Box::new(monitor)))
                }
            };
            Ok((pool.clone(), pool, monitor))
        })
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// SQLSTATE 23505 unique_violation; 57P01 admin_shutdown, 57P02
    /// crash_shutdown, 57P03 cannot_connect_now, 08xxx connection
    /// exceptions, 25006 read-only transaction; 40P01 deadlock_detected,
    /// 40001 serialization_failure.
    fn code_says(code: &str, what: ErrorCode) -> bool {
        match what {
            ErrorCode::UniqueViolation => code == "23505",
            // 25006 read_only_sql_transaction: a primary demoted to standby
            // under an open connection (the pool follows the new primary:
            // pg_hosts.rs).
            ErrorCode::Unavailable => {
                code.starts_with("57P") || code.starts_with("08") || code == "25006"
            }
            ErrorCode::Contention => code == "40P01" || code == "40001",
        }
    }

    fn is_missing_table(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01"))
    }

    /// An event's global position is taken at insert, not at commit, so
    /// the feed follows (inserting transaction id, position). Rows of a
    /// transaction below the oldest running transaction (xmin) are all
    /// committed or aborted: none can appear later
    /// (docs/adr/0002-global-order.md).
    fn push_feed_after(q: &mut Query, after: Position) {
        q.push(" AND (tx_id, global_position) > (")
            .push_bind(after.tx.to_string())
            .push("::text::xid8, ")
            .push_bind(after.global)
            .push(") AND tx_id < pg_snapshot_xmin(pg_current_snapshot())");
    }

    /// JSON as `json` (sqlx sends `jsonb`, cast on assignment), times as
    /// `timestamptz`.
    fn bind<'q>(q: SqlxQuery<'q, sqlx::Postgres>, value: Native) -> SqlxQuery<'q, sqlx::Postgres> {
        match value {
            Native::Json(json) => q.bind(json),
            Native::Stamp(t) => q.bind(t),
        }
    }

    fn read(row: &PgRow, column: &str, json: bool) -> Result<Native, sqlx::Error> {
        Ok(match json {
            true => Native::Json(row.try_get(column)?),
            false => Native::Stamp(row.try_get(column)?),
        })
    }

    fn copy_in<'c>(
        conn: &'c mut PgConnection,
        table: &'c str,
        columns: &'c str,
        rows: &'c [Vec<Value>],
    ) -> Fut<'c, ()> {
        Box::pin(async move {
            let mut copy = conn
                .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
                .await?;
            copy.send(copy_text(rows).into_bytes()).await?;
            copy.finish().await?;
            Ok(())
        })
    }

    fn clone_table<'c>(
        conn: &'c mut PgConnection,
        copy: TableCopy<'c>,
        indexes: bool,
    ) -> Fut<'c, ()> {
        let TableCopy { live, new, .. } = copy;
        Box::pin(async move {
            let excluding = if indexes { "" } else { " EXCLUDING INDEXES" };
            sqlx::query(&format!(
                "CREATE TABLE {new} (LIKE {live} INCLUDING ALL{excluding})"
            ))
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    /// The primary key and indexes of `live`, read from the catalog (so
    /// they follow the migrations), given to `new` under names PostgreSQL
    /// picks.
    fn copy_indexes<'c>(conn: &'c mut PgConnection, copy: TableCopy<'c>) -> Fut<'c, ()> {
        let TableCopy { live, new, .. } = copy;
        Box::pin(async move {
            let primary: Option<String> = sqlx::query_scalar(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = $1::regclass AND contype = 'p'",
            )
            .bind(live)
            .fetch_optional(&mut *conn)
            .await?;
            let indexes: Vec<(String, bool)> = sqlx::query_as(
                "SELECT pg_get_indexdef(indexrelid), indisunique FROM pg_index \
                 WHERE indrelid = $1::regclass AND NOT indisprimary ORDER BY indexrelid",
            )
            .bind(live)
            .fetch_all(&mut *conn)
            .await?;
            if let Some(primary) = primary {
                sqlx::query(&format!("ALTER TABLE {new} ADD {primary}"))
                    .execute(&mut *conn)
                    .await?;
            }
            for (definition, unique) in indexes {
                // `CREATE [UNIQUE] INDEX name ON schema.table USING method
                // (…)`: the same method and columns on the new table.
                let Some((_, using)) = definition.split_once(" USING ") else {
                    return Err(sqlx::Error::Protocol(format!(
                        "index definition without USING: {definition}"
                    )));
                };
                let unique = if unique { "UNIQUE " } else { "" };
                sqlx::query(&format!("CREATE {unique}INDEX ON {new} USING {using}"))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    }
}

/// Rows in PostgreSQL's COPY text format: tab-separated, one row per line,
/// `\N` for NULL, and backslash, tab, newline and carriage return escaped
/// with a backslash (the format's whole escaping:
/// <https://www.postgresql.org/docs/current/sql-copy.html>). Written here
/// because sqlx sends COPY data as given and has no row encoder for it.
fn copy_text(rows: &[Vec<Value>]) -> String {
    use std::fmt::Write as _;
    fn text(out: &mut String, value: &str) {
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(rows.len() * 256);
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            // Numbers, booleans and timestamps need no escaping.
            let _ = match value {
                Value::Int(Some(n)) => write!(out, "{n}"),
                Value::I32(Some(n)) => write!(out, "{n}"),
                Value::Bool(Some(b)) => write!(out, "{}", if *b { "t" } else { "f" }),
                Value::Stamp(Some(t)) | Value::DateTime(Some(t)) => {
                    write!(out, "{}", t.to_rfc3339_opts(SecondsFormat::Micros, true))
                }
                Value::Text(Some(s)) => {
                    text(&mut out, s);
                    Ok(())
                }
                Value::Json(Some(v)) => {
                    text(&mut out, &v.to_string());
                    Ok(())
                }
                Value::Int(None)
                | Value::I32(None)
                | Value::Bool(None)
                | Value::Stamp(None)
                | Value::DateTime(None)
                | Value::Text(None)
                | Value::Json(None) => write!(out, "\\N"),
            };
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_the_format_escapes_and_writes_null_as_backslash_n() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap();
        let rows = vec![vec![
            Value::Int(Some(7)),
            Value::Text(Some("a\tb\\c\nd\re".into())),
            Value::Text(None),
            Value::Bool(Some(true)),
            Value::stamp(at),
        ]];
        assert_eq!(
            copy_text(&rows),
            "7\ta\\tb\\\\c\\nd\\re\t\\N\tt\t2026-01-02T03:04:05.500000Z\n"
        );
    }
}
