//! Running a command for an HTTP request: idempotency keys, `If-Match`,
//! metrics, mail after the commit, and the response.

use access_domain::{Actor, CommandMetadata, CustomerCommand, CustomerId, Secret, ValueError};
use access_domain::{Credential, Password};
use access_store::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use access_store::{ExecuteError, Executed, Execution, IdempotencyRecord, StoreError, StoredReply};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::http::dto::CommandResponse;
use crate::http::extract::CommandHeaders;
use crate::state::AppState;

/// One command from one request.
pub struct CommandRequest {
    pub actor: Actor,
    pub request_id: String,
    pub reason: Option<String>,
    pub customer_id: CustomerId,
    pub command: CustomerCommand,
    pub headers: CommandHeaders,
    /// Identifies the request for idempotency: method, path and body digest.
    pub fingerprint: String,
    /// 201 for a registration, 202 for a self-service email change, 200
    /// otherwise.
    pub success: StatusCode,
    /// The body of the answer on success.
    pub shape: ReplyShape,
}

/// The body of a command's answer on success. One function makes both the
/// live answer and the one stored under an idempotency key, so a replay
/// answers exactly what the first answer said.
#[derive(Debug, Clone, Default)]
pub enum ReplyShape {
    /// `{"customer_id", "version"}`.
    #[default]
    Command,
    /// The notice's answer to a self-service email change.
    EmailChangeAccepted { new_email: String },
}

/// A command's answer on success: status, headers (the ETag) and JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ReplyShape {
    pub fn reply(&self, status: StatusCode, customer_id: CustomerId, version: u64) -> Reply {
        let body = match self {
            Self::Command => serde_json::to_string(&CommandResponse {
                customer_id,
                version,
            }),
            Self::EmailChangeAccepted { new_email } => serde_json::to_string(
                &crate::http::self_service::email_change_accepted(new_email, version),
            ),
        }
        .unwrap_or_default();
        Reply {
            status,
            headers: vec![(header::ETAG.to_string(), etag(version))],
            body,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body,
        )
            .into_response();
        for (name, value) in self.headers {
            match (
                header::HeaderName::try_from(name),
                HeaderValue::try_from(value),
            ) {
                (Ok(name), Ok(value)) => {
                    response.headers_mut().insert(name, value);
                }
                _ => tracing::warn!("a stored response header is not valid HTTP; left out"),
            }
        }
        response
    }
}

/// What every command request carries besides its body: the request id,
/// `If-Match`, `Idempotency-Key`, and the method and path (for the
/// idempotency fingerprint).
pub struct CommandContext {
    pub request_id: String,
    pub headers: CommandHeaders,
    method: String,
    path: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let request_id = crate::http::extract::RequestId::from_request_parts(parts, state).await?;
        let headers = CommandHeaders::from_request_parts(parts, state).await?;
        Ok(Self {
            request_id: request_id.0,
            headers,
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
        })
    }
}

impl CommandContext {
    /// The command request for `actor` on `customer_id`, whose body had
    /// the given digest.
    pub fn request(
        self,
        actor: Actor,
        customer_id: CustomerId,
        command: CustomerCommand,
        reason: Option<String>,
        body_digest: &str,
        success: StatusCode,
    ) -> CommandRequest {
        CommandRequest {
            actor,
            request_id: self.request_id,
            reason,
            customer_id,
            command,
            fingerprint: fingerprint(&self.method, &self.path, body_digest),
            headers: self.headers,
            success,
            shape: ReplyShape::Command,
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

/// The fingerprint of a request: method, path and the body's digest.
pub fn fingerprint(method: &str, path: &str, body_digest: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{method} {path}\n{body_digest}").as_bytes(),
    ))
}

fn replay_stored(record: &IdempotencyRecord, fingerprint: &str) -> ApiResult<Response> {
    if record.request_digest != fingerprint {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        ));
    }
    let mut response = Reply {
        status: StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK),
        headers: record.headers.clone(),
        body: record.body.clone(),
    }
    .into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// Runs the command and returns the executed result (for handlers that
