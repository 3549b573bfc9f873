//! Running a command: idempotency keys, `If-Match`, the outbox (mail
//! rendered in the command's transaction), metrics, and the answer.
//!
//! A [`CommandRequest`] says who runs which command on which customer and
//! where it comes from ([`Origin`]: the request id, and for the API the
//! `If-Match` version and the `Idempotency-Key` with the request's
//! fingerprint). [`execute`] runs it and gives the [`Outcome`]: the
//! command ran, or a request with the same key had already run and its
//! stored [`Reply`] is answered again. [`Outcome::reply`] makes the answer
//! of both from one place.

use access_domain::{Actor, CommandMetadata, CustomerCommand, CustomerId};
use access_store::prelude::{Accounts as _, Idempotency as _};
use access_store::{ExecuteError, Executed, Execution, IdempotencyRecord, StoreError, StoredReply};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use super::error::CommandError;
use super::reply::{Reply, ReplyShape};
use crate::keys_in_flight::KEY_IN_USE_WAIT;
use crate::state::AppState;

/// Where a command comes from: the request id (in the events' metadata)
/// and the conditions an API request may put on it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: String,
    /// The caller's W3C trace id, stored as the events' correlation id.
    pub correlation_id: Option<String>,
    /// The version from `If-Match`: the command runs only on it.
    pub expected_version: Option<u64>,
    /// The `Idempotency-Key`, with the fingerprint of the request.
    pub idempotency: Option<Idempotency>,
}

/// A retry-safe request: its key, and what identifies the request (method,
/// path and body digest: [`fingerprint`]).
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// One command from one request.
pub struct CommandRequest {
    pub actor: Actor,
    pub customer_id: CustomerId,
    pub command: CustomerCommand,
    /// Why (kept in the events' metadata).
    pub reason: Option<String>,
    pub origin: Origin,
    /// The status on success: 201 for a registration, 202 for a
    /// self-service email change, 200 otherwise.
    pub success: StatusCode,
    /// The body of the answer on success.
    pub shape: ReplyShape,
}

impl CommandRequest {
    /// `command` by `actor` on `customer_id`, answered 200 with
    /// `{"customer_id","version"}`.
    pub fn new(
        actor: Actor,
        customer_id: CustomerId,
        command: CustomerCommand,
        origin: Origin,
    ) -> Self {
        Self {
            actor,
            customer_id,
            command,
            reason: None,
            origin,
            success: StatusCode::OK,
            shape: ReplyShape::Command,
        }
    }

    /// With a reason.
    pub fn reason(self, reason: Option<String>) -> Self {
        Self { reason, ..self }
    }

    /// Answered with `status` and a body of `shape` on success.
    pub fn answered(self, success: StatusCode, shape: ReplyShape) -> Self {
        Self {
            success,
            shape,
            ..self
        }
    }
}

/// The fingerprint of a request: method, path and the body's digest.
pub fn fingerprint(method: &str, path: &str, body_digest: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{method} {path}\n{body_digest}").as_bytes(),
    ))
}

/// What running a command came to.
pub enum Outcome {
    /// The command ran now.
    Executed(Executed),
    /// A request with the same key had run: its answer, stored with it.
    Replayed(Reply),
}

impl Outcome {
    /// The answer: for a command that ran now, `shape`'s with `success`
    /// (the function that also made the stored one); for a replay, the
    /// stored one.
    pub fn reply(self, success: StatusCode, shape: &ReplyShape) -> Reply {
        match self {
            Self::Replayed(reply) => reply,
            Self::Executed(executed) => {
                shape.reply(success, executed.customer_id, executed.version)
            }
        }
    }

    /// The customer's version after the command, when it ran now.
    pub fn version(&self) -> Option<u64> {
        match self {
            Self::Executed(executed) => Some(executed.version),
            Self::Replayed(_) => None,
        }
    }
}

/// Idempotency keys are per caller.
fn caller_of(actor: &Actor) -> String {
    match actor {
        Actor::Api { name, .. } => format!("api:{name}"),
        Actor::Customer { customer_id } => format!("customer:{customer_id}"),
        Actor::System { name } => format!("system:{name}"),
    }
}

/// The stored answer of an earlier request with the key, marked as a
/// replay, when it was the same request.
fn replay_stored(record: &IdempotencyRecord, fingerprint: &str) -> Result<Reply, CommandError> {
    if record.request_digest != fingerprint {
        return Err(CommandError::KeyReused);
    }
    let mut headers = record.headers.clone();
    headers.push(("idempotent-replayed".to_string(), "true".to_string()));
    Ok(Reply {
        status: StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK),
        headers,
        body: record.body.clone(),
    })
}

