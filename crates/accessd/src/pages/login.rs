//! `/login` and `/logout`.

use access_store::prelude::*;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::csrf::{CsrfField, CsrfToken, PageForm};
use super::session::{clear_session_cookie, cookie, session_cookie, COOKIE};
use super::{notice, see_other, too_many_attempts, with_retry_after, Field, Form, Page, PageError};
use crate::auth::{digest, session_of_token};
use crate::http::extract::{ClientAddress, RequestId};
use crate::http::self_service;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    pub(crate) notice: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
}

impl CsrfField for LoginForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// Only the token (the logout button).
#[derive(Deserialize)]
pub(crate) struct TokenOnly {
    #[serde(default)]
    csrf_token: String,
}

impl CsrfField for TokenOnly {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

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
        if session_of_token(&state, &token).await?.is_some() {
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
    match self_service::check_login(&state, address, &value.email, value.password, &request_id)
        .await
    {
        Ok((id, loaded)) => {
            let session = self_service::open(&state, &loaded.customer, id).await?;
            let to = if session.must_change_password {
                "/account/change-password"
            } else {
                "/account"
            };
            Ok(see_other(to, vec![session_cookie(&state, &session.token)]))
        }
        Err(err) if err.code == "invalid_credentials" => {
            form.error(
                "password",
                "The email address or the password is incorrect.",
            );
            Ok(login_page(csrf, form).code(err.status).render())
        }
        Err(err) if err.code == "too_many_attempts" => {
            form.form_error(too_many_attempts(err.retry_after));
            Ok(with_retry_after(
                login_page(csrf, form).code(err.status).render(),
                err.retry_after,
            ))
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
        state
            .store()
            .delete_session(&hex::encode(digest(&token)))
            .await?;
    }
    Ok(see_other(
        "/login?notice=signed_out",
        vec![clear_session_cookie(&state)],
    )
    .into_response())
}
