//! The Customer aggregate: a customer's login email and portal access, and
//! the rules of the Customer Center notice.
//!
//! `handle` first decides (a pure function of the state, the command and the
//! services) which events to emit, then writes them to the sink, which
//! applies each one. `apply` never fails: every check happens in `decide`.
//!
//! Here: the state ([`Customer`]), what it tells (getters, link status,
//! reserved emails), the checks the rules share, and [`Customer::decide`].
//! The rules for each command are in `decide.rs`; `apply` (and cqrs-es's
//! `handle`) in `apply.rs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::commands::{Credential, CustomerCommand};
use crate::error::CustomerError;
use crate::events::{CustomerEvent, PasswordClearedReason, Personal, SetupLink};
use crate::services::{CustomerServices, IssuedToken, TokenPurpose};
use crate::values::{
    CustomerId, CustomerName, EmailAddress, ExternalId, Password, PasswordHash, Role, Secret,
    TokenDigest, TotpSecret,
};

mod apply;
mod decide;
mod second_factor;

/// A self-service email change waiting for its validation link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEmailChange {
    pub new_email: EmailAddress,
    pub token_digest: TokenDigest,
    pub expires_at: DateTime<Utc>,
}

impl PendingEmailChange {
    /// True once its validation link has expired: the change can no longer
    /// be confirmed, and it no longer holds its target address.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// What a link's token is worth now (see `Customer::link_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// The customer's current link: its command accepts the token now.
    Live,
    /// The customer's current link, but it has expired.
    Expired,
    /// Not a link of this customer's: used, voided by a newer link or a
    /// change, or never issued.
    Dead,
}

/// What a customer was imported with (`CustomerImported`): an import of
/// the same content again changes nothing, other content is a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub external_id: Option<ExternalId>,
    pub email: EmailAddress,
    pub name: Option<CustomerName>,
    pub access: Option<Role>,
    pub password_hash: Option<PasswordHash>,
    pub must_change_password: bool,
}

/// What a command decided: its events, and the one-time secrets it made,
/// which never go into events in plain: the tokens it issued (the caller
/// builds the links in the mails from them after the commit, then drops
/// them) and the recovery codes (shown to the customer once).
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub events: Vec<CustomerEvent>,
    pub issued: Vec<IssuedToken>,
    /// `ConfirmTotpEnrollment`, `RegenerateRecoveryCodes`: the new recovery
    /// codes in plain (the events keep their digests).
    pub recovery_codes: Vec<Secret>,
}

/// The customer's TOTP second factor, as the state keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondFactor {
    /// A secret whose enrollment was begun and not yet confirmed.
    #[serde(default)]
    pub pending: Option<TotpSecret>,
    /// The enrolled secret (`None` while it cannot be read: sealed under a
    /// key this process lacks, or forgotten in a replayed export).
    #[serde(default)]
    pub totp: Option<TotpSecret>,
    /// A second factor is enrolled, whether or not its secret can be read
    /// (so an unreadable secret fails closed: no TOTP code is accepted).
    #[serde(default)]
    pub enrolled: bool,
    /// The latest time step whose code was accepted.
    #[serde(default)]
    pub last_step: Option<u64>,
    /// Digests of the recovery codes not used yet.
    #[serde(default)]
    pub recovery_codes: Vec<TokenDigest>,
}

/// Why a customer holds an email address (see `Customer::reserved_emails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationKind {
    /// The login email of a customer with access.
    Login,
    /// The new address of a pending self-service email change.
    PendingChange,
}

impl ReservationKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::PendingChange => "pending_change",
        }
    }
}

/// The state rebuilt from a customer's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    id: Option<CustomerId>,
    email: Option<EmailAddress>,
    name: Option<CustomerName>,
    access: Option<Role>,
    password: Option<PasswordHash>,
    must_change_password: bool,
    setup_link: Option<SetupLink>,
    pending_email_change: Option<PendingEmailChange>,
    /// Counts changes to the login itself (email, password, access): a
    /// customer session opened before the latest change is no longer valid.
    #[serde(default)]
    login_epoch: u64,
    /// When the latest event happened.
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
    /// The customer was forgotten: personal data erased, no more commands.
    #[serde(default)]
    forgotten: bool,
    /// Set when the customer came in through a bulk import: what it was
    /// imported with (kept after later changes, for idempotent re-runs).
    #[serde(default)]
    imported: Option<ImportRecord>,
    /// The TOTP second factor (enrolled or pending) and recovery codes.
    #[serde(default)]
    second_factor: SecondFactor,
}

