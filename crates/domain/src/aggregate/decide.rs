//! The rules: what each command decides, given the state and the
//! services (`Customer::decide` in the parent module is the entry point).

use crate::commands::{Credential, CustomerCommand, ImportCustomer};
use crate::error::CustomerError;
use crate::events::{CustomerEvent, Personal};
use crate::services::{CustomerServices, IssuedToken, TokenPurpose};

use super::{Customer, Decision, ImportRecord};

impl Customer {
    /// A bulk import of one customer: the same content again decides
    /// nothing; an existing customer with other content (or one that was
    /// not imported) is a conflict. A hash must be one the hasher verifies
    /// and needs access; access needs a hash or a setup link.
    fn decide_import(
        &self,
        import: ImportCustomer,
        services: &CustomerServices,
        now: chrono::DateTime<chrono::Utc>,
        issued: &mut Vec<IssuedToken>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        let record = ImportRecord {
            external_id: import.external_id.clone(),
            email: import.email.clone(),
            name: import.name.clone(),
            access: import.access,
            password_hash: import.password_hash.clone(),
            must_change_password: import.must_change_password,
        };
        if self.is_registered() {
            return match &self.imported {
                Some(before) if *before == record => Ok(Vec::new()),
                _ => Err(CustomerError::ImportConflict),
            };
        }
        let invalid = |field, reason: &str| CustomerError::InvalidImport {
            field,
            reason: reason.to_string(),
        };
        if let Some(hash) = &import.password_hash {
            if import.access.is_none() {
                return Err(invalid(
                    "password_hash",
                    "a password hash needs access (`customer_center`)",
                ));
            }
            services
                .hasher()
                .check_imported(hash)
                .map_err(|reason| CustomerError::UnsupportedPasswordHash { reason })?;
            if import.send_notification {
                return Err(invalid(
                    "send_notification",
                    "only for access without a password hash",
                ));
            }
        } else if import.must_change_password {
            return Err(invalid("must_change_password", "only with a password hash"));
        }
        if import.access.is_none() && import.send_notification {
            return Err(invalid(
                "send_notification",
                "only for access without a password hash",
            ));
        }
        if import.access.is_some() && import.password_hash.is_none() && !import.send_notification {
            return Err(CustomerError::LoginHasNoPassword {
                email: import.email,
            });
        }
        let mut events = vec![CustomerEvent::CustomerImported {
            customer_id: import.customer_id,
            source: import.source,
            external_id: import.external_id.map(Personal::Known),
            email: Personal::Known(import.email.clone()),
            name: import.name.map(Personal::Known),
            access: import.access,
            password_hash: import.password_hash,
            must_change_password: import.must_change_password,
            at: now,
        }];
        if import.send_notification {
            events.push(Self::setup_link_notification(
                &import.email,
                services,
                now,
                issued,
            ));
        }
        Ok(events)
    }

    pub(super) async fn decide_events(
        &self,
        command: CustomerCommand,
        services: &CustomerServices,
        decision: &mut Decision,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        let now = services.now();
        if self.forgotten {
            return Err(CustomerError::CustomerForgotten);
        }
        let issued = &mut decision.issued;
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
                let current = self
                    .require_access_and_password(&current_password, services)
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

            CustomerCommand::ImportCustomer(import) => {
                self.decide_import(*import, services, now, issued)
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

            CustomerCommand::BeginTotpEnrollment
            | CustomerCommand::ConfirmTotpEnrollment { .. }
            | CustomerCommand::VerifySecondFactor { .. }
            | CustomerCommand::RegenerateRecoveryCodes { .. }
            | CustomerCommand::RemoveTotp { .. }
            | CustomerCommand::ResetSecondFactor { .. } => {
                self.decide_second_factor(command, services, now, &mut decision.recovery_codes)
                    .await
            }

            CustomerCommand::ChangePassword {
                current_password,
                new_password,
                new_password_confirm,
            } => {
                let login = self
                    .require_access_and_password(&current_password, services)
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
