//! The customer's own commands with a session: ask for a new login email,
//! change the password. Both check the current password, so both take a
//! password check from the throttle first.

use access_store::prelude::*;
use std::net::IpAddr;

use access_domain::{CustomerCommand, EmailAddress, Password, Secret};
use axum::http::StatusCode;

use super::command::{self, CommandRequest, Origin, Outcome};
use super::error::SelfServiceError;
use super::reply::ReplyShape;
use super::session::{self, CustomerSession, SessionResponse};
use crate::state::AppState;

/// An email change request: the current password and the new address
/// twice.
pub struct EmailChange {
    pub current_password: String,
    pub new_email: EmailAddress,
    pub new_email_confirm: EmailAddress,
}

/// Runs `RequestEmailChange` for the session's customer (for the API and
/// the pages), answered 202 with the notice's [`ReplyShape::EmailChangeAccepted`]:
/// takes a password check from the throttle, then runs the command.
pub async fn request_email_change(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    change: EmailChange,
    origin: Origin,
) -> Result<Outcome, SelfServiceError> {
    let shape = ReplyShape::EmailChangeAccepted {
        new_email: change.new_email.as_str().to_string(),
    };
    let command = CustomerCommand::RequestEmailChange {
        current_password: Secret::new(change.current_password),
        new_email: change.new_email,
        new_email_confirm: change.new_email_confirm,
    };
    let request = CommandRequest::new(session.actor(), session.customer_id, command, origin)
        .answered(StatusCode::ACCEPTED, shape);
    let account = session.customer_id.to_string();
    throttled(state, &account, address, request, wrong_password).await
}

/// A password change: the current one, the new one twice.
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
    pub new_password_confirm: String,
}

/// Changes the session's customer's password (for the API and the
/// pages): every session of the customer ends and a new one is opened for
/// the device that changed it. The new version and session.
pub async fn change_password(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    origin: Origin,
    change: PasswordChange,
) -> Result<(u64, SessionResponse), SelfServiceError> {
    let login = session.login_email();
    let new_password = Password::parse(&change.new_password, &[login.as_str()])?;
    let command = CustomerCommand::ChangePassword {
        current_password: Secret::new(change.current_password),
        new_password,
        new_password_confirm: Secret::new(change.new_password_confirm),
    };
    let request = CommandRequest::new(session.actor(), session.customer_id, command, origin);
    let account = session.customer_id.to_string();
    let outcome = throttled(state, &account, address, request, wrong_password);
    let Some(version) = outcome.await?.version() else {
        return Err(SelfServiceError::Internal(
            "replay without an idempotency key".into(),
        ));
    };
    state
        .store()
        .delete_sessions_of(session.customer_id)
        .await?;
    let loaded = state.store().load(session.customer_id).await?;
    let new_session = session::open(state, &loaded.customer, session.customer_id).await?;
    Ok((version, new_session))
}

/// Runs `request` as one attempt of `account` (and the client's
/// `address`) against the throttle: a refusal that is `wrong` (a wrong
/// password or link) stays counted, success resets the count, and any other
/// refusal gives the attempt back (the command may have stopped before
/// the secret was compared).
pub(super) async fn throttled(
    state: &AppState,
    account: &str,
    address: Option<IpAddr>,
    request: CommandRequest,
    wrong: fn(&SelfServiceError) -> bool,
) -> Result<Outcome, SelfServiceError> {
    let reserved = state
        .throttle()
        .attempt(account, address, state.now())
        .await?;
    let result = command::execute(state, request)
        .await
        .map_err(SelfServiceError::from);
    match &result {
        Err(err) if wrong(err) => {}
        Ok(_) => state.throttle().succeeded(&reserved).await,
        Err(_) => state.throttle().undecided(&reserved, state.now()).await,
    }
    result
}

fn wrong_password(err: &SelfServiceError) -> bool {
    matches!(err, SelfServiceError::WrongPassword)
}
