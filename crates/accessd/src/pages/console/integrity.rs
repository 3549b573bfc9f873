//! `/audit/integrity`: the hash chain's head (the digest to keep outside
//! the system), how far it covers the history, and verifications run in
//! the background with their results.

use access_projections::chain;
use access_store::prelude::*;
use axum::extract::State;
use axum::response::Response;
use minijinja::value::{Serde, Value};
use serde::{Deserialize, Serialize};

use super::view;
use super::{Auditor, ConsoleRequest};
use crate::error::ApiError;
use crate::pages::csrf::PageForm;
use crate::pages::{see_other, PageError, Status};
use crate::state::AppState;
use crate::usecase::console::{latest_checks, start_integrity_check, Started};

/// Checks listed on the page.
const SHOWN_CHECKS: u32 = 10;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct IntegrityQuery {
    notice: Option<String>,
}

/// No fields but the CSRF token (the verify button).
#[derive(Deserialize)]
pub(crate) struct TokenOnly {}

#[derive(Serialize)]
struct CheckRow {
    started_at: String,
    started_by: String,
    finished_at: Option<String>,
    outcome: String,
    summary: String,
}

/// `GET /audit/integrity`
pub(crate) async fn show(req: ConsoleRequest<IntegrityQuery>) -> Result<Response, PageError> {
    let (state, query) = (&req.state, &req.query);
    let head = chain::head(state.store()).await.map_err(|e| match e {
        access_projections::ProjectionError::Store(e) => ApiError::from(e),
        other => ApiError::internal(other),
    })?;
    let newest = state.store().head().await?;
    let (digest, covered) = match &head {
        Some(head) => (head.digest(), head.position.global),
        None => (chain::genesis_digest(), 0),
    };
    let behind = newest.global.saturating_sub(covered).max(0);
    let checks = latest_checks(state, SHOWN_CHECKS).await?;
    let running = checks.iter().any(|c| c.outcome == "running");
    let rows: Vec<CheckRow> = checks
        .into_iter()
        .map(|c| CheckRow {
            started_at: view::shown(c.started_at),
            started_by: c.started_by,
            finished_at: c.finished_at.map(view::shown),
            outcome: c.outcome,
            summary: c.summary,
        })
        .collect();
    let status = match (query.notice.as_deref(), running) {
        (Some("started"), true) => Some(Status::info(
            "The verification has started. This page shows its result when it is done.",
        )),
        (Some("running"), true) => Some(Status::info(
            "A verification is already running; its result appears below when it is done.",
        )),
        (Some("started" | "running"), false) => Some(Status::info(
            "The verification has finished: its result is below.",
        )),
        _ => None,
    };
    let extra = minijinja::context! {
        digest => digest,
        covered => covered,
        newest => newest.global,
        behind => behind,
        checks => Value::from(Serde(&rows)),
        running => running,
        verify_limit_secs => state.console().verify_limit.as_secs(),
    };
    Ok(req
        .page(
            "audit_integrity.html",
            "Integrity of the history",
            "integrity",
            extra,
            false,
        )
        .status(status)
        .render())
}

/// `POST /audit/integrity/verify`: starts a verification in the
/// background (one at a time).
pub(crate) async fn verify(
    State(state): State<AppState>,
    auditor: Auditor,
    _form: PageForm<TokenOnly>,
) -> Result<Response, PageError> {
    let notice = match start_integrity_check(&state, &state.console(), &auditor.0).await? {
        Started::Started(_) => "started",
        Started::AlreadyRunning => "running",
    };
    Ok(see_other(
        &format!("/audit/integrity?notice={notice}"),
        Vec::new(),
    ))
}
