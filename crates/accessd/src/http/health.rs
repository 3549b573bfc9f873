//! Liveness, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{ApiError, ErrorBody};
use crate::http::dto::Health;
use crate::state::AppState;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The store is reachable and migrated.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody, description = "unavailable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store().is_ready().await {
        Ok(true) => Json(Health {
            status: "ready".into(),
        })
        .into_response(),
        Ok(false) => ApiError {
            message: "the database is not migrated".into(),
            ..ApiError::unavailable()
        }
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Prometheus metrics (text exposition).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(projector) = state.projector() {
        state.metrics().projector(&projector.status(), state.now());
    }
    if let Some(stats) = state.store().cache_stats() {
        state.metrics().aggregate_cache(stats);
    }
    match state.metrics().render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    match crate::openapi::document_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
