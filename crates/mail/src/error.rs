//! The one error type of the crate.
//!
//! No message ever contains a token, a link with a token, or a password:
//! errors name the event, the template or the file instead.

use std::path::PathBuf;

/// Why mail could not be derived, rendered or delivered. Its `code()` is
/// the variant's name in snake_case after `mail_`.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case", prefix = "mail_")]
pub enum MailError {
    /// An event announces a link, but the command issued no token with the
    /// event's digest (and the right purpose): without it no link can be
    /// built, and a mail without its link must not go out.
    #[error(
        "the {event} event carries a {purpose} link, but no issued token matches its digest: \
         the mail cannot be built without its link"
    )]
    MissingToken {
        event: &'static str,
        purpose: &'static str,
    },

    /// An event needs the customer's login email to address its notice, and
    /// none was given.
    #[error("the {event} event needs the customer's login email to address its notice, but none was given")]
    MissingLogin { event: &'static str },

    /// The public URL the links start with is unusable.
    #[error("invalid public URL `{url}`: {reason}")]
    InvalidPublicUrl { url: String, reason: &'static str },

    /// The sender (`MailSettings::from`) is not a valid mailbox.
    #[error(
        "invalid sender address `{from}`: {reason} (expected e.g. `Access <no-reply@example.com>`)"
    )]
    InvalidSender { from: String, reason: String },

    /// The recipient could not be used as a mailbox.
    #[error("invalid recipient address: {reason}")]
    InvalidRecipient { reason: String },

    /// A template failed to parse or render.
    #[error("mail template `{name}`: {message}")]
    Template { name: String, message: String },

    /// The message could not be assembled.
    #[error("could not build the mail message: {0}")]
    Build(String),

    /// A file system operation failed.
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The `ACCESS_MAIL` setting is malformed.
    #[error("invalid mail target (ACCESS_MAIL): {0}")]
    InvalidTarget(String),

    /// The delivery failed for a reason that may pass (a server down, a
    /// timeout, a temporary refusal): worth retrying.
    #[error("mail delivery failed: {0}")]
    Delivery(String),

    /// The server refused the message for good (a permanent SMTP error, a
    /// malformed envelope): retrying will not help.
    #[error("mail rejected: {0}")]
    Rejected(String),
}

impl MailError {
    /// True when a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Delivery(_) | Self::Io { .. })
    }

    /// Stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        self.into()
    }
}
