//! Time travel for auditors: a customer's access state at an instant, and
//! everyone who had portal access then, by replaying the events.

use access_domain::CustomerId;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, ReadHistory};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::state::AppState;

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// An instant (RFC 3339): the answer as it was then.
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<String>,
}

impl AsOfQuery {
    pub fn instant(&self) -> ApiResult<Option<DateTime<Utc>>> {
        self.as_of
            .as_deref()
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::malformed(
                            "`as_of` must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                        )
                    })
            })
            .transpose()
    }
}

/// `GET /v1/customers/{id}?as_of=…`
pub async fn customer_as_of(
    state: &AppState,
    id: CustomerId,
    as_of: DateTime<Utc>,
) -> ApiResult<Response> {
    let row = access_projections::history::state_at(state.store(), id, as_of)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(ApiError::customer_not_found)?;
    Ok(Json(crate::http::dto::customer_view_from_row(&row, as_of)).into_response())
}

/// One customer with access at the instant.
#[derive(Serialize, ToSchema, Debug)]
pub struct AccessHolder {
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub name: Option<String>,
    /// The login email in force at the instant.
    pub email: String,
    pub role: Option<String>,
    /// The customer's version at the instant.
    pub version: u64,
}

/// `GET /v1/access-report`
#[derive(Serialize, ToSchema, Debug)]
pub struct AccessReport {
    pub as_of: DateTime<Utc>,
    pub customers: Vec<AccessHolder>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// The instant (RFC 3339); default now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<String>,
}

/// Every customer who had portal access at an instant, with the login
/// email then in force.
#[utoipa::path(get, path = "/v1/access-report", tag = "audit",
    params(ReportQuery),
    responses((status = 200, body = AccessReport), (status = 400, body = ErrorBody, description = "malformed_request")))]
pub async fn access_report(
    State(state): State<AppState>,
    _caller: Caller<ReadHistory>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> ApiResult<Json<AccessReport>> {
    let as_of = AsOfQuery { as_of: query.as_of }
        .instant()?
        .unwrap_or_else(|| state.now());
    let rows = access_projections::history::who_had_access(state.store(), as_of)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(AccessReport {
        as_of,
        customers: rows
            .into_iter()
            .map(|r| AccessHolder {
                customer_id: r.customer_id,
                name: r.name,
                email: r.email,
                role: r.role,
                version: r.version,
            })
            .collect(),
    }))
}
