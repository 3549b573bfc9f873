//! `/login` and `/logout`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::csrf::{CsrfToken, PageForm};
use super::session::{clear_session_cookie, cookie, session_cookie, COOKIE};
use super::{notice, see_other, throttled_form, Field, Form, Page, PageError};
use crate::http::extract::{ClientAddress, RequestId};
use crate::state::AppState;
use crate::usecase::{login, session, SelfServiceError};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    pub(crate) notice: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
}

/// No fields but the CSRF token (the logout button).
#[derive(Deserialize)]
pub(crate) struct TokenOnly {}

fn login_form(email: &str) -> Form {
    Form::new(vec![
        Field::email("email", "Email address", "username").value(email),
        Field::password("password", "Password", "current-password"),
    ])
}

fn login_page(csrf: CsrfToken, form: Form) -> Page {
    Page::new("login.html", "Log in").csrf(csrf).form(form)
}

/// The login form; someone logged in goes to the account.
pub(crate) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    csrf: CsrfToken,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    if let Some(token) = cookie(&headers, COOKIE) {
        if session::of_token(&state, &token).await?.is_some() {
            return Ok(see_other("/account", Vec::new()));
        }
    }
    Ok(login_page(csrf, login_form(""))
        .status(notice(query.notice.as_deref()))
        .render())
}

/// Checks the login like `POST /v1/self/sessions` and opens a session in
/// the cookie; a temporary password goes straight to Change Password.
pub(crate) async fn submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = login_form(&value.email);
    form.require(&[
        ("email", &value.email, "Enter your email address."),
        ("password", &value.password, "Enter your password."),
    ]);
    if form.has_errors() {
        return Ok(login_page(csrf, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    match login::check_login(
        &state,
        address,
        &value.email,
        value.password,
        &request_id.origin(),
    )
    .await
    {
        Ok((id, loaded)) => {
            let session = session::open(&state, &loaded.customer, id).await?;
            let to = if session.must_change_password {
                "/account/change-password"
            } else {
                "/account"
            };
            Ok(see_other(to, vec![session_cookie(&state, &session.token)]))
        }
        Err(SelfServiceError::InvalidCredentials) => {
            form.error(
                "password",
                "The email address or the password is incorrect.",
            );
            Ok(login_page(csrf, form)
                .code(StatusCode::UNAUTHORIZED)
                .render())
        }
        Err(SelfServiceError::TooManyAttempts { retry_after }) => {
            Ok(throttled_form(form, retry_after, |f| login_page(csrf, f)))
        }
        Err(err) => Err(err.into()),
    }
}

/// Ends the session of the cookie (if any) and clears the cookie.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    _form: PageForm<TokenOnly>,
) -> Result<Response, PageError> {
    if let Some(token) = cookie(&headers, COOKIE) {
        session::end(&state, &token).await?;
    }
    Ok(see_other(
        "/login?notice=signed_out",
        vec![clear_session_cookie(&state)],
    )
    .into_response())
}
