//! Running a command: load the customer, decide, append — retried on a
//! concurrent write unless the caller pinned the version.

use access_domain::{
    CommandMetadata, CustomerCommand, CustomerError, CustomerEvent, CustomerId, CustomerServices,
    Decision, IssuedToken,
};

use std::sync::Arc;

use crate::cache::Current;
use crate::{Append, EventStore, IdempotencyRecord, Loaded, Position, Store, StoreError};

/// How often a command meeting a concurrent write is decided again on fresh
/// state before it gives up with a conflict.
pub const CONFLICT_RETRIES: usize = 4;

/// What a successful command did.
#[derive(Debug, Clone)]
pub struct Executed {
    pub customer_id: CustomerId,
    /// The customer's version after the command.
    pub version: u64,
    pub events: Vec<CustomerEvent>,
    /// Position of the last event written (None when nothing was written).
    pub last_position: Option<Position>,
    /// Plain tokens the command issued, for the links in emails. Never
    /// stored.
    pub issued_tokens: Vec<IssuedToken>,
    /// Recovery codes the command issued (`ConfirmTotpEnrollment`,
    /// `RegenerateRecoveryCodes`), to show the customer once. Never stored:
    /// the events keep their digests.
    pub recovery_codes: Vec<access_domain::Secret>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// A rule refused it.
    #[error(transparent)]
    Rejected(#[from] CustomerError),
    /// The customer is not at the version the caller expected.
    #[error("the customer is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mail the command calls for could not be prepared (nothing was
    /// written).
    #[error("the command's mail could not be prepared: {0}")]
    Outbox(String),
}

/// One command to run.
pub struct Execution<'a> {
    pub customer_id: CustomerId,
    pub command: CustomerCommand,
    pub metadata: &'a CommandMetadata,
    /// `If-Match`: fail with `VersionMismatch` instead of retrying.
    pub expected_version: Option<u64>,
    /// Stored with the events, in the same transaction. Its body may only
    /// be known after the command: see `respond`.
    pub idempotency: Option<IdempotencyRecord>,
}

/// What the outbox builder sees of a decided command.
pub struct OutboxInput<'a> {
    pub customer_id: CustomerId,
    pub events: &'a [CustomerEvent],
    /// The plain tokens the command issued (for the links in the mails).
    pub issued_tokens: &'a [IssuedToken],
    /// The customer after the events.
    pub after: &'a access_domain::Customer,
}

impl Store {
    /// Runs a command against the customer's current state and appends its
    /// events. `respond` turns the outcome into the stored idempotent
    /// response body and headers (called before the append, inside each
    /// attempt).
    pub async fn execute<R: Into<crate::StoredReply>>(
        &self,
        services: &CustomerServices,
        execution: Execution<'_>,
        respond: impl Fn(u64) -> R,
    ) -> Result<Executed, ExecuteError> {
        self.execute_with_outbox(services, execution, respond, |_| Ok(Vec::new()))
            .await
    }

