//! The projection tables on both databases. Each statement is written once;
//! `on_store!` expands it for the PostgreSQL and the SQLite pool, with the
//! one difference that matters: timestamps are `timestamptz` on PostgreSQL
//! and fixed-width RFC 3339 text on SQLite (so text order is time order).

use std::collections::{BTreeMap, HashSet};

use access_domain::events::FORGOTTEN;
use access_domain::{CustomerEvent, CustomerId, EmailAddress};
use access_store::{Position, RecordedEvent, Store};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{QueryBuilder, Row};

use crate::rows::{apply, audit_row, AccessStateRow, AuditRow};
use crate::ProjectionError;

/// The tables a projection run writes: the live ones, or a rebuild's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub access_state: &'static str,
    pub audit_trail: &'static str,
    /// The checkpoint row's name.
    pub checkpoint: &'static str,
}

pub const LIVE: Tables = Tables {
    access_state: "access_state",
    audit_trail: "audit_trail",
    checkpoint: "projections",
};

pub const REBUILD: Tables = Tables {
    access_state: "access_state_rebuild",
    audit_trail: "audit_trail_rebuild",
    checkpoint: "projections_rebuild",
};

/// A timestamp as SQLite stores it: always 6 fractional digits, `Z`.
pub(crate) fn sqlite_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_sqlite_ts(raw: &str) -> Result<DateTime<Utc>, ProjectionError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ProjectionError::Corrupt(format!("timestamp `{raw}`: {e}")))
}

pub(crate) fn pg_ts(
    row: &sqlx::postgres::PgRow,
    col: &str,
) -> Result<Option<DateTime<Utc>>, ProjectionError> {
    Ok(row.try_get::<Option<DateTime<Utc>>, _>(col)?)
}

pub(crate) fn lite_ts(
    row: &sqlx::sqlite::SqliteRow,
    col: &str,
) -> Result<Option<DateTime<Utc>>, ProjectionError> {
    row.try_get::<Option<String>, _>(col)?
        .map(|raw| parse_sqlite_ts(&raw))
        .transpose()
}

/// Expands `$body` for each database with `$pool` the pool, `$ts` a
/// function encoding a timestamp for binding, `$get_ts` one reading it
/// back, and `$pg` true on PostgreSQL.
macro_rules! on_store {
    ($store:expr, $mode:ident, |$pool:ident, $ts:ident, $get_ts:ident, $pg:ident| $body:expr) => {
        match $store {
            access_store::Store::Postgres(s) => {
                let $pool = s.pool();
                let $ts = |t: chrono::DateTime<chrono::Utc>| t;
                let $get_ts = $crate::db::pg_ts;
                let $pg = true;
                let _ = $pg;
                $body
            }
            access_store::Store::Sqlite(s) => {
                let $pool = on_store!(@sqlite s $mode);
                let $ts = $crate::db::sqlite_ts;
                let $get_ts = $crate::db::lite_ts;
                let $pg = false;
                let _ = $pg;
                $body
            }
        }
    };
    (@sqlite $s:ident write) => { $s.writer() };
    (@sqlite $s:ident read) => { $s.reader() };
}
pub(crate) use on_store;

pub(crate) fn required(
    ts: Option<DateTime<Utc>>,
    col: &str,
) -> Result<DateTime<Utc>, ProjectionError> {
    ts.ok_or_else(|| ProjectionError::Corrupt(format!("column {col} is NULL")))
}

pub(crate) const STATE_COLUMNS: &str = "customer_id, name, email, email_key, access_granted, role, password_set, \
    must_change_password, setup_link_expires_at, pending_email, pending_email_expires_at, version, updated_at";

pub(crate) const AUDIT_COLUMNS: &str =
    "position, tx, customer_id, sequence, at, kind, actor_kind, actor_name, actor_role, \
    actor_customer_id, request_id, reason, old_email, new_email, password_source, with_setup_link";

