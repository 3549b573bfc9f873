//! A typed async client of the access service's HTTP API.
//!
//! The request and response bodies are the service's own
//! ([`access_api_types`], re-exported here as [`types`] and at the crate
//! root): the service and this client compile against the same structs.
//! Every command takes [`CommandOptions`] (an optional `Idempotency-Key`
//! and `If-Match`); every answer comes as a [`Reply`] with the headers a
//! caller acts on (`ETag`, `Idempotent-Replayed`, `Location`,
//! `X-Request-Id`); lists that grow (customers, events, audit trail, mail)
//! are [`futures::Stream`]s that follow `next_cursor`; errors carry the
//! service's stable codes as an [`ErrorCode`].
//!
//! The notice's story (see `examples/notice.rs`, built in CI):
//!
//! ```no_run
//! use access_client::{Client, CommandOptions, ErrorCode, types::*};
//!
//! # async fn story() -> Result<(), access_client::Error> {
//! let api = Client::new("http://127.0.0.1:8080", "ak_…")?;
//! let none = CommandOptions::default();
//! let ann = api
//!     .register(&RegisterRequest { email: "ann@example.com".into(), name: Some("Ann".into()), customer_id: None, reason: None }, &none)
//!     .await?;
//! let id = ann.body.customer_id;
//! // New access with neither a password nor a notification: refused.
//! let refused = api.grant_access(id, &GrantAccessRequest::default(), &none).await;
//! assert_eq!(refused.unwrap_err().code(), Some(&ErrorCode::LoginHasNoPassword));
//! // With a notification (a password-setup link by mail).
//! let grant = GrantAccessRequest { send_notification: Some(true), ..Default::default() };
//! let granted = api.grant_access(id, &grant, &CommandOptions::idempotency_key("grant-ann-1")).await?;
//! // A new email with a notification, only if nobody changed Ann since.
//! let change = ChangeEmailRequest { email: "ann.new@example.org".into(), password: None, password_confirm: None, send_notification: Some(true), reason: None };
//! api.change_email(id, &change, &CommandOptions::if_match(granted.body.version)).await?;
//! api.revoke_access(id, &ReasonRequest { reason: Some("contract ended".into()) }, &none).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

pub use access_api_types as types;
pub use access_api_types::*;

mod error;
pub use error::{Error, ErrorCode};

/// Options of a command.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// `Idempotency-Key`: a retry with the same key and body answers the
    /// first answer again (with `Idempotent-Replayed: true`) and writes
    /// nothing.
    pub idempotency_key: Option<String>,
    /// `If-Match`: the command runs only on this version of the customer
    /// (else 412 `version_mismatch`).
    pub if_match: Option<u64>,
}

impl CommandOptions {
    /// With an `Idempotency-Key`.
    pub fn idempotency_key(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            if_match: None,
        }
    }

    /// With an `If-Match` on `version`.
    pub fn if_match(version: u64) -> Self {
        Self {
            idempotency_key: None,
            if_match: Some(version),
        }
    }

    /// Adds an `If-Match` on `version`.
    pub fn and_if_match(mut self, version: u64) -> Self {
        self.if_match = Some(version);
        self
    }
}

/// A successful answer: its body and the headers a caller acts on.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub body: T,
    pub status: u16,
    /// The customer's version, quoted (`"3"`), where the answer has one.
    pub etag: Option<String>,
    /// The answer is the stored answer of an earlier request with the same
    /// `Idempotency-Key`.
    pub replayed: bool,
    /// Where a new customer is (`201 Created`).
    pub location: Option<String>,
    /// The request id the service logged this request under.
    pub request_id: Option<String>,
}

impl<T> Reply<T> {
    /// The version in the `ETag`.
    pub fn version(&self) -> Option<u64> {
        self.etag.as_deref()?.trim_matches('"').parse().ok()
    }
}

/// Filters of the customer list (`GET /v1/customers`).
#[derive(Debug, Clone, Default)]
pub struct CustomerQuery {
    /// Only customers with (true) or without (false) portal access.
    pub has_access: Option<bool>,
    /// Only customers changed at or after this instant.
    pub updated_since: Option<DateTime<Utc>>,
    /// Customers per page (1 to 1000; the service's default 100).
    pub page_size: Option<u32>,
    /// Start after this cursor (`resume_cursor` of an earlier pass).
    pub cursor: Option<String>,
}

