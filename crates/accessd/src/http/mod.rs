//! The HTTP layer: routes, middleware and handlers.

pub mod audit;
pub mod commands;
pub mod contract;
pub mod customers;
pub mod dto;
pub mod extract;
pub mod feed;
pub mod health;
pub mod history;
pub mod import;
pub mod mail;
mod paging;
mod refusals;
pub mod self_service;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request as AxumRequest;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
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

/// The security headers of the API's responses (JSON, never a page).
fn api_headers() -> [(HeaderName, &'static str); 6] {
    [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, API_CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ]
}

/// Sets each of `headers` on `response`: always when `overriding`, else
/// only where the response has no such header yet.
pub(crate) fn set_headers(
    response: &mut Response,
    headers: impl IntoIterator<Item = (HeaderName, &'static str)>,
    overriding: bool,
) {
    for (name, value) in headers {
        if overriding || !response.headers().contains_key(&name) {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
    }
}

/// [`api_headers`] where a response (a page's too) has none of its own.
async fn api_security_headers(mut response: Response) -> Response {
    set_headers(&mut response, api_headers(), false);
    response
}

/// The API's routes, with what each can answer ([`contract`]).
fn api() -> contract::Routes {
    contract::Routes::new()
        .post("/v1/customers", customers::register)
        .post_limited(
            "/v1/customers/import",
            import::import_customers,
            import::MAX_IMPORT_BODY_BYTES,
        )
        .get("/v1/customers", customers::find_customers)
        .get("/v1/customers/{id}", customers::get_customer)
        .get("/v1/customers/{id}/events", customers::customer_events)
        .get("/v1/customers/{id}/audit", audit::customer_audit)
        .get("/v1/audit", audit::audit)
        .get("/v1/audit/digest", audit::digest)
        .get("/v1/feed", feed::feed)
        .get("/v1/access-report", history::access_report)
        .get("/v1/mail", mail::list)
        .post("/v1/mail/{id}/retry", mail::retry)
        .post("/v1/customers/{id}/change-email", customers::change_email)
        .post("/v1/customers/{id}/grant-access", customers::grant_access)
        .post("/v1/customers/{id}/set-password", customers::set_password)
        .post(
            "/v1/customers/{id}/send-access-notification",
            customers::send_access_notification,
        )
        .post("/v1/customers/{id}/revoke-access", customers::revoke_access)
        .post("/v1/customers/{id}/forget", customers::forget_customer)
        .post(
            "/v1/customers/{id}/reset-second-factor",
            customers::reset_second_factor,
        )
        .get("/v1/self", self_service::me)
        .post("/v1/self/sessions", self_service::create_session)
        .delete("/v1/self/sessions/current", self_service::delete_session)
        .post("/v1/self/sessions/verify", self_service::verify_session)
        .post("/v1/self/second-factor/totp", self_service::begin_totp)
        .delete("/v1/self/second-factor/totp", self_service::remove_totp)
        .post(
            "/v1/self/second-factor/totp/confirm",
            self_service::confirm_totp,
        )
        .post(
            "/v1/self/second-factor/recovery-codes",
            self_service::regenerate_recovery_codes,
        )
        .post("/v1/self/change-email", self_service::change_email)
        .post("/v1/self/change-password", self_service::change_password)
        .post("/v1/self/confirm-email", self_service::confirm_email)
        .post("/v1/self/setup-password", self_service::setup_password)
        .get("/healthz", health::healthz)
        .get("/readyz", health::readyz)
        .get("/metrics", health::metrics)
}

/// The API's routes and what each can answer (the pages and the OpenAPI
/// document are added by the caller of [`router`]).
pub fn routes() -> Vec<contract::RouteInfo> {
    api().table
}

/// The whole service: the API's routes and `others` (routes defined
/// elsewhere: the pages, the OpenAPI document) behind one set of
/// middleware (request ids, tracing, metrics, time limit, security
/// headers).
pub fn router(state: AppState, request_timeout: Duration, others: Router<AppState>) -> Router {
    let api = api()
        .router
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
    .layer(axum::middleware::map_response(api_security_headers))
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
