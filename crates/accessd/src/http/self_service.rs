//! Endpoints for customers: sessions, their own email and password, and
//! the links from their emails.

use access_domain::{Actor, CustomerCommand, EmailAddress, Secret};
use access_security::OsRandomTokens;
use access_store::SessionRecord;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::{digest, ActiveCustomer, CustomerSession};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::commands::{self, new_password, parse, CommandContext, CommandRequest, Outcome};
use crate::http::dto::*;
use crate::http::extract::{ClientAddress, CommandHeaders, JsonBody, RequestId};
use crate::links;
use crate::state::AppState;

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or the password is wrong",
    )
}

/// Opens a session for a customer; the token is returned once.
async fn open(
    state: &AppState,
    customer: &access_domain::Customer,
    id: access_domain::CustomerId,
) -> ApiResult<SessionResponse> {
    use access_domain::TokenGenerator;
    let token = OsRandomTokens.generate();
    let now = state.now();
    let expires_at = now + state.session_ttl();
    state
        .store()
        .create_session(&SessionRecord {
            token_digest: hex::encode(digest(token.expose())),
            customer_id: id,
            login_epoch: customer.login_epoch(),
            created_at: now,
            expires_at,
        })
        .await?;
    Ok(SessionResponse {
        token: token.expose().to_string(),
        expires_at,
        must_change_password: customer.must_change_password(),
    })
}

/// Log in: email and password give a session token.
#[utoipa::path(post, path = "/v1/self/sessions", tag = "self-service",
    request_body = SessionRequest,
    responses((status = 201, body = SessionResponse),
              (status = 401, body = ErrorBody, description = "invalid_credentials"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")))]
pub async fn create_session(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    body: JsonBody<SessionRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let email = EmailAddress::parse(&req.email).ok();
    let account = email.as_ref().map_or_else(
        || req.email.trim().to_lowercase(),
        |e| e.normalized().to_string(),
    );
    state.throttle().attempt(&account, address)?;

    // The customer whose login this is (at most one has access with it).
    let mut found = None;
    if let Some(email) = &email {
        for id in state.store().customers_by_email(email).await? {
            let loaded = state.store().load(id).await?;
            if loaded.customer.has_access() {
                found = Some((id, loaded));
                break;
            }
        }
    }
    // Verify against the customer's hash, or a decoy one, so an unknown
    // email takes as long as a wrong password.
    let hash = found
        .as_ref()
        .and_then(|(_, l)| l.customer.password_hash().cloned())
        .unwrap_or_else(|| state.decoy_hash().clone());
    let services = state.services();
    let matches = services
        .hasher()
        .verify(&Secret::new(req.password), &hash)
        .await
        .map_err(ApiError::internal)?;
    let Some((id, loaded)) = found.filter(|(_, l)| matches && l.customer.has_password()) else {
        return Err(invalid_credentials());
    };
    let session = open(&state, &loaded.customer, id).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

/// End the current session.
#[utoipa::path(delete, path = "/v1/self/sessions/current", tag = "self-service",
    responses((status = 204, description = "Ended"), (status = 401, body = ErrorBody, description = "unauthenticated")),
    security(("customer_session" = [])))]
pub async fn delete_session(
    State(state): State<AppState>,
    session: CustomerSession,
) -> ApiResult<StatusCode> {
    state.store().delete_session(&session.token_digest).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The customer's own state.
#[utoipa::path(get, path = "/v1/self", tag = "self-service",
    responses((status = 200, body = CustomerView),
              (status = 401, body = ErrorBody, description = "unauthenticated"),
              (status = 403, body = ErrorBody, description = "must_change_password")),
    security(("customer_session" = [])))]
