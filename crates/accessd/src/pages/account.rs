//! `/account`: the customer's home and settings (Change Email, Change
//! Password).

use access_domain::{EmailAddress, ValueError};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::csrf::{CsrfToken, PageForm};
use super::login::NoticeQuery;
use super::session::{session_cookie, PageSession};
use super::{
    notice, refused, see_other, too_many_attempts, with_retry_after, Field, Form, Page, PageError,
    Status,
};
use crate::http::dto::CustomerView;
use crate::http::extract::Active;
use crate::http::extract::{ClientAddress, RequestId};
use crate::state::AppState;
use crate::usecase::account::{self, EmailChange, PasswordChange};
use crate::usecase::reply::EmailChangeAccepted;
use crate::usecase::SelfServiceError;

fn view(state: &AppState, session: &PageSession) -> CustomerView {
    crate::http::dto::customer_view(
        session.0.customer_id,
        &session.0.loaded.customer,
        session.0.loaded.version,
        state.now(),
    )
}

/// The customer's home: the login email, a pending change, the settings.
pub(crate) async fn home(
    State(state): State<AppState>,
    Active(session): Active<PageSession>,
    csrf: CsrfToken,
    Query(query): Query<NoticeQuery>,
) -> Response {
    let view = view(&state, &session);
    Page::new("account.html", "Your account")
        .csrf(csrf)
        .signed_in()
        .status(notice(query.notice.as_deref()))
        .with(minijinja::context! {
            name => view.name,
            login_email => view.email,
            pending_email => view.pending_email,
            pending_email_expired => view.pending_email_expired,
            second_factor => session.0.loaded.customer.has_second_factor(),
        })
        .render()
}

