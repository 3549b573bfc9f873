//! The use cases' errors said in JSON: one `From` impl per error type,
//! with the codes and statuses of the contract (docs/api.md).

use access_domain::CustomerError;
use axum::http::StatusCode;

use crate::error::ApiError;
use crate::throttle::ThrottleError;
use crate::usecase::{CommandError, SelfServiceError};

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Execute(e) => e.into(),
            CommandError::Store(e) => e.into(),
            CommandError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ),
            CommandError::KeyInUse(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still running; retry shortly",
                )
            },
            CommandError::RecordVanished => ApiError::internal("idempotency record vanished"),
        }
    }
}

impl From<SelfServiceError> for ApiError {
    fn from(err: SelfServiceError) -> Self {
        match err {
            SelfServiceError::TooManyAttempts { retry_after } => {
                ApiError::too_many_attempts(retry_after)
            }
            SelfServiceError::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the email or the password is wrong",
            ),
            SelfServiceError::WrongPassword => CustomerError::WrongPassword.into(),
            SelfServiceError::PasswordMismatch => CustomerError::PasswordMismatch.into(),
            SelfServiceError::Invalid(value) => value.into(),
            SelfServiceError::EmailMismatch => CustomerError::EmailMismatch.into(),
            SelfServiceError::EmailUnchanged => CustomerError::EmailUnchanged.into(),
            SelfServiceError::EmailInUse => ApiError::email_in_use(),
            SelfServiceError::InvalidToken => CustomerError::InvalidToken.into(),
            SelfServiceError::InvalidCode => CustomerError::InvalidCode.into(),
            SelfServiceError::SessionEnded => ApiError::unauthenticated(),
            SelfServiceError::NoSecondFactorPending => ApiError::new(
                StatusCode::CONFLICT,
                "no_second_factor_pending",
                "this session does not wait for a second factor: it is already a full one",
            ),
            SelfServiceError::Command(e) => e.into(),
            SelfServiceError::Store(e) => e.into(),
            SelfServiceError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl From<ThrottleError> for ApiError {
    fn from(err: ThrottleError) -> Self {
        match err {
            ThrottleError::TooManyAttempts { retry_after } => {
                ApiError::too_many_attempts(retry_after)
            }
            ThrottleError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use access_domain::ValueError;
    use access_store::{ExecuteError, StoreError};

    fn said(err: impl Into<ApiError>) -> (StatusCode, &'static str, String) {
        let api = err.into();
        (api.status, api.code, api.message)
    }

    fn commands() -> Vec<fn() -> CommandError> {
        vec![
            || ExecuteError::Rejected(CustomerError::WrongPassword).into(),
            || ExecuteError::Rejected(CustomerError::EmailMismatch).into(),
            || ExecuteError::Rejected(CustomerError::EmailUnchanged).into(),
            || ExecuteError::Rejected(CustomerError::PasswordMismatch).into(),
            || ExecuteError::Rejected(CustomerError::InvalidToken).into(),
            || ExecuteError::Rejected(CustomerError::NoAccess).into(),
            || ExecuteError::Rejected(ValueError::WeakPassword("short".into()).into()).into(),
            || {
                ExecuteError::VersionMismatch {
                    expected: 1,
                    actual: 2,
                }
                .into()
            },
            || {
                ExecuteError::Store(StoreError::EmailInUse {
                    email: "a@b.c".into(),
                })
                .into()
            },
            || {
                ExecuteError::Store(StoreError::Conflict {
                    customer_id: "c".into(),
                    expected: 3,
                })
                .into()
            },
            || StoreError::Unavailable("down".into()).into(),
            || ExecuteError::Outbox("template".into()).into(),
            || CommandError::KeyReused,
            || crate::keys_in_flight::KeyInUse.into(),
            || CommandError::RecordVanished,
        ]
    }

    #[test]
    fn the_metric_outcome_is_the_code_answered() {
        for make in commands() {
            let err = make();
            let code = err.code();
            assert_eq!(ApiError::from(err).code, code);
        }
    }

    #[test]
    fn lifted_refusals_are_answered_as_before() {
        for make in commands() {
            assert_eq!(said(SelfServiceError::from(make())), said(make()));
        }
    }

    #[test]
    fn idempotency_refusals_keep_their_statuses() {
        let in_use = ApiError::from(CommandError::from(crate::keys_in_flight::KeyInUse));
        assert_eq!(
            (in_use.status, in_use.code, in_use.retry_after),
            (StatusCode::CONFLICT, "idempotency_key_in_use", Some(1))
        );
        assert_eq!(
            said(CommandError::KeyReused).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let throttled = ApiError::from(ThrottleError::TooManyAttempts { retry_after: 7 });
        assert_eq!(
            (throttled.status, throttled.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(7))
        );
    }
}
