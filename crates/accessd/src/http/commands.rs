//! Commands over HTTP: the [`CommandContext`] of a request (request id,
//! `If-Match`, `Idempotency-Key` and the fingerprint) becomes the
//! [`Origin`] of a use case's command; a [`Reply`] becomes the response.
//! Running the command is [`crate::usecase::command`].

use access_domain::{Actor, CustomerCommand, CustomerId, Secret, ValueError};
use access_domain::{Credential, Password};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{customer_id, CommandHeaders, PathId};
use crate::state::AppState;
use crate::usecase::command::{self, fingerprint, CommandRequest, Idempotency, Origin};
use crate::usecase::reply::{etag, Reply};

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
    /// The caller's trace id (`traceparent`), kept as the events'
    /// correlation id.
    pub correlation_id: Option<String>,
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
            request_id: request_id.id,
            correlation_id: request_id.correlation_id,
            headers,
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
        })
    }
}

impl CommandContext {
    /// The origin of a command from this request, whose body had the
    /// given digest.
    pub fn origin(self, body_digest: &str) -> Origin {
        let fingerprint = fingerprint(&self.method, &self.path, body_digest);
        Origin {
            request_id: self.request_id,
            correlation_id: self.correlation_id,
            expected_version: self.headers.if_match,
            idempotency: self
                .headers
                .idempotency_key
                .map(|key| Idempotency { key, fingerprint }),
        }
    }

    /// The command request for `actor` on `customer_id`, whose body had
    /// the given digest, answered with `success`.
    pub fn request(
        self,
        actor: Actor,
        customer_id: CustomerId,
        command: CustomerCommand,
        reason: Option<String>,
        body_digest: &str,
        success: StatusCode,
    ) -> CommandRequest {
        CommandRequest::new(actor, customer_id, command, self.origin(body_digest))
            .reason(reason)
            .answered(success, Default::default())
    }
}

/// A command on the customer of the path: the service's state, the
/// caller (with permission `P`), the path's id, and the request's
/// [`CommandContext`], extracted in that order.
pub struct OnCustomer<P: Permission> {
    pub state: AppState,
    pub caller: Caller<P>,
    path_id: String,
    pub ctx: CommandContext,
}

impl<P: Permission> axum::extract::FromRequestParts<AppState> for OnCustomer<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let PathId(path_id) = PathId::from_request_parts(parts, state).await?;
        let ctx = CommandContext::from_request_parts(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            caller,
            path_id,
            ctx,
        })
    }
}

impl<P: Permission> OnCustomer<P> {
    /// The customer id of the path (400 `malformed_request` when it is no
    /// UUID).
    pub fn customer_id(&self) -> ApiResult<CustomerId> {
        customer_id(&self.path_id)
    }

    /// Runs `command` on `id` (the path's customer) and answers 200 with
    /// `{"customer_id","version"}` and an ETag, or the stored reply of a
    /// replay. The body had the given digest.
    pub async fn run(
        self,
        id: CustomerId,
        command: CustomerCommand,
        reason: Option<String>,
        body_digest: &str,
    ) -> ApiResult<Response> {
        let actor = self.caller.actor();
        let request = self
            .ctx
            .request(actor, id, command, reason, body_digest, StatusCode::OK);
        respond(&self.state, request).await
    }
}

/// Runs the command and answers with its reply (by default
/// `{"customer_id","version"}`) and an ETag, or the stored reply of a
/// replay.
pub async fn respond(state: &AppState, request: CommandRequest) -> ApiResult<Response> {
    Ok(command::answer(state, request).await?.into_response())
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
