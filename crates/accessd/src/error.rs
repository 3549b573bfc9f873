//! One HTTP error type: every failure becomes
//! `{"error":{"code","message"}}` with a stable code and a precise status.
//! Internal failures are logged with the request id and answered with a
//! generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use access_domain::{CustomerError, ServiceError, ValueError};
use access_store::{ExecuteError, StoreError};

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (see docs/api.md).
    #[schema(example = "login_has_no_password")]
    pub code: &'static str,
    /// For people; may change.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid Bearer token is required",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn customer_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "customer_not_found",
            "no customer with this id",
        )
    }

    /// The email is the login of another customer.
    pub fn email_in_use() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "email_in_use",
            "this email address is the login of another customer",
        )
    }

    pub fn too_many_attempts(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many password attempts; try again later",
            )
        }
    }

    pub fn unavailable() -> Self {
        Self::unavailable_for(2)
    }

    /// 503 `unavailable`, to be retried after `retry_after` seconds.
    pub fn unavailable_for(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable; retry later",
            )
        }
    }

    /// An unexpected failure: logged in full, answered generically.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the request id identifies it in the logs",
        )
    }
}

impl From<ValueError> for ApiError {
    fn from(err: ValueError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            err.code(),
            err.to_string(),
        )
    }
}

impl From<CustomerError> for ApiError {
    fn from(err: CustomerError) -> Self {
        let status = match &err {
            CustomerError::CustomerNotFound => StatusCode::NOT_FOUND,
            CustomerError::CustomerExists | CustomerError::ImportConflict => StatusCode::CONFLICT,
            CustomerError::CustomerForgotten => StatusCode::GONE,
            CustomerError::WrongPassword | CustomerError::InvalidCode => StatusCode::FORBIDDEN,
            CustomerError::SecondFactorAlreadyEnrolled => StatusCode::CONFLICT,
            CustomerError::Service(ServiceError::Overloaded {
                retry_after_secs, ..
            }) => return Self::unavailable_for(*retry_after_secs),
            CustomerError::Service(e) => return Self::internal(e),
            CustomerError::InvalidValue(v) => return v.clone().into(),
            CustomerError::LoginHasNoPassword { .. }
            | CustomerError::PasswordMismatch
            | CustomerError::EmailMismatch
            | CustomerError::EmailUnchanged
            | CustomerError::NoAccess
            | CustomerError::AccessAlreadyGranted
            | CustomerError::UnsupportedPasswordHash { .. }
            | CustomerError::InvalidImport { .. }
            | CustomerError::NoPendingEnrollment
            | CustomerError::NoSecondFactor
            | CustomerError::InvalidToken => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Busy { .. } => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::CONFLICT,
                    "concurrent_modification",
                    "other requests on this customer kept this one waiting too long; retry",
                )
            },
            StoreError::Contention(_) => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::CONFLICT,
                    "concurrent_modification",
                    "this request collided with others in the database several times; retry",
                )
            },
            StoreError::Conflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "concurrent_modification",
                "the customer was changed by another request at the same time; retry",
            ),
            StoreError::EmailInUse { .. } => Self::email_in_use(),
            StoreError::ExternalIdTaken => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the external id belongs to another customer; nothing was written",
            ),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                Self::unavailable()
            }
            other => Self::internal(other),
        }
    }
}

impl From<access_projections::ProjectionError> for ApiError {
    /// A read of the projections: the database being down is 503 like
    /// any store outage (not 500); a lagging read model is 503 too.
    fn from(err: access_projections::ProjectionError) -> Self {
        use access_projections::ProjectionError;
        match err {
            ProjectionError::Store(e) => e.into(),
            ProjectionError::Lagging { .. } => Self::unavailable(),
            other => Self::internal(other),
        }
    }
}

impl From<ExecuteError> for ApiError {
    fn from(err: ExecuteError) -> Self {
        match err {
            ExecuteError::Rejected(e) => e.into(),
            ExecuteError::VersionMismatch { expected, actual } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!(
                    "If-Match expected version {expected}, the customer is at version {actual}"
                ),
            ),
            ExecuteError::Store(e) => e.into(),
            ExecuteError::Outbox(e) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let status = self.status;
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme that would work
            // (an API key or a customer session token, both as Bearer).
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"access\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_map_to_precise_statuses() {
        let conflict = ApiError::from(StoreError::Conflict {
            customer_id: "c".into(),
            expected: 3,
        });
        assert_eq!(
            (conflict.status, conflict.code),
            (StatusCode::CONFLICT, "concurrent_modification")
        );
        let down = ApiError::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(
            (down.status, down.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(down.retry_after.is_some());
        assert!(
            !down.message.contains("refused"),
            "internal detail leaked: {}",
            down.message
        );
        let response = down.into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let internal = ApiError::from(StoreError::Database("syntax error at or near".into()));
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message.contains("syntax"));
        let taken = ApiError::from(StoreError::EmailInUse {
            email: "a@b.c".into(),
        });
        assert_eq!(
            (taken.status, taken.code),
            (StatusCode::CONFLICT, "email_in_use")
        );
    }

    #[test]
    fn projection_reads_during_an_outage_are_503_not_500() {
        let down = ApiError::from(access_projections::ProjectionError::Store(
            StoreError::Unavailable("connection refused".into()),
        ));
        assert_eq!(
            (down.status, down.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(down.retry_after.is_some());
        let corrupt = ApiError::from(access_projections::ProjectionError::Corrupt("x".into()));
        assert_eq!(corrupt.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn rule_errors_map_to_the_contract() {
        for (err, status, code) in [
            (
                CustomerError::CustomerNotFound,
                StatusCode::NOT_FOUND,
                "customer_not_found",
            ),
            (
                CustomerError::CustomerExists,
                StatusCode::CONFLICT,
                "customer_exists",
            ),
            (
                CustomerError::WrongPassword,
                StatusCode::FORBIDDEN,
                "wrong_password",
            ),
            (
                CustomerError::NoAccess,
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_access",
            ),
            (
                CustomerError::InvalidToken,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_token",
            ),
        ] {
            let api = ApiError::from(err);
            assert_eq!((api.status, api.code), (status, code));
        }
        let mismatch = ApiError::from(ExecuteError::VersionMismatch {
            expected: 1,
            actual: 2,
        });
        assert_eq!(
            (mismatch.status, mismatch.code),
            (StatusCode::PRECONDITION_FAILED, "version_mismatch")
        );
    }
}
