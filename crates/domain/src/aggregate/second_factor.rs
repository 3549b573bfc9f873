//! The rules of the TOTP second factor (RFC 6238) and its recovery codes:
//! enrollment, the check at a login, new recovery codes, removal by the
//! customer and reset by an administrator.

use chrono::{DateTime, Utc};

use crate::commands::CustomerCommand;
use crate::error::CustomerError;
use crate::events::{CustomerEvent, Personal};
use crate::services::CustomerServices;
use crate::values::{
    recovery_code, recovery_code_digest, Secret, TotpSecret, RECOVERY_CODE_COUNT, TOTP_SECRET_BYTES,
};

use super::Customer;

impl Customer {
    /// The event that accepts `code` as the enrolled second factor: a TOTP
    /// code of the current step (or one either way) later than the last
    /// accepted one, or an unused recovery code. `InvalidCode` otherwise.
    fn accept_second_factor(
        &self,
        code: &Secret,
        now: DateTime<Utc>,
    ) -> Result<CustomerEvent, CustomerError> {
        let factor = &self.second_factor;
        if !self.has_second_factor() {
            return Err(CustomerError::NoSecondFactor);
        }
        // An enrolled secret that cannot be read accepts no TOTP code
        // (fails closed); recovery codes still work.
        if let Some(totp) = &factor.totp {
            if let Some(step) = totp.matching_step(code.expose(), now, factor.last_step) {
                return Ok(CustomerEvent::TotpCodeAccepted { step, at: now });
            }
        }
        let presented = recovery_code_digest(code.expose());
        // Every stored digest is compared (constant time each), so the time
        // taken does not tell which one matched.
        let matched = factor.recovery_codes.iter().fold(None, |found, digest| {
            if digest.matches_digest(&presented) {
                Some(digest.clone())
            } else {
                found
            }
        });
        match matched {
            Some(recovery_code_digest) => Ok(CustomerEvent::RecoveryCodeUsed {
                recovery_code_digest,
                at: now,
            }),
            None => Err(CustomerError::InvalidCode),
        }
    }

    /// A fresh set of recovery codes: the event keeps their digests,
    /// `shown` gets them in plain (for the customer, once).
    fn issue_recovery_codes(
        services: &CustomerServices,
        now: DateTime<Utc>,
        shown: &mut Vec<Secret>,
    ) -> CustomerEvent {
        let codes: Vec<Secret> = (0..RECOVERY_CODE_COUNT)
            .map(|_| recovery_code(services.random_bytes()))
            .collect();
        let recovery_code_digests = codes
            .iter()
            .map(|c| recovery_code_digest(c.expose()))
            .collect();
        *shown = codes;
        CustomerEvent::RecoveryCodesIssued {
            recovery_code_digests,
            at: now,
        }
    }

    pub(super) async fn decide_second_factor(
        &self,
        command: CustomerCommand,
        services: &CustomerServices,
        now: DateTime<Utc>,
        shown: &mut Vec<Secret>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        match command {
            CustomerCommand::BeginTotpEnrollment => {
                self.require_access()?;
                if self.has_second_factor() {
                    return Err(CustomerError::SecondFactorAlreadyEnrolled);
                }
                let secret = TotpSecret::from_bytes(services.random_bytes::<TOTP_SECRET_BYTES>());
                Ok(vec![CustomerEvent::TotpEnrollmentBegun {
                    totp_secret: Personal::Known(secret),
                    at: now,
                }])
            }

            CustomerCommand::ConfirmTotpEnrollment { code } => {
                self.require_access()?;
                if self.has_second_factor() {
                    return Err(CustomerError::SecondFactorAlreadyEnrolled);
                }
                let pending = self
                    .second_factor
                    .pending
                    .as_ref()
                    .ok_or(CustomerError::NoPendingEnrollment)?;
                let step = pending
                    .matching_step(code.expose(), now, None)
                    .ok_or(CustomerError::InvalidCode)?;
                Ok(vec![
                    CustomerEvent::TotpEnrolled { step, at: now },
                    Self::issue_recovery_codes(services, now, shown),
                ])
            }

            CustomerCommand::VerifySecondFactor { code } => {
                self.require_access()?;
                Ok(vec![self.accept_second_factor(&code, now)?])
            }

            CustomerCommand::RegenerateRecoveryCodes { code } => {
                self.require_access()?;
                let accepted = self.accept_second_factor(&code, now)?;
                Ok(vec![
                    accepted,
                    Self::issue_recovery_codes(services, now, shown),
                ])
            }

            CustomerCommand::RemoveTotp {
                current_password,
                code,
            } => {
                self.require_access_and_password(&current_password, services)
                    .await?;
                let accepted = self.accept_second_factor(&code, now)?;
                Ok(vec![accepted, CustomerEvent::TotpRemoved { at: now }])
            }

            CustomerCommand::ResetSecondFactor { reason } => {
                let login = self.login()?;
                if !self.has_second_factor() && !self.second_factor_pending() {
                    return Err(CustomerError::NoSecondFactor);
                }
                let reason = reason
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty());
                Ok(vec![CustomerEvent::SecondFactorReset {
                    reason,
                    recipient: Personal::Known(login.clone()),
                    at: now,
                }])
            }

            other => Err(CustomerError::Service(
                crate::services::ServiceError::failed(format!(
                    "`{}` is not a second-factor command",
                    other.name()
                )),
            )),
        }
    }
}