macro_rules! state_row {
    ($row:expr, $get_ts:ident) => {{
        let row = $row;
        let id: String = row.try_get("customer_id")?;
        let version: i64 = row.try_get("version")?;
        $crate::rows::AccessStateRow {
            customer_id: id.parse().map_err(|_| {
                ProjectionError::Corrupt(format!("access_state customer_id `{id}`"))
            })?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            access_granted: row.try_get("access_granted")?,
            role: row.try_get("role")?,
            password_set: row.try_get("password_set")?,
            must_change_password: row.try_get("must_change_password")?,
            setup_link_expires_at: $get_ts(row, "setup_link_expires_at")?,
            pending_email: row.try_get("pending_email")?,
            pending_email_expires_at: $get_ts(row, "pending_email_expires_at")?,
            version: u64::try_from(version).unwrap_or_default(),
            updated_at: $crate::db::required($get_ts(row, "updated_at")?, "updated_at")?,
        }
    }};
}
pub(crate) use state_row;

macro_rules! audit_from_row {
    ($row:expr, $get_ts:ident) => {{
        let row = $row;
        let id: String = row.try_get("customer_id")?;
        let tx: i64 = row.try_get("tx")?;
        let sequence: i64 = row.try_get("sequence")?;
        $crate::rows::AuditRow {
            tx: u64::try_from(tx).unwrap_or_default(),
            position: row.try_get("position")?,
            customer_id: id.parse().map_err(|_| {
                $crate::ProjectionError::Corrupt(format!("audit_trail customer_id `{id}`"))
            })?,
            sequence: u64::try_from(sequence).unwrap_or_default(),
            at: $crate::db::required($get_ts(row, "at")?, "at")?,
            kind: row.try_get("kind")?,
            actor_kind: row.try_get("actor_kind")?,
            actor_name: row.try_get("actor_name")?,
            actor_role: row.try_get("actor_role")?,
            actor_customer_id: row.try_get("actor_customer_id")?,
            request_id: row.try_get("request_id")?,
            reason: row.try_get("reason")?,
            old_email: row.try_get("old_email")?,
            new_email: row.try_get("new_email")?,
            password_source: row.try_get("password_source")?,
            with_setup_link: row.try_get("with_setup_link")?,
        }
    }};
}
pub(crate) use audit_from_row;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The checkpoint of a projector (START when it never ran).
pub async fn checkpoint(store: &Store, name: &str) -> Result<Position, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        let row = sqlx::query("SELECT tx, position FROM projector_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
        match row {
            None => Ok(Position::START),
            Some(row) => Ok(Position {
                tx: u64::try_from(row.try_get::<i64, _>("tx")?).unwrap_or_default(),
                global: row.try_get("position")?,
            }),
        }
    })
}

