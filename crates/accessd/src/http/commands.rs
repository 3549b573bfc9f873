//! Running a command for an HTTP request: idempotency keys, `If-Match`,
//! metrics, mail after the commit, and the response.

use access_domain::{Actor, CommandMetadata, CustomerCommand, CustomerId, Secret, ValueError};
use access_domain::{Credential, Password};
use access_store::{ExecuteError, Executed, Execution, IdempotencyRecord, StoreError};
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
    /// 201 for a registration, 200 otherwise.
    pub success: StatusCode,
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

fn replay(record: &IdempotencyRecord, fingerprint: &str) -> ApiResult<Response> {
    if record.request_digest != fingerprint {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        ));
    }
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        record.body.clone(),
    )
        .into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

fn command_body(customer_id: CustomerId, version: u64) -> String {
    serde_json::to_string(&CommandResponse {
        customer_id,
        version,
    })
    .unwrap_or_default()
}

/// Runs the command and returns the executed result (for handlers that
/// shape their own response) or the stored response of a replay.
pub enum Outcome {
    Executed(Executed),
    Replayed(Response),
}

pub async fn execute(state: &AppState, request: CommandRequest) -> ApiResult<Outcome> {
    let name = request.command.name();
    let caller = caller_of(&request.actor);
    if let Some(key) = &request.headers.idempotency_key {
        if let Some(record) = state.store().idempotency_lookup(&caller, key).await? {
            return replay(&record, &request.fingerprint).map(Outcome::Replayed);
        }
    }
    let metadata = CommandMetadata::new(request.actor.clone(), request.request_id.clone())
        .with_reason(request.reason.clone());
    let services = state.services();
    let idempotency = request
        .headers
        .idempotency_key
        .as_ref()
        .map(|key| IdempotencyRecord {
            caller: caller.clone(),
            key: key.clone(),
            request_digest: request.fingerprint.clone(),
            status: request.success.as_u16(),
            body: String::new(),
        });
    let customer_id = request.customer_id;
    let result = state
        .store()
        .execute_with_outbox(
            &services,
            Execution {
                customer_id,
                command: request.command,
                metadata: &metadata,
                expected_version: request.headers.if_match,
                idempotency,
            },
            |version| command_body(customer_id, version),
            |input| state.mailer().prepare(input),
        )
        .await;
    match result {
        Ok(executed) => {
            state.metrics().command(name, "ok");
            if let Some(projector) = state.projector() {
                projector.nudge();
            }
            state.mailer().nudge();
            Ok(Outcome::Executed(executed))
        }
        Err(ExecuteError::Store(StoreError::IdempotencyKeyTaken)) => {
            // A concurrent request with the same key won: answer like it.
            let key = request.headers.idempotency_key.unwrap_or_default();
            match state.store().idempotency_lookup(&caller, &key).await? {
                Some(record) => replay(&record, &request.fingerprint).map(Outcome::Replayed),
                None => Err(ApiError::internal("idempotency record vanished")),
            }
        }
        Err(err) => {
            let err = ApiError::from(err);
            state.metrics().command(name, err.code);
            Err(err)
        }
    }
}

/// Runs the command and answers `{"customer_id","version"}` with an ETag.
pub async fn respond(state: &AppState, request: CommandRequest) -> ApiResult<Response> {
    let success = request.success;
    Ok(answer(execute(state, request).await?, success))
}

/// The answer to a command that ran: `{"customer_id","version"}` with an
/// ETag, or the stored response of a replay.
pub fn answer(outcome: Outcome, success: StatusCode) -> Response {
    match outcome {
        Outcome::Replayed(response) => response,
        Outcome::Executed(executed) => with_etag(
            (
                success,
                axum::Json(CommandResponse {
                    customer_id: executed.customer_id,
                    version: executed.version,
                }),
            )
                .into_response(),
            executed.version,
        ),
    }
}

/// Adds `ETag: "<version>"`.
pub fn with_etag(mut response: Response, version: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
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
