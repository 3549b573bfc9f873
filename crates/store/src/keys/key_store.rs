//! The key tables in SQL (`key_store`, `customer_keys`): unlocking with
//! the master key, a customer's data key for an append, forgetting a
//! customer, rotating the master key.

use super::{key_error, DataKey, Keyring, MasterKey, DATA_KEY, EMAIL_INDEX};
use crate::error::StoreError;
use crate::sql::{Db, Query, Tx};

/// Reads the key store with `master`, creating it on first use. A
/// different master key than the one the database was set up with is a
/// clear error, never silent garbage.
pub(crate) async fn unlock(db: &Db, master: MasterKey) -> Result<Keyring, StoreError> {
    let select = Query::new("SELECT master_key_id, email_index_key FROM key_store WHERE id = 1");
    let mut row = db.write(&select).await?.into_iter().next();
    if row.is_none() {
        // First start on this database: a new email index key. Another
        // replica may do the same at the same moment; one insert wins and
        // both read the winner's row.
        let index = DataKey::generate().map_err(key_error)?;
        let wrapped = master.wrap(EMAIL_INDEX, "1", &index).map_err(key_error)?;
        let insert = Query::new(
            "INSERT INTO key_store (id, master_key_id, email_index_key, created_ms) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(master.id())
        .bind(wrapped)
        .bind(chrono::Utc::now().timestamp_millis());
        db.execute(&insert).await?;
        row = db.write(&select).await?.into_iter().next();
    }
    let row = row.ok_or_else(|| StoreError::Keys("the key store is empty".into()))?;
    let stored_id = row.text("master_key_id")?;
    let wrapped = row.text("email_index_key")?;
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
pub(crate) async fn key_for_append(
    tx: &mut Tx,
    keyring: &Keyring,
    customer_id: &str,
) -> Result<DataKey, StoreError> {
    let existing = Query::new("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
        .bind(customer_id);
    if let Some(row) = tx.fetch_optional(&existing).await? {
        let wrapped = row.opt_text("wrapped_key")?;
        return match wrapped {
            Some(w) => keyring.unwrap_data_key(customer_id, &w),
            None => Err(StoreError::Keys(format!(
                "customer {customer_id} was forgotten: its key is destroyed"
            ))),
        };
    }
    let (key, wrapped) = keyring.new_data_key(customer_id)?;
    let insert = Query::new(
        "INSERT INTO customer_keys (customer_id, wrapped_key, created_ms) VALUES ($1, $2, $3)",
    )
    .bind(customer_id)
    .bind(wrapped)
    .bind(chrono::Utc::now().timestamp_millis());
    tx.execute(&insert)
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
pub(crate) async fn erase_customer(tx: &mut Tx, customer_id: &str) -> Result<(), StoreError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let destroy = Query::new(
        "UPDATE customer_keys SET wrapped_key = NULL, destroyed_ms = $2 WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(now_ms);
    tx.execute(&destroy).await?;
    for statement in [
        "DELETE FROM snapshots WHERE aggregate_id = $1",
        "DELETE FROM customer_emails WHERE customer_id = $1",
        "DELETE FROM login_emails WHERE customer_id = $1",
        "DELETE FROM import_external_ids WHERE customer_id = $1",
        "DELETE FROM customer_sessions WHERE customer_id = $1",
        // Responses name the customer in their body (no-op responses are
        // stored without the customer column).
        "DELETE FROM idempotency_keys WHERE customer_id = $1 OR body LIKE '%' || $1 || '%'",
        "UPDATE mail_outbox SET recipient = '[forgotten]', message = NULL, last_error = \
         CASE WHEN status = 'pending' THEN 'cancelled: the customer was forgotten' ELSE NULL END, \
         status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END WHERE customer_id = $1",
    ] {
        tx.execute(&Query::new(statement).bind(customer_id)).await?;
    }
    Ok(())
}

/// Re-wraps every live data key and the email index key under `new`, in
/// one transaction; events are untouched. Returns the number of customer
/// keys re-wrapped.
pub(crate) async fn rotate_master(
    tx: &mut Tx,
    keyring: &Keyring,
    new: &MasterKey,
) -> Result<u64, StoreError> {
    let rows = tx
        .fetch(&Query::new(
            "SELECT customer_id, wrapped_key FROM customer_keys WHERE wrapped_key IS NOT NULL",
        ))
        .await?;
    let mut count = 0;
    for row in rows {
        let customer_id = row.text("customer_id")?;
        let wrapped = row.text("wrapped_key")?;
        let key = keyring.unwrap_data_key(&customer_id, &wrapped)?;
        let rewrapped = new.wrap(DATA_KEY, &customer_id, &key).map_err(key_error)?;
        let update = Query::new("UPDATE customer_keys SET wrapped_key = $1 WHERE customer_id = $2")
            .bind(rewrapped)
            .bind(customer_id);
        tx.execute(&update).await?;
        count += 1;
    }
    let wrapped_index = tx
        .fetch_optional(&Query::new(
            "SELECT email_index_key FROM key_store WHERE id = 1",
        ))
        .await?
        .ok_or_else(|| StoreError::Keys("the key store is empty".into()))?
        .text("email_index_key")?;
    let index = keyring
        .master
        .unwrap(EMAIL_INDEX, "1", &wrapped_index)
        .map_err(key_error)?;
    let rewrapped = new.wrap(EMAIL_INDEX, "1", &index).map_err(key_error)?;
    let update = Query::new(
        "UPDATE key_store SET master_key_id = $1, email_index_key = $2, rotated_ms = $3 WHERE id = 1",
    )
    .bind(new.id())
    .bind(rewrapped)
    .bind(chrono::Utc::now().timestamp_millis());
    tx.execute(&update).await?;
    Ok(count)
}
