//! The Customer aggregate: a customer's login email and portal access, and
//! the rules of the Customer Center notice.
//!
//! `handle` first decides (a pure function of the state, the command and the
//! services) which events to emit, then writes them to the sink, which
//! applies each one. `apply` never fails: every check happens in `decide`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::commands::{Credential, CustomerCommand};
use crate::error::CustomerError;
use crate::events::{CustomerEvent, PasswordClearedReason, Personal, SetupLink};
use crate::services::{CustomerServices, IssuedToken, TokenPurpose};
use crate::values::{
    CustomerId, CustomerName, EmailAddress, Password, PasswordHash, Role, Secret, TokenDigest,
};

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

/// What a command decided: its events, and the plain tokens it issued
/// (which never go into events: the caller builds the links in the mails
/// from them after the commit, then drops them).
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub events: Vec<CustomerEvent>,
    pub issued: Vec<IssuedToken>,
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
        let mut issued = Vec::new();
        let events = self.decide_events(command, services, &mut issued).await?;
        Ok(Decision { events, issued })
    }

    async fn decide_events(
        &self,
        command: CustomerCommand,
        services: &CustomerServices,
        issued: &mut Vec<IssuedToken>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        let now = services.now();
        if self.forgotten {
            return Err(CustomerError::CustomerForgotten);
        }
        match command {
            CustomerCommand::RegisterCustomer {
                customer_id,
                email,
                name,
            } => {
                if self.is_registered() {
                    return Err(CustomerError::CustomerExists);
                }
                Ok(vec![CustomerEvent::CustomerRegistered {
                    customer_id,
                    email: Personal::Known(email),
                    name: name.map(Personal::Known),
                    at: now,
                }])
            }

            CustomerCommand::ChangeEmail { email, credential } => {
                let current = self.login()?;
                if *current == email {
                    return Ok(Vec::new());
                }
                let changed = CustomerEvent::EmailChanged {
                    old_email: Personal::Known(current.clone()),
                    new_email: Personal::Known(email.clone()),
                    at: now,
                };
                if self.access.is_none() {
                    // Option 3: without access the email is just data.
                    if !matches!(credential, Credential::None) {
                        return Err(CustomerError::NoAccess);
                    }
                    return Ok(vec![changed]);
                }
                // With access, a new login email is like a new access.
                let mut events = vec![changed];
                events.extend(
                    Self::credential_events(
                        credential,
                        &email,
                        services,
                        now,
                        self.has_password(),
                        issued,
                    )
                    .await?,
                );
                Ok(events)
            }

            CustomerCommand::GrantAccess { role, credential } => {
                let login = self.login()?;
                if self.access.is_some() {
                    return Err(CustomerError::AccessAlreadyGranted);
                }
                let mut events = vec![CustomerEvent::AccessGranted { role, at: now }];
                events.extend(
                    Self::credential_events(credential, login, services, now, false, issued)
                        .await?,
                );
                Ok(events)
            }

            CustomerCommand::SetPassword {
                password,
                password_confirm,
                send_notification,
            } => {
                let login = self.require_access()?;
                let credential = Credential::ManualPassword {
                    password,
                    password_confirm,
                    send_notification,
                };
                Self::credential_events(
                    credential,
                    login,
                    services,
                    now,
                    self.has_password(),
                    issued,
                )
                .await
            }

            CustomerCommand::SendAccessNotification => {
                let login = self.require_access()?;
                Ok(vec![Self::setup_link_notification(
                    login, services, now, issued,
                )])
            }

            CustomerCommand::RevokeAccess { reason } => {
                self.require_access()?;
                let reason = reason
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty());
                Ok(vec![CustomerEvent::AccessRevoked { reason, at: now }])
            }

            CustomerCommand::RequestEmailChange {
                current_password,
                new_email,
                new_email_confirm,
            } => {
                let current = self.require_access()?;
                self.verify_current_password(&current_password, services)
                    .await?;
                if new_email != new_email_confirm {
                    return Err(CustomerError::EmailMismatch);
                }
                if *current == new_email {
                    return Err(CustomerError::EmailUnchanged);
                }
                let token = services.issue_token(TokenPurpose::EmailChange, &new_email, now);
                let (token_digest, expires_at) = (token.digest.clone(), token.expires_at);
                issued.push(token);
                Ok(vec![CustomerEvent::EmailChangeRequested {
                    old_email: Personal::Known(current.clone()),
                    new_email: Personal::Known(new_email),
                    token_digest,
                    expires_at,
                    at: now,
                }])
            }

            CustomerCommand::ConfirmEmailChange { token } => {
                self.require_live_link(TokenPurpose::EmailChange, &token, now)?;
                let current = self.login().map_err(|_| CustomerError::InvalidToken)?;
                let pending = self
                    .pending_email_change
                    .as_ref()
                    .ok_or(CustomerError::InvalidToken)?;
                Ok(vec![CustomerEvent::EmailChangeConfirmed {
                    old_email: Personal::Known(current.clone()),
                    new_email: Personal::Known(pending.new_email.clone()),
                    at: now,
                }])
            }

            CustomerCommand::CompletePasswordSetup {
                token,
                password,
                password_confirm,
            } => {
                self.require_live_link(TokenPurpose::PasswordSetup, &token, now)?;
                let login = self.login().map_err(|_| CustomerError::InvalidToken)?;
                let password_hash =
                    Self::new_password_hash(&password, &password_confirm, login, services).await?;
                Ok(vec![CustomerEvent::PasswordSetupCompleted {
                    password_hash,
                    at: now,
                }])
            }

            CustomerCommand::UpgradePasswordHash { password } => {
                self.require_access()?;
                let Some(current) = &self.password else {
                    return Err(CustomerError::WrongPassword);
                };
                if !services.hasher().needs_rehash(current) {
                    return Ok(Vec::new());
                }
                self.verify_current_password(&password, services).await?;
                let password_hash = services.hasher().rehash(&password).await?;
                Ok(vec![CustomerEvent::PasswordRehashed {
                    password_hash,
                    at: now,
                }])
            }

            CustomerCommand::ForgetCustomer => {
                self.login()?;
                let mut events = Vec::with_capacity(2);
                if self.access.is_some() {
                    events.push(CustomerEvent::AccessRevoked {
                        reason: Some("the customer was forgotten".to_string()),
                        at: now,
                    });
                }
                events.push(CustomerEvent::CustomerForgotten { at: now });
                Ok(events)
            }

            CustomerCommand::ChangePassword {
                current_password,
                new_password,
                new_password_confirm,
            } => {
                let login = self.require_access()?;
                self.verify_current_password(&current_password, services)
                    .await?;
                let password_hash =
                    Self::new_password_hash(&new_password, &new_password_confirm, login, services)
                        .await?;
                Ok(vec![CustomerEvent::PasswordChanged {
                    password_hash,
                    at: now,
                }])
            }
        }
    }
}

