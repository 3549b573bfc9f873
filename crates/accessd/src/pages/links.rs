//! The pages behind the links in the emails: `/setup-password?token=…`
//! (access notification) and `/confirm-email?token=…` (validation of a new
//! email). A GET only shows a form with the token in a hidden field (mail
//! scanners open links); the form's POST uses the token. The GET checks the
//! link against the customer's state without using it
//! ([`access_domain::Customer::link_status`], the rule the command uses):
//! a used, expired or voided link shows the "no longer valid" page at once.

use access_store::prelude::*;
use std::net::IpAddr;

use access_domain::{LinkStatus, TokenPurpose};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::account::weak_password;
use super::csrf::{CsrfField, CsrfToken, PageForm};
use super::session::clear_session_cookie;
use super::{message_page, see_other, Field, Form, Page, PageError, Status};
use crate::http::extract::{ClientAddress, RequestId};
use crate::http::self_service;
use crate::link_token;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// Which link a page is for.
#[derive(Debug, Clone, Copy)]
enum Link {
    Setup,
    Confirm,
}

/// The page of an invalid, expired or used link: says so, and what to do.
fn link_expired(link: Link) -> Page {
    let (what, ask) = match link {
        Link::Setup => (
            "This password setup link has expired or was already used.",
            "Ask for a new access notification: contact the person or team that gave you access, and they can send you a new link.",
        ),
        Link::Confirm => (
            "This email confirmation link has expired or was already used.",
            "Your login email has not changed. To change it, log in and ask for the change again: a new link will be sent to the new address.",
        ),
    };
    Page::new("link_expired.html", "This link is no longer valid")
        .code(StatusCode::GONE)
        .with(minijinja::context! {
            what => what,
            ask => ask,
            login => matches!(link, Link::Confirm),
        })
}

/// The token of a link, when it has the shape of one.
fn usable_token(raw: Option<&str>) -> Option<String> {
    raw.filter(|t| link_token::split(t).is_some())
        .map(|t| t.trim().to_string())
}

/// The token of a link whose page is opened, when the link is live now:
/// checked against the customer's state without using it. The check goes
/// through the link throttle like the link's POST (`run_link`: same
/// account key, same order), so tokens cannot be probed faster by opening
/// pages: a link that is not live counts as a wrong token; a live one is
/// given back (the POST that uses it resets the count).
async fn live_link(
    state: &AppState,
    address: Option<IpAddr>,
    raw: Option<&str>,
    purpose: TokenPurpose,
) -> Result<Option<String>, PageError> {
    let Some(token) = usable_token(raw) else {
        return Ok(None);
    };
    let Some((customer_id, secret)) = link_token::split(&token) else {
        return Ok(None);
    };
    let account = format!("link:{customer_id}");
    let reserved = state
        .throttle()
        .attempt(&account, address, state.now())
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

// ---------------------------------------------------------------------------
// Set password
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct SetupPasswordForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
    #[serde(default)]
    csrf_token: String,
}

impl CsrfField for SetupPasswordForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

fn setup_fields() -> Form {
    Form::new(vec![
        Field::password("password", "New password", "new-password").hint(
            "At least 10 characters. A few unrelated words make a strong password; avoid your email address and common phrases.",
        ),
        Field::password("password_confirm", "Confirm new password", "new-password"),
    ])
}

fn setup_page(csrf: CsrfToken, token: &str, form: Form) -> Page {
    Page::new("setup_password.html", "Set your password")
        .csrf(csrf)
        .form(form)
        .with(minijinja::context! { token => token })
}

/// The form to set a password while the link is live (the token is not
/// used yet); the "no longer valid" page otherwise.
pub(crate) async fn setup_password_form(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    csrf: CsrfToken,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let live = live_link(
        &state,
        address,
        query.token.as_deref(),
        TokenPurpose::PasswordSetup,
    )
    .await?;
    Ok(match live {
        Some(token) => setup_page(csrf, &token, setup_fields()).render(),
        None => link_expired(Link::Setup).render(),
    })
}

