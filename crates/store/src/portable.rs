//! Statements both databases run the same way, written once, generic over
//! the sqlx driver. (SQLite accepts PostgreSQL's `$n` placeholders.)

use access_domain::{Customer, CustomerId};
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::error::{classify, StoreError, Violation};
use crate::keys::Keyring;
use crate::{
    reservations, snapshot_due, Append, IdempotencyRecord, Loaded, RecordedEvent, AGGREGATE_TYPE,
};

/// Brings the customer's login-email reservations from `before` to
/// `after`: drop its rows, insert the new set. An address another customer
/// holds makes the insert do nothing, which is `EmailInUse` (and the
/// caller's transaction rolls back). Another customer's pending change
/// whose link expired no longer holds its address: the claim releases it
/// first, in the same transaction. `now` decides which pending changes
/// have expired: a command's own time (so a test's fake clock rules), or
/// today for a re-index.
pub(crate) async fn write_reservations<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    customer_id: &str,
    before: &Customer,
    after: &Customer,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let wanted = reservations(after, now);
    if reservations(before, now) == wanted {
        return Ok(());
    }
    sqlx::query::<DB>("DELETE FROM login_emails WHERE customer_id = $1")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    for (email, kind, expires_ms) in &wanted {
        let email_key = keyring.email_key(email);
        let released = sqlx::query::<DB>(
            "DELETE FROM login_emails WHERE email_key = $1 AND kind = 'pending_change' \
             AND expires_ms IS NOT NULL AND expires_ms <= $2 RETURNING customer_id",
        )
        .bind(email_key.as_str())
        .bind(now.timestamp_millis())
        .fetch_optional(&mut *conn)
        .await?;
        if released.is_some() {
            tracing::info!(
                customer_id,
                "claimed an address held by another customer's expired pending email change"
            );
        }
        let inserted = sqlx::query::<DB>(
            "INSERT INTO login_emails (email_key, customer_id, kind, expires_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (email_key) DO NOTHING RETURNING email_key",
        )
        .bind(email_key.as_str())
        .bind(customer_id)
        .bind(*kind)
        .bind(*expires_ms)
        .fetch_optional(&mut *conn)
        .await?;
        if inserted.is_none() {
            return Err(StoreError::EmailInUse {
                email: email.normalized().to_string(),
            });
        }
    }
    Ok(())
}

