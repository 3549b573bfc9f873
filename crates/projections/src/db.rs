//! The projection tables, on either database through the store's query
//! layer ([`access_store::sql`]): each statement is written once; the
//! store's dialect binds and reads timestamps (`timestamptz` on PostgreSQL,
//! fixed-width RFC 3339 text on SQLite, so text order is time order) and
//! bulk-loads audit rows (`COPY` or batched `INSERT`s).

use std::collections::{BTreeMap, HashSet};

use access_domain::events::FORGOTTEN;
use access_domain::{CustomerEvent, CustomerId, EmailAddress};
use access_store::sql::{Query, Row, Tx, Value};
use access_store::{Position, RecordedEvent, Store};
use chrono::{DateTime, Utc};

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

pub(crate) const STATE_COLUMNS: &str = "customer_id, name, email, email_key, access_granted, role, password_set, \
    must_change_password, setup_link_expires_at, pending_email, pending_email_expires_at, version, updated_at, \
    last_tx, last_position";

pub(crate) const AUDIT_COLUMNS: &str =
    "position, tx, customer_id, sequence, at, kind, actor_kind, actor_name, actor_role, \
    actor_customer_id, request_id, reason, old_email, new_email, password_source, with_setup_link";

/// An `access_state` row as read.
pub(crate) fn state_row(row: &Row) -> Result<AccessStateRow, ProjectionError> {
    let id = row.text("customer_id")?;
    Ok(AccessStateRow {
        customer_id: id
            .parse()
            .map_err(|_| ProjectionError::Corrupt(format!("access_state customer_id `{id}`")))?,
        name: row.opt_text("name")?,
        email: row.text("email")?,
        access_granted: row.bool("access_granted")?,
        role: row.opt_text("role")?,
        password_set: row.bool("password_set")?,
        must_change_password: row.bool("must_change_password")?,
        setup_link_expires_at: row.opt_stamp("setup_link_expires_at")?,
        pending_email: row.opt_text("pending_email")?,
        pending_email_expires_at: row.opt_stamp("pending_email_expires_at")?,
        version: u64::try_from(row.int("version")?).unwrap_or_default(),
        updated_at: row.stamp("updated_at")?,
        last_change: Position {
            tx: u64::try_from(row.int("last_tx")?).unwrap_or_default(),
            global: row.int("last_position")?,
        },
    })
}

/// An `audit_trail` row as read.
pub(crate) fn audit_from_row(row: &Row) -> Result<AuditRow, ProjectionError> {
    let id = row.text("customer_id")?;
    Ok(AuditRow {
        tx: u64::try_from(row.int("tx")?).unwrap_or_default(),
        position: row.int("position")?,
        customer_id: id
            .parse()
            .map_err(|_| ProjectionError::Corrupt(format!("audit_trail customer_id `{id}`")))?,
        sequence: u64::try_from(row.int("sequence")?).unwrap_or_default(),
        at: row.stamp("at")?,
        kind: row.text("kind")?,
        actor_kind: row.text("actor_kind")?,
        actor_name: row.opt_text("actor_name")?,
        actor_role: row.opt_text("actor_role")?,
        actor_customer_id: row.opt_text("actor_customer_id")?,
        request_id: row.opt_text("request_id")?,
        reason: row.opt_text("reason")?,
        old_email: row.opt_text("old_email")?,
        new_email: row.opt_text("new_email")?,
        password_source: row.opt_text("password_source")?,
        with_setup_link: row.opt_bool("with_setup_link")?,
    })
}

/// An audit row's values, in `AUDIT_COLUMNS` order.
fn audit_values(a: &AuditRow) -> Vec<Value> {
    vec![
        a.position.into(),
        Value::count(a.tx),
        a.customer_id.to_string().into(),
        Value::count(a.sequence),
        Value::stamp(a.at),
        a.kind.clone().into(),
        a.actor_kind.clone().into(),
        a.actor_name.clone().into(),
        a.actor_role.clone().into(),
        a.actor_customer_id.clone().into(),
        a.request_id.clone().into(),
        a.reason.clone().into(),
        a.old_email.clone().into(),
        a.new_email.clone().into(),
        a.password_source.clone().into(),
        a.with_setup_link.into(),
    ]
}

/// The checkpoint of a projector (START when it never ran).
pub async fn checkpoint(store: &Store, name: &str) -> Result<Position, ProjectionError> {
    Ok(store.sql().checkpoint(name).await?)
}

