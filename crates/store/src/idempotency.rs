//! [`Idempotency`]: the stored responses of commands sent with an
//! idempotency key (per caller), so a retry gets the first answer.

use async_trait::async_trait;

use crate::error::{classify, Violation};
use crate::sql::{Query, Tx};
use crate::{IdempotencyRecord, Store, StoreError};

/// Stored responses of idempotent commands.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// The stored response for (caller, key), if any.
    async fn idempotency_lookup(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Stores a response that wrote no events (e.g. a no-op command).
    async fn idempotency_save(&self, record: &IdempotencyRecord) -> Result<(), StoreError>;
}

/// Inserts a record in `tx` (an append's, or its own); a (caller, key)
/// stored meanwhile is [`StoreError::IdempotencyKeyTaken`].
pub(crate) async fn insert(
    tx: &mut Tx,
    record: &IdempotencyRecord,
    customer_id: Option<&str>,
) -> Result<(), StoreError> {
    let q = Query::new(
        "INSERT INTO idempotency_keys (caller, key, request_digest, status, body, customer_id, headers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&record.caller)
    .bind(&record.key)
    .bind(&record.request_digest)
    .bind(i32::from(record.status))
    .bind(&record.body)
    .bind(customer_id)
    .bind(serde_json::to_string(&record.headers).unwrap_or_else(|_| "[]".to_string()));
    tx.execute(&q).await.map_err(|e| {
        if classify(&e) == Some(Violation::IdempotencyKey) {
            StoreError::IdempotencyKeyTaken
        } else {
            e.into()
        }
    })?;
    Ok(())
}

#[async_trait]
impl Idempotency for Store {
    async fn idempotency_lookup(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let q = Query::new(
            "SELECT request_digest, status, body, headers FROM idempotency_keys \
             WHERE caller = $1 AND key = $2",
        )
        .bind(caller)
        .bind(key);
        let Some(row) = self.db.read_optional(&q).await? else {
            return Ok(None);
        };
        Ok(Some(IdempotencyRecord {
            caller: caller.to_string(),
            key: key.to_string(),
            request_digest: row.text("request_digest")?,
            status: u16::try_from(row.i32("status")?).unwrap_or(500),
            body: row.text("body")?,
            headers: serde_json::from_str(&row.text("headers")?).map_err(|e| {
                StoreError::Database(format!(
                    "a stored idempotent response has unreadable headers: {e}"
                ))
            })?,
        }))
    }

    async fn idempotency_save(&self, record: &IdempotencyRecord) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        insert(&mut tx, record, None).await?;
        tx.commit().await?;
        Ok(())
    }
}