pub async fn me(
    State(state): State<AppState>,
    ActiveCustomer(session): ActiveCustomer,
) -> ApiResult<Response> {
    let view = CustomerView::new(
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
    request_body = SelfChangeEmailRequest,
    responses((status = 202, body = EmailChangeAccepted),
              (status = 403, body = ErrorBody, description = "wrong_password, must_change_password"),
              (status = 409, body = ErrorBody, description = "email_in_use"),
              (status = 422, body = ErrorBody, description = "email_mismatch, email_unchanged, invalid_email"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")),
    security(("customer_session" = [])))]
pub async fn change_email(
    State(state): State<AppState>,
    ActiveCustomer(session): ActiveCustomer,
    ClientAddress(address): ClientAddress,
    ctx: CommandContext,
    body: JsonBody<SelfChangeEmailRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let new_email = parse(EmailAddress::parse(&req.new_email))?;
    let confirm = parse(EmailAddress::parse(&req.new_email_confirm))?;
    state
        .throttle()
        .attempt(&session.customer_id.to_string(), address)?;
    let command = CustomerCommand::RequestEmailChange {
        current_password: Secret::new(req.current_password),
        new_email: new_email.clone(),
        new_email_confirm: confirm,
    };
    let request = ctx.request(
        session.actor(),
        session.customer_id,
        command,
        None,
        &body.digest,
        StatusCode::ACCEPTED,
    );
    match commands::execute(&state, request).await? {
        Outcome::Replayed(response) => Ok(response),
        Outcome::Executed(executed) => Ok((
            StatusCode::ACCEPTED,
            Json(EmailChangeAccepted {
                message: "Validation email sent successfully.".into(),
                detail: format!(
                    "To complete the pending email change, you must click the link provided in the validation email sent to {}.",
                    new_email.as_str()
                ),
                pending_email: new_email.as_str().to_string(),
                version: executed.version,
            }),
        )
            .into_response()),
    }
}

/// Change the password (also with a temporary one). Every session ends;
/// the answer carries a new one.
#[utoipa::path(post, path = "/v1/self/change-password", tag = "self-service",
    request_body = ChangePasswordRequest,
    responses((status = 200, body = PasswordChanged),
              (status = 403, body = ErrorBody, description = "wrong_password"),
              (status = 422, body = ErrorBody, description = "password_mismatch, weak_password"),
              (status = 429, body = ErrorBody, description = "too_many_attempts")),
    security(("customer_session" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    session: CustomerSession,
    ClientAddress(address): ClientAddress,
    request_id: RequestId,
    body: JsonBody<ChangePasswordRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let login = session
        .loaded
        .customer
        .email()
        .map(|e| e.as_str().to_string())
        .unwrap_or_default();
    let new_password = new_password(&req.new_password, &[login.as_str()])?;
    state
        .throttle()
        .attempt(&session.customer_id.to_string(), address)?;
    let request = CommandRequest {
        actor: session.actor(),
        request_id: request_id.0,
        reason: None,
        customer_id: session.customer_id,
        command: CustomerCommand::ChangePassword {
            current_password: Secret::new(req.current_password),
            new_password,
            new_password_confirm: Secret::new(req.new_password_confirm),
        },
        headers: CommandHeaders::default(),
        fingerprint: String::new(),
        success: StatusCode::OK,
    };
    let Outcome::Executed(executed) = commands::execute(&state, request).await? else {
        return Err(ApiError::internal("replay without an idempotency key"));
    };
    state
        .store()
        .delete_sessions_of(session.customer_id)
        .await?;
    let loaded = state.store().load(session.customer_id).await?;
    let new_session = open(&state, &loaded.customer, session.customer_id).await?;
    Ok(Json(PasswordChanged {
        customer_id: session.customer_id,
        version: executed.version,
        session: new_session,
    })
    .into_response())
}

fn link_command(raw: &str) -> ApiResult<(access_domain::CustomerId, Secret)> {
    links::split(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token",
            "the link is invalid, expired or already used",
        )
    })
}

async fn run_link_command(
    state: &AppState,
    request_id: RequestId,
    customer_id: access_domain::CustomerId,
    command: CustomerCommand,
) -> ApiResult<Response> {
    commands::respond(
        state,
        CommandRequest {
            actor: Actor::Customer { customer_id },
            request_id: request_id.0,
            reason: None,
            customer_id,
            command,
            headers: CommandHeaders::default(),
            fingerprint: String::new(),
            success: StatusCode::OK,
        },
    )
    .await
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
    body: JsonBody<ConfirmEmailRequest>,
) -> ApiResult<Response> {
    let (customer_id, token) = link_command(&body.value.token)?;
    let response = run_link_command(
        &state,
        request_id,
        customer_id,
        CustomerCommand::ConfirmEmailChange { token },
    )
    .await?;
    Ok(response)
}

/// Set a password with the token from the access notification's link.
#[utoipa::path(post, path = "/v1/self/setup-password", tag = "self-service",
    request_body = SetupPasswordRequest,
    responses((status = 200, body = CommandResponse),
              (status = 422, body = ErrorBody, description = "invalid_token, password_mismatch, weak_password")))]
pub async fn setup_password(
    State(state): State<AppState>,
    request_id: RequestId,
    body: JsonBody<SetupPasswordRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let (customer_id, token) = link_command(&req.token)?;
    let command = CustomerCommand::CompletePasswordSetup {
        token,
        password: new_password(&req.password, &[])?,
        password_confirm: Secret::new(req.password_confirm),
    };
    run_link_command(&state, request_id, customer_id, command).await
}
