//! The pages behind the links in the emails: `/setup-password?token=…`
//! (access notification) and `/confirm-email?token=…` (validation of a new
//! email). A GET only shows a form with the token in a hidden field (mail
//! scanners open links); the form's POST uses the token. The GET checks the
//! link against the customer's state without using it
//! ([`crate::usecase::links::live_token`]): a used, expired or voided link
//! shows the "no longer valid" page at once.

use access_domain::{TokenPurpose, ValueError};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::account::weak_password;
use super::csrf::{CsrfToken, PageForm};
use super::session::clear_session_cookie;
use super::{message_page, refused, see_other, Field, Form, Page, PageError, Status};
use crate::http::extract::{ClientAddress, RequestId};
use crate::state::AppState;
use crate::usecase::links::{self, live_token, usable_token};
use crate::usecase::SelfServiceError;

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

// ---------------------------------------------------------------------------
// Set password
// ---------------------------------------------------------------------------

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct SetupPasswordForm {
    token: String,
    password: String,
    password_confirm: String,
}

fn setup_fields() -> Form {
    Form::new(vec![
        Field::new_password("password", "New password"),
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
    let link = (TokenPurpose::PasswordSetup, Link::Setup);
    link_page(&state, address, query, link, |token| {
        setup_page(csrf, token, setup_fields())
    })
    .await
}

/// The page of a link: `page` while its token is live (not used yet), the
/// "no longer valid" page otherwise.
async fn link_page(
    state: &AppState,
    address: Option<std::net::IpAddr>,
    query: TokenQuery,
    (purpose, link): (TokenPurpose, Link),
    page: impl FnOnce(&str) -> Page,
) -> Result<Response, PageError> {
    let live = live_token(state, address, query.token.as_deref(), purpose).await?;
    Ok(match live {
        Some(token) => page(&token).render(),
        None => link_expired(link).render(),
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
    let result = links::setup_password(
        &state,
        request_id.origin(),
        address,
        &value.token,
        &value.password,
        value.password_confirm,
    )
    .await;
    let Err(err) = result else {
        return Ok(see_other("/login?notice=password_set", Vec::new()));
    };
    match &err {
        SelfServiceError::InvalidToken => return Ok(link_expired(Link::Setup).render()),
        SelfServiceError::Invalid(ValueError::WeakPassword(why)) => {
            form.error("password", weak_password(why))
        }
        SelfServiceError::PasswordMismatch => {
            form.error("password_confirm", "The two passwords do not match.")
        }
        _ => return Err(err.into()),
    }
    let (status, _) = refused(err);
    Ok(setup_page(csrf, &value.token, form).code(status).render())
}

// ---------------------------------------------------------------------------
// Confirm email
// ---------------------------------------------------------------------------

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConfirmEmailForm {
    token: String,
}

/// A button to confirm the new email while the link is live (the token is
/// not used yet); the "no longer valid" page otherwise.
pub(crate) async fn confirm_email_form(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    csrf: CsrfToken,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let link = (TokenPurpose::EmailChange, Link::Confirm);
    link_page(&state, address, query, link, |token| {
        Page::new("confirm_email.html", "Confirm your new email address")
            .csrf(csrf)
            .with(minijinja::context! { token => token })
    })
    .await
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
    let result = links::confirm_email(&state, request_id.origin(), address, &value.token).await;
    match result {
        Ok((customer_id, _)) => {
            let email = links::login_email(&state, customer_id).await?;
            Ok(Page::new("email_confirmed.html", "Email address confirmed")
                .status(Some(Status::success(
                    format!("Your login email is now {email}."),
                    Some("Log in with this address from now on.".into()),
                )))
                .with(minijinja::context! { email => email })
                .cookie(clear_session_cookie(&state))
                .render())
        }
        Err(SelfServiceError::InvalidToken) => Ok(link_expired(Link::Confirm).render()),
        Err(err @ SelfServiceError::EmailInUse) => Ok(message_page(
            refused(err).0,
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