/// shape their own response) or the stored response of a replay.
pub enum Outcome {
    Executed(Executed),
    Replayed(Response),
}

/// Requests with an idempotency key that are running in this process: a
/// second request with the same key waits for the first (bounded) and then
/// answers its stored response, instead of being decided against the
/// first one's effect. Across replicas the same holds through the store:
/// the key is unique in the command's transaction, and a refusal is
/// checked against a record the other replica committed meanwhile.
#[derive(Default)]
pub struct KeysInFlight {
    running: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a request waits for another one with the same key.
pub const KEY_IN_USE_WAIT: Duration = Duration::from_secs(10);

impl KeysInFlight {
    /// Holds `key` until the guard is dropped, or `idempotency_key_in_use`
    /// after `wait`.
    async fn hold(self: &Arc<Self>, key: String, wait: Duration) -> ApiResult<KeyGuard> {
        let lock = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        // Declared before the wait: if the request is cancelled while it
        // waits, the wait (and its share of the lock) is dropped first,
        // then this, which forgets the key when nobody else holds it.
        let entry = Entry {
            owner: self.clone(),
            key,
        };
        match tokio::time::timeout(wait, lock.lock_owned()).await {
            Ok(guard) => Ok(KeyGuard {
                guard: Some(guard),
                _entry: entry,
            }),
            Err(_) => Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still running; retry shortly",
                )
            }),
        }
    }
}

/// A key's place in the map; forgets the key on drop when no request
/// holds or waits for it any more.
struct Entry {
    owner: Arc<KeysInFlight>,
    key: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut running = self
            .owner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if running
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            running.remove(&self.key);
        }
    }
}

/// A held key: the lock first, then the entry (fields drop in order).
struct KeyGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    _entry: Entry,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
    }
}

pub async fn execute(state: &AppState, request: CommandRequest) -> ApiResult<Outcome> {
    let caller = caller_of(&request.actor);
    let _held = match &request.headers.idempotency_key {
        Some(key) => Some(
            state
                .keys_in_flight()
                .hold(format!("{caller}\n{key}"), KEY_IN_USE_WAIT)
                .await?,
        ),
        None => None,
    };
    if let Some(key) = &request.headers.idempotency_key {
        if let Some(record) = state.store().idempotency_lookup(&caller, key).await? {
            return replay_stored(&record, &request.fingerprint).map(Outcome::Replayed);
        }
    }
    let name = request.command.name();
    let key = request.headers.idempotency_key.clone();
    let fingerprint = request.fingerprint.clone();
    let err = match run(state, request, &caller).await {
        Ok(executed) => return Ok(Outcome::Executed(executed)),
        Err(err) => err,
    };
    // Refused or in conflict, perhaps because a request with the same key
    // (on another replica) has just run: then this is its retry, and it
    // gets that request's answer.
    if let Some(key) = key {
        if let Some(record) = state.store().idempotency_lookup(&caller, &key).await? {
            return replay_stored(&record, &fingerprint).map(Outcome::Replayed);
        }
    }
    let err = match err {
        ExecuteError::Store(StoreError::IdempotencyKeyTaken) => {
            ApiError::internal("idempotency record vanished")
        }
        err => ApiError::from(err),
    };
    state.metrics().command(name, err.code);
    Err(err)
}

