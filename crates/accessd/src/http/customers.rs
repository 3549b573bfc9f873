//! Endpoints for upstream services and auditors: commands on customers and
//! reads of their state and history.

use access_domain::{CustomerCommand, CustomerId, CustomerName, EmailAddress, Role};
use access_store::prelude::*;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{
    Caller, ForgetCustomers, ReadHistory, ReadState, ResetSecondFactors, SendCommands,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::commands::{self, credential, new_password, parse, CommandContext, OnCustomer};
use crate::http::dto::*;
use crate::http::extract::{customer_id, ApiQuery, JsonBody, PathId};
use crate::http::paging;
use crate::state::AppState;
use crate::usecase::command;

/// Register a customer (without access).
#[utoipa::path(post, path = "/v1/customers", tag = "commands",
    request_body = RegisterRequest,
    responses(
        (status = 201, body = CommandResponse, description = "Registered"),
        (status = 409, body = ErrorBody, description = "customer_exists"),
        (status = 422, body = ErrorBody, description = "invalid_email, invalid_name"),
    ))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller<SendCommands>,
    ctx: CommandContext,
    body: JsonBody<RegisterRequest>,
) -> ApiResult<Response> {
    let req = body.value;
    let email = parse(EmailAddress::parse(&req.email))?;
    let name = req.name.as_deref().map(CustomerName::parse).transpose();
    let name = parse(name)?;
    let id = match req.customer_id.as_deref() {
        Some(raw) => parse(raw.parse())?,
        None => CustomerId::new_random(),
    };
    let command = CustomerCommand::RegisterCustomer {
        customer_id: id,
        email,
        name,
    };
    commands::respond(
        &state,
        ctx.request(
            caller.actor(),
            id,
            command,
            req.reason,
            &body.digest,
            StatusCode::CREATED,
        ),
    )
    .await
}

/// Change the login email. With access, a password or a notification is
/// needed (the notice's rule).
#[utoipa::path(post, path = "/v1/customers/{id}/change-email", tag = "commands",
    request_body = ChangeEmailRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, body = CommandResponse),
        (status = 404, body = ErrorBody, description = "customer_not_found"),
        (status = 409, body = ErrorBody, description = "email_in_use, concurrent_modification"),
        (status = 412, body = ErrorBody, description = "version_mismatch"),
        (status = 422, body = ErrorBody, description = "login_has_no_password, password_mismatch, invalid_email, weak_password, no_access"),
    ))]
pub async fn change_email(
    on: OnCustomer<SendCommands>,
    body: JsonBody<ChangeEmailRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let req = body.value;
    let email = parse(EmailAddress::parse(&req.email))?;
    let credential = credential(
        req.password,
        req.password_confirm,
        req.send_notification,
        &[email.as_str()],
    )?;
    let command = CustomerCommand::ChangeEmail { email, credential };
    on.run(id, command, req.reason, &body.digest).await
}

/// Give the customer portal access, with a password or a notification.
#[utoipa::path(post, path = "/v1/customers/{id}/grant-access", tag = "commands",
    request_body = GrantAccessRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, body = CommandResponse),
        (status = 404, body = ErrorBody, description = "customer_not_found"),
        (status = 409, body = ErrorBody, description = "email_in_use, concurrent_modification"),
        (status = 422, body = ErrorBody, description = "login_has_no_password, access_already_granted, password_mismatch, weak_password"),
    ))]
pub async fn grant_access(
    on: OnCustomer<SendCommands>,
    body: JsonBody<GrantAccessRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let req = body.value;
    let role = match req.role.as_deref() {
        Some(r) => parse(r.parse::<Role>())?,
        None => Role::CustomerCenter,
    };
    let credential = credential(
        req.password,
        req.password_confirm,
        req.send_notification,
        &[],
    )?;
    let command = CustomerCommand::GrantAccess { role, credential };
    on.run(id, command, req.reason, &body.digest).await
}

