//! Endpoints for customers: sessions, their own email and password, and
//! the links from their emails.

use access_store::prelude::*;
use std::net::IpAddr;

use access_domain::{Actor, CustomerCommand, CustomerId, EmailAddress, Secret};
use access_security::OsRandomTokens;
use access_store::{Loaded, SessionRecord};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::{digest, ActiveCustomer, CustomerSession};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::commands::{
    self, new_password, parse, CommandContext, CommandRequest, Outcome, ReplyShape,
};
use crate::http::dto::*;
use crate::http::extract::{ClientAddress, CommandHeaders, JsonBody, RequestId};
use crate::link_token;
use crate::state::AppState;
use crate::throttle::Reservation;

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or the password is wrong",
    )
}

/// Opens a session for a customer; the token is returned once.
pub(crate) async fn open(
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
    request_id: RequestId,
    body: JsonBody<SessionRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let (id, loaded) = check_login(&state, address, &req.email, req.password, &request_id).await?;
    let session = open(&state, &loaded.customer, id).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

/// Checks a login's email and password (for the API and the pages):
/// throttled per account and client address (the check is counted before
/// the hash is computed). Known, unknown and malformed emails take the
/// same path: the same statements (`Store::load_login`) and one argon2
/// verification, against a decoy hash made with the current parameters
/// when there is no customer. The customer whose login it is, or
/// `invalid_credentials`.
pub(crate) async fn check_login(
    state: &AppState,
    address: Option<IpAddr>,
    raw_email: &str,
    password: String,
    request_id: &RequestId,
) -> ApiResult<(CustomerId, Loaded)> {
    let account = EmailAddress::parse(raw_email).map_or_else(
        |_| raw_email.trim().to_lowercase(),
        |e| e.normalized().to_string(),
    );
    let reserved = state
        .throttle()
        .attempt(&account, address, state.now())
        .await?;
    let password = Secret::new(password);
    let checked = verify_login(state, &account, &password).await;
    match checked {
        Ok(Some((found, rehash))) => {
            state.throttle().succeeded(&reserved).await;
            if rehash {
                upgrade_password_hash(state, found.0, password, request_id).await;
            }
            Ok(found)
        }
        Ok(None) => Err(invalid_credentials()),
        Err(e) => {
            state.throttle().undecided(&reserved, state.now()).await;
            Err(e)
        }
    }
}

/// The customer with access whose login `account` is and whose password
/// `password` is (and whether its hash needs upgrading), or None.
async fn verify_login(
    state: &AppState,
    account: &str,
    password: &Secret,
) -> ApiResult<Option<((CustomerId, Loaded), bool)>> {
    let found = state
        .store()
        .load_login(account)
        .await?
        .filter(|(_, l)| l.customer.has_access());
    let hash = found
        .as_ref()
        .and_then(|(_, l)| l.customer.password_hash().cloned())
        .unwrap_or_else(|| state.decoy_hash().clone());
    let services = state.services();
    let matches = services
        .hasher()
        .verify(password, &hash)
        .await
        .map_err(ApiError::internal)?;
    Ok(found
        .filter(|(_, l)| matches && l.customer.has_password())
        .map(|found| (found, services.hasher().needs_rehash(&hash))))
}

/// After a successful login with a hash made under older parameters: the
/// password is hashed again with the current ones (`PasswordRehashed`, by
/// the system, audited). The login goes ahead if this fails (it is tried
/// again at the next login); the failure is logged without the password.
async fn upgrade_password_hash(
    state: &AppState,
    customer_id: CustomerId,
    password: Secret,
    request_id: &RequestId,
) {
    let request = CommandRequest {
        actor: Actor::System {
            name: "login".to_string(),
        },
        request_id: request_id.0.clone(),
        reason: Some("password hash upgraded to the current parameters".to_string()),
        customer_id,
        command: CustomerCommand::UpgradePasswordHash { password },
        headers: CommandHeaders::default(),
        fingerprint: String::new(),
        success: StatusCode::OK,
        shape: Default::default(),
    };
    match commands::execute(state, request).await {
        Ok(_) => tracing::info!(%customer_id, "password hash upgraded at login"),
        Err(err) => tracing::warn!(
            %customer_id,
            code = err.code,
            "password hash not upgraded at login; tried again at the next one"
        ),
    }
}

/// Feeds the outcome of a current-password check to the account's soft
/// lock: a wrong password stays counted, a right one resets it, and any
/// other refusal gives the check back (the command may have stopped
/// before the password was compared).
async fn note_password_check(
    state: &AppState,
    reserved: &Reservation,
    refusal: Option<&'static str>,
) {
    match refusal {
        Some("wrong_password") => {}
        None => state.throttle().succeeded(reserved).await,
        Some(_) => state.throttle().undecided(reserved, state.now()).await,
    }
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
    let shape = ReplyShape::EmailChangeAccepted {
        new_email: new_email.as_str().to_string(),
    };
    let outcome = request_email_change(
        &state,
        &session,
        address,
        req.current_password,
        new_email.clone(),
        confirm,
        |command| CommandRequest {
            shape: shape.clone(),
            ..ctx.request(
                session.actor(),
                session.customer_id,
                command,
                None,
                &body.digest,
                StatusCode::ACCEPTED,
            )
        },
    )
    .await?;
    Ok(commands::answer_as(outcome, StatusCode::ACCEPTED, &shape))
}

/// Runs a self-service email change (for the API and the pages): takes a
/// password attempt from the throttle, then runs `RequestEmailChange` as
/// the request that `request` makes of it.
pub(crate) async fn request_email_change(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    current_password: String,
    new_email: EmailAddress,
    new_email_confirm: EmailAddress,
    request: impl FnOnce(CustomerCommand) -> CommandRequest,
) -> ApiResult<Outcome> {
    let reserved = state
        .throttle()
        .attempt(&session.customer_id.to_string(), address, state.now())
        .await?;
    let command = CustomerCommand::RequestEmailChange {
        current_password: Secret::new(current_password),
        new_email,
        new_email_confirm,
    };
    let result = commands::execute(state, request(command)).await;
    // Only the error code crosses the await (a response is not `Sync`).
    note_password_check(state, &reserved, result.as_ref().err().map(|e| e.code)).await;
    result
}

/// The notice's answer to an email change request.
pub(crate) fn email_change_accepted(new_email: &str, version: u64) -> EmailChangeAccepted {
    EmailChangeAccepted {
        message: "Validation email sent successfully.".into(),
        detail: format!(
            "To complete the pending email change, you must click the link provided in the validation email sent to {new_email}."
        ),
        pending_email: new_email.to_string(),
        version,
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
    let (version, new_session) = change_password_and_reopen(
        &state,
        &session,
        address,
        request_id,
        req.current_password,
        &req.new_password,
        req.new_password_confirm,
    )
    .await?;
    Ok(Json(PasswordChanged {
        customer_id: session.customer_id,
        version,
        session: new_session,
    })
    .into_response())
}

/// Changes a customer's password (for the API and the pages): every
/// session of the customer ends and a new one is opened for the device
/// that changed it. The new version and session.
pub(crate) async fn change_password_and_reopen(
    state: &AppState,
    session: &CustomerSession,
    address: Option<IpAddr>,
    request_id: RequestId,
    current_password: String,
    new_password_raw: &str,
    new_password_confirm: String,
) -> ApiResult<(u64, SessionResponse)> {
    let login = session
        .loaded
        .customer
        .email()
        .map(|e| e.as_str().to_string())
        .unwrap_or_default();
    let new_password = new_password(new_password_raw, &[login.as_str()])?;
    let reserved = state
        .throttle()
        .attempt(&session.customer_id.to_string(), address, state.now())
        .await?;
    let request = CommandRequest {
        actor: session.actor(),
        request_id: request_id.0,
        reason: None,
        customer_id: session.customer_id,
        command: CustomerCommand::ChangePassword {
            current_password: Secret::new(current_password),
            new_password,
            new_password_confirm: Secret::new(new_password_confirm),
        },
        headers: CommandHeaders::default(),
        fingerprint: String::new(),
        success: StatusCode::OK,
        shape: Default::default(),
    };
    let result = commands::execute(state, request).await;
    // Only the error code crosses the await (a response is not `Sync`).
    note_password_check(state, &reserved, result.as_ref().err().map(|e| e.code)).await;
    let Outcome::Executed(executed) = result? else {
        return Err(ApiError::internal("replay without an idempotency key"));
    };
    state
        .store()
        .delete_sessions_of(session.customer_id)
        .await?;
    let loaded = state.store().load(session.customer_id).await?;
    let new_session = open(state, &loaded.customer, session.customer_id).await?;
    Ok((executed.version, new_session))
}

/// The customer and secret of a link token, or `invalid_token`.
pub(crate) fn link_command(raw: &str) -> ApiResult<(access_domain::CustomerId, Secret)> {
    link_token::split(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token",
            "the link is invalid, expired or already used",
        )
    })
}

