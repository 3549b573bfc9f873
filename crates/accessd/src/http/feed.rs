//! `GET /v1/feed`: the change feed as JSON pages (with a long-poll wait)
//! or as server-sent events (`Accept: text/event-stream`). The reading and
//! waiting are [`crate::feed`]'s.

use std::convert::Infallible;
use std::time::Duration;

use access_store::prelude::*;
use access_store::Position;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, ReadFeed};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::feed::{FeedFilter, FeedItem};
use crate::http::audit::parse_position;
use crate::http::extract::customer_id;
use crate::state::AppState;

/// Longest `wait`, in seconds.
pub const MAX_WAIT_SECS: u64 = 30;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// The parameters (documentation: the handler reads the raw query, since
/// `event_type` repeats).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FeedQuery {
    /// A `next` (or a `position`) from this feed: only events after it.
    /// Absent: from the first event.
    #[param(example = "0:1234")]
    pub after: Option<String>,
    /// Events per answer, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Seconds to wait, 0 to 30 (default 0), when there is no event after
    /// `after` yet: the answer comes as soon as there is one.
    pub wait: Option<u32>,
    /// Only events of these types (repeatable: `event_type=A&event_type=B`).
    #[param(explode = true)]
    pub event_type: Option<Vec<String>>,
    /// Only this customer's events.
    pub customer_id: Option<String>,
}

/// A page of the change feed.
#[derive(Serialize, ToSchema, Debug)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    /// Pass as `after` for the next page (after every event looked at,
    /// also those a filter left out; equal to `after` when there was
    /// nothing new).
    #[schema(example = "0:1234")]
    pub next: String,
}

/// What a request asks for, checked.
struct Request {
    after: Position,
    limit: usize,
    wait: Duration,
    filter: FeedFilter,
}

fn bad(parameter: &str, why: &str) -> ApiError {
    ApiError::malformed(format!("`{parameter}` {why}"))
}

fn cursor(raw: &str, parameter: &str) -> ApiResult<Position> {
    parse_position(raw)
        .filter(|p| p.global >= 0)
        .ok_or_else(|| {
            bad(
                parameter,
                "is not a position of this feed (`tx:position`, as in `next`)",
            )
        })
}

