//! The key tables in SQL (`key_store`, `customer_keys`): unlocking with
//! the master key, a customer's data key for an append, forgetting a
//! customer, rotating the master key.

use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{key_error, DataKey, Keyring, MasterKey, DATA_KEY, EMAIL_INDEX};
use crate::error::StoreError;

/// Reads the key store with `master`, creating it on first use. A
/// different master key than the one the database was set up with is a
/// clear error, never silent garbage.
pub(crate) async fn unlock<'e, DB, E>(executor: E, master: MasterKey) -> Result<Keyring, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB> + Copy,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let select = "SELECT master_key_id, email_index_key FROM key_store WHERE id = 1";
    let mut row = sqlx::query::<DB>(select).fetch_optional(executor).await?;
    if row.is_none() {
        // First start on this database: a new email index key. Another
        // replica may do the same at the same moment; one insert wins and
        // both read the winner's row.
        let index = DataKey::generate().map_err(key_error)?;
        let wrapped = master.wrap(EMAIL_INDEX, "1", &index).map_err(key_error)?;
        sqlx::query::<DB>(
            "INSERT INTO key_store (id, master_key_id, email_index_key, created_ms) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(master.id())
        .bind(wrapped.as_str())
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(executor)
        .await?;
        row = sqlx::query::<DB>(select).fetch_optional(executor).await?;
    }
    let row = row.ok_or_else(|| StoreError::Keys("the key store is empty".into()))?;
    let stored_id: String = row.try_get("master_key_id")?;
    let wrapped: String = row.try_get("email_index_key")?;
    if stored_id != master.id() {
        return Err(StoreError::WrongMasterKey {
            expected: stored_id,
            given: master.id().to_string(),
        });
    }
    let index =
        master
            .unwrap(EMAIL_INDEX, "1", &wrapped)
            .map_err(|_| StoreError::WrongMasterKey {
                expected: stored_id,
                given: master.id().to_string(),
            })?;
    Ok(Keyring {
        master,
        email_index: index.into_email_index().map_err(key_error)?,
    })
}

/// The customer's data key for an append, inside the append's
/// transaction: created with the customer's first event (or, for a
/// customer whose events predate encryption, with its next one).
pub(crate) async fn key_for_append<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    customer_id: &str,
) -> Result<DataKey, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let existing =
        sqlx::query::<DB>("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(row) = existing {
        let wrapped: Option<String> = row.try_get("wrapped_key")?;
        return match wrapped {
            Some(w) => keyring.unwrap_data_key(customer_id, &w),
            None => Err(StoreError::Keys(format!(
                "customer {customer_id} was forgotten: its key is destroyed"
            ))),
        };
    }
    let (key, wrapped) = keyring.new_data_key(customer_id)?;
    sqlx::query::<DB>(
        "INSERT INTO customer_keys (customer_id, wrapped_key, created_ms) VALUES ($1, $2, $3)",
    )
    .bind(customer_id)
    .bind(wrapped.as_str())
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&mut *conn)
    .await
    .map_err(|e| match crate::error::classify(&e) {
        // A concurrent first command for the same customer: the events
        // insert would conflict anyway.
        Some(_) => StoreError::Conflict {
            customer_id: customer_id.to_string(),
            expected: 0,
        },
        None => e.into(),
    })?;
    Ok(key)
}

/// Everything a forget erases besides the key's wrapped copy, in the
/// append's transaction: the snapshot, email lookups, sessions, stored
/// responses, and the customer's mail (pending mail is cancelled; the
/// delivery log keeps only that a message existed).
pub(crate) async fn erase_customer<DB>(
    conn: &mut DB::Connection,
    customer_id: &str,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let now_ms = chrono::Utc::now().timestamp_millis();
    sqlx::query::<DB>(
        "UPDATE customer_keys SET wrapped_key = NULL, destroyed_ms = $2 WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    for statement in [
        "DELETE FROM snapshots WHERE aggregate_id = $1",
        "DELETE FROM customer_emails WHERE customer_id = $1",
        "DELETE FROM login_emails WHERE customer_id = $1",
        "DELETE FROM customer_sessions WHERE customer_id = $1",
        // Responses name the customer in their body (no-op responses are
        // stored without the customer column).
        "DELETE FROM idempotency_keys WHERE customer_id = $1 OR body LIKE '%' || $1 || '%'",
        "UPDATE mail_outbox SET recipient = '[forgotten]', message = NULL, last_error = \
         CASE WHEN status = 'pending' THEN 'cancelled: the customer was forgotten' ELSE NULL END, \
         status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END WHERE customer_id = $1",
    ] {
        sqlx::query::<DB>(statement)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Re-wraps every live data key and the email index key under `new`, in
/// one transaction; events are untouched. Returns the number of customer
/// keys re-wrapped.
pub(crate) async fn rotate_master<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    new: &MasterKey,
) -> Result<u64, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let rows = sqlx::query::<DB>(
        "SELECT customer_id, wrapped_key FROM customer_keys WHERE wrapped_key IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut count = 0;
    for row in rows {
        let customer_id: String = row.try_get("customer_id")?;
        let wrapped: String = row.try_get("wrapped_key")?;
        let key = keyring.unwrap_data_key(&customer_id, &wrapped)?;
        let rewrapped = new.wrap(DATA_KEY, &customer_id, &key).map_err(key_error)?;
        sqlx::query::<DB>("UPDATE customer_keys SET wrapped_key = $1 WHERE customer_id = $2")
            .bind(rewrapped.as_str())
            .bind(customer_id.as_str())
            .execute(&mut *conn)
            .await?;
        count += 1;
    }
    let wrapped_index: String =
        sqlx::query::<DB>("SELECT email_index_key FROM key_store WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
            .try_get("email_index_key")?;
    let index = keyring
        .master
        .unwrap(EMAIL_INDEX, "1", &wrapped_index)
        .map_err(key_error)?;
    let rewrapped = new.wrap(EMAIL_INDEX, "1", &index).map_err(key_error)?;
    sqlx::query::<DB>(
        "UPDATE key_store SET master_key_id = $1, email_index_key = $2, rotated_ms = $3 WHERE id = 1",
    )
    .bind(new.id())
    .bind(rewrapped.as_str())
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&mut *conn)
    .await?;
    Ok(count)
}
