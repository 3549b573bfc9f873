//! Endpoints for customers: sessions, their own email and password, and
//! the links from their emails. Each parses its body, calls its use case
//! ([`crate::usecase`]) and answers in JSON.

use access_domain::EmailAddress;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{ApiResult, ErrorBody};
use crate::http::commands::{self, parse, CommandContext};
use crate::http::dto::*;
use crate::http::extract::{Active, AnySession, ClientAddress, JsonBody, RequestId, SessionOf};
use crate::state::AppState;
use crate::usecase::account::{self, EmailChange, PasswordChange};
use crate::usecase::reply::ReplyShape;
use crate::usecase::session::CustomerSession;
use crate::usecase::{links, login, second_factor, session};

/// Log in: email and password give a session token. For a customer with
/// a second factor the session only waits for its code
/// (`second_factor_required: true`, 5 minutes): `POST
/// /v1/self/sessions/verify`.
#[utoipa::path(post, path = "/v1/self/sessions", tag = "self-service",
    request_body = SessionRequest,
    responses((status = 201, body = SessionResponse),
              (status = 401, body = ErrorBody, description = "invalid_credentials"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn create_session(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<SessionRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let (id, loaded) = login::check_login(
        &state,
        address,
        &req.email,
        req.password,
        &request_id.origin(),
    )
    .await?;
    let session = session::open_after_password(&state, &loaded.customer, id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, "/v1/self/sessions/current")],
        Json(session),
    )
        .into_response())
}

/// End the current session (also one waiting for the second factor).
#[utoipa::path(delete, path = "/v1/self/sessions/current", tag = "self-service",
    responses((status = 204, description = "Ended"), (status = 401, body = ErrorBody, description = "unauthenticated")))]
pub async fn delete_session(
    State(state): State<AppState>,
    AnySession(session): AnySession,
) -> ApiResult<StatusCode> {
    session::end_digest(&state, &session.token_digest).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The second step of a login: a code of the authenticator app (6 digits)
/// or an unused recovery code, with the session the password opened. That
/// session ends; the answer is a new, full one. A wrong code counts
/// against the same allowance as a wrong password (429 beyond it).
#[utoipa::path(post, path = "/v1/self/sessions/verify", tag = "self-service",
    request_body = SecondFactorCodeRequest,
    responses((status = 201, body = SessionResponse),
              (status = 401, body = ErrorBody, description = "unauthenticated (no session, or its 5 minutes are over)"),
              (status = 403, body = ErrorBody, description = "invalid_code"),
              (status = 409, body = ErrorBody, description = "no_second_factor_pending"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn verify_session(
    State(state): State<AppState>,
    AnySession(waiting): AnySession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<SecondFactorCodeRequest>,
) -> ApiResult<Response> {
    let session = second_factor::verify_login(
        &state,
        &waiting,
        address,
        body.value.code,
        request_id.origin(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, "/v1/self/sessions/current")],
        Json(session),
    )
        .into_response())
}

/// Begin enrolling an authenticator app: a fresh secret (base32, and as
/// an `otpauth://` URI for a QR code), pending until a code confirms it; a
/// newer one replaces an older pending one. Shown to this customer only,
/// never stored in plain; `Idempotency-Key` is not honoured here.
#[utoipa::path(post, path = "/v1/self/second-factor/totp", tag = "self-service",
    responses((status = 201, body = TotpEnrollment),
              (status = 401, body = ErrorBody, description = "unauthenticated"),
              (status = 403, body = ErrorBody, description = "must_change_password, second_factor_required"),
              (status = 409, body = ErrorBody, description = "second_factor_already_enrolled")))]
pub async fn begin_totp(
    State(state): State<AppState>,
    session: CustomerSession,
    request_id: RequestId,
) -> ApiResult<Response> {
    not_temporary(&session)?;
    let enrollment = second_factor::begin(&state, &session, request_id.origin()).await?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrollment {
            secret: enrollment.secret,
            otpauth_uri: enrollment.otpauth_uri,
        }),
    )
        .into_response())
}

