//! The HTTP layer: routes, middleware and handlers.

pub mod audit;
pub mod commands;
pub mod customers;
pub mod dto;
pub mod extract;
pub mod health;
pub mod history;
pub mod import;
pub mod mail;
mod refusals;
pub mod self_service;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request as AxumRequest;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here",
    )
    .into_response()
}

/// Every request ends within `limit` (body reading included: a client
/// sending its body slowly is cut off here) with 408 `request_timeout`.
async fn time_limit(limit: Duration, request: AxumRequest, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request took longer than the server allows",
            )
            .into_response()
        }
    }
}

/// A client's `X-Request-Id` that is not [`extract::acceptable_request_id`]
/// (too long, or other characters) is dropped here, before the request-id
/// layer, which then makes a fresh one. The replacement is logged without
/// the client's value.
async fn bounded_request_id(mut request: AxumRequest) -> AxumRequest {
    let rejected = request
        .headers()
        .get(&REQUEST_ID)
        .map(|v| v.as_bytes().len())
        .filter(|_| {
            !request
                .headers()
                .get_all(&REQUEST_ID)
                .iter()
                .all(|v| extract::acceptable_request_id(v.as_bytes()))
        });
    if let Some(length) = rejected {
        request.headers_mut().remove(&REQUEST_ID);
        tracing::debug!(
            length,
            "client X-Request-Id replaced by a fresh id (at most {} characters of A-Z a-z 0-9 . _ : -)",
            extract::MAX_REQUEST_ID_CHARS
        );
    }
    request
}

/// Content-Security-Policy of the API's responses (JSON, never a page: no
/// content of any kind, never framed). The pages set their own.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// The whole service: the API's routes and `others` (routes defined
/// elsewhere: the pages, the OpenAPI document) behind one set of
/// middleware (request ids, tracing, metrics, time limit, security
/// headers).
pub fn router(state: AppState, request_timeout: Duration, others: Router<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/v1/customers",
            post(customers::register).get(customers::find_customers),
        )
        .route(
            "/v1/customers/import",
            post(import::import_customers)
                .layer(DefaultBodyLimit::max(import::MAX_IMPORT_BODY_BYTES)),
        )
        .route("/v1/customers/{id}", get(customers::get_customer))
        .route("/v1/customers/{id}/events", get(customers::customer_events))
        .route("/v1/customers/{id}/audit", get(audit::customer_audit))
        .route("/v1/audit", get(audit::audit))
        .route("/v1/audit/digest", get(audit::digest))
        .route("/v1/access-report", get(history::access_report))
        .route("/v1/mail", get(mail::list))
        .route("/v1/mail/{id}/retry", post(mail::retry))
        .route(
            "/v1/customers/{id}/change-email",
            post(customers::change_email),
        )
        .route(
            "/v1/customers/{id}/grant-access",
            post(customers::grant_access),
        )
        .route(
            "/v1/customers/{id}/set-password",
            post(customers::set_password),
        )
        .route(
            "/v1/customers/{id}/send-access-notification",
            post(customers::send_access_notification),
        )
        .route(
            "/v1/customers/{id}/revoke-access",
            post(customers::revoke_access),
        )
        .route(
            "/v1/customers/{id}/forget",
            post(customers::forget_customer),
        )
        .route("/v1/self", get(self_service::me))
        .route("/v1/self/sessions", post(self_service::create_session))
        .route(
            "/v1/self/sessions/current",
            delete(self_service::delete_session),
        )
        .route("/v1/self/change-email", post(self_service::change_email))
        .route(
            "/v1/self/change-password",
            post(self_service::change_password),
        )
        .route("/v1/self/confirm-email", post(self_service::confirm_email))
        .route(
            "/v1/self/setup-password",
            post(self_service::setup_password),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(others)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    // One line per request at `info`, when the response is ready: method,
    // the matched route (the template, never the raw path or the query,
    // which carry ids, emails and tokens), status, latency, request id.
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or("unmatched", axum::extract::MatchedPath::as_str);
            let trace_id = request
                .extensions()
                .get::<crate::trace_context::TraceContext>()
                .map_or("", |t| t.trace_id.as_str());
            tracing::info_span!("request", method = %request.method(), route = %route, request_id = %request_id, trace_id = %trace_id)
        })
        .on_request(())
        .on_response(
            |response: &Response, latency: Duration, _: &tracing::Span| {
                tracing::info!(
                    status = response.status().as_u16(),
                    latency_ms = latency.as_millis() as u64,
                    "request"
                );
            },
        )
        .on_failure(());

    api.layer(axum::middleware::from_fn_with_state(
        state.metrics().clone(),
        crate::metrics::track,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.trusted_proxies(),
        crate::client_ip::resolve,
    ))
    .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
    .layer(axum::middleware::from_fn(
        move |request: AxumRequest, next: Next| time_limit(request_timeout, request, next),
    ))
    // Security headers on every response, API and pages, errors too (the
    // pages' own, stricter values win: these are set only when missing).
    .layer(SetResponseHeaderLayer::if_not_present(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ))
    .layer(SetResponseHeaderLayer::if_not_present(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(API_CONTENT_SECURITY_POLICY),
    ))
    .layer(SetResponseHeaderLayer::if_not_present(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    ))
    .layer(SetResponseHeaderLayer::if_not_present(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ))
    .layer(SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    ))
    // A bug that panics in a handler answers 500 `internal` (logged) rather
    // than dropping the connection.
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| {
            ApiError::internal("a request handler panicked").into_response()
        },
    ))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(trace)
    // Outside the trace layer, so the request's span carries the trace id.
    .layer(axum::middleware::from_fn(crate::trace_context::propagate))
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    .layer(axum::middleware::map_request(bounded_request_id))
    .with_state(state)
}