/// Runs the command of a link (for the API and the pages); the customer
/// is the actor.
pub(crate) async fn run_link(
    state: &AppState,
    request_id: RequestId,
    address: Option<IpAddr>,
    customer_id: access_domain::CustomerId,
    command: CustomerCommand,
) -> ApiResult<Outcome> {
    // A wrong link counts against the customer it names and the client's
    // address, so tokens cannot be guessed quickly; a right one resets.
    let account = format!("link:{customer_id}");
    let reserved = state
        .throttle()
        .attempt(&account, address, state.now())
        .await?;
    let result = commands::execute(
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
            shape: Default::default(),
        },
    )
    .await;
    match result.as_ref().err().map(|e| e.code) {
        Some("invalid_token") => {}
        None => state.throttle().succeeded(&reserved).await,
        Some(_) => state.throttle().undecided(&reserved, state.now()).await,
    }
    result
}

async fn run_link_command(
    state: &AppState,
    request_id: RequestId,
    address: Option<IpAddr>,
    customer_id: access_domain::CustomerId,
    command: CustomerCommand,
) -> ApiResult<Response> {
    let outcome = run_link(state, request_id, address, customer_id, command).await?;
    Ok(commands::answer(outcome, StatusCode::OK))
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
    let (customer_id, token) = link_command(&body.value.token)?;
    let response = run_link_command(
        &state,
        request_id,
        address,
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
    ClientAddress(address): ClientAddress,
    body: JsonBody<SetupPasswordRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let (customer_id, command) =
        setup_password_command(&req.token, &req.password, req.password_confirm)?;
    run_link_command(&state, request_id, address, customer_id, command).await
}

/// The command of a setup link (for the API and the pages).
pub(crate) fn setup_password_command(
    raw_token: &str,
    password: &str,
    password_confirm: String,
) -> ApiResult<(access_domain::CustomerId, CustomerCommand)> {
    let (customer_id, token) = link_command(raw_token)?;
    let command = CustomerCommand::CompletePasswordSetup {
        token,
        password: new_password(password, &[])?,
        password_confirm: Secret::new(password_confirm),
    };
    Ok((customer_id, command))
}