/// Makes sure the checkpoint row exists (so it can be locked).
pub async fn ensure_checkpoint(store: &Store, name: &str) -> Result<(), ProjectionError> {
    Ok(store.sql().ensure_checkpoint(name).await?)
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
    let mut tx = store.sql().begin().await?;
    let current = tx.lock_checkpoint(tables.checkpoint).await?;
    if current != from {
        return Err(ProjectionError::CheckpointMoved {
            expected: from,
            found: current,
        });
    }

    let mut rows = state_rows(&mut tx, tables, events).await?;
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
        audits.push(audit_values(&audit_row(event)));
    }

    let changed_rows: Vec<&AccessStateRow> = rows
        .values()
        .filter(|r| changed.contains(&r.customer_id.to_string()))
        .collect();
    // 15 parameters a row: 1,000 rows stay under SQLite's and
    // PostgreSQL's parameter limits.
    for chunk in changed_rows.chunks(1000) {
        let mut upsert = Query::new(format!(
            "INSERT INTO {} ({STATE_COLUMNS}) ",
            tables.access_state
        ));
        upsert.push_values(chunk, |r| {
            vec![
                r.customer_id.to_string().into(),
                r.name.clone().into(),
                r.email.clone().into(),
                keyring.email_key_text(&r.email).into(),
                r.access_granted.into(),
                r.role.clone().into(),
                r.password_set.into(),
                r.must_change_password.into(),
                Value::stamp(r.setup_link_expires_at),
                r.pending_email.clone().into(),
                Value::stamp(r.pending_email_expires_at),
                Value::count(r.version),
                Value::stamp(r.updated_at),
                Value::count(r.last_change.tx),
                r.last_change.global.into(),
            ]
        });
        upsert.push(
            " ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, email = excluded.email, \
             email_key = excluded.email_key, access_granted = excluded.access_granted, role = excluded.role, \
             password_set = excluded.password_set, must_change_password = excluded.must_change_password, \
             setup_link_expires_at = excluded.setup_link_expires_at, pending_email = excluded.pending_email, \
             pending_email_expires_at = excluded.pending_email_expires_at, version = excluded.version, \
             updated_at = excluded.updated_at, last_tx = excluded.last_tx, \
             last_position = excluded.last_position",
        );
        tx.execute(&upsert).await?;
    }

    tx.bulk_insert(tables.audit_trail, AUDIT_COLUMNS, &audits)
        .await?;

    // A forgotten customer's earlier audit rows lose their addresses,
    // as a rebuild (which can no longer open them) would show them.
    for event in events {
        if scrub_forgotten && matches!(event.event, CustomerEvent::CustomerForgotten { .. }) {
            scrub(&mut tx, tables, event.customer_id).await?;
        }
    }

    tx.set_checkpoint(tables.checkpoint, to).await?;
    tx.commit().await?;
    Ok(to)
}

/// The state rows of the customers in `events`, by customer id.
async fn state_rows(
    tx: &mut Tx,
    tables: Tables,
    events: &[RecordedEvent],
) -> Result<BTreeMap<String, AccessStateRow>, ProjectionError> {
    let ids: Vec<String> = {
        let mut seen = HashSet::new();
        events
            .iter()
            .map(|e| e.customer_id.to_string())
            .filter(|id| seen.insert(id.clone()))
            .collect()
    };
    let mut rows = BTreeMap::new();
    for chunk in ids.chunks(1000) {
        let mut select = Query::new(format!(
            "SELECT {STATE_COLUMNS} FROM {} WHERE customer_id",
            tables.access_state
        ));
        select.push_in(chunk.iter().cloned());
        for row in tx.fetch(&select).await? {
            let state = state_row(&row)?;
            rows.insert(state.customer_id.to_string(), state);
        }
    }
    Ok(rows)
}

