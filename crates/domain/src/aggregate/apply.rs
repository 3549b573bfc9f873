//! cqrs-es's `Aggregate` for the customer: `apply`, how each event
//! changes the state (it never fails), and `handle`, which decides through
//! `Customer::decide`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

use crate::commands::CustomerCommand;
use crate::error::CustomerError;
use crate::events::{CustomerEvent, EventKind, Personal};
use crate::services::CustomerServices;
use crate::values::{CustomerId, CustomerName, EmailAddress};

use super::{Customer, ImportRecord, PendingEmailChange, SecondFactor};

/// The kinds of event that change the login or its password, or end the
/// access: each begins a new login epoch (every session before it ends).
const NEW_LOGIN_EPOCH: [EventKind; 9] = [
    EventKind::EmailChanged,
    EventKind::PasswordSet,
    EventKind::PasswordCleared,
    EventKind::AccessRevoked,
    EventKind::EmailChangeConfirmed,
    EventKind::PasswordSetupCompleted,
    EventKind::PasswordChanged,
    EventKind::CustomerForgotten,
    EventKind::SecondFactorReset,
];

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
        if NEW_LOGIN_EPOCH.contains(&event.kind()) {
            self.login_epoch += 1;
        }
        match event {
            CustomerEvent::CustomerRegistered {
                customer_id,
                email,
                name,
                ..
            } => self.start(customer_id, email, name),
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
                // No access, no second factor.
                self.second_factor = SecondFactor::default();
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
            CustomerEvent::CustomerImported {
                customer_id,
                external_id,
                email,
                name,
                access,
                password_hash,
                must_change_password,
                ..
            } => {
                self.start(customer_id, email, name);
                self.access = access;
                self.password = password_hash.clone();
                self.must_change_password = must_change_password && password_hash.is_some();
                self.imported = self.email.clone().map(|email| ImportRecord {
                    external_id: external_id.and_then(Personal::into_known),
                    email,
                    name: self.name.clone(),
                    access,
                    password_hash,
                    must_change_password,
                });
            }
            CustomerEvent::TotpEnrollmentBegun { totp_secret, .. } => {
                // A newer pending secret replaces an older one.
                self.second_factor.pending = totp_secret.into_known();
            }
            CustomerEvent::TotpEnrolled { step, .. } => {
                self.second_factor.totp = self.second_factor.pending.take();
                self.second_factor.enrolled = true;
                self.second_factor.last_step = Some(step);
            }
            CustomerEvent::RecoveryCodesIssued {
                recovery_code_digests,
                ..
            } => self.second_factor.recovery_codes = recovery_code_digests,
            CustomerEvent::TotpCodeAccepted { step, .. } => {
                self.second_factor.last_step = self.second_factor.last_step.max(Some(step));
            }
            CustomerEvent::RecoveryCodeUsed {
                recovery_code_digest,
                ..
            } => self
                .second_factor
                .recovery_codes
                .retain(|d| *d != recovery_code_digest),
            CustomerEvent::TotpRemoved { .. } | CustomerEvent::SecondFactorReset { .. } => {
                self.second_factor = SecondFactor::default();
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

impl Customer {
    /// The first event of a stream (registered or imported): who the
    /// customer is.
    fn start(
        &mut self,
        customer_id: CustomerId,
        email: Personal<EmailAddress>,
        name: Option<Personal<CustomerName>>,
    ) {
        self.id = Some(customer_id);
        self.email = email.into_known();
        self.name = name.and_then(Personal::into_known);
    }
}