    /// [`Store::execute`], with `outbox` deciding the mail the command
    /// calls for; it is written in the same transaction as the events.
    pub async fn execute_with_outbox<R: Into<crate::StoredReply>>(
        &self,
        services: &CustomerServices,
        execution: Execution<'_>,
        respond: impl Fn(u64) -> R,
        outbox: impl Fn(&OutboxInput<'_>) -> Result<Vec<crate::OutboxMessage>, String>,
    ) -> Result<Executed, ExecuteError> {
        let id = execution.customer_id;
        // This process's turn on the customer: the commands before it on
        // the same customer finish first, so they do not conflict with
        // each other (only with other processes).
        let wait = self.options.customer_queue_wait;
        let _turn = if wait.is_zero() {
            None
        } else {
            let turn = self.writers.turn(id, wait).await;
            Some(turn.ok_or_else(|| StoreError::Busy {
                customer_id: id.to_string(),
                waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            })?)
        };
        let cache = self.cache();
        // Attempts on state read from the database (a stale cached state
        // does not count).
        let mut attempt = 0;
        let mut use_cache = true;
        loop {
            // The cached state first (a conflict means it was stale: read
            // the database then). With `If-Match` a cached version other
            // than the expected one is read again too: it may be the cache
            // that is behind.
            // The failover count before anything is read: the append
            // refuses to write if the database moved since.
            let epoch = self.switches();
            let cached = match (std::mem::take(&mut use_cache), cache) {
                (true, Some(cache)) => cache.get(&id, epoch).filter(|c| {
                    execution
                        .expected_version
                        .is_none_or(|v| v == c.loaded.version)
                }),
                _ => None,
            };
            let from_cache = cached.is_some();
            if let Some(cache) = cache {
                cache.count(from_cache);
            }
            if !from_cache {
                attempt += 1;
            }
            let current = match cached {
                Some(current) => current,
                None => Arc::new(self.load_current(id, true).await?),
            };
            let loaded = &current.loaded;
            if let Some(expected) = execution.expected_version {
                if expected != loaded.version {
                    return Err(ExecuteError::VersionMismatch {
                        expected,
                        actual: loaded.version,
                    });
                }
            }
            let decided = loaded
                .customer
                .decide(execution.command.clone(), services)
                .await;
            // A refusal, or a command with nothing to write, appends no
            // event: no sequence check would catch a stale cached state.
            // Check the version (one query) and decide again on the
            // database's state if it moved (another replica granted access,
            // changed the password, forgot the customer, …).
            if from_cache && !matches!(&decided, Ok(d) if !d.events.is_empty()) {
                if let Some(cache) = cache {
                    if self.version_of(id).await? != loaded.version {
                        cache.stale(&id);
                        continue;
                    }
                }
            }
            let Decision {
                events,
                issued,
                recovery_codes,
            } = decided?;
            let mut after = loaded.customer.clone();
            for event in &events {
                cqrs_es::Aggregate::apply(&mut after, event.clone());
            }
            let version = loaded.version + events.len() as u64;
            let idempotency = execution.idempotency.clone().map(|mut r| {
                let reply = respond(version).into();
                r.body = reply.body;
                r.headers = reply.headers;
                r
            });
            let mail = outbox(&OutboxInput {
                customer_id: id,
                events: &events,
                issued_tokens: &issued,
                after: &after,
            })
            .map_err(ExecuteError::Outbox)?;
            let result = self
                .append_keyed(
                    Append {
                        customer_id: id,
                        expected_version: loaded.version,
                        events: &events,
                        metadata: execution.metadata,
                        before: &loaded.customer,
                        after: &after,
                        idempotency: idempotency.as_ref(),
                    },
                    &mail,
                    current.key.clone(),
                    Some(epoch),
                )
                .await;
            if let (Some(cache), Err(_)) = (cache, &result) {
                if from_cache {
                    cache.stale(&id);
                } else {
                    cache.forget(&id);
                }
            }
            match result {
                Ok((appended, key)) => {
                    if let Some(cache) = cache {
                        if after.is_forgotten() {
                            cache.forget(&id);
                        } else {
                            cache.put(
                                id,
                                Arc::new(Current {
                                    loaded: Loaded {
                                        customer: after,
                                        version: appended.version,
                                    },
                                    key,
                                }),
                                epoch,
                            );
                        }
                    }
                    return Ok(Executed {
                        customer_id: id,
                        version: appended.version,
                        events,
                        last_position: appended.last_position,
                        issued_tokens: issued,
                        recovery_codes,
                    });
                }
                // A deadlock with another replica's append: nothing was
                // written; decide again on the database's state (`If-Match`
                // is checked again there).
                Err(StoreError::Contention(detail)) if attempt < CONFLICT_RETRIES => {
                    tracing::debug!(customer_id = %id, attempt, %detail, "transaction aborted by a collision, deciding again");
                    continue;
                }
                Err(StoreError::Conflict { .. })
                    if execution.expected_version.is_none()
                        && (from_cache || attempt < CONFLICT_RETRIES) =>
                {
                    tracing::debug!(customer_id = %id, attempt, from_cache, "concurrent write, deciding again");
                    continue;
                }
                Err(StoreError::Conflict { .. }) if execution.expected_version.is_some() => {
                    let actual = self.load(id).await?.version;
                    return Err(ExecuteError::VersionMismatch {
                        expected: loaded.version,
                        actual,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
