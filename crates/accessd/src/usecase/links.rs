//! The links in the emails: a setup link (set a password) and a
//! validation link (complete an email change). Their token is
//! `<customer id>.<token>` ([`crate::link_token`]); the customer it names
//! is the actor. Uses and checks of a link go through the link throttle
//! (account `link:<customer id>` and the client's address), so tokens
//! cannot be guessed quickly.

use access_store::prelude::*;
use std::net::IpAddr;

use access_domain::{
    Actor, CustomerCommand, CustomerId, LinkStatus, Password, Secret, TokenPurpose,
};

use super::account::throttled;
use super::command::{CommandRequest, Origin, Outcome};
use super::error::SelfServiceError;
use crate::link_token;
use crate::state::AppState;

/// The customer and secret of a link token, or
/// [`SelfServiceError::InvalidToken`].
fn split(raw: &str) -> Result<(CustomerId, Secret), SelfServiceError> {
    link_token::split(raw).ok_or(SelfServiceError::InvalidToken)
}

/// The throttle's account for the links of a customer.
fn account(customer_id: CustomerId) -> String {
    format!("link:{customer_id}")
}

/// Sets a password with the token of a setup link (for the API and the
/// pages).
pub async fn setup_password(
    state: &AppState,
    origin: Origin,
    address: Option<IpAddr>,
    raw_token: &str,
    password: &str,
    password_confirm: String,
) -> Result<Outcome, SelfServiceError> {
    let (customer_id, token) = split(raw_token)?;
    let command = CustomerCommand::CompletePasswordSetup {
        token,
        password: Password::parse(password, &[])?,
        password_confirm: Secret::new(password_confirm),
    };
    run(state, origin, address, customer_id, command).await
}

/// Completes a pending email change with the token of a validation link
/// (for the API and the pages). The customer, whose every session has
/// ended with the change, and the outcome.
pub async fn confirm_email(
    state: &AppState,
    origin: Origin,
    address: Option<IpAddr>,
    raw_token: &str,
) -> Result<(CustomerId, Outcome), SelfServiceError> {
    let (customer_id, token) = split(raw_token)?;
    let command = CustomerCommand::ConfirmEmailChange { token };
    let outcome = run(state, origin, address, customer_id, command).await?;
    Ok((customer_id, outcome))
}

/// Runs the command of a link. A wrong link counts against the customer it
/// names and the client's address; a right one resets the count.
async fn run(
    state: &AppState,
    origin: Origin,
    address: Option<IpAddr>,
    customer_id: CustomerId,
    command: CustomerCommand,
) -> Result<Outcome, SelfServiceError> {
    let request = CommandRequest::new(
        Actor::Customer { customer_id },
        customer_id,
        command,
        origin,
    );
    let wrong_link = |err: &SelfServiceError| matches!(err, SelfServiceError::InvalidToken);
    throttled(state, &account(customer_id), address, request, wrong_link).await
}

/// The token of a link, when it has the shape of one (trimmed).
pub fn usable_token(raw: Option<&str>) -> Option<String> {
    raw.filter(|t| link_token::split(t).is_some())
        .map(|t| t.trim().to_string())
}

/// The token of a link whose page is opened, when the link is live now:
/// checked against the customer's state without using it
/// ([`access_domain::Customer::link_status`], the rule the command uses).
/// The check goes through the link throttle like a use of the link (same
/// account, same order), so tokens cannot be probed faster by opening
/// pages: a link that is not live counts as a wrong token; a live one is
/// given back (the use resets the count).
pub async fn live_token(
    state: &AppState,
    address: Option<IpAddr>,
    raw: Option<&str>,
    purpose: TokenPurpose,
) -> Result<Option<String>, SelfServiceError> {
    let Some(token) = usable_token(raw) else {
        return Ok(None);
    };
    let Ok((customer_id, secret)) = split(&token) else {
        return Ok(None);
    };
    let reserved = state
        .throttle()
        .attempt(&account(customer_id), address, state.now())
        .await?;
    let loaded = match state.store().load(customer_id).await {
        Ok(loaded) => loaded,
        Err(e) => {
            state.throttle().undecided(&reserved, state.now()).await;
            return Err(e.into());
        }
    };
    match loaded.customer.link_status(purpose, &secret, state.now()) {
        // A live link is no wrong guess: the check is given back.
        LinkStatus::Live => {
            state.throttle().undecided(&reserved, state.now()).await;
            Ok(Some(token))
        }
        // A dead one stays counted, like a wrong token.
        LinkStatus::Expired | LinkStatus::Dead => Ok(None),
    }
}

/// A customer's login email now (empty when it has none).
pub async fn login_email(
    state: &AppState,
    customer_id: CustomerId,
) -> Result<String, SelfServiceError> {
    let loaded = state.store().load(customer_id).await?;
    Ok(loaded
        .customer
        .email()
        .map(|e| e.as_str().to_string())
        .unwrap_or_default())
}
