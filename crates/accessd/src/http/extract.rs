//! Request extractors with our error shape: JSON bodies (content type,
//! size, syntax, unknown fields), path ids, the request id, `If-Match`,
//! `Idempotency-Key`, the client address, the customer's session.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use access_domain::CustomerId;

use crate::auth::bearer;
use crate::error::ApiError;
use crate::state::AppState;
use crate::usecase::session::{self, CustomerSession};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body, with the SHA-256 of its bytes (for idempotency).
pub struct JsonBody<T> {
    pub value: T,
    pub digest: String,
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the request body is larger than {} KiB",
                        MAX_BODY_BYTES / 1024
                    ),
                )
            } else {
                ApiError::malformed(format!("the request body could not be read: {rejection}"))
            }
        })?;
        // An empty body on a command without fields reads as `{}`.
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
            bytes
        };
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::malformed(format!(
                "invalid JSON body: {}",
                redact_values(&e.to_string())
            ))
        })?;
        Ok(Self {
            value,
            digest: hex::encode(Sha256::digest(&bytes)),
        })
    }
}

/// serde's messages may quote the offending value (`invalid type: string
/// "hunter2", expected a boolean`): a password sent in the wrong field
/// must not come back in the error, so quoted values are replaced.
fn redact_values(message: &str) -> String {
    let values_in_backticks =
        message.starts_with("invalid type") || message.starts_with("invalid value");
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if c == '"' || (c == '`' && values_in_backticks) => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

/// The `{id}` of a route, as text. Unlike axum's `Path`, a segment that
/// does not decode (percent-encoded bytes that are no UTF-8) is our 400
/// `malformed_request`, not a plain-text rejection.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Self(id))
            .map_err(|_| ApiError::malformed("the id in the path is not valid UTF-8 text"))
    }
}

/// A query string read into `T`. Unlike axum's `Query`, a malformed or
/// unknown parameter is our 400 `malformed_request`, not a plain-text
/// rejection.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::malformed(e.body_text()))
    }
}

/// A customer id from the path.
pub fn customer_id(raw: &str) -> Result<CustomerId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::malformed(format!(
            "`{}` is not a customer id (a UUID)",
            raw.chars().take(64).collect::<String>()
        ))
    })
}

/// Longest client-supplied request id kept.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Whether a client's `X-Request-Id` may be kept: 1 to 128 characters of
/// `[A-Za-z0-9._:-]`. It lands in the events' metadata (permanent,
/// unencrypted history) and in the logs, so anything else is replaced by
/// a fresh id (see `http::bounded_request_id`).
pub fn acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_CHARS
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request id set by the request-id layer (never a client value that
/// is not [`acceptable_request_id`]), and the trace id of a valid
/// `traceparent` (the correlation id of the events the request causes).
#[derive(Debug, Clone)]
pub struct RequestId {
    pub id: String,
    pub correlation_id: Option<String>,
}

impl RequestId {
    /// The origin of a command this request causes, without conditions.
    pub fn origin(self) -> crate::usecase::command::Origin {
        crate::usecase::command::Origin {
            request_id: self.id,
            correlation_id: self.correlation_id,
            ..Default::default()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            id: parts
                .headers
                .get("x-request-id")
                .filter(|v| acceptable_request_id(v.as_bytes()))
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
            correlation_id: parts
                .extensions
                .get::<crate::trace_context::TraceContext>()
                .and_then(crate::trace_context::TraceContext::correlation_id),
        })
    }
}

/// Conditions on a command: `If-Match` and `Idempotency-Key`.
#[derive(Debug, Clone, Default)]
pub struct CommandHeaders {
    /// The version from `If-Match: "<version>"`.
    pub if_match: Option<u64>,
    pub idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let if_match = match parts.headers.get("if-match") {
            None => None,
            Some(v) => {
                let raw = v.to_str().unwrap_or_default().trim();
                let unquoted = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
                Some(unquoted.parse::<u64>().map_err(|_| {
                    ApiError::malformed(
                        "If-Match must be a version as sent in the ETag, e.g. \"3\"",
                    )
                })?)
            }
        };
        let idempotency_key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(v) => {
                let key = v.to_str().unwrap_or_default().trim();
                if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(ApiError::malformed(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    ));
                }
                Some(key.to_string())
            }
        };
        Ok(Self {
            if_match,
            idempotency_key,
        })
    }
}

