//! `/login` and `/logout`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::csrf::{CsrfToken, PageForm};
use super::session::{
    clear_session_cookie, cookie, session_cookie, WaitingSession, COOKIE, SECOND_STEP,
};
use super::{notice, see_other, throttled_form, Field, Form, Page, PageError};
use crate::http::extract::{ClientAddress, RequestId};
use crate::state::AppState;
use crate::usecase::{login, second_factor, session, SelfServiceError};

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
        if let Some(found) = session::of_token(&state, &token).await? {
            let to = if found.second_factor_pending {
                SECOND_STEP
            } else {
                "/account"
            };
            return Ok(see_other(to, Vec::new()));
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
            let session = session::open_after_password(&state, &loaded.customer, id).await?;
            let to = if session.second_factor_required {
                SECOND_STEP
            } else if session.must_change_password {
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

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
}

fn code_form() -> Form {
    Form::new(vec![Field::code("code", "Code").hint(
        "The 6 digits your authenticator app shows now, or one of your recovery codes.",
    )])
}

fn second_step_page(csrf: CsrfToken, form: Form) -> Page {
    // Signed in: the header's "Log out" ends the waiting session.
    Page::new("login_second_factor.html", "Two-step verification")
        .csrf(csrf)
        .form(form)
        .signed_in()
}

/// The login's second step: the code of the customer's second factor,
/// after a right password (that session waits for it for 5 minutes).
pub(crate) async fn second_step(_waiting: WaitingSession, csrf: CsrfToken) -> Response {
    second_step_page(csrf, code_form()).render()
}

/// Checks the code like `POST /v1/self/sessions/verify`: the waiting
/// session ends and a full one goes into the cookie.
pub(crate) async fn second_step_submit(
    State(state): State<AppState>,
    WaitingSession(waiting): WaitingSession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<CodeForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = code_form();
    form.require(&[("code", &value.code, "Enter the code.")]);
    if form.has_errors() {
        return Ok(second_step_page(csrf, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    match second_factor::verify_login(&state, &waiting, address, value.code, request_id.origin())
        .await
    {
        Ok(session) => {
            let to = if session.must_change_password {
                "/account/change-password"
            } else {
                "/account"
            };
            Ok(see_other(to, vec![session_cookie(&state, &session.token)]))
        }
        Err(SelfServiceError::InvalidCode) => {
            form.error(
                "code",
                "This code is wrong, expired or already used. Enter the code your app shows now.",
            );
            Ok(second_step_page(csrf, form)
                .code(StatusCode::UNAUTHORIZED)
                .render())
        }
        Err(SelfServiceError::TooManyAttempts { retry_after }) => {
            Ok(throttled_form(form, retry_after, |f| {
                second_step_page(csrf, f)
            }))
        }
        // Another request with this waiting session passed its code first.
        Err(SelfServiceError::SessionEnded) => Ok(see_other(
            "/login?notice=session_ended",
            vec![clear_session_cookie(&state)],
        )),
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
