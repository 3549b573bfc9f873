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

    // Commands (API key with the `service` or `admin` role).

    /// `POST /v1/customers`: a customer without access.
    pub async fn register(
        &self,
        body: &RegisterRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command("/v1/customers", body, options).await
    }

    /// `POST /v1/customers/{id}/change-email`
    pub async fn change_email(
        &self,
        id: Uuid,
        body: &ChangeEmailRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command(&format!("/v1/customers/{id}/change-email"), body, options)
            .await
    }

    /// `POST /v1/customers/{id}/grant-access`
    pub async fn grant_access(
        &self,
        id: Uuid,
        body: &GrantAccessRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command(&format!("/v1/customers/{id}/grant-access"), body, options)
            .await
    }

    /// `POST /v1/customers/{id}/set-password`
    pub async fn set_password(
        &self,
        id: Uuid,
        body: &SetPasswordRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command(&format!("/v1/customers/{id}/set-password"), body, options)
            .await
    }

    /// `POST /v1/customers/{id}/send-access-notification`
    pub async fn send_access_notification(
        &self,
        id: Uuid,
        body: &ReasonRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command(
            &format!("/v1/customers/{id}/send-access-notification"),
            body,
            options,
        )
        .await
    }

    /// `POST /v1/customers/{id}/revoke-access`
    pub async fn revoke_access(
        &self,
        id: Uuid,
        body: &ReasonRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command(&format!("/v1/customers/{id}/revoke-access"), body, options)
            .await
    }

    /// `POST /v1/customers/{id}/forget` (admin).
    pub async fn forget(
        &self,
        id: Uuid,
        body: &ForgetRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command(&format!("/v1/customers/{id}/forget"), body, options)
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
        let mut params = Vec::new();
        if let Some(has_access) = query.has_access {
            params.push(("has_access", has_access.to_string()));
        }
        if let Some(since) = &query.updated_since {
            params.push(("updated_since", stamp(since)));
        }
        if let Some(size) = query.page_size {
            params.push(("limit", size.to_string()));
        }
        if let Some(cursor) = cursor.or(query.cursor.as_deref()) {
            params.push(("cursor", cursor.to_string()));
        }
        Ok(self.get("/v1/customers", &params).await?.body)
    }

    /// Every customer matching `query`, in the order of their last change,
    /// page after page. A customer changed while the stream runs shows
    /// again later with its newer version; none is skipped.
    pub fn customers(
        &self,
        query: CustomerQuery,
    ) -> BoxStream<'static, Result<CustomerView, Error>> {
        let client = self.clone();
        follow(query.cursor.clone(), move |cursor| {
            let client = client.clone();
            let query = query.clone();
            async move {
                let page = client.customers_page(&query, cursor.as_deref()).await?;
                Ok((page.customers, page.next_cursor))
            }
        })
    }

    /// One page of a customer's events.
    pub async fn events_page(
        &self,
        id: Uuid,
        page_size: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<EventList, Error> {
        let mut params = Vec::new();
        if let Some(size) = page_size {
            params.push(("limit", size.to_string()));
        }
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor.to_string()));
        }
        Ok(self
            .get(&format!("/v1/customers/{id}/events"), &params)
            .await?
            .body)
    }

    /// A customer's events, oldest first.
    pub fn events(
        &self,
        id: Uuid,
        page_size: Option<u32>,
    ) -> BoxStream<'static, Result<EventView, Error>> {
        let client = self.clone();
        follow(None, move |cursor| {
            let client = client.clone();
            async move {
                let page = client.events_page(id, page_size, cursor.as_deref()).await?;
                Ok((page.events, page.next_cursor))
            }
        })
    }

    /// One page of the audit trail.
    pub async fn audit_page(
        &self,
        query: &AuditQuery,
        cursor: Option<&str>,
    ) -> Result<AuditPage, Error> {
        let mut params = Vec::new();
        if let Some(id) = query.customer_id {
            params.push(("customer_id", id.to_string()));
        }
        if let Some(kind) = &query.kind {
            params.push(("kind", kind.clone()));
        }
        if let Some(actor) = &query.actor {
            params.push(("actor", actor.clone()));
        }
        if let Some(from) = &query.from {
            params.push(("from", stamp(from)));
        }
        if let Some(to) = &query.to {
            params.push(("to", stamp(to)));
        }
        if let Some(size) = query.page_size {
            params.push(("limit", size.to_string()));
        }
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor.to_string()));
        }
        Ok(self.get("/v1/audit", &params).await?.body)
    }

    /// The audit trail, in the global order.
    pub fn audit(&self, query: AuditQuery) -> BoxStream<'static, Result<AuditView, Error>> {
        let client = self.clone();
        follow(None, move |cursor| {
            let client = client.clone();
            let query = query.clone();
            async move {
                let page = client.audit_page(&query, cursor.as_deref()).await?;
                Ok((page.items, page.next_cursor))
            }
        })
    }

    /// One page of the mail queue (admin).
    pub async fn mail_page(
        &self,
        query: &MailQuery,
        cursor: Option<&str>,
    ) -> Result<MailList, Error> {
        let mut params = Vec::new();
        if let Some(status) = &query.status {
            params.push(("status", status.clone()));
        }
        if let Some(size) = query.page_size {
            params.push(("limit", size.to_string()));
        }
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor.to_string()));
        }
        Ok(self.get("/v1/mail", &params).await?.body)
    }

    /// The mail queue, newest first (admin).
    pub fn mail(&self, query: MailQuery) -> BoxStream<'static, Result<MailView, Error>> {
        let client = self.clone();
        follow(None, move |cursor| {
            let client = client.clone();
            let query = query.clone();
            async move {
                let page = client.mail_page(&query, cursor.as_deref()).await?;
                Ok((page.messages, page.next_cursor))
            }
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

    /// `POST /v1/self/change-email`: a validation link to the new address.
    pub async fn request_email_change(
        &self,
        body: &SelfChangeEmailRequest,
        options: &CommandOptions,
    ) -> Result<Reply<EmailChangeAccepted>, Error> {
        self.command("/v1/self/change-email", body, options).await
    }

    /// `POST /v1/self/change-password`: ends every session; the answer
    /// holds a new one.
    pub async fn change_password(
        &self,
        body: &ChangePasswordRequest,
        options: &CommandOptions,
    ) -> Result<Reply<PasswordChanged>, Error> {
        self.command("/v1/self/change-password", body, options)
            .await
    }

    /// `POST /v1/self/confirm-email` (the token of a validation link).
    pub async fn confirm_email(
        &self,
        body: &ConfirmEmailRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command("/v1/self/confirm-email", body, options).await
    }

    /// `POST /v1/self/setup-password` (the token of a setup link).
    pub async fn setup_password(
        &self,
        body: &SetupPasswordRequest,
        options: &CommandOptions,
    ) -> Result<Reply<CommandResponse>, Error> {
        self.command("/v1/self/setup-password", body, options).await
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

/// The items of every page, fetching the next page (`fetch(cursor)` gives
/// a page's items and its `next_cursor`) only when the previous one is
/// consumed, until a page has no `next_cursor`. Stops after an error.
fn follow<T, F, Fut>(start: Option<String>, fetch: F) -> BoxStream<'static, Result<T, Error>>
where
    T: Send + 'static,
    F: Fn(Option<String>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), Error>> + Send + 'static,
{
    enum Next {
        Page(Option<String>),
        Done,
    }
    stream::try_unfold(Next::Page(start), move |next| {
        let page = match next {
            Next::Page(cursor) => Some(fetch(cursor)),
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