/// Runs the command, or answers the stored reply of the request that had
/// its idempotency key.
pub async fn execute(state: &AppState, request: CommandRequest) -> Result<Outcome, CommandError> {
    let caller = caller_of(&request.actor);
    let idempotency = request.origin.idempotency.clone();
    let _held = match &idempotency {
        Some(i) => Some(
            state
                .keys_in_flight()
                .hold(format!("{caller}\n{}", i.key), KEY_IN_USE_WAIT)
                .await?,
        ),
        None => None,
    };
    if let Some(i) = &idempotency {
        if let Some(record) = state.store().idempotency_lookup(&caller, &i.key).await? {
            return replay_stored(&record, &i.fingerprint).map(Outcome::Replayed);
        }
    }
    let name = request.command.name();
    let err = match run(state, request, &caller).await {
        Ok(executed) => return Ok(Outcome::Executed(executed)),
        Err(err) => err,
    };
    // Refused or in conflict, perhaps because a request with the same key
    // (on another replica) has just run: then this is its retry, and it
    // gets that request's answer.
    if let Some(i) = &idempotency {
        if let Some(record) = state.store().idempotency_lookup(&caller, &i.key).await? {
            return replay_stored(&record, &i.fingerprint).map(Outcome::Replayed);
        }
    }
    let err = match err {
        ExecuteError::Store(StoreError::IdempotencyKeyTaken) => CommandError::RecordVanished,
        err => CommandError::Execute(err),
    };
    state.metrics().command(name, err.code());
    Err(err)
}

async fn run(
    state: &AppState,
    request: CommandRequest,
    caller: &str,
) -> Result<Executed, ExecuteError> {
    let name = request.command.name();
    let metadata = CommandMetadata::new(request.actor.clone(), request.origin.request_id.clone())
        .with_reason(request.reason.clone())
        .with_correlation(request.origin.correlation_id.clone());
    let idempotency = request
        .origin
        .idempotency
        .as_ref()
        .map(|i| IdempotencyRecord {
            caller: caller.to_string(),
            key: i.key.clone(),
            request_digest: i.fingerprint.clone(),
            status: request.success.as_u16(),
            body: String::new(),
            headers: Vec::new(),
        });
    let customer_id = request.customer_id;
    let (success, shape) = (request.success, &request.shape);
    let result = state
        .store()
        .execute_with_outbox(
            state.services(),
            Execution {
                customer_id,
                command: request.command.clone(),
                metadata: &metadata,
                expected_version: request.origin.expected_version,
                idempotency,
            },
            |version| {
                let reply = shape.reply(success, customer_id, version);
                StoredReply {
                    body: reply.body,
                    headers: reply.headers,
                }
            },
            |input| state.mail().prepare(input),
        )
        .await;
    if result.is_ok() {
        state.metrics().command(name, "ok");
        if let Some(projector) = state.projector() {
            projector.nudge();
        }
        state.feed().committed();
        state.mail().nudge();
    }
    result
}

/// Runs the command and gives its answer (see [`Outcome::reply`]).
pub async fn answer(state: &AppState, request: CommandRequest) -> Result<Reply, CommandError> {
    let (success, shape) = (request.success, request.shape.clone());
    Ok(execute(state, request).await?.reply(success, &shape))
}

/// Revokes a customer's access (`RevokeAccess`, answered 200) and frees
/// its sessions at once: they would end at their next use anyway. A
/// replay frees them too.
pub async fn revoke_access(
    state: &AppState,
    actor: Actor,
    customer_id: CustomerId,
    reason: Option<String>,
    origin: Origin,
) -> Result<Reply, CommandError> {
    let command = CustomerCommand::RevokeAccess {
        reason: reason.clone(),
    };
    let request = CommandRequest::new(actor, customer_id, command, origin).reason(reason);
    let reply = answer(state, request).await?;
    if reply.status.is_success() {
        // The revoke is committed: answer it even when freeing the
        // sessions fails (they grant nothing any more: a session is
        // checked against the customer's access at each use), so a retry
        // without an idempotency key does not meet `no_access`.
        if let Err(e) = state.store().delete_sessions_of(customer_id).await {
            tracing::warn!(%customer_id, error = %e, "revoked, but freeing the customer's sessions failed; they end at their next use");
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_answers_the_stored_reply_marked_or_refuses_another_request() {
        let record = IdempotencyRecord {
            caller: "api:crm".into(),
            key: "k".into(),
            request_digest: fingerprint("POST", "/v1/customers", "d1"),
            status: 201,
            body: "{\"version\":1}".into(),
            headers: vec![("etag".into(), "\"1\"".into())],
        };
        let reply = replay_stored(&record, &fingerprint("POST", "/v1/customers", "d1")).unwrap();
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.body, record.body);
        assert_eq!(
            reply.headers,
            vec![
                ("etag".to_string(), "\"1\"".to_string()),
                ("idempotent-replayed".to_string(), "true".to_string())
            ]
        );
        let other = replay_stored(&record, &fingerprint("POST", "/v1/customers", "d2"));
        assert!(matches!(other, Err(CommandError::KeyReused)));
    }
}