/// Filters of the audit trail (`GET /v1/audit`).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub customer_id: Option<Uuid>,
    /// A kind of change (`email_changed`, `access_granted`, …).
    pub kind: Option<String>,
    /// An API key name, or a customer id for customers' own changes.
    pub actor: Option<String>,
    /// From this instant, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant, exclusive.
    pub to: Option<DateTime<Utc>>,
    pub page_size: Option<u32>,
}

/// Filters of the mail queue (`GET /v1/mail`).
#[derive(Debug, Clone, Default)]
pub struct MailQuery {
    /// `pending`, `sent` or `failed`.
    pub status: Option<String>,
    pub page_size: Option<u32>,
}

/// A client of one service, with one credential (an API key, a customer
/// session, or none for the link-token endpoints). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

fn stamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The commands: `POST` of a body to a path (with the customer's id for
/// the commands on one customer), with the options' `Idempotency-Key`
/// and `If-Match`. (A macro: the methods differ only in name, path, body
/// and answer, and one generic method instead would change the client's
/// API.)
macro_rules! commands {
    ($($(#[$doc:meta])* $name:ident($body:ty $(, $id:ident)?) -> $answer:ty = $path:literal;)+) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(
                    &self,
                    $($id: Uuid,)?
                    body: &$body,
                    options: &CommandOptions,
                ) -> Result<Reply<$answer>, Error> {
                    self.command(&format!($path), body, options).await
                }
            )+
        }
    };
}

commands! {
    // API key with the `service` or `admin` role.

    /// `POST /v1/customers`: a customer without access.
    register(RegisterRequest) -> CommandResponse = "/v1/customers";
    /// `POST /v1/customers/{id}/change-email`
    change_email(ChangeEmailRequest, id) -> CommandResponse = "/v1/customers/{id}/change-email";
    /// `POST /v1/customers/{id}/grant-access`
    grant_access(GrantAccessRequest, id) -> CommandResponse = "/v1/customers/{id}/grant-access";
    /// `POST /v1/customers/{id}/set-password`
    set_password(SetPasswordRequest, id) -> CommandResponse = "/v1/customers/{id}/set-password";
    /// `POST /v1/customers/{id}/send-access-notification`
    send_access_notification(ReasonRequest, id) -> CommandResponse =
        "/v1/customers/{id}/send-access-notification";
    /// `POST /v1/customers/{id}/revoke-access`
    revoke_access(ReasonRequest, id) -> CommandResponse = "/v1/customers/{id}/revoke-access";
    /// `POST /v1/customers/{id}/forget` (admin).
    forget(ForgetRequest, id) -> CommandResponse = "/v1/customers/{id}/forget";

    // Customers (a session's token, or none for the links' tokens).

    /// `POST /v1/self/change-email`: a validation link to the new address.
    request_email_change(SelfChangeEmailRequest) -> EmailChangeAccepted = "/v1/self/change-email";
    /// `POST /v1/self/change-password`: ends every session; the answer
    /// holds a new one.
    change_password(ChangePasswordRequest) -> PasswordChanged = "/v1/self/change-password";
    /// `POST /v1/self/confirm-email` (the token of a validation link).
    confirm_email(ConfirmEmailRequest) -> CommandResponse = "/v1/self/confirm-email";
    /// `POST /v1/self/setup-password` (the token of a setup link).
    setup_password(SetupPasswordRequest) -> CommandResponse = "/v1/self/setup-password";
}

