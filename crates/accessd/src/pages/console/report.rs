//! `/audit/report`: who had access to the customer portal at an instant
//! (the access report, by replaying the events), paged, and its CSV.

use access_projections::history;
use access_projections::rows::AccessStateRow;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::value::{Serde, Value};
use serde::{Deserialize, Serialize};

use super::view;
use super::{console_page, Auditor};
use crate::error::ApiError;
use crate::pages::csrf::CsrfToken;
use crate::pages::{message_page, PageError};
use crate::state::AppState;

/// Customers per page.
const PAGE: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ReportQuery {
    as_of: Option<String>,
    /// The page, from 1.
    page: Option<String>,
}

/// One customer with access at the instant.
#[derive(Serialize)]
struct Holder {
    customer_id: String,
    name: Option<String>,
    email: String,
    role: Option<String>,
    version: u64,
}

impl From<&AccessStateRow> for Holder {
    fn from(row: &AccessStateRow) -> Self {
        Self {
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

/// `GET /audit/report`
pub(crate) async fn show(
    State(state): State<AppState>,
    auditor: Auditor,
    csrf: CsrfToken,
    Query(query): Query<ReportQuery>,
) -> Result<Response, PageError> {
    let page = query
        .page
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let (at, error) = match instant(&state, query.as_of.as_deref()) {
        Ok(at) => (at, None),
        Err(e) => (state.now(), Some(e)),
    };
    let rows = if error.is_none() {
        holders(&state, at).await?
    } else {
        Vec::new()
    };
    let total = rows.len();
    let shown: Vec<Holder> = rows
        .iter()
        .skip((page - 1).saturating_mul(PAGE))
        .take(PAGE)
        .map(Holder::from)
        .collect();
    let pages = total.div_ceil(PAGE).max(1);
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
        first_row => (page - 1) * PAGE + 1,
        next_page => (page < pages).then(|| format!("/audit/report?as_of={param}&page={}", page + 1)),
        previous_page => (page > 1).then(|| format!("/audit/report?as_of={param}&page={}", page - 1)),
        download_csv => format!("/audit/report.csv?as_of={param}"),
        filter_error => error.clone(),
    };
    Ok(console_page(
        "audit_report.html",
        "Access report",
        &auditor,
        csrf,
        "report",
        extra,
    )
    .code(if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    })
    .render())
}

/// `GET /audit/report.csv`: the whole report as CSV.
pub(crate) async fn csv(
    State(state): State<AppState>,
    _auditor: Auditor,
    Query(query): Query<ReportQuery>,
) -> Result<Response, PageError> {
    let at = match instant(&state, query.as_of.as_deref()) {
        Ok(at) => at,
        Err(e) => {
            return Ok(
                message_page(StatusCode::BAD_REQUEST, "The instant is not valid", &[&e]).render(),
            )
        }
    };
    let rows = holders(&state, at).await?;
    let header_row = ["as_of", "customer_id", "name", "email", "role", "version"];
    let as_of = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let write = || -> Result<Vec<u8>, csv::Error> {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(header_row)?;
        for row in &rows {
            out.write_record([
                as_of.as_str(),
                &row.customer_id.to_string(),
                row.name.as_deref().unwrap_or(""),
                &row.email,
                row.role.as_deref().unwrap_or(""),
                &row.version.to_string(),
            ])?;
        }
        out.into_inner().map_err(|e| e.into_error().into())
    };
    let body = write().map_err(|e| ApiError::internal(e.to_string()))?;
    let name = format!("access-report_as-of-{}.csv", view::file_stamp(at));
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