/// Makes sure the checkpoint row exists (so it can be locked).
pub async fn ensure_checkpoint(store: &Store, name: &str) -> Result<(), ProjectionError> {
    on_store!(store, write, |pool, ts, _get_ts, _pg| {
        sqlx::query(
            "INSERT INTO projector_checkpoints (name, tx, position, updated_at) VALUES ($1, 0, 0, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(ts(Utc::now()))
        .execute(pool)
        .await?;
        Ok(())
    })
}

/// Projects a batch of events (in feed order, starting right after `from`)
/// into `tables`, and moves the checkpoint, in one transaction. Fails with
/// `CheckpointMoved` when another projector got there first (nothing is
/// written then).
pub async fn project_batch(
    store: &Store,
    tables: Tables,
    from: Position,
    events: &[RecordedEvent],
) -> Result<Position, ProjectionError> {
    project_batch_with(store, tables, from, events, true).await
}

/// [`project_batch`]; without `scrub_forgotten` a `CustomerForgotten` does
/// not scrub the customer's earlier audit rows: the rebuild's bulk load
/// (tables without indexes yet) scrubs them afterwards, all at once
/// ([`scrub_forgotten`]).
pub(crate) async fn project_batch_with(
    store: &Store,
    tables: Tables,
    from: Position,
    events: &[RecordedEvent],
    scrub_forgotten: bool,
) -> Result<Position, ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(from);
    };
    let to = last.position;
    let keyring = store.keyring()?;
    let ids: Vec<String> = {
        let mut seen = HashSet::new();
        events
            .iter()
            .map(|e| e.customer_id.to_string())
            .filter(|id| seen.insert(id.clone()))
            .collect()
    };
    on_store!(store, write, |pool, ts, get_ts, pg| {
        let mut tx = pool.begin().await?;
        let lock = if pg { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!(
            "SELECT tx, position FROM projector_checkpoints WHERE name = $1{lock}"
        ))
        .bind(tables.checkpoint)
        .fetch_optional(&mut *tx)
        .await?;
        let current = match row {
            None => Position::START,
            Some(row) => Position {
                tx: u64::try_from(row.try_get::<i64, _>("tx")?).unwrap_or_default(),
                global: row.try_get("position")?,
            },
        };
        if current != from {
            return Err(ProjectionError::CheckpointMoved {
                expected: from,
                found: current,
            });
        }

        // The rows of the customers in this batch.
        let mut rows: BTreeMap<String, AccessStateRow> = BTreeMap::new();
        for chunk in ids.chunks(1000) {
            let mut select = QueryBuilder::new(format!(
                "SELECT {STATE_COLUMNS} FROM {} WHERE customer_id IN (",
                tables.access_state
            ));
            let mut list = select.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            select.push(")");
            for row in select.build().fetch_all(&mut *tx).await? {
                let state = state_row!(&row, get_ts);
                rows.insert(state.customer_id.to_string(), state);
            }
        }

        let mut audits = Vec::with_capacity(events.len());
        let mut changed = HashSet::new();
        for event in events {
            let key = event.customer_id.to_string();
            let expected = rows.get(&key).map_or(0, |r| r.version) + 1;
            if event.sequence != expected {
                return Err(ProjectionError::Gap {
                    position: event.position,
                    customer_id: event.customer_id,
                    expected,
                    found: event.sequence,
                });
            }
            let next = apply(rows.remove(&key), event).ok_or(ProjectionError::NotRegistered {
                position: event.position,
                customer_id: event.customer_id,
            })?;
            rows.insert(key.clone(), next);
            changed.insert(key);
            audits.push(audit_row(event));
        }

        let changed_rows: Vec<&AccessStateRow> = rows
            .values()
            .filter(|r| changed.contains(&r.customer_id.to_string()))
            .collect();
        // 13 parameters a row: 1,000 rows stay under SQLite's and
        // PostgreSQL's parameter limits.
        for chunk in changed_rows.chunks(1000) {
            let mut upsert = QueryBuilder::new(format!(
                "INSERT INTO {} ({STATE_COLUMNS}) ",
                tables.access_state
            ));
            upsert.push_values(chunk, |mut b, r| {
                b.push_bind(r.customer_id.to_string())
                    .push_bind(r.name.clone())
                    .push_bind(r.email.clone())
                    .push_bind(keyring.email_key_text(&r.email))
                    .push_bind(r.access_granted)
                    .push_bind(r.role.clone())
                    .push_bind(r.password_set)
                    .push_bind(r.must_change_password)
                    .push_bind(r.setup_link_expires_at.map(ts))
                    .push_bind(r.pending_email.clone())
                    .push_bind(r.pending_email_expires_at.map(ts))
                    .push_bind(to_i64(r.version))
                    .push_bind(ts(r.updated_at));
            });
            upsert.push(
                " ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, email = excluded.email, \
                 email_key = excluded.email_key, access_granted = excluded.access_granted, role = excluded.role, \
                 password_set = excluded.password_set, must_change_password = excluded.must_change_password, \
                 setup_link_expires_at = excluded.setup_link_expires_at, pending_email = excluded.pending_email, \
                 pending_email_expires_at = excluded.pending_email_expires_at, version = excluded.version, \
                 updated_at = excluded.updated_at",
            );
            upsert.build().execute(&mut *tx).await?;
        }

        AuditWriter::write_audits(&mut *tx, tables.audit_trail, &audits).await?;

        // A forgotten customer's earlier audit rows lose their addresses,
        // as a rebuild (which can no longer open them) would show them.
        for event in events {
            if scrub_forgotten && matches!(event.event, CustomerEvent::CustomerForgotten { .. }) {
                sqlx::query(&format!(
                    "UPDATE {} SET \
                     old_email = CASE WHEN old_email IS NULL THEN NULL ELSE $2 END, \
                     new_email = CASE WHEN new_email IS NULL THEN NULL ELSE $2 END \
                     WHERE customer_id = $1",
                    tables.audit_trail
                ))
                .bind(event.customer_id.to_string())
                .bind(FORGOTTEN)
                .execute(&mut *tx)
                .await?;
            }
        }

        sqlx::query(
            "INSERT INTO projector_checkpoints (name, tx, position, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(tables.checkpoint)
        .bind(to_i64(to.tx))
        .bind(to.global)
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(to)
    })
}

