//! The mail queue for administrators: see what waits or failed, and send a
//! failed message again.

use access_store::prelude::*;
use access_store::OutboxEntry;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Operate};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiQuery, PathId};
use crate::http::paging;
use crate::state::AppState;

pub use access_api_types::{MailList, MailView};

fn at(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn mail_view(e: OutboxEntry) -> MailView {
    {
        MailView {
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
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Parses a `created_ms:id` cursor.
fn parse_cursor(raw: &str) -> Option<(i64, &str)> {
    let (ms, id) = raw.split_once(':')?;
    let ms = ms.parse().ok()?;
    (!id.is_empty() && id.len() <= 64).then_some((ms, id))
}

/// The mail queue, newest first.
#[utoipa::path(get, path = "/v1/mail", tag = "operations",
    params(MailQuery),
    responses((status = 200, body = MailList),
              (status = 400, body = ErrorBody, description = "malformed_request (a bad `status`, `limit` or `cursor`)"),
              (status = 403, body = ErrorBody, description = "forbidden")))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller<Operate>,
    ApiQuery(query): ApiQuery<MailQuery>,
) -> ApiResult<Json<MailList>> {
    if let Some(status) = &query.status {
        if !["pending", "sent", "failed"].contains(&status.as_str()) {
            return Err(ApiError::malformed(
                "`status` is one of pending, sent, failed",
            ));
        }
    }
    let limit = paging::limit(query.limit.as_deref())?;
    let after = paging::cursor(query.cursor.as_deref(), parse_cursor)?;
    // One more than asked tells whether there is a next page.
    let mut entries = state
        .store()
        .outbox_page(query.status.as_deref(), after, limit + 1)
        .await?;
    let more = paging::cut(&mut entries, limit);
    let next_cursor = more
        .then(|| entries.last().map(|e| format!("{}:{}", e.created_ms, e.id)))
        .flatten();
    Ok(Json(MailList {
        messages: entries.into_iter().map(mail_view).collect(),
        next_cursor,
    }))
}

/// Sends a failed message again (from the first attempt).
#[utoipa::path(post, path = "/v1/mail/{id}/retry", tag = "operations",
    params(("id" = String, Path, description = "Message id (32 hex digits)", pattern = "^[0-9a-f]{32}$")),
    responses((status = 202, description = "Queued again"), (status = 404, body = ErrorBody, description = "not_found: no failed message with this id")))]
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
