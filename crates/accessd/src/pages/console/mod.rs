//! The auditors' console: the history of every login, read-only, in a
//! browser. Server-rendered like the customers' pages (same look, no
//! JavaScript, the same strict headers); the logic is in
//! [`crate::usecase::console`] and the projections' queries.
//!
//! | route | page |
//! |---|---|
//! | `GET /audit/login`, `POST /audit/login` | sign in with an auditor's or admin's API key |
//! | `POST /audit/logout` | sign out (the button in the header) |
//! | `GET /audit` | search by login email or customer id; the latest changes of all customers |
//! | `GET /audit/customers/{id}` | a customer's state and timeline (`?as_of=` the state then; `kind`, `from`, `to` filters; `cursor` paging) |
//! | `GET /audit/report` | who had access at an instant (`?as_of=`), paged |
//! | `GET /audit/report.csv`, `GET /audit/report.jsonl` | the same report as CSV or JSON lines |
//! | `GET /audit/export` | the audit trail of a filtered view as CSV or JSON lines, streamed |
//! | `GET /audit/integrity`, `POST /audit/integrity/verify` | the hash chain's head; a verification in the background and its result |
//!
//! # Sessions
//!
//! The API key is exchanged for a console session in the
//! `access_console` cookie (`HttpOnly; SameSite=Strict; Path=/audit`,
//! `Secure` when the public URL is https), valid at most 8 hours, ended by
//! the sign-out, or when the key is removed or replaced. The API does not
//! accept the cookie: a console session cannot send a command, and no page
//! of the console sends one.
//!
//! # Stable element ids (for browser tests)
//!
//! | page | ids |
//! |---|---|
//! | login | `#api_key`, `#submit`, `#form-error` |
//! | every signed-in page | `#console-user`, `#nav-home`, `#nav-report`, `#nav-integrity`, `#logout` |
//! | home | `#q`, `#search` (the search button); `#search-results`, `#no-match`; `#latest` (the table), `#next-page` |
//! | customer | `#state` (`#state-email`, `#state-access`, `#state-as-of`), `#as_of`, `#show-as-of`, `#kind`, `#from`, `#to`, `#filter`, `#timeline` (rows `.timeline-row`), `#next-page`, `#download-csv`, `#download-jsonl`, `#filter-error` |
//! | report | `#as_of`, `#show-report`, `#report` (rows `.report-row`), `#report-count`, `#next-page`, `#previous-page`, `#download-csv`, `#download-jsonl` |
//! | integrity | `#digest`, `#covered`, `#verify` (the button), `#checks` (rows `.check-row`, the newest first: `.check-outcome`) |

mod browse;
mod integrity;
mod login;
mod report;
mod view;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post, MethodRouter};
use axum_extra::extract::cookie::Cookie;
use minijinja::value::{Serde, Value};
use serde::Serialize;

use super::csrf::CsrfToken;
use super::session::{from_cookie, SameSite, SignIn};
use super::{Page, PageError};
use crate::state::AppState;
use crate::usecase::console::{lookup, ConsoleUser, Lookup};

/// The console session's cookie.
pub const COOKIE: &str = "access_console";