/// Runs `CompletePasswordSetup` like `POST /v1/self/setup-password`.
pub(crate) async fn setup_password(
    State(state): State<AppState>,
    request_id: RequestId,
    ClientAddress(address): ClientAddress,
    form: PageForm<SetupPasswordForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = setup_fields();
    form.require(&[
        ("password", &value.password, "Enter a new password."),
        (
            "password_confirm",
            &value.password_confirm,
            "Enter the new password again.",
        ),
    ]);
    if usable_token(Some(&value.token)).is_none() {
        return Ok(link_expired(Link::Setup).render());
    }
    if form.has_errors() {
        return Ok(setup_page(csrf, &value.token, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    let result = match self_service::setup_password_command(
        &value.token,
        &value.password,
        value.password_confirm,
    ) {
        Ok((customer_id, command)) => {
            self_service::run_link(&state, request_id, address, customer_id, command)
                .await
                .map(|_| ())
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(see_other("/login?notice=password_set", Vec::new())),
        Err(err) => {
            match err.code {
                "invalid_token" => return Ok(link_expired(Link::Setup).render()),
                "weak_password" => form.error("password", weak_password(&err)),
                "password_mismatch" => {
                    form.error("password_confirm", "The two passwords do not match.")
                }
                _ => return Err(err.into()),
            }
            Ok(setup_page(csrf, &value.token, form)
                .code(err.status)
                .render())
        }
    }
}

// ---------------------------------------------------------------------------
// Confirm email
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct ConfirmEmailForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf_token: String,
}

impl CsrfField for ConfirmEmailForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// A button to confirm the new email while the link is live (the token is
/// not used yet); the "no longer valid" page otherwise.
pub(crate) async fn confirm_email_form(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    csrf: CsrfToken,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let live = live_link(
        &state,
        address,
        query.token.as_deref(),
        TokenPurpose::EmailChange,
    )
    .await?;
    Ok(match live {
        Some(token) => Page::new("confirm_email.html", "Confirm your new email address")
            .csrf(csrf)
            .with(minijinja::context! { token => token })
            .render(),
        None => link_expired(Link::Confirm).render(),
    })
}

/// Runs `ConfirmEmailChange` like `POST /v1/self/confirm-email`, then says
/// which address is now the login. Every session of the customer has
/// ended with the change; this browser's cookie is cleared.
pub(crate) async fn confirm_email(
    State(state): State<AppState>,
    request_id: RequestId,
    ClientAddress(address): ClientAddress,
    form: PageForm<ConfirmEmailForm>,
) -> Result<Response, PageError> {
    let value = form.value;
    let (customer_id, token) = match self_service::link_command(&value.token) {
        Ok(parts) => parts,
        Err(_) => return Ok(link_expired(Link::Confirm).render()),
    };
    let command = access_domain::CustomerCommand::ConfirmEmailChange { token };
    let result = self_service::run_link(&state, request_id, address, customer_id, command).await;
    match result {
        Ok(_) => {
            let loaded = state.store().load(customer_id).await?;
            let email = loaded
                .customer
                .email()
                .map(|e| e.as_str().to_string())
                .unwrap_or_default();
            Ok(Page::new("email_confirmed.html", "Email address confirmed")
                .status(Some(Status::success(
                    format!("Your login email is now {email}."),
                    Some("Log in with this address from now on.".into()),
                )))
                .with(minijinja::context! { email => email })
                .cookie(clear_session_cookie(&state))
                .render())
        }
        Err(err) if err.code == "invalid_token" => Ok(link_expired(Link::Confirm).render()),
        Err(err) if err.code == "email_in_use" => Ok(message_page(
            err.status,
            "This address is no longer available",
            &[
                "The new email address has meanwhile become the login of another account, so the change cannot be completed.",
                "Your login email has not changed.",
            ],
        )
        .render()),
        Err(err) => Err(err.into()),
    }
}
