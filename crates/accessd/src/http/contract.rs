//! What each route can answer, derived from the types of its handler's
//! extractors: an extractor that can refuse a request says with which
//! statuses ([`Answers`]), and the route table ([`Routes`]) collects them
//! per route with the route's security. The OpenAPI document
//! (`crate::openapi`) adds these to every operation, so a new handler that
//! takes `Caller<Operate>` or a JSON body is documented with 401/403 or
//! 400/413/415 without anyone writing them by hand; a test walks the table
//! and the document.

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::handler::Handler;
use axum::routing::{on, MethodFilter};
use axum::Router;

use access_domain::ApiRole;

use crate::auth::{Caller, Permission};
use crate::http::commands::{CommandContext, OnCustomer};
use crate::http::extract::{
    Active, AnySession, ApiQuery, ClientAddress, JsonBody, PathId, RequestId,
};
use crate::state::AppState;
use crate::usecase::session::CustomerSession;

/// Every API role (the match below fails to compile when one is added).
const ROLES: [ApiRole; 4] = [
    ApiRole::Service,
    ApiRole::Auditor,
    ApiRole::Admin,
    ApiRole::Subscriber,
];

const _: fn(ApiRole) = |role| match role {
    ApiRole::Service | ApiRole::Auditor | ApiRole::Admin | ApiRole::Subscriber => {}
};

/// How a route is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// An API key with one of these roles.
    ApiKey(Vec<&'static str>),
    /// A customer session token (`/v1/self/*`).
    CustomerSession,
}

/// An extractor's refusals: the statuses it can answer instead of the
/// handler, and the credential it needs.
pub trait Answers {
    fn statuses() -> Vec<u16> {
        Vec::new()
    }
    fn security() -> Option<Security> {
        None
    }
    /// A command on a customer (`If-Match`, `Idempotency-Key`, `ETag`).
    fn command() -> bool {
        false
    }
}

/// The state: every use of it may reach the store, whose outage is 503
/// `unavailable` (with `Retry-After`) and whose bugs are 500 `internal`.
impl Answers for State<AppState> {
    fn statuses() -> Vec<u16> {
        vec![500, 503]
    }
}

/// 401 `unauthenticated` (no or an unknown key); 403 `forbidden` when
/// some role may not do `P`.
impl<P: Permission> Answers for Caller<P> {
    fn statuses() -> Vec<u16> {
        if ROLES.iter().all(|r| P::allows(*r)) {
            vec![401]
        } else {
            vec![401, 403]
        }
    }
    fn security() -> Option<Security> {
        Some(Security::ApiKey(
            ROLES
                .iter()
                .filter(|r| P::allows(**r))
                .map(|r| r.as_str())
                .collect(),
        ))
    }
}

/// 401 `unauthenticated` without a live session.
/// 401 without a valid session; 403 `second_factor_required` while it
/// waits for the second factor.
impl Answers for CustomerSession {
    fn statuses() -> Vec<u16> {
        vec![401, 403]
    }
    fn security() -> Option<Security> {
        Some(Security::CustomerSession)
    }
}

/// Any session, also one waiting for the second factor: 401 without one.
impl Answers for AnySession {
    fn statuses() -> Vec<u16> {
        vec![401]
    }
    fn security() -> Option<Security> {
        Some(Security::CustomerSession)
    }
}

/// As [`CustomerSession`], and 403 `must_change_password`,
/// `second_factor_enrollment_required`.
impl Answers for Active<CustomerSession> {
    fn statuses() -> Vec<u16> {
        vec![401, 403]
    }
    fn security() -> Option<Security> {
        Some(Security::CustomerSession)
    }
}

/// 400 `malformed_request` (an id that is no UUID, or not UTF-8); 404 when
/// nothing has this id.
impl Answers for PathId {
    fn statuses() -> Vec<u16> {
        vec![400, 404]
    }
}

/// 400 (syntax, unknown or missing fields), 413 `payload_too_large`, 415
/// `unsupported_media_type`.
impl<T> Answers for JsonBody<T> {
    fn statuses() -> Vec<u16> {
        vec![400, 413, 415]
    }
}

/// 400 `malformed_request` on a malformed or unknown query parameter.
impl<T> Answers for ApiQuery<T> {
    fn statuses() -> Vec<u16> {
        vec![400]
    }
}

/// 400 on a malformed or unknown query parameter (the extractor's own
/// rejection).
impl<T> Answers for Query<T> {
    fn statuses() -> Vec<u16> {
        vec![400]
    }
}

/// A raw body (the import's JSON lines): 413 `payload_too_large` past the
/// route's limit.
impl Answers for axum::body::Bytes {
    fn statuses() -> Vec<u16> {
        vec![413]
    }
}

/// A query the handler parses itself (the change feed: repeated
/// parameters): 400 `malformed_request` naming the parameter.
impl Answers for axum::extract::RawQuery {
    fn statuses() -> Vec<u16> {
        vec![400]
    }
}

