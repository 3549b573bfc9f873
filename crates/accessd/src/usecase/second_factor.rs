//! The customer's second factor (TOTP, RFC 6238, with recovery codes):
//! the code after a right password at login, enrolling an authenticator
//! app, new recovery codes, removal. Every code is a throttled check like
//! a password: a wrong code counts against the same soft lock (kept in
//! the database, so every replica sees it), a right one resets it.
//!
//! None of these answers may be replayed from a store: the secret and the
//! recovery codes are shown once, so the requests run without an
//! idempotency key (an `Idempotency-Key` header is not honoured here) and
//! nothing of their answer is kept.

use access_store::prelude::*;
use std::net::IpAddr;

use access_domain::{CustomerCommand, Secret};
use access_store::Executed;

use super::account::throttled;
use super::command::{CommandRequest, Origin, Outcome};
use super::error::SelfServiceError;
use super::session::{self, CustomerSession, SessionResponse};
use crate::state::AppState;

/// The throttle's account of a login: its normalized email, the same key
/// as [`super::login::check_login`]'s, so that wrong codes (at login, and
/// when confirming, renewing codes or removing the app) and wrong
/// passwords share one allowance. A right password of a customer with a
/// second factor does not forget it; a right code does.
fn login_account(session: &CustomerSession) -> String {
    session
        .loaded
        .customer
        .email()
        .map(|e| e.normalized().to_string())
        .unwrap_or_else(|| session.customer_id.to_string())
}

fn invalid_code(err: &SelfServiceError) -> bool {
    matches!(err, SelfServiceError::InvalidCode)
}

fn invalid_code_or_password(err: &SelfServiceError) -> bool {
    matches!(
        err,
        SelfServiceError::InvalidCode | SelfServiceError::WrongPassword
    )
}

/// What ran now (these requests carry no idempotency key, so nothing is
/// ever replayed).
fn executed(outcome: Outcome) -> Result<Executed, SelfServiceError> {
    match outcome {
        Outcome::Executed(executed) => Ok(executed),
        Outcome::Replayed(_) => Err(SelfServiceError::Internal(
            "replay without an idempotency key".into(),
        )),
    }
}

/// The second step of a login: `code` (a TOTP code or an unused recovery
/// code) for the session `waiting` opened by the right password. The
/// waiting session ends and a full one is opened (a new token: the one
/// that only knew the password never becomes a full session).
pub async fn verify_login(
    state: &AppState,
    waiting: &CustomerSession,
    address: Option<IpAddr>,
    code: String,
    origin: Origin,
) -> Result<SessionResponse, SelfServiceError> {
    if !waiting.second_factor_pending {
        return Err(SelfServiceError::NoSecondFactorPending);
    }
    let command = CustomerCommand::VerifySecondFactor {
        code: Secret::new(code),
    };
    let request = CommandRequest::new(waiting.actor(), waiting.customer_id, command, origin);
    let account = login_account(waiting);
    throttled(state, &account, address, request, invalid_code).await?;
    // One full session per waiting one: of two right codes sent at once
    // (say the app's and a recovery code), the one that ends the waiting
    // session opens a session; the other is answered like an ended one.
    if !state.store().delete_session(&waiting.token_digest).await? {
        return Err(SelfServiceError::SessionEnded);
    }
    // Opened under the login the waiting session was opened under (an
    // accepted code changes nothing of it): a reset or a password change
    // that commits meanwhile ends this session too.
    Ok(session::open(state, &waiting.loaded.customer, waiting.customer_id).await?)
}

/// A begun enrollment: the pending secret, to show to its customer.
pub struct Enrollment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// Begins (or begins again) the enrollment of an authenticator app: a
/// fresh secret, pending until a code confirms it.
pub async fn begin(
    state: &AppState,
    session: &CustomerSession,
    origin: Origin,
) -> Result<Enrollment, SelfServiceError> {
    let request = CommandRequest::new(
        session.actor(),
        session.customer_id,
        CustomerCommand::BeginTotpEnrollment,
        origin,
    );
    executed(
        super::command::execute(state, request)
            .await
            .map_err(SelfServiceError::from)?,
    )?;
    let loaded = state.store().load(session.customer_id).await?;
    let secret = loaded
        .customer
        .pending_totp_secret()
        .ok_or_else(|| SelfServiceError::Internal("the begun enrollment is not pending".into()))?;
    Ok(Enrollment {
        secret: secret.base32(),
        otpauth_uri: secret.otpauth_uri(state.totp_issuer(), &session.login_email()),
    })
}

/// The pending enrollment's secret, when there is one (to show it again on
/// the account page until it is confirmed).
pub fn pending(state: &AppState, session: &CustomerSession) -> Option<Enrollment> {
    session
        .loaded
        .customer
        .pending_totp_secret()
        .map(|secret| Enrollment {
            secret: secret.base32(),
            otpauth_uri: secret.otpauth_uri(state.totp_issuer(), &session.login_email()),
        })
}

/// New recovery codes in plain, shown once, with the customer's version.
pub struct IssuedCodes {
    pub version: u64,
    pub codes: Vec<String>,
}

fn issued(executed: Executed) -> IssuedCodes {
    IssuedCodes {
        version: executed.version,
        codes: executed
            .recovery_codes
            .iter()
            .map(|c| c.expose().to_string())
            .collect(),
    }
}

/// Confirms the pending enrollment with a code of the app: the second
/// factor is enrolled and 10 recovery codes are issued.
pub async fn confirm(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    code: String,
    origin: Origin,
) -> Result<IssuedCodes, SelfServiceError> {
    let command = CustomerCommand::ConfirmTotpEnrollment {
        code: Secret::new(code),
    };
    let request = CommandRequest::new(session.actor(), session.customer_id, command, origin);
    let account = login_account(session);
    let outcome = throttled(state, &account, address, request, invalid_code).await?;
    Ok(issued(executed(outcome)?))
}

/// New recovery codes (the old ones stop working), with a code.
pub async fn regenerate_recovery_codes(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    code: String,
    origin: Origin,
) -> Result<IssuedCodes, SelfServiceError> {
    let command = CustomerCommand::RegenerateRecoveryCodes {
        code: Secret::new(code),
    };
    let request = CommandRequest::new(session.actor(), session.customer_id, command, origin);
    let account = login_account(session);
    let outcome = throttled(state, &account, address, request, invalid_code).await?;
    Ok(issued(executed(outcome)?))
}

/// Removes the second factor, with the current password and a code.
pub async fn remove(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    current_password: String,
    code: String,
    origin: Origin,
) -> Result<u64, SelfServiceError> {
    let command = CustomerCommand::RemoveTotp {
        current_password: Secret::new(current_password),
        code: Secret::new(code),
    };
    let request = CommandRequest::new(session.actor(), session.customer_id, command, origin);
    let account = login_account(session);
    let outcome = throttled(state, &account, address, request, invalid_code_or_password).await?;
    Ok(executed(outcome)?.version)
}