/// The console's routes.
pub(crate) fn routes() -> [(&'static str, MethodRouter<AppState>); 10] {
    [
        ("/audit", get(browse::home)),
        ("/audit/login", get(login::show).post(login::submit)),
        ("/audit/logout", post(login::logout)),
        ("/audit/customers/{id}", get(browse::customer)),
        ("/audit/export", get(browse::export)),
        ("/audit/report", get(report::show)),
        (
            "/audit/report.csv",
            report::download_route(report::Download::Csv),
        ),
        (
            "/audit/report.jsonl",
            report::download_route(report::Download::JsonLines),
        ),
        ("/audit/integrity", get(integrity::show)),
        ("/audit/integrity/verify", post(integrity::verify)),
    ]
}

/// A console cookie: `HttpOnly; SameSite=Strict; Path=/audit`, `Secure`
/// when the public URL is https.
fn console_cookie(state: &AppState, value: &str) -> Cookie<'static> {
    Cookie::build((COOKIE, value.to_string()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/audit")
        .secure(state.mail().public_url().starts_with("https://"))
        .build()
}

/// `Set-Cookie` of a new console session (lasting as long as it).
fn session_cookie(state: &AppState, token: &str, max_age: chrono::Duration) -> String {
    let mut cookie = console_cookie(state, token);
    cookie.set_max_age(::cookie::time::Duration::seconds(max_age.num_seconds()));
    cookie.to_string()
}

/// `Set-Cookie` that removes the console cookie.
fn clear_cookie(state: &AppState) -> String {
    let mut cookie = console_cookie(state, "");
    cookie.make_removal();
    cookie.to_string()
}

/// Someone signed in to the console; without a valid session, a redirect
/// to the console's sign-in (an ended session's cookie is cleared).
pub(crate) struct Auditor(pub ConsoleUser);

impl FromRequestParts<AppState> for Auditor {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sign_in = SignIn {
            login: "/audit/login",
            ended: "/audit/login?notice=session_ended",
            clear: clear_cookie(state),
        };
        from_cookie(parts, COOKIE, sign_in, |token| async move {
            match lookup(state, &token).await? {
                Lookup::Valid(user) => Ok(Some(user)),
                Lookup::Ended => Ok(None),
                // Refused here but not ended: the cookie stays, another
                // replica may know the key.
                Lookup::KeyUnknownHere => Err(PageError::Message {
                    status: axum::http::StatusCode::FORBIDDEN,
                    title: "Your key is not known here",
                    text: "This server does not know the API key you signed in with: it was \
                           withdrawn or replaced, or is being rolled out. Try again in a \
                           moment, or sign in again with your current key.",
                }),
            }
        })
        .await
        .map(Self)
    }
}

/// A page's query string (`Query`), a console page saying what is wrong
/// when it does not parse (a repeated parameter, bad percent-encoding)
/// instead of a plain-text 400. Parameters a page does not use are
/// ignored.
pub(crate) struct ConsoleQuery<T>(pub T);

impl<T> FromRequestParts<AppState> for ConsoleQuery<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| PageError::BadQuery(rejection.body_text()))
    }
}

/// Marks a download's response as a file named `name` (a name made of
/// the page's filters: fixed words, ids and times, nothing to escape).
pub(crate) fn attachment(
    mut response: axum::response::Response,
    name: &str,
) -> axum::response::Response {
    if let Ok(value) =
        axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, value);
    }
    response
}

/// 400 when a page's filters did not parse (said above its table).
pub(crate) fn status_for(errors: bool) -> axum::http::StatusCode {
    if errors {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    }
}

/// Who is signed in, for the header.
#[derive(Serialize)]
struct Header<'a> {
    name: &'a str,
    role: &'static str,
}

/// What every console page gets: the state, who is signed in, the CSRF
/// token of its forms (the sign-out button), and its query.
pub(crate) struct ConsoleRequest<Q> {
    pub state: AppState,
    pub auditor: Auditor,
    pub csrf: CsrfToken,
    pub query: Q,
}

impl<Q> FromRequestParts<AppState> for ConsoleRequest<Q>
where
    Q: serde::de::DeserializeOwned + Send,
{
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auditor = Auditor::from_request_parts(parts, state).await?;
        let ConsoleQuery(query) = ConsoleQuery::from_request_parts(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            auditor,
            csrf: CsrfToken::of(state, &parts.headers),
            query,
        })
    }
}

impl<Q> ConsoleRequest<Q> {
    /// A console page: its template gets `user` (the header) and
    /// `section` (the highlighted link) besides its own variables; 400
    /// when the page's filters did not parse.
    pub(crate) fn page(
        &self,
        template: &'static str,
        title: impl Into<String>,
        section: &str,
        extra: Value,
        bad_filters: bool,
    ) -> Page {
        let user = Header {
            name: &self.auditor.0.name,
            role: self.auditor.0.role.as_str(),
        };
        Page::new(template, title)
            .csrf(self.csrf.clone())
            .code(status_for(bad_filters))
            .with(minijinja::context! {
                user => Value::from(Serde(&user)),
                section => section,
                ..extra
            })
    }
}