/// Assign a temporary password.
#[utoipa::path(post, path = "/v1/customers/{id}/set-password", tag = "commands",
    request_body = SetPasswordRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, body = CommandResponse),
        (status = 422, body = ErrorBody, description = "no_access, password_mismatch, weak_password"),
    ))]
pub async fn set_password(
    on: OnCustomer<SendCommands>,
    body: JsonBody<SetPasswordRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let req = body.value;
    let command = CustomerCommand::SetPassword {
        password: new_password(&req.password, &[])?,
        password_confirm: req.password_confirm.into(),
        send_notification: req.send_notification.unwrap_or(false),
    };
    on.run(id, command, req.reason, &body.digest).await
}

/// Send a new access notification with a password-setup link (voids the
/// earlier links).
#[utoipa::path(post, path = "/v1/customers/{id}/send-access-notification", tag = "commands",
    request_body = ReasonRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses((status = 200, body = CommandResponse), (status = 422, body = ErrorBody, description = "no_access")))]
pub async fn send_access_notification(
    on: OnCustomer<SendCommands>,
    body: JsonBody<ReasonRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let command = CustomerCommand::SendAccessNotification;
    on.run(id, command, body.value.reason, &body.digest).await
}

/// Remove the customer's access (password, links and pending changes are
/// discarded; sessions end).
#[utoipa::path(post, path = "/v1/customers/{id}/revoke-access", tag = "commands",
    request_body = ReasonRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses((status = 200, body = CommandResponse), (status = 422, body = ErrorBody, description = "no_access")))]
pub async fn revoke_access(
    on: OnCustomer<SendCommands>,
    body: JsonBody<ReasonRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let origin = on.ctx.origin(&body.digest);
    let actor = on.caller.actor();
    let reply = command::revoke_access(&on.state, actor, id, body.value.reason, origin).await?;
    Ok(reply.into_response())
}

/// Reset the customer's second factor (a lost phone and lost recovery
/// codes): the TOTP secret and the recovery codes are removed, every
/// session ends, and the customer gets a notice at the login email. The
/// customer can then log in with the password alone and enroll again.
#[utoipa::path(post, path = "/v1/customers/{id}/reset-second-factor", tag = "commands",
    request_body = ReasonRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses((status = 200, body = CommandResponse),
              (status = 403, body = ErrorBody, description = "forbidden (admin only)"),
              (status = 404, body = ErrorBody, description = "customer_not_found"),
              (status = 422, body = ErrorBody, description = "no_second_factor, no_access")))]
pub async fn reset_second_factor(
    on: OnCustomer<ResetSecondFactors>,
    body: JsonBody<ReasonRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let state = on.state.clone();
    let reason = body.value.reason.clone();
    let command = CustomerCommand::ResetSecondFactor {
        reason: reason.clone(),
    };
    let response = on.run(id, command, reason, &body.digest).await?;
    if response.status().is_success() {
        // The reset is a new login: sessions would end at their next use;
        // free them now (a replay frees them too).
        if let Err(e) = state.store().delete_sessions_of(id).await {
            tracing::warn!(customer_id = %id, error = %e, "reset, but freeing the customer's sessions failed; they end at their next use");
        }
    }
    Ok(response)
}

/// Forget the customer (right to erasure): access is revoked, the
/// customer's data key destroyed and `CustomerForgotten` recorded. From
/// then on its personal data reads as `[forgotten]` everywhere, and every
/// command on it answers 410 `customer_forgotten`. Irreversible.
#[utoipa::path(post, path = "/v1/customers/{id}/forget", tag = "commands",
    request_body = ForgetRequest,
    params(("id" = uuid::Uuid, Path, description = "Customer id")),
    responses((status = 200, body = CommandResponse),
              (status = 403, body = ErrorBody, description = "forbidden (admin only)"),
              (status = 404, body = ErrorBody, description = "customer_not_found"),
              (status = 410, body = ErrorBody, description = "customer_forgotten (already)"),
              (status = 422, body = ErrorBody, description = "reason_required")))]