/// Scrubs the audit rows of forgotten customers in `tables` (what a
/// `CustomerForgotten` does to its customer's earlier rows), in one
/// transaction.
pub(crate) async fn scrub_forgotten(
    store: &Store,
    tables: Tables,
    customers: &[CustomerId],
) -> Result<(), ProjectionError> {
    if customers.is_empty() {
        return Ok(());
    }
    on_store!(store, write, |pool, _ts, _get_ts, _pg| {
        let mut tx = pool.begin().await?;
        for id in customers {
            sqlx::query(&format!(
                "UPDATE {} SET \
                 old_email = CASE WHEN old_email IS NULL THEN NULL ELSE $2 END, \
                 new_email = CASE WHEN new_email IS NULL THEN NULL ELSE $2 END \
                 WHERE customer_id = $1",
                tables.audit_trail
            ))
            .bind(id.to_string())
            .bind(FORGOTTEN)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// Writes audit rows in the batch's transaction: `COPY` on PostgreSQL (no
/// statement to parse and no parameters to bind per row: the rebuild
/// writes a million rows this way), multi-row `INSERT`s on SQLite.
pub(crate) trait AuditWriter {
    fn write_audits<'a>(
        &'a mut self,
        table: &'a str,
        rows: &'a [AuditRow],
    ) -> futures::future::BoxFuture<'a, Result<(), ProjectionError>>;
}

impl AuditWriter for sqlx::PgConnection {
    fn write_audits<'a>(
        &'a mut self,
        table: &'a str,
        rows: &'a [AuditRow],
    ) -> futures::future::BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let mut copy = self
                .copy_in_raw(&format!("COPY {table} ({AUDIT_COLUMNS}) FROM STDIN"))
                .await?;
            copy.send(copy_text(rows).into_bytes()).await?;
            copy.finish().await?;
            Ok(())
        })
    }
}

impl AuditWriter for sqlx::SqliteConnection {
    fn write_audits<'a>(
        &'a mut self,
        table: &'a str,
        rows: &'a [AuditRow],
    ) -> futures::future::BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            // At most ~1,000 rows per statement keeps SQLite under its
            // parameter limit.
            for chunk in rows.chunks(1000) {
                let mut insert =
                    QueryBuilder::new(format!("INSERT INTO {table} ({AUDIT_COLUMNS}) "));
                insert.push_values(chunk, |mut b, a: &AuditRow| {
                    b.push_bind(a.position)
                        .push_bind(to_i64(a.tx))
                        .push_bind(a.customer_id.to_string())
                        .push_bind(to_i64(a.sequence))
                        .push_bind(sqlite_ts(a.at))
                        .push_bind(a.kind.clone())
                        .push_bind(a.actor_kind.clone())
                        .push_bind(a.actor_name.clone())
                        .push_bind(a.actor_role.clone())
                        .push_bind(a.actor_customer_id.clone())
                        .push_bind(a.request_id.clone())
                        .push_bind(a.reason.clone())
                        .push_bind(a.old_email.clone())
                        .push_bind(a.new_email.clone())
                        .push_bind(a.password_source.clone())
                        .push_bind(a.with_setup_link);
                });
                insert.build().execute(&mut *self).await?;
            }
            Ok(())
        })
    }
}

