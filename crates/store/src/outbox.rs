//! [`Outbox`]: the mail outbox: messages written in the same transaction as the events
//! that call for them, then claimed, sent and marked by a delivery worker.
//!
//! A message is claimed with a lease (`claimed_until_ms`), so several
//! workers (replicas) never send the same message at the same time; a
//! worker that dies mid-send lets the lease run out and the message is sent
//! again later (at least once, never silently dropped). The rendered
//! message holds the link's token: it is stored sealed with the customer's
//! data key (so forgetting the customer shreds it too; see `keys.rs`),
//! opened only for the worker that claims it, and cleared when it is sent.
//! A claimed message whose customer was forgotten in the meantime is marked
//! failed, without its content, and never handed out.

use access_domain::CustomerId;
use async_trait::async_trait;

use crate::keys::{self, KeyState, MailBody};
use crate::sql::{Query, Row};
use crate::{Store, StoreError};

/// A message to record with a command's events. `Debug` shows no
/// addresses and no message: the message holds a live link, never in logs.
#[derive(Clone, PartialEq, Eq, derive_more::Debug)]
pub struct OutboxMessage {
    /// Unique; also the message's file name or Message-ID.
    pub id: String,
    pub customer_id: CustomerId,
    /// The template kind (e.g. `access_notification_with_link`).
    pub kind: String,
    /// Envelope sender and recipient.
    #[debug(skip)]
    pub sender: String,
    #[debug(skip)]
    pub recipient: String,
    /// The RFC 5322 message.
    #[debug(skip)]
    pub message: String,
}

/// A row of the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub sender: String,
    pub recipient: String,
    /// `None` once sent. Opened in what [`Outbox::outbox_claim`] returns;
    /// as stored (sealed) in [`Outbox::outbox_list`].
    pub message: Option<String>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
}

impl std::fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, customer_id, kind, sender, recipient, message, status, attempts, \
    next_attempt_ms, last_error, created_ms, sent_ms";

fn entry(row: &Row) -> Result<OutboxEntry, StoreError> {
    Ok(OutboxEntry {
        id: row.text("id")?,
        customer_id: row.text("customer_id")?,
        kind: row.text("kind")?,
        sender: row.text("sender")?,
        recipient: row.text("recipient")?,
        message: row.opt_text("message")?,
        status: row.text("status")?,
        attempts: u32::try_from(row.i32("attempts")?).unwrap_or_default(),
        next_attempt_ms: row.int("next_attempt_ms")?,
        last_error: row.opt_text("last_error")?,
        created_ms: row.int("created_ms")?,
        sent_ms: row.opt_int("sent_ms")?,
    })
}

/// Cuts an error text to a size worth storing.
fn short(error: &str) -> String {
    error.chars().take(500).collect()
}

