//! The one-time migration of personal data written before encryption, or
//! sealed under the first scheme (`v1`): `accessctl keys seal-legacy`.

use access_domain::{CustomerEvent, CustomerId};
use serde_json::Value;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::key_store::key_for_append;
use super::sealing::CustomerCipher;
use super::{Keyring, SealScheme};
use crate::error::StoreError;
use crate::{portable, Store};

impl Store {
    /// One-time migration for events written before encryption, or sealed
    /// under an older scheme (`v1`, bound to the customer only): seals the
    /// personal fields of every such event under its customer's key (made
    /// now if missing) with the current scheme (bound to customer, sequence
    /// and field; see [`crate::keys`]), one transaction per customer, and drops
    /// the customer's snapshot (the next one is sealed anew). Events keep
    /// their type, version and every other field; their stored form
    /// changes, so the hash chain must be recomputed afterwards
    /// (`accessctl keys seal-legacy` does that). Also rewrites every
    /// customer's email lookup and reservation rows as keyed hashes. Safe
    /// to run again: events sealed under the current scheme are left
    /// alone.
    pub async fn seal_legacy_events(&self) -> Result<LegacySealed, StoreError> {
        let keyring = self.keyring()?;
        let customers: Vec<String> = on_pool!(self, read, |p| {
            sqlx::query_scalar(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = 'Customer' ORDER BY 1"
        )
        .fetch_all(p)
        .await
        })?;
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
        for customer in customers {
            let id: CustomerId = customer.parse().map_err(|_| {
                StoreError::Database(format!("events hold a bad customer id `{customer}`"))
            })?;
            let state = self.load_by_replay(id).await?.customer;
            let n = match self {
                Self::Postgres(s) => {
                    let mut tx = s.pool().begin().await?;
                    portable::reindex_customer::<sqlx::Postgres>(
                        &mut tx, keyring, &customer, &state,
                    )
                    .await?;
                    let rows: Vec<(i64, i64, serde_json::Value)> = sqlx::query_as(&select)
                        .bind(&customer)
                        .fetch_all(&mut *tx)
                        .await?;
                    let n = seal_legacy_customer::<sqlx::Postgres>(
                        &mut tx,
                        keyring,
                        &customer,
                        rows,
                        "UPDATE events SET payload = $1::json WHERE global_position = $2",
                    )
                    .await?;
                    tx.commit().await?;
                    n
                }
                Self::Sqlite(s) => {
                    let mut tx = s.writer().begin().await?;
                    portable::reindex_customer::<sqlx::Sqlite>(&mut tx, keyring, &customer, &state)
                        .await?;
                    let rows: Vec<(i64, i64, String)> = sqlx::query_as(&select)
                        .bind(&customer)
                        .fetch_all(&mut *tx)
                        .await?;
                    let rows = rows
                        .into_iter()
                        .map(|(p, sequence, text)| {
                            serde_json::from_str(&text)
                                .map(|v| (p, sequence, v))
                                .map_err(|e| {
                                    StoreError::Database(format!("payload at {p} is not JSON: {e}"))
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let n = seal_legacy_customer::<sqlx::Sqlite>(
                        &mut tx,
                        keyring,
                        &customer,
                        rows,
                        "UPDATE events SET payload = $1 WHERE global_position = $2",
                    )
                    .await?;
                    tx.commit().await?;
                    n
                }
            };
            if n > 0 {
                done.customers += 1;
                done.events += n;
            }
        }
        Ok(done)
    }
}

/// What [`seal_legacy_events`] did.
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
async fn seal_legacy_customer<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    customer_id: &str,
    rows: Vec<(i64, i64, Value)>,
    update_sql: &str,
) -> Result<u64, StoreError>
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
    let wrapped: Option<Option<String>> =
        sqlx::query::<DB>("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| row.try_get("wrapped_key"))
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
    let key = key_for_append::<DB>(&mut *conn, keyring, customer_id).await?;
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
        sqlx::query::<DB>(update_sql)
            .bind(after.as_str())
            .bind(position)
            .execute(&mut *conn)
            .await?;
        rewritten += 1;
    }
    if rewritten > 0 {
        // Its snapshot was written in the clear or under the older scheme
        // too; the next one due is sealed under the current one.
        sqlx::query::<DB>("DELETE FROM snapshots WHERE aggregate_id = $1")
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rewritten)
}
