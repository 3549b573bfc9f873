//! `/audit/login` and `/audit/logout`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{clear_cookie, session_cookie, COOKIE};
use crate::http::extract::ClientAddress;
use crate::pages::csrf::{CsrfToken, PageForm};
use crate::pages::session::cookie;
use crate::pages::{notice, see_other, throttled_form};
use crate::pages::{Field, Form, Page, PageError};
use crate::state::AppState;
use crate::usecase::console::{lookup, sign_in, sign_out, ConsoleError, Lookup};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct SignInForm {
    api_key: String,
}

/// No fields but the CSRF token (the sign-out button).
#[derive(Deserialize)]
pub(crate) struct TokenOnly {}

fn sign_in_form() -> Form {
    Form::new(vec![Field::password("api_key", "API key", "current-password").hint(
        "Your personal auditor or admin key, as it was handed to you: the secret, or the whole name:role:secret line.",
    )])
}

fn sign_in_page(csrf: CsrfToken, form: Form) -> Page {
    Page::new("audit_login.html", "Sign in to the audit console")
        .csrf(csrf)
        .form(form)
}

/// The sign-in form; someone signed in goes to the console's home.
pub(crate) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    csrf: CsrfToken,
    super::ConsoleQuery(query): super::ConsoleQuery<NoticeQuery>,
) -> Result<Response, PageError> {
    let mut page = sign_in_page(csrf, sign_in_form()).status(notice(query.notice.as_deref()));
    if let Some(token) = cookie(&headers, COOKIE) {
        match lookup(&state, &token).await? {
            Lookup::Valid(_) => return Ok(see_other("/audit", Vec::new())),
            // A cookie of a session that ended: removed.
            Lookup::Ended => page = page.cookie(clear_cookie(&state)),
            Lookup::KeyUnknownHere => {}
        }
    }
    Ok(page.render())
}

/// Exchanges an auditor's or admin's API key for a console session.
pub(crate) async fn submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    form: PageForm<SignInForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = sign_in_form();
    form.require(&[("api_key", &value.api_key, "Enter your API key.")]);
    if form.has_errors() {
        return Ok(sign_in_page(csrf, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    let settings = state.console();
    let previous = cookie(&headers, COOKIE);
    match sign_in(
        &state,
        &settings,
        address,
        &value.api_key,
        previous.as_deref(),
    )
    .await
    {
        Ok(opened) => Ok(see_other(
            "/audit",
            vec![session_cookie(&state, &opened.token, settings.session_ttl)],
        )),
        Err(ConsoleError::UnknownKey) => {
            form.error("api_key", "This API key is not known.");
            Ok(sign_in_page(csrf, form)
                .code(StatusCode::UNAUTHORIZED)
                .render())
        }
        Err(ConsoleError::RoleRefused { role }) => {
            form.error(
                "api_key",
                format!(
                    "A {} key cannot sign in to the audit console: only auditor and admin keys can.",
                    role.as_str()
                ),
            );
            Ok(sign_in_page(csrf, form)
                .code(StatusCode::FORBIDDEN)
                .render())
        }
        Err(ConsoleError::TooManyAttempts { retry_after }) => {
            Ok(throttled_form(form, retry_after, |f| sign_in_page(csrf, f)))
        }
        Err(ConsoleError::Store(e)) => Err(e.into()),
    }
}

/// Ends the console session of the cookie (if any) and clears the cookie.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    _form: PageForm<TokenOnly>,
) -> Result<Response, PageError> {
    if let Some(token) = cookie(&headers, COOKIE) {
        sign_out(&state, &token).await?;
    }
    Ok(see_other(
        "/audit/login?notice=signed_out",
        vec![clear_cookie(&state)],
    ))
}
