//! The client's errors: the service's answer with its stable code, or a
//! transport failure.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// A stable error code of the service (docs/api.md, "Errors"). A code this
/// client does not know yet (a newer service) is [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `malformed_request`
    MalformedRequest,
    /// `unauthenticated`
    Unauthenticated,
    /// `invalid_credentials`
    InvalidCredentials,
    /// `forbidden`
    Forbidden,
    /// `must_change_password`
    MustChangePassword,
    /// `wrong_password`
    WrongPassword,
    /// `customer_not_found`
    CustomerNotFound,
    /// `not_found`
    NotFound,
    /// `method_not_allowed`
    MethodNotAllowed,
    /// `request_timeout`
    RequestTimeout,
    /// `email_in_use`
    EmailInUse,
    /// `customer_exists`
    CustomerExists,
    /// `concurrent_modification`
    ConcurrentModification,
    /// `idempotency_key_in_use`
    IdempotencyKeyInUse,
    /// `customer_forgotten`
    CustomerForgotten,
    /// `version_mismatch`
    VersionMismatch,
    /// `payload_too_large`
    PayloadTooLarge,
    /// `unsupported_media_type`
    UnsupportedMediaType,
    /// `login_has_no_password`
    LoginHasNoPassword,
    /// `password_mismatch`
    PasswordMismatch,
    /// `email_mismatch`
    EmailMismatch,
    /// `email_unchanged`
    EmailUnchanged,
    /// `invalid_email`
    InvalidEmail,
    /// `invalid_name`
    InvalidName,
    /// `unknown_role`
    UnknownRole,
    /// `weak_password`
    WeakPassword,
    /// `no_access`
    NoAccess,
    /// `access_already_granted`
    AccessAlreadyGranted,
    /// `invalid_token`
    InvalidToken,
    /// `idempotency_key_reused`
    IdempotencyKeyReused,
    /// `reason_required`
    ReasonRequired,
    /// `too_many_attempts`
    TooManyAttempts,
    /// `internal`
    Internal,
    /// `unavailable`
    Unavailable,
    /// `invalid_customer_id`
    InvalidCustomerId,
    /// A code this version of the client does not name.
    Other(String),
}

impl ErrorCode {
    /// The code as the service writes it.
    pub fn parse(code: &str) -> Self {
        match code {
            "malformed_request" => Self::MalformedRequest,
            "unauthenticated" => Self::Unauthenticated,
            "invalid_credentials" => Self::InvalidCredentials,
            "forbidden" => Self::Forbidden,
            "must_change_password" => Self::MustChangePassword,
            "wrong_password" => Self::WrongPassword,
            "customer_not_found" => Self::CustomerNotFound,
            "not_found" => Self::NotFound,
            "method_not_allowed" => Self::MethodNotAllowed,
            "request_timeout" => Self::RequestTimeout,
            "email_in_use" => Self::EmailInUse,
            "customer_exists" => Self::CustomerExists,
            "concurrent_modification" => Self::ConcurrentModification,
            "idempotency_key_in_use" => Self::IdempotencyKeyInUse,
            "customer_forgotten" => Self::CustomerForgotten,
            "version_mismatch" => Self::VersionMismatch,
            "payload_too_large" => Self::PayloadTooLarge,
            "unsupported_media_type" => Self::UnsupportedMediaType,
            "login_has_no_password" => Self::LoginHasNoPassword,
            "password_mismatch" => Self::PasswordMismatch,
            "email_mismatch" => Self::EmailMismatch,
            "email_unchanged" => Self::EmailUnchanged,
            "invalid_email" => Self::InvalidEmail,
            "invalid_name" => Self::InvalidName,
            "unknown_role" => Self::UnknownRole,
            "weak_password" => Self::WeakPassword,
            "no_access" => Self::NoAccess,
            "access_already_granted" => Self::AccessAlreadyGranted,
            "invalid_token" => Self::InvalidToken,
            "idempotency_key_reused" => Self::IdempotencyKeyReused,
            "reason_required" => Self::ReasonRequired,
            "too_many_attempts" => Self::TooManyAttempts,
            "internal" => Self::Internal,
            "unavailable" => Self::Unavailable,
            "invalid_customer_id" => Self::InvalidCustomerId,
            other => Self::Other(other.to_string()),
        }
    }

    /// The code as the service writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MalformedRequest => "malformed_request",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::MustChangePassword => "must_change_password",
            Self::WrongPassword => "wrong_password",
            Self::CustomerNotFound => "customer_not_found",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::EmailInUse => "email_in_use",
            Self::CustomerExists => "customer_exists",
            Self::ConcurrentModification => "concurrent_modification",
            Self::IdempotencyKeyInUse => "idempotency_key_in_use",
            Self::CustomerForgotten => "customer_forgotten",
            Self::VersionMismatch => "version_mismatch",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::LoginHasNoPassword => "login_has_no_password",
            Self::PasswordMismatch => "password_mismatch",
            Self::EmailMismatch => "email_mismatch",
            Self::EmailUnchanged => "email_unchanged",
            Self::InvalidEmail => "invalid_email",
            Self::InvalidName => "invalid_name",
            Self::UnknownRole => "unknown_role",
            Self::WeakPassword => "weak_password",
            Self::NoAccess => "no_access",
            Self::AccessAlreadyGranted => "access_already_granted",
            Self::InvalidToken => "invalid_token",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::ReasonRequired => "reason_required",
            Self::TooManyAttempts => "too_many_attempts",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::InvalidCustomerId => "invalid_customer_id",
            Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with an error (`{"error":{"code","message"}}`).
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        /// `Retry-After` in seconds (429, 503, 409 `idempotency_key_in_use`).
        retry_after: Option<u64>,
        request_id: Option<String>,
    },
    /// The service could not be reached, or the connection broke.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not the documented one (e.g. a proxy's error page).
    #[error("unexpected answer ({status}): {detail}")]
    Unexpected { status: u16, detail: String },
}

impl Error {
    /// The service's error code, for an error answer.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Unexpected { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }

    /// The service's message (for people; may change).
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    pub(crate) fn from_answer(status: StatusCode, headers: &HeaderMap, body: &str) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match serde_json::from_str::<access_api_types::ErrorResponse>(body) {
            Ok(answer) => Self::Api {
                status: status.as_u16(),
                code: ErrorCode::parse(&answer.error.code),
                message: answer.error.message,
                retry_after: header("retry-after").and_then(|v| v.parse().ok()),
                request_id: header("x-request-id"),
            },
            Err(_) => Self::Unexpected {
                status: status.as_u16(),
                // A bounded excerpt: an HTML error page can be long.
                detail: body.chars().take(200).collect(),
            },
        }
    }
}