impl Aggregate for Customer {
    const TYPE: &'static str = "Customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;
    type Services = CustomerServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // cqrs-es's own path (its test framework): the plain tokens are
        // dropped; the service uses `decide` and takes them.
        let events = self.decide(command, services).await?.events;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.updated_at = Some(event.at());
        if matches!(
            event,
            CustomerEvent::EmailChanged { .. }
                | CustomerEvent::PasswordSet { .. }
                | CustomerEvent::PasswordCleared { .. }
                | CustomerEvent::AccessRevoked { .. }
                | CustomerEvent::EmailChangeConfirmed { .. }
                | CustomerEvent::PasswordSetupCompleted { .. }
                | CustomerEvent::PasswordChanged { .. }
                | CustomerEvent::CustomerForgotten { .. }
        ) {
            self.login_epoch += 1;
        }
        match event {
            CustomerEvent::CustomerRegistered {
                customer_id,
                email,
                name,
                ..
            } => {
                self.id = Some(customer_id);
                self.email = email.into_known();
                self.name = name.and_then(Personal::into_known);
            }
            CustomerEvent::EmailChanged { new_email, .. } => {
                self.email = new_email.into_known();
                // A self-service request was made for the old login.
                self.pending_email_change = None;
            }
            CustomerEvent::AccessGranted { role, .. } => {
                self.access = Some(role);
            }
            CustomerEvent::PasswordSet {
                password_hash,
                temporary,
                ..
            } => {
                self.password = Some(password_hash);
                self.must_change_password = temporary;
                self.setup_link = None;
            }
            CustomerEvent::PasswordCleared { .. } => {
                self.password = None;
                self.must_change_password = false;
            }
            CustomerEvent::AccessNotificationSent { setup_link, .. } => {
                if let Some(link) = setup_link {
                    // A new link voids every earlier one.
                    self.setup_link = Some(link);
                }
            }
            CustomerEvent::AccessRevoked { .. } => {
                self.access = None;
                self.password = None;
                self.must_change_password = false;
                self.setup_link = None;
                self.pending_email_change = None;
            }
            CustomerEvent::EmailChangeRequested {
                new_email,
                token_digest,
                expires_at,
                ..
            } => {
                // A newer request replaces an older one.
                self.pending_email_change =
                    new_email.into_known().map(|new_email| PendingEmailChange {
                        new_email,
                        token_digest,
                        expires_at,
                    });
            }
            CustomerEvent::EmailChangeConfirmed { new_email, .. } => {
                self.email = new_email.into_known();
                self.pending_email_change = None;
            }
            CustomerEvent::PasswordSetupCompleted { password_hash, .. } => {
                self.password = Some(password_hash);
                self.must_change_password = false;
                self.setup_link = None;
            }
            CustomerEvent::PasswordChanged { password_hash, .. } => {
                self.password = Some(password_hash);
                self.must_change_password = false;
                self.setup_link = None;
            }
            CustomerEvent::PasswordRehashed { password_hash, .. } => {
                // Same password, same login: no new epoch, flags unchanged.
                self.password = Some(password_hash);
            }
            CustomerEvent::CustomerForgotten { .. } => {
                *self = Self {
                    id: self.id,
                    login_epoch: self.login_epoch,
                    updated_at: self.updated_at,
                    forgotten: true,
                    ..Self::default()
                };
            }
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
