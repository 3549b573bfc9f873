//! The one-time migration of personal data written before encryption, or
//! sealed under the first scheme (`v1`): `accessctl keys seal-legacy`.

use access_domain::{CustomerEvent, CustomerId};
use serde_json::Value;

use super::key_store::key_for_append;
use super::sealing::CustomerCipher;
use super::{Keyring, SealScheme};
use crate::append::reindex_customer;
use crate::error::StoreError;
use crate::sql::{Query, Tx};
use crate::{EventStore, Store};

/// See [`crate::KeyAdmin::seal_legacy_events`].
pub(super) async fn seal_legacy_events(store: &Store) -> Result<LegacySealed, StoreError> {
    let keyring = store.keyring()?;
    let db = store.sql();
    let customers = db
        .read(&Query::new(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'Customer' ORDER BY 1",
        ))
        .await?
        .iter()
        .map(|row| row.text("aggregate_id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut done = LegacySealed::default();
    let types = PERSONAL_TYPES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!(
        "SELECT global_position, sequence, payload FROM events WHERE aggregate_type = 'Customer' \
         AND aggregate_id = $1 AND event_type IN ({types}) ORDER BY sequence"
    );
    let update = format!(
        "UPDATE events SET payload = $1{} WHERE global_position = $2",
        db.sql().text_as_json
    );
    for customer in customers {
        let id: CustomerId = customer.parse().map_err(|_| {
            StoreError::Database(format!("events hold a bad customer id `{customer}`"))
        })?;
        let state = store.load_by_replay(id).await?.customer;
        let mut tx = db.begin().await?;
        reindex_customer(&mut tx, keyring, &customer, &state).await?;
        let rows = tx
            .fetch(&Query::new(select.as_str()).bind(&customer))
            .await?
            .iter()
            .map(|row| {
                let p = row.int("global_position")?;
                let payload = row.json("payload").map_err(|e| {
                    StoreError::Database(format!("payload at {p} is not JSON: {e}"))
                })?;
                Ok((p, row.int("sequence")?, payload))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let n = seal_legacy_customer(&mut tx, keyring, &customer, rows, &update).await?;
        tx.commit().await?;
        if n > 0 {
            done.customers += 1;
            done.events += n;
        }
    }
    Ok(done)
}

/// What [`crate::KeyAdmin::seal_legacy_events`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacySealed {
    /// Customers whose events held personal data in the clear or sealed
    /// under an older scheme.
    pub customers: u64,
    /// Events rewritten with their personal fields sealed under the
    /// current scheme.
    pub events: u64,
}

/// Event types that carry personal fields (all at version 1.0).
const PERSONAL_TYPES: &[&str] = &[
    "CustomerRegistered",
    "EmailChanged",
    "AccessNotificationSent",
    "EmailChangeRequested",
    "EmailChangeConfirmed",
];

/// One customer's events written before encryption, or sealed under an
/// older scheme, rewritten with their personal fields sealed under the
/// current one (same transaction for all of them). `rows` are (global
/// position, sequence, payload). Each row keeps its type, version and every
/// other field.
async fn seal_legacy_customer(
    tx: &mut Tx,
    keyring: &Keyring,
    customer_id: &str,
    rows: Vec<(i64, i64, Value)>,
    update_sql: &str,
) -> Result<u64, StoreError> {
    let wrapped: Option<Option<String>> = tx
        .fetch_optional(
            &Query::new("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
                .bind(customer_id),
        )
        .await?
        .map(|row| row.opt_text("wrapped_key"))
        .transpose()?;
    // A forgotten customer's sealed values never open again: nothing to
    // re-seal (values in the clear still are an error below).
    let destroyed = matches!(wrapped, Some(None));
    let mut todo = Vec::new();
    for (position, sequence, payload) in rows {
        let mut event: CustomerEvent = serde_json::from_value(payload).map_err(|e| {
            StoreError::Database(format!(
                "event at position {position} of customer {customer_id} does not read: {e}"
            ))
        })?;
        let sealed = event.sealed_values();
        let old_scheme = sealed
            .iter()
            .any(|s| SealScheme::of(s).ok() != Some(SealScheme::CURRENT));
        if sealed.is_empty() || (old_scheme && !destroyed) {
            todo.push((position, sequence, event));
        }
    }
    if todo.is_empty() {
        return Ok(0);
    }
    let key = key_for_append(tx, keyring, customer_id).await?;
    let mut rewritten = 0;
    for (position, sequence, mut event) in todo {
        let as_json = |e: &CustomerEvent| {
            serde_json::to_string(e)
                .map_err(|err| StoreError::Database(format!("event does not serialize: {err}")))
        };
        let before = as_json(&event)?;
        let cipher = CustomerCipher {
            key: Some(&key),
            customer_id,
            sequence: u64::try_from(sequence).unwrap_or_default(),
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            customer_id: customer_id.to_string(),
            sequence: u64::try_from(sequence).unwrap_or_default(),
            position,
            detail,
        };
        event.open(&cipher).map_err(|e| corrupt(e.to_string()))?;
        event.seal(&cipher).map_err(|e| corrupt(e.to_string()))?;
        let after = as_json(&event)?;
        if after == before {
            continue;
        }
        tx.execute(&Query::new(update_sql).bind(after).bind(position))
            .await?;
        rewritten += 1;
    }
    if rewritten > 0 {
        // Its snapshot was written in the clear or under the older scheme
        // too; the next one due is sealed under the current one.
        tx.execute(&Query::new("DELETE FROM snapshots WHERE aggregate_id = $1").bind(customer_id))
            .await?;
    }
    Ok(rewritten)
}
