//! Commands: what callers ask the Customer aggregate to do (imperative).
//!
//! Every field is an already-valid value type; the HTTP layer and the
//! scenario harness parse raw input into these.

use crate::values::{
    CustomerId, CustomerName, EmailAddress, ExternalId, ImportSource, Password, PasswordHash, Role,
    Secret,
};

/// How a login gets a password when an email change or a new access needs
/// one (the notice's "Send New Access Notification Email" and "Manually
/// Assign or Change Password" fields).
#[derive(Debug, Clone, Default)]
pub enum Credential {
    /// Neither field was filled in.
    #[default]
    None,
    /// A password typed by an administrator (temporary: the customer must
    /// change it at the next login), with an optional notification that
    /// never contains the password.
    ManualPassword {
        password: Password,
        password_confirm: Secret,
        send_notification: bool,
    },
    /// An access notification email with a single-use password-setup link.
    SetupLink,
}

/// One customer brought in from an older system (bulk import), with the
/// password hash that system kept, if any.
#[derive(Debug, Clone)]
pub struct ImportCustomer {
    pub customer_id: CustomerId,
    /// Which import (old system) it came from.
    pub source: ImportSource,
    /// Its id in the old system.
    pub external_id: Option<ExternalId>,
    pub email: EmailAddress,
    pub name: Option<CustomerName>,
    /// `None`: the customer has no access.
    pub access: Option<Role>,
    /// The old system's hash (argon2, bcrypt, scrypt or PBKDF2; the hasher
    /// says which it accepts). Verified with its own algorithm at the next
    /// login, then rehashed to argon2id.
    pub password_hash: Option<PasswordHash>,
    pub must_change_password: bool,
    /// Only for access without a hash: an access notification with a
    /// password-setup link.
    pub send_notification: bool,
}

/// Its `name()` is the variant's name in snake_case (`register_customer`,
/// …), for logs and metrics.
#[derive(Debug, Clone, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CustomerCommand {
    /// Creates the customer, without access.
    RegisterCustomer {
        customer_id: CustomerId,
        email: EmailAddress,
        name: Option<CustomerName>,
    },
    /// An administrator or upstream service changes the login email.
    ChangeEmail {
        email: EmailAddress,
        credential: Credential,
    },
    /// Gives the customer access to the portal.
    GrantAccess { role: Role, credential: Credential },
    /// An administrator assigns a (temporary) password.
    SetPassword {
        password: Password,
        password_confirm: Secret,
        send_notification: bool,
    },
    /// Sends a new access notification with a fresh setup link, voiding
    /// every earlier link.
    SendAccessNotification,
    /// Removes access: password, links and pending changes are discarded.
    RevokeAccess { reason: Option<String> },
    /// Self-service: the customer asks to move the login to a new address.
    RequestEmailChange {
        current_password: Secret,
        new_email: EmailAddress,
        new_email_confirm: EmailAddress,
    },
    /// Self-service: the link from the validation email.
    ConfirmEmailChange { token: Secret },
    /// Self-service: the link from the access notification.
    CompletePasswordSetup {
        token: Secret,
        password: Password,
        password_confirm: Secret,
    },
    /// Self-service: a new password, given the current one.
    ChangePassword {
        current_password: Secret,
        new_password: Password,
        new_password_confirm: Secret,
    },
    /// At a successful login: the stored password hash was made with older
    /// parameters (`PasswordHasher::needs_rehash`), so the password just
    /// given is hashed again with the current ones. Verified once more
    /// against the stored hash; nothing happens when no rehash is due.
    UpgradePasswordHash { password: Secret },
    /// Brings a customer in from an older system (bulk import). Idempotent:
    /// the same content again decides nothing; other content for an
    /// already imported (or existing) customer is a conflict.
    ImportCustomer(Box<ImportCustomer>),
    /// Erases the customer's personal data (right to erasure): access is
    /// revoked and the customer's data key destroyed. The reason goes in
    /// the command's metadata. Final: every later command is refused.
    ForgetCustomer,
    /// Self-service (a session): a fresh TOTP secret, pending until
    /// confirmed; a newer one replaces an older pending one. Refused while
    /// a second factor is enrolled (remove it first).
    BeginTotpEnrollment,
    /// Self-service: a code from the pending secret enrolls it and issues
    /// recovery codes (their plain text only in the `Decision`).
    ConfirmTotpEnrollment { code: Secret },
    /// At a login, after the password: a TOTP code (a step accepted once is
    /// refused again) or a recovery code (used up).
    VerifySecondFactor { code: Secret },
    /// Self-service: a new set of recovery codes, replacing the old one,
    /// given a TOTP or recovery code.
    RegenerateRecoveryCodes { code: Secret },
    /// Self-service: removes the TOTP second factor, given the password
    /// and a TOTP or recovery code.
    RemoveTotp {
        current_password: Secret,
        code: Secret,
    },
    /// An administrator removes the customer's second factor (a lost
    /// device); the customer is told at the login email.
    ResetSecondFactor { reason: Option<String> },
}

impl CustomerCommand {
    /// A short snake_case name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.into()
    }
}