/// Rewrites a customer's email lookup and reservation rows from its state
/// under the current email index key (for the one-time migration of
/// stores written before keyed hashes).
pub(crate) async fn reindex_customer<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    customer_id: &str,
    customer: &Customer,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    for statement in [
        "DELETE FROM login_emails WHERE customer_id = $1",
        "DELETE FROM customer_emails WHERE customer_id = $1",
    ] {
        sqlx::query::<DB>(statement)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    write_reservations::<DB>(
        &mut *conn,
        keyring,
        customer_id,
        &Customer::default(),
        customer,
        // Today, not the customer's last change: a pending change that has
        // expired since holds nothing (its address may be another's now).
        chrono::Utc::now(),
    )
    .await?;
    if let Some(email) = customer.email() {
        sqlx::query::<DB>("INSERT INTO customer_emails (customer_id, email_key) VALUES ($1, $2)")
            .bind(customer_id)
            .bind(keyring.email_key(email).as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(crate) async fn insert_idempotency<DB>(
    conn: &mut DB::Connection,
    record: &IdempotencyRecord,
    customer_id: Option<&str>,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO idempotency_keys (caller, key, request_digest, status, body, customer_id, headers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(record.caller.as_str())
    .bind(record.key.as_str())
    .bind(record.request_digest.as_str())
    .bind(i32::from(record.status))
    .bind(record.body.as_str())
    .bind(customer_id)
    .bind(
        serde_json::to_string(&record.headers)
            .unwrap_or_else(|_| "[]".to_string())
            .as_str(),
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if classify(&e) == Some(Violation::IdempotencyKey) {
            StoreError::IdempotencyKeyTaken
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub(crate) async fn idempotency_lookup<'e, DB, E>(
    executor: E,
    caller: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let row = sqlx::query::<DB>(
        "SELECT request_digest, status, body, headers FROM idempotency_keys WHERE caller = $1 AND key = $2",
    )
    .bind(caller)
    .bind(key)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(IdempotencyRecord {
        caller: caller.to_string(),
        key: key.to_string(),
        request_digest: row.try_get("request_digest")?,
        status: u16::try_from(row.try_get::<i32, _>("status")?).unwrap_or(500),
        body: row.try_get("body")?,
        headers: serde_json::from_str(&row.try_get::<String, _>("headers")?).map_err(|e| {
            StoreError::Database(format!(
                "a stored idempotent response has unreadable headers: {e}"
            ))
        })?,
    }))
}

pub(crate) async fn email_holder<'e, DB, E>(
    executor: E,
    email_key: &str,
) -> Result<Option<CustomerId>, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let holder: Option<String> = sqlx::query_scalar::<DB, String>(
        "SELECT customer_id FROM login_emails WHERE email_key = $1",
    )
    .bind(email_key)
    .fetch_optional(executor)
    .await?;
    holder
        .map(|h| {
            h.parse().map_err(|_| {
                StoreError::Database(format!("login_emails holds a bad customer id `{h}`"))
            })
        })
        .transpose()
}

/// Upserts the one snapshot row of a customer. `payload` is the state as
/// the driver stores JSON (a `Value` on PostgreSQL, text on SQLite).
pub(crate) async fn upsert_snapshot<DB, P>(
    conn: &mut DB::Connection,
    customer_id: &str,
    version: u64,
    payload: P,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> P: Encode<'q, DB> + Type<DB> + Send + 'q,
{
    sqlx::query::<DB>(
        "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
         VALUES ($1, $2, $3, 1, $4) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
         SET last_sequence = excluded.last_sequence, \
             current_snapshot = snapshots.current_snapshot + 1, \
             payload = excluded.payload",
    )
    .bind(AGGREGATE_TYPE)
    .bind(customer_id)
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .bind(payload)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A customer from its snapshot (state at `last_sequence`) and the events
/// after it.
pub(crate) fn from_snapshot(
    customer: Customer,
    last_sequence: i64,
    newer: Vec<RecordedEvent>,
) -> Loaded {
    let mut loaded = Loaded {
        customer,
        version: u64::try_from(last_sequence).unwrap_or_default(),
    };
    for e in newer {
        cqrs_es::Aggregate::apply(&mut loaded.customer, e.event);
        loaded.version += 1;
    }
    loaded
}

/// A customer from its stored snapshot at `last_sequence`: `None` when it
/// cannot be used (the key is destroyed, or it no longer deserializes: the
/// caller then replays every event). A sealed snapshot that does not open
/// (altered, or put back from an older state) is
/// [`StoreError::CorruptSnapshot`]: never used, never silently replaced.
pub(crate) fn open_snapshot(
    keyring: &Keyring,
    customer_id: &str,
    last_sequence: i64,
    key: &crate::keys::KeyState,
    payload: serde_json::Value,
) -> Result<Option<Customer>, StoreError> {
    let last_sequence = u64::try_from(last_sequence).unwrap_or_default();
    let mut opener = crate::keys::Opener::new(keyring);
    let state = match opener.open_snapshot(customer_id, last_sequence, key, payload) {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(None),
        Err(detail) => {
            return Err(StoreError::CorruptSnapshot {
                customer_id: customer_id.to_string(),
                last_sequence,
                detail,
            })
        }
    };
    match serde_json::from_value(state) {
        Ok(customer) => Ok(Some(customer)),
        Err(e) => {
            snapshot_unreadable(customer_id, &e);
            Ok(None)
        }
    }
}

/// Logs an unreadable snapshot (the caller then replays every event).
pub(crate) fn snapshot_unreadable(customer_id: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(customer_id, error = %error, "snapshot unreadable, replaying all events");
}

/// Everything an append writes after the events, in the same transaction:
/// reservations, the idempotency record, the mail (sealed with `key` when
/// given) and a snapshot when one is due (sealed with `key` when given;
/// `snapshot_payload` turns its JSON into what the driver stores).
/// Returns the customer's new version.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish_append<DB, P>(
    conn: &mut DB::Connection,
    append: &Append<'_>,
    outbox: &[crate::OutboxMessage],
    customer_id: &str,
    snapshot_interval: u64,
    keyring: &Keyring,
    key: Option<&crate::keys::DataKey>,
    snapshot_payload: impl FnOnce(serde_json::Value) -> P,
) -> Result<u64, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> P: Encode<'q, DB> + Type<DB> + Send + 'q,
{
    write_reservations::<DB>(
        &mut *conn,
        keyring,
        customer_id,
        append.before,
        append.after,
        // The command's time (its events' `at`), so a fake clock rules.
        append.after.updated_at().unwrap_or_else(chrono::Utc::now),
    )
    .await?;
    let email = append.after.email().map(|e| e.normalized());
    if let Some(new) = append.after.email() {
        if email != append.before.email().map(|e| e.normalized()) {
            sqlx::query::<DB>(
                "INSERT INTO customer_emails (customer_id, email_key) VALUES ($1, $2) \
                 ON CONFLICT (customer_id) DO UPDATE SET email_key = excluded.email_key",
            )
            .bind(customer_id)
            .bind(keyring.email_key(new).as_str())
            .execute(&mut *conn)
            .await?;
        }
    }
    if let Some(record) = append.idempotency {
        insert_idempotency::<DB>(&mut *conn, record, Some(customer_id)).await?;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for mail in outbox {
        let message = match key {
            Some(key) => crate::keys::seal_mail(key, customer_id, &mail.id, &mail.message)?,
            None => mail.message.clone(),
        };
        sqlx::query::<DB>(
            "INSERT INTO mail_outbox (id, customer_id, kind, sender, recipient, message, status, attempts, \
             next_attempt_ms, claimed_until_ms, created_ms) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, $7)",
        )
        .bind(mail.id.as_str())
        .bind(customer_id)
        .bind(mail.kind.as_str())
        .bind(mail.sender.as_str())
        .bind(mail.recipient.as_str())
        .bind(message.as_str())
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    let version = append.expected_version + append.events.len() as u64;
    if snapshot_due(snapshot_interval, append.expected_version, version) {
        let state = serde_json::to_value(append.after)
            .map_err(|e| StoreError::Database(format!("snapshot does not serialize: {e}")))?;
        let stored = match key {
            Some(key) => crate::keys::seal_snapshot(key, customer_id, version, &state)?,
            None => state,
        };
        upsert_snapshot::<DB, P>(&mut *conn, customer_id, version, snapshot_payload(stored))
            .await?;
    }
    if append.after.is_forgotten() && !append.before.is_forgotten() {
        crate::keys::erase_customer::<DB>(&mut *conn, customer_id).await?;
    }
    Ok(version)
}