impl Client {
    /// A client of the service at `base_url` (e.g. `http://127.0.0.1:8080`)
    /// with an API key.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self::with_http(http, base_url, Some(api_key.into())))
    }

    /// A client over a `reqwest::Client` of the caller's (its timeouts,
    /// proxies, TLS roots), with an optional bearer credential.
    pub fn with_http(
        http: reqwest::Client,
        base_url: impl Into<String>,
        bearer: Option<String>,
    ) -> Self {
        Self {
            http,
            base: base_url.into().trim_end_matches('/').to_string(),
            bearer,
        }
    }

    /// The same service with another credential (a customer session's
    /// token), or none.
    pub fn with_bearer(&self, bearer: Option<String>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            bearer,
        }
    }

    /// The service's address.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<Reply<T>, Error> {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(Error::from_answer(status, &headers, &text));
        }
        let body =
            serde_json::from_str(if text.is_empty() { "null" } else { &text }).map_err(|e| {
                Error::Unexpected {
                    status: status.as_u16(),
                    detail: format!("a body that is not the expected JSON: {e}"),
                }
            })?;
        Ok(reply(body, status, &headers))
    }

    async fn command<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        options: &CommandOptions,
    ) -> Result<Reply<T>, Error> {
        let mut request = self.request(Method::POST, path).json(body);
        if let Some(key) = &options.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(version) = options.if_match {
            request = request.header("if-match", format!("\"{version}\""));
        }
        self.send(request).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Reply<T>, Error> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    // Reads.

    /// `GET /v1/customers/{id}` (the `ETag` is its version).
    pub async fn customer(&self, id: Uuid) -> Result<Reply<CustomerView>, Error> {
        self.get(&format!("/v1/customers/{id}"), &[]).await
    }

    /// `GET /v1/customers/{id}?as_of=…`: the customer as it was then.
    pub async fn customer_as_of(
        &self,
        id: Uuid,
        as_of: DateTime<Utc>,
    ) -> Result<Reply<CustomerView>, Error> {
        self.get(&format!("/v1/customers/{id}"), &[("as_of", stamp(&as_of))])
            .await
    }

    /// `GET /v1/customers?email=…`: the customers with this login email.
    pub async fn find_by_email(&self, email: &str) -> Result<Vec<CustomerView>, Error> {
        let list: Reply<CustomerList> = self
            .get("/v1/customers", &[("email", email.to_string())])
            .await?;
        Ok(list.body.customers)
    }

    /// One page of the customer list, after `cursor`.
    pub async fn customers_page(
        &self,
        query: &CustomerQuery,
        cursor: Option<&str>,
    ) -> Result<CustomerList, Error> {
        let params = Params::default()
            .with("has_access", query.has_access)
            .with("updated_since", query.updated_since.as_ref().map(stamp))
            .with("limit", query.page_size)
            .with("cursor", cursor.or(query.cursor.as_deref()));
        Ok(self.get("/v1/customers", &params.0).await?.body)
    }

    /// Every customer matching `query`, in the order of their last change,
    /// page after page. A customer changed while the stream runs shows
    /// again later with its newer version; none is skipped.
    pub fn customers(
        &self,
        query: CustomerQuery,
    ) -> BoxStream<'static, Result<CustomerView, Error>> {
        let start = query.cursor.clone();
        follow(self, query, start, |client, query, cursor| async move {
            let page = client.customers_page(&query, cursor.as_deref()).await?;
            Ok((page.customers, page.next_cursor))
        })
    }

    /// One page of a customer's events.
    pub async fn events_page(
        &self,
        id: Uuid,
        page_size: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<EventList, Error> {
        let params = Params::default()
            .with("limit", page_size)
            .with("cursor", cursor);
        let path = format!("/v1/customers/{id}/events");
        Ok(self.get(&path, &params.0).await?.body)
    }

    /// A customer's events, oldest first.
    pub fn events(
        &self,
        id: Uuid,
        page_size: Option<u32>,
    ) -> BoxStream<'static, Result<EventView, Error>> {
        follow(self, id, None, move |client, id, cursor| async move {
            let page = client.events_page(id, page_size, cursor.as_deref()).await?;
            Ok((page.events, page.next_cursor))
        })
    }

    /// One page of the audit trail.
    pub async fn audit_page(
        &self,
        query: &AuditQuery,
        cursor: Option<&str>,
    ) -> Result<AuditPage, Error> {
        let params = Params::default()
            .with("customer_id", query.customer_id)
            .with("kind", query.kind.as_ref())
            .with("actor", query.actor.as_ref())
            .with("from", query.from.as_ref().map(stamp))
            .with("to", query.to.as_ref().map(stamp))
            .with("limit", query.page_size)
            .with("cursor", cursor);
        Ok(self.get("/v1/audit", &params.0).await?.body)
    }

    /// The audit trail, in the global order.
    pub fn audit(&self, query: AuditQuery) -> BoxStream<'static, Result<AuditView, Error>> {
        follow(self, query, None, |client, query, cursor| async move {
            let page = client.audit_page(&query, cursor.as_deref()).await?;
            Ok((page.items, page.next_cursor))
        })
    }

    /// One page of the mail queue (admin).
    pub async fn mail_page(
        &self,
        query: &MailQuery,
        cursor: Option<&str>,
    ) -> Result<MailList, Error> {
        let params = Params::default()
            .with("status", query.status.as_ref())
            .with("limit", query.page_size)
            .with("cursor", cursor);
        Ok(self.get("/v1/mail", &params.0).await?.body)
    }

    /// The mail queue, newest first (admin).
    pub fn mail(&self, query: MailQuery) -> BoxStream<'static, Result<MailView, Error>> {
        follow(self, query, None, |client, query, cursor| async move {
            let page = client.mail_page(&query, cursor.as_deref()).await?;
            Ok((page.messages, page.next_cursor))
        })
    }

    /// `POST /v1/mail/{id}/retry`: sends a failed message again (admin).
    pub async fn retry_mail(&self, id: &str) -> Result<(), Error> {
        let request = self.request(Method::POST, &format!("/v1/mail/{id}/retry"));
        let _: Reply<()> = self.send(request).await?;
        Ok(())
    }

    // Self-service (customers: no credential, or a session's token).

    /// `POST /v1/self/sessions`: logs a customer in. Use the token with
    /// [`Client::with_bearer`].
    pub async fn create_session(
        &self,
        body: &SessionRequest,
    ) -> Result<Reply<SessionResponse>, Error> {
        self.command("/v1/self/sessions", body, &CommandOptions::default())
            .await
    }

    /// `DELETE /v1/self/sessions/current`
    pub async fn end_session(&self) -> Result<(), Error> {
        let request = self.request(Method::DELETE, "/v1/self/sessions/current");
        let _: Reply<()> = self.send(request).await?;
        Ok(())
    }

    /// `GET /v1/self`
    pub async fn me(&self) -> Result<Reply<CustomerView>, Error> {
        self.get("/v1/self", &[]).await
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

fn reply<T>(body: T, status: StatusCode, headers: &HeaderMap) -> Reply<T> {
    Reply {
        body,
        status: status.as_u16(),
        etag: header(headers, "etag"),
        replayed: header(headers, "idempotent-replayed").as_deref() == Some("true"),
        location: header(headers, "location"),
        request_id: header(headers, "x-request-id"),
    }
}

/// Query parameters; absent values are left out.
#[derive(Default)]
struct Params(Vec<(&'static str, String)>);

impl Params {
    fn with(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.0.push((name, value.to_string()));
        }
        self
    }
}

/// The items of every page, fetching the next page (`fetch(client, query,
/// cursor)` gives a page's items and its `next_cursor`) only when the
/// previous one is consumed, until a page has no `next_cursor`. Stops
/// after an error.
fn follow<Q, T, F, Fut>(
    client: &Client,
    query: Q,
    start: Option<String>,
    fetch: F,
) -> BoxStream<'static, Result<T, Error>>
where
    Q: Clone + Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(Client, Q, Option<String>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), Error>> + Send + 'static,
{
    let client = client.clone();
    enum Next {
        Page(Option<String>),
        Done,
    }
    stream::try_unfold(Next::Page(start), move |next| {
        let page = match next {
            Next::Page(cursor) => Some(fetch(client.clone(), query.clone(), cursor)),
            Next::Done => None,
        };
        async move {
            let Some(page) = page else {
                return Ok::<_, Error>(None);
            };
            let (items, next_cursor) = page.await?;
            let next = match next_cursor {
                Some(cursor) => Next::Page(Some(cursor)),
                None => Next::Done,
            };
            Ok(Some((stream::iter(items.into_iter().map(Ok)), next)))
        }
    })
    .try_flatten()
    .boxed()
}