/// Confirm the enrollment with a code of the app: the second factor is on
/// from the next login, and 10 recovery codes are answered, this once.
#[utoipa::path(post, path = "/v1/self/second-factor/totp/confirm", tag = "self-service",
    request_body = SecondFactorCodeRequest,
    responses((status = 200, body = RecoveryCodes),
              (status = 401, body = ErrorBody, description = "unauthenticated"),
              (status = 403, body = ErrorBody, description = "invalid_code, must_change_password, second_factor_required"),
              (status = 409, body = ErrorBody, description = "second_factor_already_enrolled"),
              (status = 422, body = ErrorBody, description = "no_pending_enrollment"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    session: CustomerSession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<SecondFactorCodeRequest>,
) -> ApiResult<Response> {
    not_temporary(&session)?;
    let issued = second_factor::confirm(
        &state,
        &session,
        address,
        body.value.code,
        request_id.origin(),
    )
    .await?;
    Ok(recovery_codes(issued))
}

/// New recovery codes, with a code of the app or an unused recovery code:
/// the earlier ones stop working. Answered this once.
#[utoipa::path(post, path = "/v1/self/second-factor/recovery-codes", tag = "self-service",
    request_body = SecondFactorCodeRequest,
    responses((status = 200, body = RecoveryCodes),
              (status = 401, body = ErrorBody, description = "unauthenticated"),
              (status = 403, body = ErrorBody, description = "invalid_code, second_factor_required"),
              (status = 422, body = ErrorBody, description = "no_second_factor"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Active(session): Active<CustomerSession>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<SecondFactorCodeRequest>,
) -> ApiResult<Response> {
    let issued = second_factor::regenerate_recovery_codes(
        &state,
        &session,
        address,
        body.value.code,
        request_id.origin(),
    )
    .await?;
    Ok(recovery_codes(issued))
}

/// Remove the second factor, with the current password and a code (of
/// the app, or an unused recovery code).
#[utoipa::path(delete, path = "/v1/self/second-factor/totp", tag = "self-service",
    request_body = RemoveTotpRequest,
    responses((status = 200, body = CommandResponse),
              (status = 401, body = ErrorBody, description = "unauthenticated"),
              (status = 403, body = ErrorBody, description = "wrong_password, invalid_code, second_factor_required"),
              (status = 422, body = ErrorBody, description = "no_second_factor"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn remove_totp(
    State(state): State<AppState>,
    Active(session): Active<CustomerSession>,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<RemoveTotpRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let version = second_factor::remove(
        &state,
        &session,
        address,
        req.current_password,
        req.code,
        request_id.origin(),
    )
    .await?;
    Ok(commands::with_etag(
        Json(CommandResponse {
            customer_id: session.customer_id.as_uuid(),
            version,
        })
        .into_response(),
        version,
    ))
}

/// A temporary password is changed before a second factor is enrolled.
fn not_temporary(session: &CustomerSession) -> ApiResult<()> {
    if session.loaded.customer.must_change_password() {
        return Err(<CustomerSession as SessionOf>::must_change_password());
    }
    Ok(())
}

fn recovery_codes(issued: second_factor::IssuedCodes) -> Response {
    commands::with_etag(
        Json(RecoveryCodes {
            recovery_codes: issued.codes,
            version: issued.version,
        })
        .into_response(),
        issued.version,
    )
}

/// The customer's own state.
#[utoipa::path(get, path = "/v1/self", tag = "self-service",
    responses((status = 200, body = CustomerView),
              (status = 401, body = ErrorBody, description = "unauthenticated"),
              (status = 403, body = ErrorBody, description = "must_change_password")))]
pub async fn me(
    State(state): State<AppState>,
    Active(session): Active<CustomerSession>,
) -> ApiResult<Response> {
    let view = crate::http::dto::customer_view(
        session.customer_id,
        &session.loaded.customer,
        session.loaded.version,
        state.now(),
    );
    Ok(commands::with_etag(
        Json(view).into_response(),
        session.loaded.version,
    ))
}

/// Ask to move the login to a new address: a validation link goes to the
/// new address, a notice to the old one.
#[utoipa::path(post, path = "/v1/self/change-email", tag = "self-service",
    operation_id = "request_email_change",
    request_body = SelfChangeEmailRequest,
    responses((status = 202, body = EmailChangeAccepted),
              (status = 403, body = ErrorBody, description = "wrong_password, must_change_password"),
              (status = 409, body = ErrorBody, description = "email_in_use"),
              (status = 422, body = ErrorBody, description = "email_mismatch, email_unchanged, invalid_email"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn change_email(
    State(state): State<AppState>,
    Active(session): Active<CustomerSession>,
    ClientAddress(address): ClientAddress,
    ctx: CommandContext,
    body: JsonBody<SelfChangeEmailRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let change = EmailChange {
        new_email: parse(EmailAddress::parse(&req.new_email))?,
        new_email_confirm: parse(EmailAddress::parse(&req.new_email_confirm))?,
        current_password: req.current_password,
    };
    let shape = ReplyShape::EmailChangeAccepted {
        new_email: change.new_email.as_str().to_string(),
    };
    let origin = ctx.origin(&body.digest);
    let outcome = account::request_email_change(&state, &session, address, change, origin).await?;
    Ok(outcome.reply(StatusCode::ACCEPTED, &shape).into_response())
}

/// Change the password (also with a temporary one). Every session ends;
/// the answer carries a new one.
#[utoipa::path(post, path = "/v1/self/change-password", tag = "self-service",
    request_body = ChangePasswordRequest,
    responses((status = 200, body = PasswordChanged),
              (status = 403, body = ErrorBody, description = "wrong_password"),
              (status = 422, body = ErrorBody, description = "password_mismatch, weak_password"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn change_password(
    State(state): State<AppState>,
    session: CustomerSession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<ChangePasswordRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let change = PasswordChange {
        current_password: req.current_password,
        new_password: req.new_password,
        new_password_confirm: req.new_password_confirm,
    };
    let (version, new_session) =
        account::change_password(&state, &session, address, request_id.origin(), change).await?;
    Ok(Json(PasswordChanged {
        customer_id: session.customer_id.as_uuid(),
        version,
        session: new_session,
    })
    .into_response())
}

/// Complete a pending email change with the token from the validation link.
#[utoipa::path(post, path = "/v1/self/confirm-email", tag = "self-service",
    request_body = ConfirmEmailRequest,
    responses((status = 200, body = CommandResponse),
              (status = 409, body = ErrorBody, description = "email_in_use"),
              (status = 422, body = ErrorBody, description = "invalid_token")))]
pub async fn confirm_email(
    State(state): State<AppState>,
    request_id: RequestId,
    ClientAddress(address): ClientAddress,
    body: JsonBody<ConfirmEmailRequest>,
) -> ApiResult<Response> {
    let (_, outcome) =
        links::confirm_email(&state, request_id.origin(), address, &body.value.token).await?;
    Ok(outcome
        .reply(StatusCode::OK, &ReplyShape::Command)
        .into_response())
}

/// Set a password with the token from the access notification's link.
#[utoipa::path(post, path = "/v1/self/setup-password", tag = "self-service",
    request_body = SetupPasswordRequest,
    responses((status = 200, body = CommandResponse),
              (status = 422, body = ErrorBody, description = "invalid_token, password_mismatch, weak_password")))]
pub async fn setup_password(
    State(state): State<AppState>,
    request_id: RequestId,
    ClientAddress(address): ClientAddress,
    body: JsonBody<SetupPasswordRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let outcome = links::setup_password(
        &state,
        request_id.origin(),
        address,
        &req.token,
        &req.password,
        req.password_confirm,
    )
    .await?;
    Ok(outcome
        .reply(StatusCode::OK, &ReplyShape::Command)
        .into_response())
}
