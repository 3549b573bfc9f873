//! The use cases' errors, as types. A page matches on their variants to
//! put a message next to a field; the JSON side turns each into its
//! `{"error":{"code","message"}}` in one `From` impl per type
//! (`http/refusals.rs`).

use access_domain::{CustomerError, ValueError};
use access_store::{ExecuteError, StoreError};

use crate::keys_in_flight::KeyInUse;
use crate::throttle::ThrottleError;

/// Why a command did not run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A rule refused it, `If-Match` did not hold, or the store or the
    /// outbox failed.
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// Looking up the idempotency record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `Idempotency-Key` was used for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    /// A request with the `Idempotency-Key` is still running.
    #[error(transparent)]
    KeyInUse(#[from] KeyInUse),
    /// The key was taken, yet no record of it could be read.
    #[error("idempotency record vanished")]
    RecordVanished,
}

impl CommandError {
    /// The stable code the error is answered with; also the outcome in
    /// the command metric.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Execute(ExecuteError::Rejected(rule)) => rule.code(),
            Self::Execute(ExecuteError::VersionMismatch { .. }) => "version_mismatch",
            Self::Execute(ExecuteError::Store(e)) | Self::Store(e) => store_code(e),
            Self::Execute(ExecuteError::Outbox(_)) | Self::RecordVanished => "internal",
            Self::KeyReused => "idempotency_key_reused",
            Self::KeyInUse(_) => "idempotency_key_in_use",
        }
    }
}

/// The code of a store failure.
fn store_code(err: &StoreError) -> &'static str {
    match err {
        StoreError::Conflict { .. } | StoreError::Busy { .. } | StoreError::Contention(_) => {
            "concurrent_modification"
        }
        StoreError::EmailInUse { .. } => "email_in_use",
        StoreError::ExternalIdTaken => "conflict",
        StoreError::Unavailable(_) => "unavailable",
        _ => "internal",
    }
}

/// Why a customer's own request (log in, change the email or the
/// password, use a link) did not go through. The refusals a page shows
/// next to a field have their own variants; everything else is in
/// [`SelfServiceError::Command`] or [`SelfServiceError::Store`].
#[derive(Debug, thiserror::Error)]
pub enum SelfServiceError {
    /// The throttle refused the password check: wait this many seconds.
    #[error("too many password attempts; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    /// A login with an unknown email or a wrong password (which one is
    /// not told).
    #[error("the email or the password is wrong")]
    InvalidCredentials,
    /// The current password given with a change is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the password and its confirmation differ")]
    PasswordMismatch,
    /// A value did not parse (a weak password, an invalid email).
    #[error(transparent)]
    Invalid(#[from] ValueError),
    #[error("the new email address and its confirmation differ")]
    EmailMismatch,
    #[error("the new email address is the current login email")]
    EmailUnchanged,
    /// The new email is the login of another customer.
    #[error("this email address is the login of another customer")]
    EmailInUse,
    /// A link's token that is malformed, wrong, expired or used.
    #[error("the link is invalid, expired or already used")]
    InvalidToken,
    /// A second factor's code that is wrong, expired, already used or not
    /// a code.
    #[error("the code is wrong, expired or already used")]
    InvalidCode,
    /// The session ended while the request ran (another request with it
    /// ended it first).
    #[error("the session has ended")]
    SessionEnded,
    /// A code was sent to verify a login with a session that does not
    /// wait for one.
    #[error("this session does not wait for a second factor")]
    NoSecondFactorPending,
    /// Any other refusal or failure of the command.
    #[error(transparent)]
    Command(CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An unexpected failure (the password hasher, a replay where none
    /// can be).
    #[error("{0}")]
    Internal(String),
}

impl From<CommandError> for SelfServiceError {
    /// Lifts the refusals the pages show next to a field into their own
    /// variants.
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Execute(ExecuteError::Rejected(rule)) => match rule {
                CustomerError::WrongPassword => Self::WrongPassword,
                CustomerError::PasswordMismatch => Self::PasswordMismatch,
                CustomerError::EmailMismatch => Self::EmailMismatch,
                CustomerError::EmailUnchanged => Self::EmailUnchanged,
                CustomerError::InvalidToken => Self::InvalidToken,
                CustomerError::InvalidCode => Self::InvalidCode,
                CustomerError::InvalidValue(value) => Self::Invalid(value),
                other => Self::Command(ExecuteError::Rejected(other).into()),
            },
            CommandError::Execute(ExecuteError::Store(StoreError::EmailInUse { .. })) => {
                Self::EmailInUse
            }
            other => Self::Command(other),
        }
    }
}

impl From<ThrottleError> for SelfServiceError {
    fn from(err: ThrottleError) -> Self {
        match err {
            ThrottleError::TooManyAttempts { retry_after } => Self::TooManyAttempts { retry_after },
            ThrottleError::Store(e) => Self::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(rule: CustomerError) -> CommandError {
        ExecuteError::Rejected(rule).into()
    }

    #[test]
    fn the_refusals_a_page_shows_get_their_own_variants() {
        let lifted = |err| SelfServiceError::from(err);
        assert!(matches!(
            lifted(rejected(CustomerError::WrongPassword)),
            SelfServiceError::WrongPassword
        ));
        assert!(matches!(
            lifted(rejected(CustomerError::InvalidToken)),
            SelfServiceError::InvalidToken
        ));
        assert!(matches!(
            lifted(rejected(
                ValueError::WeakPassword("too short".into()).into()
            )),
            SelfServiceError::Invalid(ValueError::WeakPassword(_))
        ));
        assert!(matches!(
            lifted(
                ExecuteError::Store(StoreError::EmailInUse {
                    email: "a@b.c".into()
                })
                .into()
            ),
            SelfServiceError::EmailInUse
        ));
        // Others stay what they were.
        assert!(matches!(
            lifted(rejected(CustomerError::NoAccess)),
            SelfServiceError::Command(CommandError::Execute(ExecuteError::Rejected(
                CustomerError::NoAccess
            )))
        ));
        assert!(matches!(
            lifted(CommandError::KeyReused),
            SelfServiceError::Command(CommandError::KeyReused)
        ));
        assert!(matches!(
            SelfServiceError::from(ThrottleError::TooManyAttempts { retry_after: 3 }),
            SelfServiceError::TooManyAttempts { retry_after: 3 }
        ));
    }
}
