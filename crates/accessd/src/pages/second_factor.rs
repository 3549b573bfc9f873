//! `/account/second-factor`: the customer's authenticator app (TOTP):
//! set it up (a QR code and the key to type, then a code to confirm),
//! new recovery codes, turn it off. The logic is the API's
//! ([`crate::usecase::second_factor`]).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::csrf::{CsrfToken, PageForm};
use super::login::{NoticeQuery, TokenOnly};
use super::session::PageSession;
use super::PageError;
use super::{notice, refused, see_other, too_many_attempts, with_retry_after, Field, Form, Page};
use crate::http::extract::SessionOf;
use crate::http::extract::{Active, ClientAddress, RequestId};
use crate::state::AppState;
use crate::usecase::{second_factor, SelfServiceError};

const HOME: &str = "/account/second-factor";
const TITLE: &str = "Two-step verification";
const WRONG_CODE: &str =
    "This code is wrong, expired or already used. Enter the code your app shows now.";

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct RemoveForm {
    current_password: String,
    code: String,
}

fn code_field(hint: &'static str) -> Field {
    Field::code("code", "Code").hint(hint)
}

fn app_code_form() -> Form {
    Form::new(vec![code_field(
        "The 6 digits your authenticator app shows now.",
    )])
}

fn any_code_form() -> Form {
    Form::new(vec![code_field(
        "The 6 digits your authenticator app shows now, or one of your recovery codes.",
    )])
}

fn remove_form() -> Form {
    Form::new(vec![
        Field::password("current_password", "Current Password", "current-password"),
        code_field("The 6 digits your authenticator app shows now, or one of your recovery codes."),
    ])
}

/// A temporary password is changed first (the app is set up after).
fn not_temporary(session: &PageSession) -> Result<(), PageError> {
    if session.0.loaded.customer.must_change_password() {
        return Err(PageSession::must_change_password());
    }
    Ok(())
}

/// The QR code of an `otpauth://` URI as inline SVG (no image request:
/// the pages' CSP allows images from this origin only).
fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        Err(e) => {
            tracing::warn!(error = %e, "the enrollment's QR code could not be made");
            String::new()
        }
    }
}

/// The page in its state: not set up, waiting for a code, or on.
fn home_page(state: &AppState, session: &PageSession, csrf: CsrfToken, form: Form) -> Page {
    let customer = &session.0.loaded.customer;
    let pending = second_factor::pending(state, &session.0);
    let context = minijinja::context! {
        enrolled => customer.has_second_factor(),
        recovery_codes_left => customer.recovery_codes_left(),
        required => state.second_factor_policy() == crate::config::SecondFactorPolicy::Required,
        pending => pending.is_some(),
        qr => pending.as_ref().map(|p| qr_svg(&p.otpauth_uri)),
        secret => pending.as_ref().map(|p| p.secret.clone()),
    };
    Page::new("second_factor.html", TITLE)
        .csrf(csrf)
        .signed_in()
        .form(form)
        .with(context)
}

/// The recovery codes, shown this once.
fn codes_page(csrf: CsrfToken, codes: Vec<String>) -> Response {
    Page::new("recovery_codes.html", "Your recovery codes")
        .csrf(csrf)
        .signed_in()
        .with(minijinja::context! { codes => codes })
        .render()
}

/// A refused code or password: the form again with the reason.
fn refusal(form: &mut Form, err: SelfServiceError) -> Result<(StatusCode, Option<u64>), PageError> {
    match &err {
        SelfServiceError::InvalidCode => form.error("code", WRONG_CODE),
        SelfServiceError::WrongPassword => {
            form.error("current_password", "The current password is incorrect.")
        }
        SelfServiceError::TooManyAttempts { retry_after } => {
            form.form_error(too_many_attempts(Some(*retry_after)))
        }
        _ => return Err(err.into()),
    }
    Ok(refused(err))
}

pub(crate) async fn home(
    State(state): State<AppState>,
    session: PageSession,
    csrf: CsrfToken,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    not_temporary(&session)?;
    Ok(home_page(&state, &session, csrf, app_code_form())
        .status(notice(query.notice.as_deref()))
        .render())
}

