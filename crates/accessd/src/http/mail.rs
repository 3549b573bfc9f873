//! The mail queue for administrators: see what waits or failed, and send a
//! failed message again.

use access_store::prelude::*;
use access_store::OutboxEntry;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Operate};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::PathId;
use crate::state::AppState;

/// One message of the queue (never its content: it holds a live link).
#[derive(Serialize, ToSchema, Debug)]
pub struct MailView {
    pub id: String,
    pub customer_id: String,
    /// The template kind.
    pub kind: String,
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

fn at(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

impl From<OutboxEntry> for MailView {
    fn from(e: OutboxEntry) -> Self {
        Self {
            id: e.id,
            customer_id: e.customer_id,
            kind: e.kind,
            recipient: e.recipient,
            attempts: e.attempts,
            last_error: e.last_error,
            created_at: at(e.created_ms),
            next_attempt_at: (e.status == "pending")
                .then(|| at(e.next_attempt_ms))
                .flatten(),
            sent_at: e.sent_ms.and_then(at),
            status: e.status,
        }
    }
}

#[derive(Serialize, ToSchema, Debug)]
pub struct MailList {
    pub messages: Vec<MailView>,
}

/// The states of a message.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the query holds the status as text
pub enum MailStatus {
    Pending,
    Sent,
    Failed,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MailQuery {
    /// `pending`, `sent` or `failed` (default: all).
    #[param(value_type = Option<MailStatus>)]
    pub status: Option<String>,
    /// At most this many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The mail queue, newest first.
#[utoipa::path(get, path = "/v1/mail", tag = "operations",
    params(MailQuery),
    responses((status = 200, body = MailList), (status = 403, body = ErrorBody, description = "forbidden")),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller<Operate>,
    query: Result<Query<MailQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<MailList>> {
    let Query(query) = query.map_err(|e| ApiError::malformed(e.body_text()))?;
    if let Some(status) = &query.status {
        if !["pending", "sent", "failed"].contains(&status.as_str()) {
            return Err(ApiError::malformed(
                "`status` is one of pending, sent, failed",
            ));
        }
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::malformed("`limit` must be from 1 to 1000"));
    }
    let entries = state
        .store()
        .outbox_list(query.status.as_deref(), limit)
        .await?;
    Ok(Json(MailList {
        messages: entries.into_iter().map(MailView::from).collect(),
    }))
}

/// Sends a failed message again (from the first attempt).
#[utoipa::path(post, path = "/v1/mail/{id}/retry", tag = "operations",
    params(("id" = String, Path, description = "Message id (32 hex digits)", pattern = "^[0-9a-f]{32}$")),
    responses((status = 202, description = "Queued again"), (status = 404, body = ErrorBody, description = "not_found: no failed message with this id")),
    security(("api_key" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    _caller: Caller<Operate>,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    if state
        .store()
        .outbox_requeue(&id, Utc::now().timestamp_millis())
        .await?
    {
        state.mail().nudge();
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no failed message with this id",
        ))
    }
}