pub async fn forget_customer(
    on: OnCustomer<ForgetCustomers>,
    body: JsonBody<ForgetRequest>,
) -> ApiResult<Response> {
    let id = on.customer_id()?;
    let reason = body.value.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
            "say why the customer is forgotten in `reason`",
        ));
    }
    on.run(
        id,
        CustomerCommand::ForgetCustomer,
        Some(reason),
        &body.digest,
    )
    .await
}

/// A customer's current state, or with `as_of` its state at that instant.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "reads",
    params(("id" = uuid::Uuid, Path, description = "Customer id"), crate::http::history::AsOfQuery),
    responses((status = 200, body = CustomerView, headers(("ETag" = String, description = "The version"))),
              (status = 404, body = ErrorBody, description = "customer_not_found")))]
pub async fn get_customer(
    State(state): State<AppState>,
    _caller: Caller<ReadState>,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<crate::http::history::AsOfQuery>,
) -> ApiResult<Response> {
    let id = customer_id(&id)?;
    if let Some(as_of) = query.instant()? {
        return crate::http::history::customer_as_of(&state, id, as_of).await;
    }
    state.projections_caught_up().await?;
    let row = access_projections::db::access_state(state.store(), id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(ApiError::customer_not_found)?;
    let view = crate::http::dto::customer_view_from_row(&row, state.now());
    Ok(commands::with_etag(Json(view).into_response(), row.version))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The customers with this login email (case-insensitive); not with
    /// the other parameters.
    #[param(format = Email, max_length = 254)]
    pub email: Option<String>,
    /// `true`: only customers with portal access; `false`: only those
    /// without.
    #[param(value_type = Option<bool>)]
    pub has_access: Option<String>,
    /// Only customers changed at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub updated_since: Option<String>,
    /// Customers per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` (or `resume_cursor`) of an earlier page.
    #[param(max_length = 200)]
    pub cursor: Option<String>,
}

/// The customer list, in the order of their last change (a reconciling
/// service's full pass, then the changes since), or with `email` the
/// customers with that login email.
#[utoipa::path(get, path = "/v1/customers", tag = "reads",
    params(ListQuery),
    responses((status = 200, body = CustomerList),
              (status = 400, body = ErrorBody, description = "malformed_request (a bad `has_access`, `updated_since`, `limit` or `cursor`, or `email` with them)"),
              (status = 422, body = ErrorBody, description = "invalid_email"),
              (status = 503, body = ErrorBody, description = "unavailable (projections behind)")))]
pub async fn find_customers(
    State(state): State<AppState>,
    _caller: Caller<ReadState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<CustomerList>> {
    let now = state.now();
    if let Some(email) = &query.email {
        if query.has_access.is_some()
            || query.updated_since.is_some()
            || query.limit.is_some()
            || query.cursor.is_some()
        {
            return Err(ApiError::malformed(
                "`email` is a lookup: not with `has_access`, `updated_since`, `limit` or `cursor`",
            ));
        }
        let email = parse(EmailAddress::parse(email))?;
        state.projections_caught_up().await?;
        let rows = access_projections::db::access_state_by_email(state.store(), &email)
            .await
            .map_err(ApiError::from)?;
        return Ok(Json(CustomerList {
            customers: rows
                .iter()
                .map(|r| crate::http::dto::customer_view_from_row(r, now))
                .collect(),
            next_cursor: None,
            resume_cursor: None,
        }));
    }
    let has_access = match query.has_access.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::malformed("`has_access` must be true or false")),
    };
    let updated_since = query
        .updated_since
        .as_deref()
        .map(|raw| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::malformed(
                        "`updated_since` must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z",
                    )
                })
        })
        .transpose()?;
    let limit = paging::limit(query.limit.as_deref())?;
    let after = paging::cursor(query.cursor.as_deref(), crate::http::audit::parse_position)?;
    let filter = access_projections::CustomerFilter {
        has_access,
        updated_since,
        after,
    };
    state.projections_caught_up().await?;
    // One more row than asked tells whether there is a next page.
    let mut rows = access_projections::db::customer_page(state.store(), &filter, limit + 1)
        .await
        .map_err(ApiError::from)?;
    let more = paging::cut(&mut rows, limit);
    let last = rows.last().map(|r| r.last_change.to_string());
    Ok(Json(CustomerList {
        customers: rows
            .iter()
            .map(|r| crate::http::dto::customer_view_from_row(r, now))
            .collect(),
        next_cursor: last.clone().filter(|_| more),
        resume_cursor: last.or_else(|| after.map(|p| p.to_string())),
    }))
}

