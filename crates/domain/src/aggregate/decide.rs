//! The rules: what each command decides, given the state and the
//! services (`Customer::decide` in the parent module is the entry point).

use crate::commands::{Credential, CustomerCommand};
use crate::error::CustomerError;
use crate::events::{CustomerEvent, Personal};
use crate::services::{CustomerServices, IssuedToken, TokenPurpose};

use super::Customer;

impl Customer {
    pub(super) async fn decide_events(
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
