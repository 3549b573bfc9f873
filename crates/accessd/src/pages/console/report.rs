//! `/audit/report`: who had access to the customer portal at an instant
//! (the access report, by replaying the events), paged, and its
//! downloads (CSV, JSON lines).
//!
//! Every page and download replays the events up to the instant (as
//! `GET /v1/access-report` does): the replay keeps one row per customer,
//! so its memory grows with the customers, not the events.

use access_projections::history;
use access_projections::rows::AccessStateRow;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use minijinja::value::{Serde, Value};
use serde::{Deserialize, Serialize};

use super::view;
use super::{attachment, ConsoleRequest};
use crate::error::ApiError;
use crate::pages::{message_page, PageError};
use crate::state::AppState;

/// Customers per page.
const PAGE: usize = 100;

/// Rows encoded per chunk of a download.
const CHUNK: usize = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ReportQuery {
    as_of: Option<String>,
    /// The page, from 1.
    page: Option<String>,
}

/// One customer with access at the instant (a row of the page and of the
/// downloads).
#[derive(Serialize)]
struct Holder {
    as_of: String,
    customer_id: String,
    name: Option<String>,
    email: String,
    role: Option<String>,
    version: u64,
}

impl Holder {
    fn of(row: &AccessStateRow, as_of: &str) -> Self {
        Self {
            as_of: as_of.to_string(),
            customer_id: row.customer_id.to_string(),
            name: row.name.clone(),
            email: row.email.clone(),
            role: row.role.clone(),
            version: row.version,
        }
    }
}

/// The instant of a report (default now); an error message when it does
/// not parse.
fn instant(state: &AppState, raw: Option<&str>) -> Result<DateTime<Utc>, String> {
    match view::parse_time(raw) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Ok(state.now()),
        Err(()) => Err(view::bad_time("As of")),
    }
}

fn as_of_param(at: DateTime<Utc>) -> String {
    url::form_urlencoded::byte_serialize(view::query_value(at).as_bytes()).collect()
}

async fn holders(state: &AppState, at: DateTime<Utc>) -> Result<Vec<AccessStateRow>, PageError> {
    Ok(history::who_had_access(state.store(), at)
        .await
        .map_err(ApiError::from)?)
}

/// The page asked for: from 1 (absent: 1).
fn page_number(raw: Option<&str>) -> Result<usize, String> {
    match raw.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(1),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| "The page number must be a whole number from 1.".to_string()),
    }
}

/// `GET /audit/report`
pub(crate) async fn show(req: ConsoleRequest<ReportQuery>) -> Result<Response, PageError> {
    let (state, query) = (&req.state, &req.query);
    // The instant is kept when only the page is wrong.
    let (at, mut error) = match instant(state, query.as_of.as_deref()) {
        Ok(at) => (at, None),
        Err(e) => (state.now(), Some(e)),
    };
    let page = match page_number(query.page.as_deref()) {
        Ok(page) => page,
        Err(e) => {
            error = error.or(Some(e));
            1
        }
    };
    let rows = if error.is_none() {
        holders(state, at).await?
    } else {
        Vec::new()
    };
    let total = rows.len();
    let pages = total.div_ceil(PAGE).max(1);
    if page > pages && error.is_none() {
        error = Some(format!(
            "There is no page {page}: the report has {pages} page{}.",
            if pages == 1 { "" } else { "s" }
        ));
    }
    let first = page.saturating_sub(1).saturating_mul(PAGE);
    let as_of_text = view::query_value(at);
    let shown: Vec<Holder> = rows
        .iter()
        .skip(first)
        .take(PAGE)
        .map(|row| Holder::of(row, &as_of_text))
        .collect();
    // The links keep the instant: the next page is of the same report
    // even when it was asked for "now".
    let param = as_of_param(at);
    let extra = minijinja::context! {
        as_of => view::input_value(at),
        as_of_shown => view::shown(at),
        as_of_param => param.clone(),
        holders => Value::from(Serde(&shown)),
        total => total,
        page => page,
        pages => pages,
        first_row => first.saturating_add(1),
        next_page => (page < pages).then(|| format!("/audit/report?as_of={param}&page={}", page + 1)),
        previous_page => (page > 1 && page <= pages).then(|| format!("/audit/report?as_of={param}&page={}", page - 1)),
        download_csv => format!("/audit/report.csv?as_of={param}"),
        download_jsonl => format!("/audit/report.jsonl?as_of={param}"),
        filter_error => error.clone(),
    };
    Ok(req
        .page(
            "audit_report.html",
            "Access report",
            "report",
            extra,
            error.is_some(),
        )
        .render())
}

/// `GET /audit/report.csv` and `GET /audit/report.jsonl`: the whole
/// report as a file.
pub(crate) fn download_route(format: Download) -> MethodRouter<AppState> {
    get(move |req: ConsoleRequest<ReportQuery>| download(req.state, req.query, format))
}

/// The report's file formats.
#[derive(Clone, Copy)]
pub(crate) enum Download {
    Csv,
    JsonLines,
}

/// The CSV header of the report.
const CSV_HEADER: [&str; 6] = ["as_of", "customer_id", "name", "email", "role", "version"];

/// Encodes rows of the report (the CSV header first when `first`).
fn encode(rows: &[Holder], format: Download, first: bool) -> Result<Vec<u8>, String> {
    match format {
        Download::Csv => {
            let mut out = csv::Writer::from_writer(Vec::new());
            let mut write =
                || -> Result<(), csv::Error> {
                    if first {
                        out.write_record(CSV_HEADER)?;
                    }
                    for h in rows {
                        let cells = [
                            h.as_of.clone(),
                            h.customer_id.clone(),
                            h.name.clone().unwrap_or_default(),
                            h.email.clone(),
                            h.role.clone().unwrap_or_default(),
                            h.version.to_string(),
                        ];
                        out.write_record(cells.iter().map(|c| {
                            access_projections::export::spreadsheet_safe(c).into_owned()
                        }))?;
                    }
                    Ok(())
                };
            write().map_err(|e| e.to_string())?;
            out.into_inner().map_err(|e| e.to_string())
        }
        Download::JsonLines => {
            let mut out = Vec::new();
            for h in rows {
                serde_json::to_writer(&mut out, h).map_err(|e| e.to_string())?;
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

async fn download(
    state: AppState,
    query: ReportQuery,
    format: Download,
) -> Result<Response, PageError> {
    let at = match instant(&state, query.as_of.as_deref()) {
        Ok(at) => at,
        Err(e) => {
            return Ok(
                message_page(StatusCode::BAD_REQUEST, "The instant is not valid", &[&e]).render(),
            )
        }
    };
    let as_of = view::query_value(at);
    let rows: Vec<Holder> = holders(&state, at)
        .await?
        .iter()
        .map(|row| Holder::of(row, &as_of))
        .collect();
    // Encoded a chunk at a time as the client reads (the rows are in
    // memory already: the replay needs them all to sort them).
    let chunks = rows.len().div_ceil(CHUNK).max(1);
    let body = Body::from_stream(futures::stream::iter(0..chunks).map(move |n| {
        let start = (n * CHUNK).min(rows.len());
        let end = (start + CHUNK).min(rows.len());
        encode(&rows[start..end], format, n == 0)
            .map(Bytes::from)
            .map_err(std::io::Error::other)
    }));
    let (content_type, extension) = match format {
        Download::Csv => ("text/csv; charset=utf-8", "csv"),
        Download::JsonLines => ("application/x-ndjson", "jsonl"),
    };
    let name = format!("access-report_as-of-{}.{extension}", view::file_stamp(at));
    Ok(attachment(
        ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        &name,
    ))
}