/// Begins (or begins again) the setup: a fresh key, shown on the page.
pub(crate) async fn begin(
    State(state): State<AppState>,
    session: PageSession,
    request_id: RequestId,
    _form: PageForm<TokenOnly>,
) -> Result<Response, PageError> {
    not_temporary(&session)?;
    second_factor::begin(&state, &session.0, request_id.origin()).await?;
    Ok(see_other(HOME, Vec::new()))
}

/// Confirms the setup with a code of the app: the recovery codes, once.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    session: PageSession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<CodeForm>,
) -> Result<Response, PageError> {
    not_temporary(&session)?;
    let PageForm { value, csrf } = form;
    let mut form = app_code_form();
    form.require(&[("code", &value.code, "Enter the code your app shows.")]);
    if form.has_errors() {
        return Ok(home_page(&state, &session, csrf, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    let origin = request_id.origin();
    match second_factor::confirm(&state, &session.0, address, value.code, origin).await {
        Ok(issued) => Ok(codes_page(csrf, issued.codes)),
        Err(err) => {
            let (status, retry_after) = refusal(&mut form, err)?;
            Ok(with_retry_after(
                home_page(&state, &session, csrf, form)
                    .code(status)
                    .render(),
                retry_after,
            ))
        }
    }
}

fn recovery_page(csrf: CsrfToken, form: Form) -> Page {
    Page::new("second_factor_form.html", "New recovery codes")
        .csrf(csrf)
        .signed_in()
        .form(form)
        .with(minijinja::context! {
            action => "/account/second-factor/recovery-codes",
            intro => "New recovery codes replace the ones you have: those stop working.",
            submit => "Make new recovery codes",
        })
}

pub(crate) async fn recovery_codes_form(
    Active(_session): Active<PageSession>,
    csrf: CsrfToken,
) -> Response {
    recovery_page(csrf, any_code_form()).render()
}

pub(crate) async fn recovery_codes(
    State(state): State<AppState>,
    Active(session): Active<PageSession>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<CodeForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = any_code_form();
    form.require(&[("code", &value.code, "Enter a code.")]);
    if form.has_errors() {
        return Ok(recovery_page(csrf, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    let origin = request_id.origin();
    match second_factor::regenerate_recovery_codes(&state, &session.0, address, value.code, origin)
        .await
    {
        Ok(issued) => Ok(codes_page(csrf, issued.codes)),
        Err(err) => {
            let (status, retry_after) = refusal(&mut form, err)?;
            Ok(with_retry_after(
                recovery_page(csrf, form).code(status).render(),
                retry_after,
            ))
        }
    }
}

fn remove_page(csrf: CsrfToken, form: Form) -> Page {
    Page::new("second_factor_form.html", "Turn off two-step verification")
        .csrf(csrf)
        .signed_in()
        .form(form)
        .with(minijinja::context! {
            action => "/account/second-factor/remove",
            intro => "Without it, your password alone logs in to your account.",
            submit => "Turn off",
        })
}

pub(crate) async fn remove_form_page(
    Active(_session): Active<PageSession>,
    csrf: CsrfToken,
) -> Response {
    remove_page(csrf, remove_form()).render()
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Active(session): Active<PageSession>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    form: PageForm<RemoveForm>,
) -> Result<Response, PageError> {
    let PageForm { value, csrf } = form;
    let mut form = remove_form();
    form.require(&[
        (
            "current_password",
            &value.current_password,
            "Enter your current password.",
        ),
        ("code", &value.code, "Enter a code."),
    ]);
    if form.has_errors() {
        return Ok(remove_page(csrf, form)
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .render());
    }
    let origin = request_id.origin();
    let result = second_factor::remove(
        &state,
        &session.0,
        address,
        value.current_password,
        value.code,
        origin,
    )
    .await;
    match result {
        Ok(_) => Ok(see_other(
            "/account/second-factor?notice=second_factor_removed",
            Vec::new(),
        )),
        Err(err) => {
            let (status, retry_after) = refusal(&mut form, err)?;
            Ok(with_retry_after(
                remove_page(csrf, form).code(status).render(),
                retry_after,
            ))
        }
    }
}