/// The formats of a customer's events.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the query holds the format as text
pub enum EventsFormat {
    Json,
    Jsonl,
}

#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `json` (default): one `EventList` document; `jsonl`: one `EventView`
    /// per line (`application/x-ndjson`), the input of `accessctl replay`
    /// (every event, unpaged).
    #[param(value_type = Option<EventsFormat>)]
    pub format: Option<String>,
    /// Events per page, 1 to 1000 (default 100); JSON only.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A customer's stored events, with metadata; password hashes and token
/// digests are left out.
#[utoipa::path(get, path = "/v1/customers/{id}/events", tag = "reads",
    params(("id" = uuid::Uuid, Path, description = "Customer id"), EventsQuery),
    responses((status = 200, description = "`EventList`; with `format=jsonl`, one `EventView` per line",
                content((EventList = "application/json"), (EventView = "application/x-ndjson"))),
              (status = 400, body = ErrorBody, description = "malformed_request (unknown format, bad `limit` or `cursor`)"),
              (status = 404, body = ErrorBody, description = "customer_not_found")))]
pub async fn customer_events(
    State(state): State<AppState>,
    _caller: Caller<ReadHistory>,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let id = customer_id(&id)?;
    let lines = match query.format.as_deref().unwrap_or("json") {
        "json" => false,
        "jsonl" => true,
        other => {
            return Err(ApiError::malformed(format!(
                "unknown format `{}`: json or jsonl",
                other.chars().take(16).collect::<String>()
            )))
        }
    };
    let limit = paging::limit(query.limit.as_deref())?;
    // The cursor is the sequence of the previous page's last event: a
    // stream only grows at its end, so pages never shift.
    let after = paging::cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?.unwrap_or(0);
    if lines && (query.limit.is_some() || query.cursor.is_some()) {
        return Err(ApiError::malformed(
            "`limit` and `cursor` page the JSON format; `jsonl` is every event",
        ));
    }
    let events = state.store().events_of(id).await?;
    if events.is_empty() {
        return Err(ApiError::customer_not_found());
    }
    let mut next_cursor = None;
    let events = if lines {
        events
    } else {
        let mut page: Vec<_> = events.into_iter().filter(|e| e.sequence > after).collect();
        if paging::cut(&mut page, limit) {
            next_cursor = page.last().map(|e| e.sequence.to_string());
        }
        page
    };
    let events: Vec<EventView> = events
        .into_iter()
        .map(|e| {
            let data = serde_json::to_value(&e.event)
                .ok()
                .and_then(|v| v.get(e.event.type_name()).cloned())
                .unwrap_or_default();
            EventView {
                sequence: e.sequence,
                position: e.position.to_string(),
                event_type: e.event.type_name().to_string(),
                event_version: e.event.version().to_string(),
                recorded_at: e.recorded_at,
                metadata: e.metadata,
                data: without_secrets(data),
            }
        })
        .collect();
    if !lines {
        return Ok(Json(EventList {
            customer_id: id.as_uuid(),
            events,
            next_cursor,
        })
        .into_response());
    }
    // One customer's stream is loaded whole anyway: no need to stream it.
    let mut body = Vec::with_capacity(events.len() * 512);
    for event in &events {
        serde_json::to_writer(&mut body, event).map_err(ApiError::internal)?;
        body.push(b'\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"customer-{id}-events.jsonl\""),
            ),
        ],
        body,
    )
        .into_response())
}