// ---------------------------------------------------------------------------
// Change Email
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SentQuery {
    sent: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChangeEmailForm {
    current_password: String,
    new_email: String,
    new_email_confirm: String,
}

fn change_email_fields(new_email: &str, confirm: &str) -> Form {
    Form::new(vec![
        Field::password("current_password", "Current Password", "current-password"),
        Field::email("new_email", "New Email Address", "email").value(new_email),
        Field::email("new_email_confirm", "Confirm New Email", "email").value(confirm),
    ])
}

fn change_email_page(csrf: CsrfToken, login_email: String, form: Form) -> Page {
    Page::new("change_email.html", "Change Email")
        .csrf(csrf)
        .signed_in()
        .form(form)
        .with(minijinja::context! { login_email => login_email })
}

/// The Change Email form; after a request (`?sent=1`), the notice's green
/// bar for the pending change.
pub(crate) async fn change_email_form(
    State(state): State<AppState>,
    Active(session): Active<PageSession>,
    csrf: CsrfToken,
    Query(query): Query<SentQuery>,
) -> Response {
    let view = view(&state, &session);
    let status = query
        .sent
        .and(view.pending_email.as_deref())
        .map(|pending| {
            let accepted = EmailChangeAccepted::new(pending, view.version);
            Status::success(accepted.message, Some(accepted.detail))
        });
    change_email_page(csrf, view.email, change_email_fields("", ""))
        .status(status)
        .render()
}

/// Runs `RequestEmailChange` like `POST /v1/self/change-email`.
pub(crate) async fn change_email(
    State(state): State<AppState>,
    Active(session): Active<PageSession>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<ChangeEmailForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let login_email = session.login_email();
    let mut form = change_email_fields(&value.new_email, &value.new_email_confirm);
    form.require(&[
        (
            "current_password",
            &value.current_password,
            "Enter your current password.",
        ),
        (
            "new_email",
            &value.new_email,
            "Enter the new email address.",
        ),
        (
            "new_email_confirm",
            &value.new_email_confirm,
            "Enter the new email address again.",
        ),
    ]);
    let new_email = EmailAddress::parse(&value.new_email);
    let confirm = EmailAddress::parse(&value.new_email_confirm);
    if new_email.is_err() {
        form.error("new_email", INVALID_EMAIL);
    }
    if confirm.is_err() {
        form.error("new_email_confirm", INVALID_EMAIL);
    }
    let (Ok(new_email), Ok(confirm), false) = (new_email, confirm, form.has_errors()) else {
        return Ok(change_email_page(csrf, login_email, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    };
    let change = EmailChange {
        current_password: value.current_password,
        new_email,
        new_email_confirm: confirm,
    };
    let origin = request_id.origin();
    let result = account::request_email_change(&state, &session.0, address, change, origin).await;
    let Err(err) = result else {
        return Ok(see_other("/account/change-email?sent=1", Vec::new()));
    };
    match &err {
        SelfServiceError::WrongPassword => form.error("current_password", WRONG_PASSWORD),
        SelfServiceError::EmailMismatch => {
            form.error("new_email_confirm", "The two email addresses do not match.")
        }
        SelfServiceError::EmailUnchanged => form.error(
            "new_email",
            "This is already your login email. Enter a different address.",
        ),
        SelfServiceError::EmailInUse => form.error(
            "new_email",
            "This email address is already used by another account.",
        ),
        SelfServiceError::Invalid(ValueError::InvalidEmail(_)) => {
            form.error("new_email", INVALID_EMAIL)
        }
        SelfServiceError::TooManyAttempts { retry_after } => {
            form.form_error(too_many_attempts(Some(*retry_after)))
        }
        _ => return Err(err.into()),
    }
    let (status, retry_after) = refused(err);
    Ok(with_retry_after(
        change_email_page(csrf, login_email, form)
            .code(status)
            .render(),
        retry_after,
    ))
}

const INVALID_EMAIL: &str = "Enter an email address in the correct format, like name@example.com.";
const WRONG_PASSWORD: &str = "The current password is incorrect.";

// ---------------------------------------------------------------------------
// Change Password
// ---------------------------------------------------------------------------

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChangePasswordForm {
    current_password: String,
    new_password: String,
    new_password_confirm: String,
}

fn change_password_fields() -> Form {
    Form::new(vec![
        Field::password("current_password", "Current Password", "current-password"),
        Field::new_password("new_password", "New Password"),
        Field::password(
            "new_password_confirm",
            "Confirm New Password",
            "new-password",
        ),
    ])
}

fn change_password_page(csrf: CsrfToken, session: &PageSession, form: Form) -> Page {
    let temporary = session.0.loaded.customer.must_change_password();
    Page::new("change_password.html", "Change Password")
        .csrf(csrf)
        .signed_in()
        .form(form)
        .with(minijinja::context! {
            temporary => temporary,
            login_email => session.login_email(),
        })
}

/// The Change Password form (also for a temporary password).
pub(crate) async fn change_password_form(session: PageSession, csrf: CsrfToken) -> Response {
    change_password_page(csrf, &session, change_password_fields()).render()
}

/// Runs `ChangePassword` like `POST /v1/self/change-password`: every
/// session ends, this browser gets a new one.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    session: PageSession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<ChangePasswordForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = change_password_fields();
    form.require(&[
        (
            "current_password",
            &value.current_password,
            "Enter your current password.",
        ),
        ("new_password", &value.new_password, "Enter a new password."),
        (
            "new_password_confirm",
            &value.new_password_confirm,
            "Enter the new password again.",
        ),
    ]);
    if form.has_errors() {
        return Ok(change_password_page(csrf, &session, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    let change = PasswordChange {
        current_password: value.current_password,
        new_password: value.new_password,
        new_password_confirm: value.new_password_confirm,
    };
    let result =
        account::change_password(&state, &session.0, address, request_id.origin(), change).await;
    let err = match result {
        Ok((_, new_session)) => {
            return Ok(see_other(
                "/account?notice=password_changed",
                vec![session_cookie(&state, &new_session.token)],
            ))
        }
        Err(err) => err,
    };
    match &err {
        SelfServiceError::WrongPassword => form.error("current_password", WRONG_PASSWORD),
        SelfServiceError::Invalid(ValueError::WeakPassword(why)) => {
            form.error("new_password", weak_password(why))
        }
        SelfServiceError::PasswordMismatch => form.error(
            "new_password_confirm",
            "The two new passwords do not match.",
        ),
        SelfServiceError::TooManyAttempts { retry_after } => {
            form.form_error(too_many_attempts(Some(*retry_after)))
        }
        _ => return Err(err.into()),
    }
    let (status, retry_after) = refused(err);
    Ok(with_retry_after(
        change_password_page(csrf, &session, form)
            .code(status)
            .render(),
        retry_after,
    ))
}

/// Why a password is weak (`ValueError::WeakPassword`), as a sentence
/// for the field.
pub(crate) fn weak_password(why: &str) -> String {
    let why = why.trim_end_matches('.');
    format!("Choose a stronger password: {why}.")
}
