//! The aggregate's errors: one variant per broken rule, each with a stable
//! code that the HTTP layer maps to a status.

use crate::services::ServiceError;
use crate::values::{EmailAddress, ValueError};

/// Its `code()` is the variant's name in snake_case, but where a variant
/// says otherwise.
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CustomerError {
    /// The notice's message, word for word.
    #[error("{email} login has no password. A notification email with a password URL must be sent or a new password must be entered manually.")]
    LoginHasNoPassword { email: EmailAddress },
    #[error("the password and its confirmation differ")]
    PasswordMismatch,
    #[error("the new email address and its confirmation differ")]
    EmailMismatch,
    #[error("the new email address is the current login email")]
    EmailUnchanged,
    #[error("the customer has no access")]
    NoAccess,
    #[error("the customer already has access")]
    AccessAlreadyGranted,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the link is invalid, expired or already used")]
    InvalidToken,
    /// A TOTP code or recovery code that is wrong, out of its time or
    /// already used.
    #[error("the code is wrong, expired or already used")]
    InvalidCode,
    #[error("the customer already has a second factor; remove it first")]
    SecondFactorAlreadyEnrolled,
    #[error("no TOTP enrollment is pending")]
    NoPendingEnrollment,
    #[error("the customer has no second factor")]
    NoSecondFactor,
    #[error("a customer with this id already exists")]
    CustomerExists,
    #[error("no customer with this id")]
    CustomerNotFound,
    #[error(
        "the customer was forgotten: its personal data is erased and it takes no more commands"
    )]
    CustomerForgotten,
    /// An import names a customer that exists with other content (or that
    /// was not imported): nothing is written.
    #[error("the customer already exists with other content")]
    #[strum(serialize = "conflict")]
    ImportConflict,
    /// An imported password hash in a format the service does not verify
    /// (never quotes the hash).
    #[error("unsupported password hash: {reason}")]
    UnsupportedPasswordHash { reason: String },
    /// An import row whose fields do not go together.
    #[error("{field}: {reason}")]
    InvalidImport { field: &'static str, reason: String },
    /// The value's own code.
    #[error(transparent)]
    #[strum(transparent)]
    InvalidValue(#[from] ValueError),
    /// `internal`, or `unavailable` when the service is at capacity.
    #[error("a service failed: {0}")]
    #[strum(transparent)]
    Service(#[from] ServiceError),
}

impl CustomerError {
    /// Stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        self.into()
    }
}