/// Scrubs the addresses of a forgotten customer's audit rows.
async fn scrub(tx: &mut Tx, tables: Tables, id: CustomerId) -> Result<(), ProjectionError> {
    let q = Query::new(format!(
        "UPDATE {} SET \
         old_email = CASE WHEN old_email IS NULL THEN NULL ELSE $2 END, \
         new_email = CASE WHEN new_email IS NULL THEN NULL ELSE $2 END \
         WHERE customer_id = $1",
        tables.audit_trail
    ))
    .bind(id.to_string())
    .bind(FORGOTTEN);
    tx.execute(&q).await?;
    Ok(())
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
    let mut tx = store.sql().begin().await?;
    for id in customers {
        scrub(&mut tx, tables, *id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One customer's row.
pub async fn access_state(
    store: &Store,
    id: CustomerId,
) -> Result<Option<AccessStateRow>, ProjectionError> {
    let q = Query::new(format!(
        "SELECT {STATE_COLUMNS} FROM access_state WHERE customer_id = $1"
    ))
    .bind(id.to_string());
    let row = store.sql().read_optional(&q).await?;
    row.as_ref().map(state_row).transpose()
}

/// Customers whose current login email is `email` (found by its keyed
/// hash, as the store's lookups).
pub async fn access_state_by_email(
    store: &Store,
    email: &EmailAddress,
) -> Result<Vec<AccessStateRow>, ProjectionError> {
    let q = Query::new(format!(
        "SELECT {STATE_COLUMNS} FROM access_state WHERE email_key = $1 ORDER BY customer_id"
    ))
    .bind(store.keyring()?.email_key(email));
    store.sql().read(&q).await?.iter().map(state_row).collect()
}

/// Ends a page's query: the first `limit` rows after `after` in the global
/// order, whose place is in the two columns `place` (`tx, position`).
fn page_after(q: &mut Query, place: &str, after: Option<Position>, limit: u32) {
    page_from(q, place, after, false, limit);
}

/// Rows after the cursor in the global order, or before it with
/// `newest_first` (then in reverse order).
fn page_from(q: &mut Query, place: &str, cursor: Option<Position>, newest_first: bool, limit: u32) {
    let (beyond, order) = if newest_first {
        (
            "<",
            format!(" ORDER BY {}", place.replace(',', " DESC,") + " DESC"),
        )
    } else {
        (">", format!(" ORDER BY {place}"))
    };
    if let Some(cursor) = cursor {
        // A row-value comparison: both databases walk the index on the
        // place from the cursor instead of from the start.
        q.push(&format!(" AND ({place}) {beyond} ("))
            .push_bind(Value::count(cursor.tx))
            .push(", ")
            .push_bind(cursor.global)
            .push(")");
    }
    q.push(&format!("{order} LIMIT "))
        .push_bind(i64::from(limit));
}

/// Filters of a customer list (`GET /v1/customers`).
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Only customers with (true) or without (false) portal access.
    pub has_access: Option<bool>,
    /// Only customers changed at or after this instant.
    pub updated_since: Option<DateTime<Utc>>,
    /// Customers whose last change is after this place in the global
    /// order (the cursor).
    pub after: Option<Position>,
}

/// Up to `limit` customers matching `filter`, in the global order of their
/// last change. The projector writes rows in that order, so a customer
/// changed while a client pages moves behind its cursor (it shows again,
/// with the newer version) and is never skipped.
pub async fn customer_page(
    store: &Store,
    filter: &CustomerFilter,
    limit: u32,
) -> Result<Vec<AccessStateRow>, ProjectionError> {
    let mut q = Query::new(format!(
        "SELECT {STATE_COLUMNS} FROM access_state WHERE 1 = 1"
    ));
    if let Some(has_access) = filter.has_access {
        q.push(" AND access_granted = ").push_bind(has_access);
    }
    if let Some(since) = filter.updated_since {
        q.push(" AND updated_at >= ").push_bind(Value::stamp(since));
    }
    page_after(&mut q, "last_tx, last_position", filter.after, limit);
    store.sql().read(&q).await?.iter().map(state_row).collect()
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
    /// Rows after this place in the global order (the cursor); with
    /// `newest_first`, rows before it.
    pub after: Option<Position>,
    /// The newest rows first (the latest changes), instead of the global
    /// order.
    pub newest_first: bool,
}

/// Up to `limit` audit rows matching `filter`, in the global order (or
/// the reverse with `newest_first`).
pub async fn audit_page(
    store: &Store,
    filter: &AuditFilter,
    limit: u32,
) -> Result<Vec<AuditRow>, ProjectionError> {
    let mut q = Query::new(format!(
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
        q.push(" AND at >= ").push_bind(Value::stamp(from));
    }
    if let Some(to) = filter.to {
        q.push(" AND at < ").push_bind(Value::stamp(to));
    }
    page_from(
        &mut q,
        "tx, position",
        filter.after,
        filter.newest_first,
        limit,
    );
    store
        .sql()
        .read(&q)
        .await?
        .iter()
        .map(audit_from_row)
        .collect()
}