impl Customer {
    pub fn id(&self) -> Option<CustomerId> {
        self.id
    }
    pub fn is_registered(&self) -> bool {
        self.id.is_some()
    }
    pub fn email(&self) -> Option<&EmailAddress> {
        self.email.as_ref()
    }
    pub fn name(&self) -> Option<&CustomerName> {
        self.name.as_ref()
    }
    pub fn access(&self) -> Option<Role> {
        self.access
    }
    pub fn has_access(&self) -> bool {
        self.access.is_some()
    }
    pub fn password_hash(&self) -> Option<&PasswordHash> {
        self.password.as_ref()
    }
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }
    pub fn must_change_password(&self) -> bool {
        self.must_change_password
    }
    pub fn setup_link(&self) -> Option<&SetupLink> {
        self.setup_link.as_ref()
    }
    pub fn pending_email_change(&self) -> Option<&PendingEmailChange> {
        self.pending_email_change.as_ref()
    }
    /// Changes with each change of the login (email, password, access):
    /// sessions remember it and end when it moves on.
    pub fn login_epoch(&self) -> u64 {
        self.login_epoch
    }
    /// When the latest event happened.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }
    /// What the customer was imported with, when it came in by an import.
    pub fn imported(&self) -> Option<&ImportRecord> {
        self.imported.as_ref()
    }
    /// True when a TOTP second factor is enrolled: a login needs a code
    /// after the password (`CustomerCommand::VerifySecondFactor`).
    pub fn has_second_factor(&self) -> bool {
        self.second_factor.enrolled || self.second_factor.totp.is_some()
    }
    /// True while a TOTP enrollment waits for its confirmation.
    pub fn second_factor_pending(&self) -> bool {
        self.second_factor.pending.is_some()
    }
    /// The secret of the pending TOTP enrollment, to show to its customer
    /// (QR code, manual entry) until confirmed. Never log it.
    pub fn pending_totp_secret(&self) -> Option<&TotpSecret> {
        self.second_factor.pending.as_ref()
    }
    /// How many recovery codes are left.
    pub fn recovery_codes_left(&self) -> usize {
        self.second_factor.recovery_codes.len()
    }
    /// True once the customer was forgotten (its personal data erased).
    pub fn is_forgotten(&self) -> bool {
        self.forgotten
    }

    /// The addresses this customer holds as a login, which no other customer
    /// may hold at the same time: the login email while the customer has
    /// access, and the target of a pending self-service email change until
    /// its link expires.
    pub fn reserved_emails(&self, now: DateTime<Utc>) -> Vec<(EmailAddress, ReservationKind)> {
        let mut held = Vec::with_capacity(2);
        if self.access.is_some() {
            if let Some(email) = &self.email {
                held.push((email.clone(), ReservationKind::Login));
            }
        }
        if let Some(pending) = self
            .pending_email_change
            .as_ref()
            .filter(|p| !p.is_expired(now))
        {
            held.push((pending.new_email.clone(), ReservationKind::PendingChange));
        }
        held
    }

    /// What the token of a link (for `purpose`) is worth now, without using
    /// it: the one rule for the link's command and for the page that opens
    /// the link.
    pub fn link_status(
        &self,
        purpose: TokenPurpose,
        token: &Secret,
        now: DateTime<Utc>,
    ) -> LinkStatus {
        let expires_at = match purpose {
            TokenPurpose::PasswordSetup => self
                .setup_link
                .as_ref()
                .filter(|l| self.access.is_some() && l.token_digest.matches(token))
                .map(|l| l.expires_at),
            TokenPurpose::EmailChange => self
                .pending_email_change
                .as_ref()
                .filter(|p| p.token_digest.matches(token))
                .map(|p| p.expires_at),
        };
        if self.login().is_err() {
            return LinkStatus::Dead;
        }
        match expires_at {
            None => LinkStatus::Dead,
            Some(at) if at <= now => LinkStatus::Expired,
            Some(_) => LinkStatus::Live,
        }
    }

    /// `InvalidToken` unless the link is live.
    fn require_live_link(
        &self,
        purpose: TokenPurpose,
        token: &Secret,
        now: DateTime<Utc>,
    ) -> Result<(), CustomerError> {
        match self.link_status(purpose, token, now) {
            LinkStatus::Live => Ok(()),
            LinkStatus::Expired | LinkStatus::Dead => Err(CustomerError::InvalidToken),
        }
    }

    /// True when the customer can get into the portal now or through a
    /// live link: the invariant that access implies a way to log in.
    pub fn can_log_in_or_set_up(&self, now: DateTime<Utc>) -> bool {
        self.password.is_some() || self.setup_link.as_ref().is_some_and(|l| l.expires_at > now)
    }

    /// The login email of a registered customer.
    fn login(&self) -> Result<&EmailAddress, CustomerError> {
        match (&self.id, &self.email) {
            (Some(_), Some(email)) => Ok(email),
            _ => Err(CustomerError::CustomerNotFound),
        }
    }

    fn require_access(&self) -> Result<&EmailAddress, CustomerError> {
        let login = self.login()?;
        if self.access.is_none() {
            return Err(CustomerError::NoAccess);
        }
        Ok(login)
    }

    /// Checks the customer's current password; a login without a password
    /// answers like a wrong one.
    async fn verify_current_password(
        &self,
        candidate: &Secret,
        services: &CustomerServices,
    ) -> Result<(), CustomerError> {
        let Some(hash) = &self.password else {
            return Err(CustomerError::WrongPassword);
        };
        if services.hasher().verify(candidate, hash).await? {
            Ok(())
        } else {
            Err(CustomerError::WrongPassword)
        }
    }

    /// A self-service command's first checks: the customer has access and
    /// `current_password` is theirs. Returns the login.
    async fn require_access_and_password(
        &self,
        current_password: &Secret,
        services: &CustomerServices,
    ) -> Result<&EmailAddress, CustomerError> {
        let login = self.require_access()?;
        self.verify_current_password(current_password, services)
            .await?;
        Ok(login)
    }

    /// Checks a new password against its confirmation and the login email,
    /// then hashes it.
    async fn new_password_hash(
        password: &Password,
        confirm: &Secret,
        login: &EmailAddress,
        services: &CustomerServices,
    ) -> Result<PasswordHash, CustomerError> {
        if !password.matches(confirm) {
            return Err(CustomerError::PasswordMismatch);
        }
        password.check_against(login)?;
        Ok(services.hasher().hash(password).await?)
    }

    /// The events that give `login` a way to log in, per the notice: a
    /// manual (temporary) password with an optional notice, or a
    /// notification with a setup link. Neither is refused.
    async fn credential_events(
        credential: Credential,
        login: &EmailAddress,
        services: &CustomerServices,
        now: DateTime<Utc>,
        had_password: bool,
        issued: &mut Vec<IssuedToken>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        match credential {
            Credential::None => Err(CustomerError::LoginHasNoPassword {
                email: login.clone(),
            }),
            Credential::ManualPassword {
                password,
                password_confirm,
                send_notification,
            } => {
                let password_hash =
                    Self::new_password_hash(&password, &password_confirm, login, services).await?;
                let mut events = vec![CustomerEvent::PasswordSet {
                    password_hash,
                    temporary: true,
                    at: now,
                }];
                if send_notification {
                    events.push(CustomerEvent::AccessNotificationSent {
                        recipient: Personal::Known(login.clone()),
                        setup_link: None,
                        at: now,
                    });
                }
                Ok(events)
            }
            Credential::SetupLink => {
                let mut events = Vec::with_capacity(2);
                if had_password {
                    events.push(CustomerEvent::PasswordCleared {
                        reason: PasswordClearedReason::EmailChangedWithSetupLink,
                        at: now,
                    });
                }
                events.push(Self::setup_link_notification(login, services, now, issued));
                Ok(events)
            }
        }
    }

    fn setup_link_notification(
        login: &EmailAddress,
        services: &CustomerServices,
        now: DateTime<Utc>,
        issued: &mut Vec<IssuedToken>,
    ) -> CustomerEvent {
        let token = services.issue_token(TokenPurpose::PasswordSetup, login, now);
        let setup_link = SetupLink {
            token_digest: token.digest.clone(),
            expires_at: token.expires_at,
        };
        issued.push(token);
        CustomerEvent::AccessNotificationSent {
            recipient: Personal::Known(login.clone()),
            setup_link: Some(setup_link),
            at: now,
        }
    }

    /// Decides what a command does: the events it produces and the plain
    /// tokens it issued (for the links in the mails; the events keep only
    /// their digests). Does not change `self`.
    pub async fn decide(
        &self,
        command: CustomerCommand,
        services: &CustomerServices,
    ) -> Result<Decision, CustomerError> {
        let mut decision = Decision::default();
        decision.events = self.decide_events(command, services, &mut decision).await?;
        Ok(decision)
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