/// The mail outbox.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` due messages for `lease_ms`, oldest first, with
    /// their messages opened. A message of a forgotten customer is marked
    /// failed (content erased) and left out.
    async fn outbox_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Marks a message sent and forgets its content.
    async fn outbox_sent(&self, id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Records a failed attempt; the message is tried again at `next_ms`.
    async fn outbox_retry_later(
        &self,
        id: &str,
        next_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Gives up on a message (kept, with its content, for a manual retry).
    async fn outbox_failed(&self, id: &str, error: &str) -> Result<(), StoreError>;

    /// Puts a failed message back in the queue. False when no failed
    /// message has this id.
    async fn outbox_requeue(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Messages by status (all when `None`), newest first.
    async fn outbox_list(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// A page of messages by status (all when `None`), newest first,
    /// after `after` (the `(created_ms, id)` of the previous page's last
    /// message). The order is by creation, which a message never changes:
    /// a message queued while a client pages is newer than its first page
    /// and does not shift the pages after it.
    async fn outbox_page(
        &self,
        status: Option<&str>,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Counts of messages by status.
    async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

impl Store {
    /// Marks a message whose customer was forgotten failed, without its
    /// content or recipient.
    async fn outbox_forgotten(&self, id: &str) -> Result<(), StoreError> {
        let q = Query::new(
            "UPDATE mail_outbox SET status = 'failed', message = NULL, recipient = '[forgotten]', \
             last_error = 'cancelled: the customer was forgotten', claimed_until_ms = 0 WHERE id = $1",
        )
        .bind(id);
        self.db.execute(&q).await?;
        Ok(())
    }

    /// Claims due messages as stored (sealed).
    async fn outbox_claim_sealed(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let q = Query::new(format!(
            "UPDATE mail_outbox SET claimed_until_ms = $1 WHERE id IN (\
               SELECT id FROM mail_outbox WHERE status = 'pending' AND next_attempt_ms <= $2 \
               AND claimed_until_ms <= $2 ORDER BY created_ms, id LIMIT $3{}) \
             RETURNING {COLUMNS}",
            self.db.sql().skip_locked
        ))
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(i64::from(limit));
        let rows = self.db.write(&q).await?;
        let mut out = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }
}

#[async_trait]
impl Outbox for Store {
    async fn outbox_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let claimed = self.outbox_claim_sealed(now_ms, lease_ms, limit).await?;
        let keyring = self.keyring()?;
        let mut out = Vec::with_capacity(claimed.len());
        for mut entry in claimed {
            let Some(stored) = entry.message.take() else {
                out.push(entry);
                continue;
            };
            let key = Query::new("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
                .bind(&entry.customer_id);
            let wrapped = match self.db.read_optional(&key).await? {
                Some(row) => Some(row.opt_text("wrapped_key")?),
                None => None,
            };
            let state = KeyState::from_columns(wrapped.is_some(), wrapped.flatten());
            match keys::open_mail(keyring, &entry.customer_id, &state, &entry.id, stored) {
                Ok(MailBody::Plain(message)) => {
                    entry.message = Some(message);
                    out.push(entry);
                }
                Ok(MailBody::Forgotten) => {
                    tracing::info!(mail_id = %entry.id, "queued mail of a forgotten customer dropped");
                    self.outbox_forgotten(&entry.id).await?;
                }
                Err(e) => {
                    // Altered or moved: never sent, visible as failed.
                    tracing::error!(mail_id = %entry.id, error = %e, "queued mail does not open");
                    self.outbox_failed(
                        &entry.id,
                        &format!("the stored message does not open: {e}"),
                    )
                    .await?;
                }
            }
        }
        Ok(out)
    }

    async fn outbox_sent(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let q = Query::new(
            "UPDATE mail_outbox SET status = 'sent', message = NULL, sent_ms = $1, attempts = attempts + 1, \
             last_error = NULL, claimed_until_ms = 0 WHERE id = $2",
        )
        .bind(now_ms)
        .bind(id);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn outbox_retry_later(
        &self,
        id: &str,
        next_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let q = Query::new(
            "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_ms = $1, last_error = $2, \
             claimed_until_ms = 0 WHERE id = $3",
        )
        .bind(next_ms)
        .bind(short(error))
        .bind(id);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn outbox_failed(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let q = Query::new(
            "UPDATE mail_outbox SET status = 'failed', attempts = attempts + 1, last_error = $1, \
             claimed_until_ms = 0 WHERE id = $2",
        )
        .bind(short(error))
        .bind(id);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn outbox_requeue(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let q = Query::new(
            "UPDATE mail_outbox SET status = 'pending', attempts = 0, next_attempt_ms = $1, claimed_until_ms = 0 \
             WHERE id = $2 AND status = 'failed' RETURNING id",
        )
        .bind(now_ms)
        .bind(id);
        Ok(!self.db.write(&q).await?.is_empty())
    }

    async fn outbox_list(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_page(status, None, limit).await
    }

    async fn outbox_page(
        &self,
        status: Option<&str>,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut q = Query::new(format!("SELECT {COLUMNS} FROM mail_outbox WHERE 1 = 1"));
        if let Some(status) = status {
            q.push(" AND status = ").push_bind(status);
        }
        if let Some((created_ms, id)) = after {
            q.push(" AND (created_ms < ")
                .push_bind(created_ms)
                .push(" OR (created_ms = ")
                .push_bind(created_ms)
                .push(" AND id > ")
                .push_bind(id)
                .push("))");
        }
        q.push(" ORDER BY created_ms DESC, id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = self.db.read(&q).await?;
        rows.iter().map(entry).collect()
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let q = Query::new(
            "SELECT status, count(*) AS n FROM mail_outbox GROUP BY status ORDER BY status",
        );
        let rows = self.db.read(&q).await?;
        rows.iter()
            .map(|row| Ok((row.text("status")?, row.int("n")?)))
            .collect()
    }
}
