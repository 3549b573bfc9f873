//! Liveness, readiness and metrics (the OpenAPI document is served by
//! `crate::openapi`).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{ApiError, ErrorDetail};
use crate::http::dto::{Health, NotReady, PartState, Readiness, ReadinessParts};
use crate::state::AppState;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready to serve: the store is reachable and migrated, and every
/// background loop this process runs (projector, hash chain, mail worker)
/// is running. A loop turned off by configuration counts as ready; a
/// loop that stopped makes it 503, and the body says which.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness),
              (status = 503, body = NotReady, description = "a part is not ready (the message and `parts` say which)")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let parts = ReadinessParts {
        database: database_part(&state).await,
        projector: projector_part(&state),
        hash_chain: chain_part(&state),
        mail_worker: mail_part(&state),
    };
    let not_ready: Vec<String> = [
        ("the database", &parts.database),
        ("the projector", &parts.projector),
        ("the hash chain", &parts.hash_chain),
        ("the mail worker", &parts.mail_worker),
    ]
    .into_iter()
    .filter(|(_, part)| !part.is_ready())
    .map(|(name, part)| match &part.error {
        Some(error) => format!("{name} is {}: {error}", part.state),
        None => format!("{name} is {}", part.state),
    })
    .collect();
    if not_ready.is_empty() {
        return Json(Readiness {
            status: "ready".into(),
            parts,
        })
        .into_response();
    }
    let unavailable = ApiError::unavailable();
    let body = NotReady {
        error: ErrorDetail {
            code: unavailable.code,
            message: format!("not ready: {}", not_ready.join("; ")),
        },
        status: "not_ready".into(),
        parts,
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "2")],
        Json(body),
    )
        .into_response()
}

async fn database_part(state: &AppState) -> PartState {
    match state.store().is_ready().await {
        Ok(true) => PartState::new("ready"),
        Ok(false) => PartState::with_error("unavailable", "the database is not migrated"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            PartState::with_error("unavailable", "the database does not answer")
        }
    }
}

fn projector_part(state: &AppState) -> PartState {
    let Some(projector) = state.projector() else {
        return PartState::new("disabled");
    };
    let status = projector.status();
    match (&status.chain_failed, &status.failed) {
        (Some(_), _) => PartState::with_error("stopped", "stopped with the hash chain"),
        (None, Some(_)) => {
            PartState::with_error("failed", "stopped on an event; the log says which")
        }
        (None, None) if projector.is_running() => PartState::new("running"),
        (None, None) => PartState::new("stopped"),
    }
}

fn chain_part(state: &AppState) -> PartState {
    let Some(projector) = state.projector().filter(|p| p.keeps_chain()) else {
        return PartState::new("disabled");
    };
    let status = projector.status();
    match (&status.chain_failed, &status.failed) {
        (Some(_), _) => PartState::with_error(
            "failed",
            "the chain could not be extended; the log says why",
        ),
        (None, Some(_)) => PartState::with_error("stopped", "stopped with the projector"),
        (None, None) if projector.is_running() => PartState::new("running"),
        (None, None) => PartState::with_error("stopped", "stopped with the projector"),
    }
}

fn mail_part(state: &AppState) -> PartState {
    let Some(worker) = state.mail().worker() else {
        return PartState::new("disabled");
    };
    let status = worker.status();
    let part = if status.running { "running" } else { "stopped" };
    // The error itself (an SMTP answer may name a recipient) is in the
    // log, not in an answer to anyone who asks.
    match status.last_error {
        Some(_) => PartState::with_error(
            part,
            "the last pass over the queue failed; the log says why",
        ),
        None => PartState::new(part),
    }
}

/// Prometheus metrics (text exposition).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(projector) = state.projector() {
        state.metrics().projector(&projector.status(), state.now());
    }
    if let Some(relay) = state.relay() {
        state.metrics().relay(&relay.status(), state.now());
    }
    if let Some(stats) = state.store().cache_stats() {
        state.metrics().aggregate_cache(stats);
    }
    match state.metrics().render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                // prometheus-client writes OpenMetrics text (ending in
                // `# EOF`): say so, as Prometheus expects.
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
