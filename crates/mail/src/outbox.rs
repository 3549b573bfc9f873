//! The outbox: mail recorded with the events that call for it, delivered
//! by a worker with retries.
//!
//! - [`prepare`] renders a command's mails into outbox rows (called inside
//!   the command's transaction attempt, so the rows commit with the events;
//!   the store seals each message with the customer's data key, so a forget
//!   shreds queued links too, and opens it only for the worker that claims
//!   it).
//! - [`OutboxWorker`] claims due rows (with a lease, so replicas do not
//!   send the same message twice at once), sends them, and marks them sent
//!   (clearing the stored message, which holds the link), or schedules a
//!   retry with exponential backoff, or marks them failed after the last
//!   attempt or a permanent refusal. A crash between sending and marking
//!   sends the message again once the lease runs out: at least once, never
//!   silently dropped.

use access_store::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use access_domain::{EmailAddress, IssuedToken};
use access_store::{OutboxInput, OutboxMessage, Store};
use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::deliver::Transport;
use crate::templates::{MailSettings, Templates};
use crate::{mails_for, MailError};

/// Renders the mails a decided command calls for, as outbox rows. The
/// tokens in the links are rewritten by `link_token` (the service prefixes
/// the customer id).
pub fn prepare(
    input: &OutboxInput<'_>,
    templates: &Templates,
    settings: &MailSettings,
    public_url: &str,
    now: DateTime<Utc>,
    link_token: &dyn Fn(&IssuedToken) -> IssuedToken,
) -> Result<Vec<OutboxMessage>, MailError> {
    let issued: Vec<IssuedToken> = input.issued_tokens.iter().map(link_token).collect();
    let login: Option<&EmailAddress> = input.after.email();
    let mails = mails_for(input.events, &issued, public_url, login)?;
    let mut rows = Vec::with_capacity(mails.len());
    for mail in &mails {
        let message = templates.render(mail, settings, now)?;
        let envelope = message.envelope();
        let sender = envelope
            .from()
            .map(ToString::to_string)
            .ok_or_else(|| MailError::Build("the message has no sender".into()))?;
        let bytes = message.formatted();
        let text = String::from_utf8(bytes)
            .map_err(|_| MailError::Build("the message is not UTF-8".into()))?;
        rows.push(OutboxMessage {
            id: uuid::Uuid::new_v4().simple().to_string(),
            customer_id: input.customer_id,
            kind: mail.kind.template_name().to_string(),
            sender,
            recipient: mail.to.as_str().to_string(),
            message: text,
        });
    }
    Ok(rows)
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a message is marked failed.
    pub max_attempts: u32,
    /// Delay after the first failure; doubles each time.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long a claimed message is reserved for its worker.
    pub lease: Duration,
    /// How often to look for due messages when not nudged.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(300),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`, after `attempts` failures.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What happened to a message, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Retry,
    Failed,
}

/// Where the worker is, for readiness checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStatus {
    /// False once its loop ended (stopped or panicked): mail stays queued.
    pub running: bool,
    /// The last failure to read the queue, while it lasts (the worker
    /// retries; cleared by the next successful pass). Store errors carry
    /// no credentials.
    pub last_error: Option<String>,
}

/// Delivers the outbox in the background.
pub struct OutboxWorker {
    nudge: Arc<Notify>,
    task: JoinHandle<()>,
    last_error: watch::Receiver<Option<String>>,
}

impl OutboxWorker {
    pub fn spawn(
        store: Store,
        transport: Arc<dyn Transport>,
        policy: RetryPolicy,
        on_outcome: Arc<dyn Fn(Outcome) + Send + Sync>,
    ) -> Self {
        let nudge = Arc::new(Notify::new());
        let (errors, last_error) = watch::channel(None);
        let task = tokio::spawn(run(
            store,
            transport,
            policy,
            on_outcome,
            nudge.clone(),
            errors,
        ));
        Self {
            nudge,
            task,
            last_error,
        }
    }

    pub fn status(&self) -> WorkerStatus {
        WorkerStatus {
            running: !self.task.is_finished(),
            last_error: self.last_error.borrow().clone(),
        }
    }

    /// New mail was recorded: look now.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Stops the worker (a message it was sending is sent again once its
    /// lease runs out).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for OutboxWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Sends every due message once (one pass). Returns how many were handled.
pub async fn deliver_due(
    store: &Store,
    transport: &dyn Transport,
    policy: &RetryPolicy,
    on_outcome: &(dyn Fn(Outcome) + Send + Sync),
) -> Result<usize, access_store::StoreError> {
    let now = Utc::now().timestamp_millis();
    let batch = store.outbox_claim(now, millis(policy.lease), 20).await?;
    for entry in &batch {
        let Some(message) = &entry.message else {
            store
                .outbox_failed(&entry.id, "the message content is gone")
                .await?;
            on_outcome(Outcome::Failed);
            continue;
        };
        let result = transport
            .send_raw(
                &entry.id,
                &entry.sender,
                &entry.recipient,
                message.as_bytes(),
            )
            .await;
        match result {
            Ok(()) => {
                store
                    .outbox_sent(&entry.id, Utc::now().timestamp_millis())
                    .await?;
                tracing::info!(id = %entry.id, kind = %entry.kind, "mail sent");
                on_outcome(Outcome::Sent);
            }
            Err(e) if e.is_transient() && entry.attempts + 1 < policy.max_attempts => {
                let delay = policy.delay_after(entry.attempts + 1);
                tracing::warn!(id = %entry.id, attempt = entry.attempts + 1, retry_in_ms = %delay.as_millis(), error = %e, "mail not delivered; will retry");
                store
                    .outbox_retry_later(
                        &entry.id,
                        Utc::now().timestamp_millis() + millis(delay),
                        &e.to_string(),
                    )
                    .await?;
                on_outcome(Outcome::Retry);
            }
            Err(e) => {
                tracing::error!(id = %entry.id, attempts = entry.attempts + 1, error = %e, "mail failed for good; `accessctl mail retry` sends it again");
                store.outbox_failed(&entry.id, &e.to_string()).await?;
                on_outcome(Outcome::Failed);
            }
        }
    }
    Ok(batch.len())
}

async fn run(
    store: Store,
    transport: Arc<dyn Transport>,
    policy: RetryPolicy,
    on_outcome: Arc<dyn Fn(Outcome) + Send + Sync>,
    nudge: Arc<Notify>,
    errors: watch::Sender<Option<String>>,
) {
    loop {
        match deliver_due(&store, transport.as_ref(), &policy, on_outcome.as_ref()).await {
            Ok(n) => {
                errors.send_if_modified(|e| e.take().is_some());
                if n > 0 {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot read the queue; retrying");
                errors.send_replace(Some(e.to_string()));
            }
        }
        let _ = tokio::time::timeout(policy.poll, nudge.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay_after(1), Duration::from_secs(2));
        assert_eq!(p.delay_after(2), Duration::from_secs(4));
        assert_eq!(p.delay_after(4), Duration::from_secs(16));
        assert_eq!(p.delay_after(10), Duration::from_secs(60));
        assert_eq!(p.delay_after(u32::MAX), Duration::from_secs(60));
    }
}