/// Audit rows in PostgreSQL's COPY text format, in `AUDIT_COLUMNS` order:
/// tab-separated, one row per line, `\N` for NULL, and backslash, tab,
/// newline and carriage return escaped with a backslash (the format's whole
/// escaping: <https://www.postgresql.org/docs/current/sql-copy.html>).
/// Written here because sqlx sends COPY data as given and has no row
/// encoder for it.
fn copy_text(rows: &[AuditRow]) -> String {
    use std::fmt::Write as _;
    fn text(out: &mut String, value: Option<&str>) {
        match value {
            None => out.push_str("\\N"),
            Some(v) => {
                for c in v.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    let mut out = String::with_capacity(rows.len() * 256);
    for a in rows {
        // Numbers, the id, the timestamp and booleans need no escaping.
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t",
            a.position,
            to_i64(a.tx),
            a.customer_id,
            to_i64(a.sequence),
            a.at.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
        for value in [
            Some(a.kind.as_str()),
            Some(a.actor_kind.as_str()),
            a.actor_name.as_deref(),
            a.actor_role.as_deref(),
            a.actor_customer_id.as_deref(),
            a.request_id.as_deref(),
            a.reason.as_deref(),
            a.old_email.as_deref(),
            a.new_email.as_deref(),
            a.password_source.as_deref(),
        ] {
            text(&mut out, value);
            out.push('\t');
        }
        out.push_str(match a.with_setup_link {
            None => "\\N",
            Some(true) => "t",
            Some(false) => "f",
        });
        out.push('\n');
    }
    out
}

/// One customer's row.
pub async fn access_state(
    store: &Store,
    id: CustomerId,
) -> Result<Option<AccessStateRow>, ProjectionError> {
    on_store!(store, read, |pool, _ts, get_ts, _pg| {
        let row = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM access_state WHERE customer_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(state_row!(&row, get_ts))),
        }
    })
}

/// Customers whose current login email is `email` (found by its keyed
/// hash, as the store's lookups).
pub async fn access_state_by_email(
    store: &Store,
    email: &EmailAddress,
) -> Result<Vec<AccessStateRow>, ProjectionError> {
    let email_key = store.keyring()?.email_key(email);
    on_store!(store, read, |pool, _ts, get_ts, _pg| {
        let rows = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM access_state WHERE email_key = $1 ORDER BY customer_id"
        ))
        .bind(&email_key)
        .fetch_all(pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(state_row!(row, get_ts));
        }
        Ok(out)
    })
}

/// Filters of an audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub customer_id: Option<CustomerId>,
    pub kind: Option<String>,
    /// An API key name, or a customer id for customers' own changes.
    pub actor: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Rows after this place in the global order (the cursor).
    pub after: Option<Position>,
}

/// Up to `limit` audit rows matching `filter`, in the global order.
pub async fn audit_page(
    store: &Store,
    filter: &AuditFilter,
    limit: u32,
) -> Result<Vec<AuditRow>, ProjectionError> {
    on_store!(store, read, |pool, ts, get_ts, _pg| {
        let mut q = QueryBuilder::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_trail WHERE 1 = 1"
        ));
        if let Some(id) = filter.customer_id {
            q.push(" AND customer_id = ").push_bind(id.to_string());
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND kind = ").push_bind(kind.clone());
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND (actor_name = ")
                .push_bind(actor.clone())
                .push(" OR actor_customer_id = ")
                .push_bind(actor.clone())
                .push(")");
        }
        if let Some(from) = filter.from {
            q.push(" AND at >= ").push_bind(ts(from));
        }
        if let Some(to) = filter.to {
            q.push(" AND at < ").push_bind(ts(to));
        }
        if let Some(after) = filter.after {
            // A row-value comparison: both databases walk the (tx, position)
            // index from the cursor instead of from the start.
            q.push(" AND (tx, position) > (")
                .push_bind(to_i64(after.tx))
                .push(", ")
                .push_bind(after.global)
                .push(")");
        }
        q.push(" ORDER BY tx, position LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(audit_from_row!(row, get_ts));
        }
        Ok(out)
    })
}
