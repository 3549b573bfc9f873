//! The audit trail for auditors: filtered, paged JSON, or a streamed JSON
//! Lines / CSV export of any size in constant memory.

use access_projections::export::{self, ExportFormat};
use access_projections::{db, AuditFilter};
use access_store::Position;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, ReadHistory};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::dto::{AuditPage, AuditView};
use crate::http::extract::{customer_id, ApiQuery, PathId};
use crate::http::paging;
use crate::state::AppState;

/// Rows per page of an export stream.
const EXPORT_PAGE: u32 = 1000;

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this customer.
    #[param(value_type = Option<String>, format = Uuid)]
    pub customer_id: Option<String>,
    /// Only this kind of change.
    #[param(schema_with = kind_schema)]
    pub kind: Option<String>,
    /// Only changes by this API key name, or by this customer (id).
    pub actor: Option<String>,
    /// From this instant (RFC 3339), inclusive.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Until this instant (RFC 3339), exclusive.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// Rows per page, 1 to 1000 (default 100); JSON only.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,19}:[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// `json` (default, paged), `jsonl` or `csv` (every matching row,
    /// streamed).
    #[param(value_type = Option<AuditFormat>)]
    pub format: Option<String>,
}

/// The formats of the audit trail.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the query holds the format as text
pub enum AuditFormat {
    Json,
    Jsonl,
    Csv,
}

/// The kinds of change, as the projection names them.
fn kind_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(access_projections::rows::KINDS.iter().copied()))
        .build()
}

fn time(raw: &Option<String>, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    raw.as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::malformed(format!(
                        "`{name}` must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// Parses a `tx:position` cursor.
pub fn parse_position(raw: &str) -> Option<Position> {
    let (tx, global) = raw.split_once(':')?;
    Some(Position {
        tx: tx.parse().ok()?,
        global: global.parse().ok()?,
    })
}

fn filter(
    query: &AuditQuery,
    fixed_customer: Option<access_domain::CustomerId>,
) -> ApiResult<AuditFilter> {
    let customer_id = match (fixed_customer, &query.customer_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::malformed(
                "`customer_id` is in the path here; the query cannot name another",
            ))
        }
        (Some(id), None) => Some(id),
        (None, Some(raw)) => Some(customer_id(raw)?),
        (None, None) => None,
    };
    if let Some(kind) = &query.kind {
        if !access_projections::rows::KINDS.contains(&kind.as_str()) {
            return Err(ApiError::malformed(format!(
                "unknown kind; one of: {}",
                access_projections::rows::KINDS.join(", ")
            )));
        }
    }
    let after = paging::cursor(query.cursor.as_deref(), parse_position)?;
    Ok(AuditFilter {
        customer_id,
        kind: query.kind.clone(),
        actor: query.actor.clone(),
        from: time(&query.from, "from")?,
        to: time(&query.to, "to")?,
        after,
        newest_first: false,
    })
}

/// The forms of an audit answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    JsonLines,
    Csv,
}

fn format(raw: Option<&str>) -> ApiResult<Format> {
    match raw.unwrap_or("json") {
        "json" => Ok(Format::Json),
        "jsonl" => Ok(Format::JsonLines),
        "csv" => Ok(Format::Csv),
        other => Err(ApiError::malformed(format!(
            "unknown format `{}`: json, jsonl or csv",
            other.chars().take(16).collect::<String>()
        ))),
    }
}