/// The client's address, when the server knows it: the TCP peer, or
/// behind a trusted proxy the client it names (`client_ip.rs`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let resolved = parts
            .extensions
            .get::<crate::client_ip::ClientIp>()
            .map(|c| c.0);
        Ok(Self(resolved.or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })))
    }
}

/// Any valid session of the Bearer token, also one that waits for the
/// second factor (401 `unauthenticated` without one): for the code's
/// check and logging out only.
pub struct AnySession(pub CustomerSession);

impl FromRequestParts<AppState> for AnySession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthenticated)?;
        session::of_token(state, token)
            .await?
            .map(Self)
            .ok_or_else(ApiError::unauthenticated)
    }
}

impl FromRequestParts<AppState> for CustomerSession {
    type Rejection = ApiError;

    /// The full session of the Bearer token (401 `unauthenticated` without
    /// a valid one; 403 `second_factor_required` while it waits for the
    /// second factor's code).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AnySession(session) = AnySession::from_request_parts(parts, state).await?;
        if session.second_factor_pending {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "second_factor_required",
                "this session waits for the second factor: send a code to POST /v1/self/sessions/verify",
            ));
        }
        Ok(session)
    }
}

/// An extractor of a customer's session, the API's or the pages'.
pub trait SessionOf: FromRequestParts<AppState> + Send {
    fn session(&self) -> &CustomerSession;
    /// The answer to a customer whose password is temporary.
    fn must_change_password() -> Self::Rejection;
    /// The answer to a customer without a second factor when one is
    /// required (`ACCESS_SECOND_FACTOR=required`).
    fn second_factor_enrollment_required() -> Self::Rejection;
}

impl SessionOf for CustomerSession {
    fn session(&self) -> &CustomerSession {
        self
    }
    fn must_change_password() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "must_change_password",
            "the password is temporary: change it first (POST /v1/self/change-password)",
        )
    }
    fn second_factor_enrollment_required() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "second_factor_enrollment_required",
            "a second factor is required: enroll one first (POST /v1/self/second-factor/totp)",
        )
    }
}

/// A customer with a valid full session `T`, no pending password change,
/// and a second factor when one is required.
pub struct Active<T>(pub T);

impl<T: SessionOf> FromRequestParts<AppState> for Active<T> {
    type Rejection = T::Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = T::from_request_parts(parts, state).await?;
        let customer = &session.session().loaded.customer;
        if customer.must_change_password() {
            return Err(T::must_change_password());
        }
        if state.second_factor_policy() == crate::config::SecondFactorPolicy::Required
            && !customer.has_second_factor()
        {
            return Err(T::second_factor_enrollment_required());
        }
        Ok(Self(session))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_short_plain_request_ids_are_acceptable() {
        use super::acceptable_request_id as ok;
        assert!(ok(b"crm-req:7.a_b"));
        assert!(ok("A".repeat(128).as_bytes()));
        assert!(!ok("A".repeat(129).as_bytes()));
        assert!(!ok(b""));
        assert!(!ok(b"has space"));
        assert!(!ok(b"semi;colon"));
        assert!(!ok("\u{e9}t\u{e9}".as_bytes()));
    }

    #[test]
    fn values_in_serde_messages_are_redacted_but_field_names_kept() {
        assert_eq!(
            super::redact_values(
                "invalid type: string \"hunter2\", expected a boolean at line 1 column 9"
            ),
            "invalid type: string \"…\", expected a boolean at line 1 column 9"
        );
        assert_eq!(
            super::redact_values("invalid type: integer `12345`, expected a string"),
            "invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            super::redact_values("unknown field `pasword`, expected one of `email`, `password`"),
            "unknown field `pasword`, expected one of `email`, `password`"
        );
    }
}