async fn run(
    state: &AppState,
    request: CommandRequest,
    caller: &str,
) -> Result<Executed, ExecuteError> {
    let name = request.command.name();
    let metadata = CommandMetadata::new(request.actor.clone(), request.request_id.clone())
        .with_reason(request.reason.clone());
    let idempotency = request
        .headers
        .idempotency_key
        .as_ref()
        .map(|key| IdempotencyRecord {
            caller: caller.to_string(),
            key: key.clone(),
            request_digest: request.fingerprint.clone(),
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
                expected_version: request.headers.if_match,
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
        state.mail().nudge();
    }
    result
}

/// Runs the command and answers with its reply shape (by default
/// `{"customer_id","version"}`) and an ETag.
pub async fn respond(state: &AppState, request: CommandRequest) -> ApiResult<Response> {
    let (success, shape) = (request.success, request.shape.clone());
    Ok(answer_as(execute(state, request).await?, success, &shape))
}

/// The answer to a command that ran: `{"customer_id","version"}` with an
/// ETag, or the stored response of a replay.
pub fn answer(outcome: Outcome, success: StatusCode) -> Response {
    answer_as(outcome, success, &ReplyShape::Command)
}

/// The answer to a command that ran, in the given shape, or the stored
/// response of a replay.
pub fn answer_as(outcome: Outcome, success: StatusCode, shape: &ReplyShape) -> Response {
    match outcome {
        Outcome::Replayed(response) => response,
        Outcome::Executed(executed) => shape
            .reply(success, executed.customer_id, executed.version)
            .into_response(),
    }
}

/// The ETag of a customer at `version`: `"<version>"`.
fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Adds `ETag: "<version>"`.
pub fn with_etag(mut response: Response, version: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A new password from a request, checked for strength (with the email and
/// name as guessable words).
pub fn new_password(raw: &str, user_inputs: &[&str]) -> Result<Password, ApiError> {
    Password::parse(raw, user_inputs).map_err(ApiError::from)
}

/// The credential of a change-email or grant-access request, per the
/// contract: a password means a manual password; `send_notification` alone
/// means a setup link; neither means none.
pub fn credential(
    password: Option<String>,
    password_confirm: Option<String>,
    send_notification: Option<bool>,
    user_inputs: &[&str],
) -> Result<Credential, ApiError> {
    match (password, password_confirm) {
        (Some(password), Some(confirm)) => Ok(Credential::ManualPassword {
            password: new_password(&password, user_inputs)?,
            password_confirm: Secret::new(confirm),
            send_notification: send_notification.unwrap_or(false),
        }),
        (Some(_), None) => Err(ApiError::malformed(
            "`password_confirm` is required with `password`",
        )),
        (None, Some(_)) => Err(ApiError::malformed(
            "`password_confirm` was sent without `password`",
        )),
        (None, None) if send_notification == Some(true) => Ok(Credential::SetupLink),
        (None, None) => Ok(Credential::None),
    }
}

/// Parses a value with a domain parser, as a 422 with its code.
pub fn parse<T>(result: Result<T, ValueError>) -> Result<T, ApiError> {
    result.map_err(ApiError::from)
}

#[cfg(test)]
mod keys_in_flight_tests {
    use super::*;

    fn len(keys: &KeysInFlight) -> usize {
        keys.running.lock().unwrap().len()
    }

    #[tokio::test]
    async fn keys_are_forgotten_when_their_requests_end_or_give_up() {
        let keys = Arc::new(KeysInFlight::default());
        let held = keys.hold("k".into(), Duration::from_secs(1)).await.unwrap();
        // Another request with the key times out with 409.
        let err = keys
            .hold("k".into(), Duration::from_millis(10))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, "idempotency_key_in_use");
        assert_eq!(err.retry_after, Some(1));
        // A third waits; the first ends, and the third's client goes away
        // before it runs again (one thread: nothing runs in between).
        let waiting = tokio::spawn({
            let keys = keys.clone();
            async move { keys.hold("k".into(), Duration::from_secs(30)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(len(&keys), 1);
        drop(held);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(len(&keys), 0, "nobody holds or waits: the key is forgotten");
        let again = keys.hold("k".into(), Duration::from_secs(1)).await.unwrap();
        drop(again);
        assert_eq!(len(&keys), 0);
    }
}
