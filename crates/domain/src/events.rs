//! Events: what happened to a customer (past tense).
//!
//! Each event has an explicit type name and a version so that older stored
//! forms can be upcast (`crate::upcasting`). Together the events hold
//! everything needed to rebuild the aggregate and the audit trail. They never
//! hold a plain password or token: only PHC password hashes and SHA-256
//! token digests.
//!
//! Personal data (names, email addresses) sits only in fields of type
//! [`Personal`], so that a later step can encrypt exactly those fields per
//! customer (crypto-shredding) without changing the shape of the history.

use std::ops::Deref;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::values::{CustomerId, CustomerName, EmailAddress, PasswordHash, Role, TokenDigest};

/// Marks personal data inside an event. Serialized as the bare value today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Personal<T>(pub T);

impl<T> Deref for Personal<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A single-use password-setup link, as stored: digest and expiry only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupLink {
    pub token_digest: TokenDigest,
    pub expires_at: DateTime<Utc>,
}

/// Why a password stopped working without a new one being set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordClearedReason {
    /// The login email changed and a setup link went to the new address.
    EmailChangedWithSetupLink,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CustomerEvent {
    CustomerRegistered {
        customer_id: CustomerId,
        email: Personal<EmailAddress>,
        name: Option<Personal<CustomerName>>,
        at: DateTime<Utc>,
    },
    /// An administrator or upstream service changed the login email.
    EmailChanged {
        old_email: Personal<EmailAddress>,
        new_email: Personal<EmailAddress>,
        at: DateTime<Utc>,
    },
    AccessGranted {
        role: Role,
        at: DateTime<Utc>,
    },
    /// An administrator assigned a password. `temporary`: the customer must
    /// change it at the next login.
    PasswordSet {
        password_hash: PasswordHash,
        temporary: bool,
        at: DateTime<Utc>,
    },
    /// The password stopped working (no new one yet).
    PasswordCleared {
        reason: PasswordClearedReason,
        at: DateTime<Utc>,
    },
    /// An access notification went to `recipient`: with a setup link, or,
    /// after a manually set password, as a plain notice (no password, no
    /// link). A new setup link voids every earlier one.
    AccessNotificationSent {
        recipient: Personal<EmailAddress>,
        setup_link: Option<SetupLink>,
        at: DateTime<Utc>,
    },
    /// Access removed: password, setup links and pending changes discarded.
    AccessRevoked {
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// The customer asked to move the login to `new_email`; a validation
    /// link went to the new address and a notice to the old one.
    EmailChangeRequested {
        old_email: Personal<EmailAddress>,
        new_email: Personal<EmailAddress>,
        token_digest: TokenDigest,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The customer followed the validation link: the login moved.
    EmailChangeConfirmed {
        old_email: Personal<EmailAddress>,
        new_email: Personal<EmailAddress>,
        at: DateTime<Utc>,
    },
    /// The customer set a password through a setup link (not temporary).
    PasswordSetupCompleted {
        password_hash: PasswordHash,
        at: DateTime<Utc>,
    },
    /// The customer changed the password, giving the current one.
    PasswordChanged {
        password_hash: PasswordHash,
        at: DateTime<Utc>,
    },
}

/// Current version of each event type.
pub const EVENT_VERSIONS: &[(&str, &str)] = &[
    ("CustomerRegistered", "1.0"),
    ("EmailChanged", "1.0"),
    ("AccessGranted", "1.1"),
    ("PasswordSet", "1.1"),
    ("PasswordCleared", "1.0"),
    ("AccessNotificationSent", "1.0"),
    ("AccessRevoked", "1.0"),
    ("EmailChangeRequested", "1.0"),
    ("EmailChangeConfirmed", "1.0"),
    ("PasswordSetupCompleted", "1.0"),
    ("PasswordChanged", "1.0"),
];

impl CustomerEvent {
    /// The event's type name, as stored.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::CustomerRegistered { .. } => "CustomerRegistered",
            Self::EmailChanged { .. } => "EmailChanged",
            Self::AccessGranted { .. } => "AccessGranted",
            Self::PasswordSet { .. } => "PasswordSet",
            Self::PasswordCleared { .. } => "PasswordCleared",
            Self::AccessNotificationSent { .. } => "AccessNotificationSent",
            Self::AccessRevoked { .. } => "AccessRevoked",
            Self::EmailChangeRequested { .. } => "EmailChangeRequested",
            Self::EmailChangeConfirmed { .. } => "EmailChangeConfirmed",
            Self::PasswordSetupCompleted { .. } => "PasswordSetupCompleted",
            Self::PasswordChanged { .. } => "PasswordChanged",
        }
    }

    /// The current version of this event's type.
    pub fn version(&self) -> &'static str {
        let name = self.type_name();
        EVENT_VERSIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("1.0", |(_, v)| v)
    }

    /// When it happened (the clock of the service that handled the command).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::CustomerRegistered { at, .. }
            | Self::EmailChanged { at, .. }
            | Self::AccessGranted { at, .. }
            | Self::PasswordSet { at, .. }
            | Self::PasswordCleared { at, .. }
            | Self::AccessNotificationSent { at, .. }
            | Self::AccessRevoked { at, .. }
            | Self::EmailChangeRequested { at, .. }
            | Self::EmailChangeConfirmed { at, .. }
            | Self::PasswordSetupCompleted { at, .. }
            | Self::PasswordChanged { at, .. } => *at,
        }
    }
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        self.type_name().to_string()
    }

    fn event_version(&self) -> String {
        self.version().to_string()
    }
}