/// Headers the handler reads itself (`Accept`, `Last-Event-ID` of the
/// feed; a bad `Last-Event-ID` is 400 there, listed with the query).
impl Answers for axum::http::HeaderMap {}

/// A command on a customer: 400 on a malformed `If-Match` or
/// `Idempotency-Key`; 404 `customer_not_found`; 409
/// `concurrent_modification`, `idempotency_key_in_use`; 410
/// `customer_forgotten`; 412 `version_mismatch`; 422 for the rules and
/// `idempotency_key_reused`.
impl Answers for CommandContext {
    fn statuses() -> Vec<u16> {
        vec![400, 404, 409, 410, 412, 422]
    }
    fn command() -> bool {
        true
    }
}

/// A command on the customer of the path: the refusals and security of
/// its parts.
impl<P: Permission> Answers for OnCustomer<P> {
    fn statuses() -> Vec<u16> {
        [
            State::<AppState>::statuses(),
            Caller::<P>::statuses(),
            PathId::statuses(),
            CommandContext::statuses(),
        ]
        .concat()
    }
    fn security() -> Option<Security> {
        Caller::<P>::security()
    }
    fn command() -> bool {
        true
    }
}

impl Answers for ClientAddress {}
impl Answers for RequestId {}

/// A handler's refusals: those of its extractors (axum's `Handler<T, _>`
/// has `T = (M, T1, …, Tn)` for a handler taking `T1 … Tn`).
pub trait HandlerAnswers<T> {
    fn statuses() -> BTreeSet<u16>;
    fn security() -> Option<Security>;
    fn command() -> bool;
}

macro_rules! handler_answers {
    ($($ty:ident),*) => {
        impl<F, Fut, M, $($ty,)*> HandlerAnswers<(M, $($ty,)*)> for F
        where
            F: FnOnce($($ty,)*) -> Fut,
            $($ty: Answers,)*
        {
            fn statuses() -> BTreeSet<u16> {
                let each: &[Vec<u16>] = &[$($ty::statuses()),*];
                each.concat().into_iter().collect()
            }
            fn security() -> Option<Security> {
                None$(.or_else($ty::security))*
            }
            fn command() -> bool {
                false $(|| $ty::command())*
            }
        }
    };
}

handler_answers!();
handler_answers!(T1);
handler_answers!(T1, T2);
handler_answers!(T1, T2, T3);
handler_answers!(T1, T2, T3, T4);
handler_answers!(T1, T2, T3, T4, T5);
handler_answers!(T1, T2, T3, T4, T5, T6);

/// Statuses any route can answer: 408 `request_timeout` (the time limit
/// on every request).
pub const EVERY_ROUTE: &[u16] = &[408];

/// One route: method (upper case), path template (axum's and OpenAPI's
/// `{id}`), its refusals and security.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub statuses: BTreeSet<u16>,
    pub security: Option<Security>,
    /// A command on a customer (`If-Match`, `Idempotency-Key`, `ETag`).
    pub command: bool,
}

/// A router that remembers its routes and what they can answer.
pub struct Routes {
    pub router: Router<AppState>,
    pub table: Vec<RouteInfo>,
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn on<H, T>(self, method: &'static str, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState> + HandlerAnswers<T>,
        T: 'static,
    {
        self.on_limited(method, path, handler, None)
    }

    fn on_limited<H, T>(
        mut self,
        method: &'static str,
        path: &'static str,
        handler: H,
        body_limit: Option<usize>,
    ) -> Self
    where
        H: Handler<T, AppState> + HandlerAnswers<T>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "DELETE" => MethodFilter::DELETE,
            "PUT" => MethodFilter::PUT,
            _ => MethodFilter::PATCH,
        };
        let mut statuses = <H as HandlerAnswers<T>>::statuses();
        statuses.extend(EVERY_ROUTE);
        self.table.push(RouteInfo {
            method,
            path,
            statuses,
            security: <H as HandlerAnswers<T>>::security(),
            command: <H as HandlerAnswers<T>>::command(),
        });
        let route = on(filter, handler);
        let route = match body_limit {
            Some(max) => route.layer(axum::extract::DefaultBodyLimit::max(max)),
            None => route,
        };
        self.router = self.router.route(path, route);
        self
    }

    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState> + HandlerAnswers<T>,
        T: 'static,
    {
        self.on("GET", path, handler)
    }

    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState> + HandlerAnswers<T>,
        T: 'static,
    {
        self.on("POST", path, handler)
    }

    /// [`Routes::post`] with its own body size limit (instead of the
    /// service's default).
    pub fn post_limited<H, T>(self, path: &'static str, handler: H, max_bytes: usize) -> Self
    where
        H: Handler<T, AppState> + HandlerAnswers<T>,
        T: 'static,
    {
        self.on_limited("POST", path, handler, Some(max_bytes))
    }

    pub fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState> + HandlerAnswers<T>,
        T: 'static,
    {
        self.on("DELETE", path, handler)
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}