fn parse(raw_query: Option<&str>, last_event_id: Option<&str>) -> ApiResult<Request> {
    let mut request = Request {
        after: Position::START,
        limit: DEFAULT_LIMIT,
        wait: Duration::ZERO,
        filter: FeedFilter::default(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes()) {
        if name != "event_type" {
            if seen.iter().any(|s| *s == name) {
                return Err(bad(&name, "is given twice"));
            }
            seen.push(name.to_string());
        }
        match name.as_ref() {
            "after" => request.after = cursor(&value, "after")?,
            "limit" => {
                request.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad("limit", "must be a whole number from 1 to 1000"))?;
            }
            "wait" => {
                let secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|w| *w <= MAX_WAIT_SECS)
                    .ok_or_else(|| bad("wait", "must be whole seconds from 0 to 30"))?;
                request.wait = Duration::from_secs(secs);
            }
            "event_type" => {
                if !access_domain::events::EVENT_VERSIONS
                    .iter()
                    .any(|(t, _)| *t == value)
                {
                    return Err(bad(
                        "event_type",
                        &format!(
                            "`{}` is not an event type; one of: {}",
                            value.chars().take(64).collect::<String>(),
                            access_domain::events::EVENT_VERSIONS
                                .iter()
                                .map(|(t, _)| *t)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if !request.filter.event_types.iter().any(|t| *t == value) {
                    request.filter.event_types.push(value.to_string());
                }
            }
            "customer_id" => {
                request.filter.customer_id = Some(
                    customer_id(&value)
                        .map_err(|_| bad("customer_id", "is not a customer id (a UUID)"))?,
                )
            }
            other => {
                return Err(ApiError::malformed(format!(
                    "unknown parameter `{}`: after, limit, wait, event_type or customer_id",
                    other.chars().take(32).collect::<String>()
                )))
            }
        }
    }
    if let Some(id) = last_event_id {
        // A reconnecting EventSource: resume after the last event it got.
        request.after = cursor(id.trim(), "Last-Event-ID")?;
    }
    Ok(request)
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The change feed: every customer's events in the store's global order
/// (the positions of `/events` and the audit trail), personal data opened
/// (`[forgotten]` once forgotten), never passwords, hashes or tokens.
/// With `Accept: text/event-stream`, the same as server-sent events: each
/// `id` is the position, a reconnect with `Last-Event-ID` resumes after
/// it, and a comment is sent as a heartbeat while nothing happens.
#[utoipa::path(get, path = "/v1/feed", tag = "feed",
    params(FeedQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "SSE: resume after this position (wins over `after`)")),
    responses((status = 200, description = "A `FeedPage`; with `Accept: text/event-stream`, a stream of `FeedItem`s",
                content((FeedPage = "application/json"), (FeedItem = "text/event-stream"))),
              (status = 400, body = ErrorBody, description = "malformed_request (the message names the parameter)")),
    security(("api_key" = [])))]
pub async fn feed(
    State(state): State<AppState>,
    _caller: Caller<ReadFeed>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let sse = wants_event_stream(&headers);
    let last_event_id = sse
        .then(|| headers.get("last-event-id"))
        .flatten()
        .map(|v| {
            v.to_str()
                .map_err(|_| bad("Last-Event-ID", "is not a position of this feed"))
        })
        .transpose()?;
    let request = parse(query.as_deref(), last_event_id)?;
    let store = state.store();
    let head = store.head().await?;
    if request.after > head {
        return Err(bad(
            if last_event_id.is_some() {
                "Last-Event-ID"
            } else {
                "after"
            },
            "is past the newest event: not a position of this feed",
        ));
    }
    if sse {
        return Ok(stream(state, request).into_response());
    }
    // The answer must come before the request's time limit.
    let wait = request.wait.min(state.feed_max_wait());
    let page = state
        .feed()
        .wait_page(store, request.after, request.limit, &request.filter, wait)
        .await?;
    Ok(Json(FeedPage {
        next: page.next.to_string(),
        items: page.events.into_iter().map(FeedItem::from_event).collect(),
    })
    .into_response())
}

/// Longest wait of one SSE read; the stream then reads again.
const SSE_WAIT: Duration = Duration::from_secs(60);

fn stream(state: AppState, request: Request) -> impl IntoResponse {
    struct Cursor {
        state: AppState,
        request: Request,
        pending: std::collections::VecDeque<FeedItem>,
        failed: bool,
    }
    let heartbeat = state.feed_heartbeat();
    let start = Cursor {
        state,
        request,
        pending: Default::default(),
        failed: false,
    };
    let events = futures::stream::unfold(start, |mut c| async move {
        loop {
            if let Some(item) = c.pending.pop_front() {
                let event = match Event::default().id(item.position.clone()).json_data(&item) {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::error!(error = %e, "feed item not encoded");
                        return None;
                    }
                };
                return Some((Ok::<_, Infallible>(event), c));
            }
            if c.failed || c.state.feed().is_closing() {
                return None;
            }
            let page = c
                .state
                .feed()
                .wait_page(
                    c.state.store(),
                    c.request.after,
                    c.request.limit,
                    &c.request.filter,
                    SSE_WAIT,
                )
                .await;
            match page {
                Ok(page) => {
                    c.request.after = page.next;
                    c.pending
                        .extend(page.events.into_iter().map(FeedItem::from_event));
                    if page.closing && c.pending.is_empty() {
                        return None;
                    }
                }
                Err(e) => {
                    // The client reconnects with the last id it got and
                    // misses nothing.
                    tracing::warn!(error = %e, "feed stream ended on a store error");
                    c.failed = true;
                    let retry = Event::default()
                        .retry(Duration::from_secs(1))
                        .comment("error");
                    return Some((Ok(retry), c));
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}