/// Streams every matching row, a page at a time (JSON lines or CSV).
pub(crate) fn export(state: AppState, filter: AuditFilter, format: Format) -> Response {
    struct Cursor {
        state: AppState,
        filter: AuditFilter,
        first: bool,
        done: bool,
    }
    let start = Cursor {
        state,
        filter,
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(start, move |mut cursor| async move {
        if cursor.done {
            return None;
        }
        let rows = match db::audit_page(cursor.state.store(), &cursor.filter, EXPORT_PAGE).await {
            Ok(rows) => rows,
            Err(e) => {
                // The status line is sent already: end the stream with an
                // error, so the client sees a broken transfer, not a short
                // file that looks complete.
                tracing::error!(error = %e, "audit export failed mid-stream");
                cursor.done = true;
                return Some((Err(std::io::Error::other("audit export failed")), cursor));
            }
        };
        if rows.is_empty() && !cursor.first {
            return None;
        }
        cursor.done = rows.len() < EXPORT_PAGE as usize;
        cursor.filter.after = rows.last().map(|r| Position {
            tx: r.tx,
            global: r.position,
        });
        let chunk = match format {
            Format::Csv => export::encode(&rows, ExportFormat::Csv, cursor.first),
            _ => export::encode(&rows, ExportFormat::JsonLines, cursor.first),
        }
        .map(Bytes::from)
        .map_err(std::io::Error::other);
        cursor.first = false;
        Some((chunk, cursor))
    });
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "application/x-ndjson",
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn respond(
    state: AppState,
    query: AuditQuery,
    fixed: Option<access_domain::CustomerId>,
) -> ApiResult<Response> {
    let format = format(query.format.as_deref())?;
    let filter = filter(&query, fixed)?;
    state.projections_caught_up().await?;
    if format != Format::Json {
        return Ok(export(state, filter, format));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::malformed("`limit` must be from 1 to 1000"));
    }
    // One more row than asked tells whether there is a next page.
    let mut rows = db::audit_page(state.store(), &filter, limit + 1)
        .await
        .map_err(ApiError::from)?;
    let more = paging::cut(&mut rows, limit);
    let next_cursor = more
        .then(|| rows.last().map(|r| format!("{}:{}", r.tx, r.position)))
        .flatten();
    Ok(Json(AuditPage {
        items: rows.into_iter().map(AuditView::from).collect(),
        next_cursor,
    })
    .into_response())
}

/// The audit trail of every customer.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A JSON page; with `format=jsonl` or `csv`, every matching row, streamed",
                content((AuditPage = "application/json"), (AuditView = "application/x-ndjson"), (String = "text/csv"))),
              (status = 400, body = ErrorBody, description = "malformed_request"),
              (status = 503, body = ErrorBody, description = "unavailable (projections behind)")))]
pub async fn audit(
    State(state): State<AppState>,
    _caller: Caller<ReadHistory>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    respond(state, query, None).await
}

/// The audit trail of one customer.
#[utoipa::path(get, path = "/v1/customers/{id}/audit", tag = "audit",
    params(("id" = uuid::Uuid, Path, description = "Customer id"), AuditQuery),
    responses((status = 200, description = "A JSON page; with `format=jsonl` or `csv`, every matching row, streamed (`customer_id` is the path's: the query must not name one)",
                content((AuditPage = "application/json"), (AuditView = "application/x-ndjson"), (String = "text/csv"))),
              (status = 400, body = ErrorBody, description = "malformed_request")))]
pub async fn customer_audit(
    State(state): State<AppState>,
    _caller: Caller<ReadHistory>,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let id = customer_id(&id)?;
    respond(state, query, Some(id)).await
}

/// The head of the hash chain over the events: a digest of the whole
/// history up to `position`, to keep outside the system and check later
/// with `accessctl audit verify --digest TX:GLOBAL:HASH` (docs/audit.md).
#[derive(Serialize, ToSchema, Debug)]
pub struct AuditDigest {
    /// The newest hashed event, `tx:global` (`0:0` while there are no
    /// events).
    #[schema(example = "0:1234")]
    pub position: String,
    /// Its global position.
    #[schema(example = 1234)]
    pub global_position: i64,
    /// Its chained SHA-256 hash, lower-case hex (64 zeros while there are
    /// no events).
    #[schema(example = "9f2c4e0b7a1d3f5e8c6b2a4d0e9f7c1b3a5d7e9f0c2b4a6d8e0f1c3b5a7d9e2f")]
    pub hash: String,
}

/// The digest of the event history (the head of the hash chain), once
/// every event committed before the request is in it.
#[utoipa::path(get, path = "/v1/audit/digest", tag = "audit",
    responses((status = 200, body = AuditDigest),
              (status = 503, body = ErrorBody, description = "unavailable (projections behind)")))]
pub async fn digest(
    State(state): State<AppState>,
    _caller: Caller<ReadHistory>,
) -> ApiResult<Json<AuditDigest>> {
    // The projector extends the chain before it publishes a checkpoint.
    state.projections_caught_up().await?;
    let head = access_projections::chain::head(state.store())
        .await
        .map_err(|e| match e {
            access_projections::ProjectionError::Store(e) => ApiError::from(e),
            other => ApiError::internal(other),
        })?;
    Ok(Json(match head {
        Some(head) => AuditDigest {
            position: head.position.to_string(),
            global_position: head.position.global,
            hash: head.hash,
        },
        None => AuditDigest {
            position: Position::START.to_string(),
            global_position: 0,
            hash: access_projections::chain::GENESIS.to_string(),
        },
    }))
}
