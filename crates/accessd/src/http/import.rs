//! `POST /v1/customers/import` (admin): customers from an older system with
//! their password hashes, as JSON lines in and out (docs/import.md). Each
//! line is one `ImportCustomer` command decided by the aggregate; the new
//! customers are written in one transaction (`Store::import_lines`); the
//! answer has one JSON line per input line, in order.

use access_domain::ImportSource;
use access_store::import::{self, PendingRow, SeenEmails, MAX_ROWS_PER_REQUEST};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Caller, Operate};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::RequestId;
use crate::state::AppState;

/// Most bytes in one import request (10,000 rows of about 1 KiB).
pub const MAX_IMPORT_BODY_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Which old system the customers come from (kept in each
    /// `CustomerImported` event; default: the API key's name).
    pub source: Option<String>,
}

/// Import customers with their password hashes (JSON lines).
///
/// Each line: `email`, `name`, `customer_id`, `external_id`, `access`
/// (`none` or `customer_center`), `password_hash` (argon2, bcrypt, scrypt
/// or PBKDF2-SHA256/512), `must_change_password`, `send_notification`. The
/// answer (`application/x-ndjson`) has one line per input line, in order:
/// `{"line", "status": imported|unchanged|conflict|refused, "customer_id",
/// "external_id", "error": {"field", "code", "reason"}}`. A line already
/// imported with the same content is `unchanged`: a request can be sent
/// again.
#[utoipa::path(post, path = "/v1/customers/import", tag = "commands",
    params(ImportQuery),
    request_body(content = String, content_type = "application/x-ndjson", description = "One JSON object per line (at most 10,000 lines)"),
    responses(
        (status = 200, body = String, content_type = "application/x-ndjson", description = "One result per input line, in order"),
        (status = 413, body = ErrorBody, description = "too_many_rows, payload_too_large"),
        (status = 422, body = ErrorBody, description = "invalid_import_source"),
    ),
    security(("api_key" = [])))]
pub async fn import_customers(
    State(state): State<AppState>,
    caller: Caller<Operate>,
    RequestId { id: request_id, .. }: RequestId,
    Query(query): Query<ImportQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let source = ImportSource::parse(query.source.as_deref().unwrap_or(&caller.name))
        .map_err(ApiError::from)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::malformed("the body is not UTF-8 JSON lines"))?;
    let lines: Vec<(u64, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n as u64 + 1, l))
        .collect();
    if lines.len() > MAX_ROWS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rows",
            format!(
                "{} rows; at most {MAX_ROWS_PER_REQUEST} per request",
                lines.len()
            ),
        ));
    }
    let keyring = state.store().keyring().map_err(ApiError::from)?;
    let mut seen = SeenEmails::default();
    let parsed: Vec<_> = lines
        .into_iter()
        .map(|(line, raw)| {
            let row = import::parse_json_row(raw).and_then(|row| {
                let command = import::parse_row(&row, &source, keyring)?;
                match seen.first_line(&command.email, line) {
                    Some(first) => Err(import::duplicate_email(first)),
                    None => Ok(PendingRow {
                        line,
                        import: command,
                        metadata: access_domain::CommandMetadata::new(
                            caller.actor(),
                            format!("{request_id}-line-{line}"),
                        )
                        .with_reason(Some(format!("imported from {source}"))),
                    }),
                }
            });
            (line, row)
        })
        .collect();
    let mail = state.mail();
    let prepare = |input: &access_store::OutboxInput<'_>| mail.prepare(input);
    let results = state
        .store()
        .import_lines(state.services(), parsed, false, &prepare)
        .await
        .map_err(ApiError::from)?;
    let mut answer = String::with_capacity(results.len() * 96);
    let mut imported = 0usize;
    for result in &results {
        if result.status == import::RowStatus::Imported {
            imported += 1;
        }
        let json = serde_json::to_string(result).map_err(|e| {
            ApiError::from(access_store::StoreError::Database(format!(
                "an import result does not serialize: {e}"
            )))
        })?;
        answer.push_str(&json);
        answer.push('\n');
    }
    if imported > 0 {
        state.metrics().command("import_customer", "ok");
        if let Some(projector) = state.projector() {
            projector.nudge();
        }
        state.mail().nudge();
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        answer,
    )
        .into_response())
}
