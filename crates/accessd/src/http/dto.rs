//! Request and response bodies. Unknown fields are rejected (400
//! `malformed_request` naming the field), so a typo such as `pasword`
//! never silently drops a password. Bodies holding secrets do not derive
//! `Debug`.

use std::collections::HashMap;

use access_domain::{Customer, CustomerId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The answers of use cases, in the shape they are stored and replayed in.
pub use crate::usecase::reply::{CommandResponse, EmailChangeAccepted};
pub use crate::usecase::session::SessionResponse;

/// `POST /v1/customers`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The login email.
    #[schema(example = "ann@example.com", format = Email, max_length = 254)]
    pub email: String,
    /// 1 to 200 characters, no control characters, not only spaces.
    #[schema(
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: Option<String>,
    /// A UUID chosen by the caller; a new one if absent.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub customer_id: Option<String>,
    /// Why (recorded in the audit trail).
    pub reason: Option<String>,
}

/// `POST /v1/customers/{id}/change-email`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmailRequest {
    #[schema(example = "ann.new@example.org", format = Email, max_length = 254)]
    pub email: String,
    /// A manually assigned, temporary password (with `password_confirm`):
    /// 10 to 128 characters, not guessable (zxcvbn score 3 or more, else
    /// 422 `weak_password`).
    #[schema(nullable = false, min_length = 10, max_length = 128)]
    pub password: Option<String>,
    /// The same password again (required with `password`, refused
    /// without it).
    #[schema(nullable = false)]
    pub password_confirm: Option<String>,
    /// With a password: a notice without the password. Without one: an
    /// access notification with a password-setup link.
    pub send_notification: Option<bool>,
    pub reason: Option<String>,
}

/// `POST /v1/customers/{id}/grant-access`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantAccessRequest {
    /// `customer_center` (the default and only role).
    #[schema(value_type = Option<GrantedRole>)]
    pub role: Option<String>,
    /// A manually assigned, temporary password (with `password_confirm`):
    /// 10 to 128 characters, not guessable (zxcvbn score 3 or more, else
    /// 422 `weak_password`).
    #[schema(nullable = false, min_length = 10, max_length = 128)]
    pub password: Option<String>,
    /// The same password again (required with `password`, refused
    /// without it).
    #[schema(nullable = false)]
    pub password_confirm: Option<String>,
    pub send_notification: Option<bool>,
    pub reason: Option<String>,
}

/// `POST /v1/customers/{id}/set-password`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    /// 10 to 128 characters, not guessable (else 422 `weak_password`).
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    pub password_confirm: String,
    pub send_notification: Option<bool>,
    pub reason: Option<String>,
}

/// `POST /v1/customers/{id}/send-access-notification` and
/// `POST /v1/customers/{id}/revoke-access`
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

/// `POST /v1/customers/{id}/forget`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// Why the customer is forgotten (required; kept in the event's
    /// metadata and the audit trail, so it must not hold personal data).
    /// Not blank.
    #[schema(pattern = "\\S")]
    pub reason: String,
}

/// The roles access can be granted with.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // a schema only: the body holds the role as text
pub enum GrantedRole {
    CustomerCenter,
}

/// A customer's access, as `GET /v1/customers/{id}` shows it.
#[derive(Serialize, ToSchema, Debug)]
pub struct AccessView {
    pub granted: bool,
    /// `customer_center` while access is granted.
    pub role: Option<String>,
    pub password_set: bool,
    pub must_change_password: bool,
    pub setup_link_pending: bool,
}

/// A customer's current state.
#[derive(Serialize, ToSchema, Debug)]
pub struct CustomerView {
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub name: Option<String>,
    pub email: String,
    pub access: AccessView,
    /// The target of a pending self-service email change (while its link
    /// lives).
    pub pending_email: Option<String>,
    /// True when the latest self-service email change was never confirmed
    /// and its link expired: it no longer holds the address
    /// (`pending_email` is then null).
    pub pending_email_expired: bool,
    pub version: u64,
    pub updated_at: Option<DateTime<Utc>>,
}

impl CustomerView {
    pub fn new(id: CustomerId, customer: &Customer, version: u64, now: DateTime<Utc>) -> Self {
        Self {
            customer_id: id,
            name: customer.name().map(|n| n.as_str().to_string()),
            email: customer
                .email()
                .map(|e| e.as_str().to_string())
                .unwrap_or_default(),
            access: AccessView {
                granted: customer.has_access(),
                role: customer.access().map(|r| r.as_str().to_string()),
                password_set: customer.has_password(),
                must_change_password: customer.must_change_password(),
                setup_link_pending: customer.setup_link().is_some_and(|l| l.expires_at > now),
            },
            pending_email: customer
                .pending_email_change()
                .filter(|p| p.expires_at > now)
                .map(|p| p.new_email.as_str().to_string()),
            pending_email_expired: customer
                .pending_email_change()
                .is_some_and(|p| p.is_expired(now)),
            version,
            updated_at: customer.updated_at(),
        }
    }
}

impl CustomerView {
    /// From the access-state projection.
    pub fn from_row(row: &access_projections::AccessStateRow, now: DateTime<Utc>) -> Self {
        Self {
            customer_id: row.customer_id,
            name: row.name.clone(),
            email: row.email.clone(),
            access: AccessView {
                granted: row.access_granted,
                role: row.role.clone(),
                password_set: row.password_set,
                must_change_password: row.must_change_password,
                setup_link_pending: row.setup_link_pending(now),
            },
            pending_email: row.pending_email_at(now).map(str::to_string),
            pending_email_expired: row.pending_email_expired(now),
            version: row.version,
            updated_at: Some(row.updated_at),
        }
    }
}

/// `GET /v1/customers?email=`
#[derive(Serialize, ToSchema, Debug)]
pub struct CustomerList {
    pub customers: Vec<CustomerView>,
}

/// One stored event, without password hashes or token digests.
#[derive(Serialize, ToSchema, Debug)]
pub struct EventView {
    pub sequence: u64,
    /// Place in the global order (`tx:position`).
    pub position: String,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// Actor, request id and reason.
    pub metadata: HashMap<String, String>,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `GET /v1/customers/{id}/events`
#[derive(Serialize, ToSchema, Debug)]
pub struct EventList {
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub events: Vec<EventView>,
}

/// `POST /v1/self/sessions`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub email: String,
    pub password: String,
}

/// `POST /v1/self/change-email`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfChangeEmailRequest {
    pub current_password: String,
    #[schema(format = Email, max_length = 254)]
    pub new_email: String,
    /// The same address again.
    #[schema(format = Email, max_length = 254)]
    pub new_email_confirm: String,
}

/// `POST /v1/self/change-password`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    /// 10 to 128 characters, not guessable (else 422 `weak_password`).
    #[schema(min_length = 10, max_length = 128)]
    pub new_password: String,
    pub new_password_confirm: String,
}

/// A changed password: every earlier session has ended; `session` is a new
/// one for the caller.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub version: u64,
    pub session: SessionResponse,
}

/// `POST /v1/self/confirm-email`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmEmailRequest {
    /// The token from the validation link.
    pub token: String,
}

/// `POST /v1/self/setup-password`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupPasswordRequest {
    /// The token from the setup link.
    pub token: String,
    /// 10 to 128 characters, not guessable (else 422 `weak_password`).
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    pub password_confirm: String,
}

/// `GET /healthz`
#[derive(Serialize, ToSchema, Debug)]
pub struct Health {
    pub status: String,
}

/// `GET /readyz` (200): every part this process runs is working.
#[derive(Serialize, ToSchema, Debug)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    pub parts: ReadinessParts,
}

/// `GET /readyz` (503): the error shape, plus which part is not ready.
#[derive(Serialize, ToSchema, Debug)]
pub struct NotReady {
    pub error: crate::error::ErrorDetail,
    /// `not_ready`.
    pub status: String,
    pub parts: ReadinessParts,
}

/// The parts of this process that readiness checks.
#[derive(Serialize, ToSchema, Debug)]
pub struct ReadinessParts {
    /// The store answers and is migrated.
    pub database: PartState,
    /// The catch-up projector (read model).
    pub projector: PartState,
    /// The hash chain over the events (kept by the projector's loop).
    pub hash_chain: PartState,
    /// The outbox worker (mail delivery).
    pub mail_worker: PartState,
}

/// The state of one part.
#[derive(Serialize, ToSchema, Debug)]
pub struct PartState {
    /// `ready` (database), `running`, `disabled` (turned off in this
    /// process's configuration: another process runs it), `failed`
    /// (stopped on an error), `stopped` (its loop ended) or `unavailable`
    /// (database).
    #[schema(example = "running")]
    pub state: &'static str,
    /// Why it is not ready, in general words (the details, which may name
    /// positions or recipients, are in the log: this endpoint needs no
    /// credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PartState {
    pub fn new(state: &'static str) -> Self {
        Self { state, error: None }
    }

    pub fn with_error(state: &'static str, error: impl Into<String>) -> Self {
        Self {
            state,
            error: Some(error.into()),
        }
    }

    /// Whether this part lets the process serve.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, "ready" | "running" | "disabled")
    }
}

/// Removes password hashes and token digests from an event's JSON.
pub fn without_secrets(mut value: serde_json::Value) -> serde_json::Value {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("password_hash");
                map.remove("token_digest");
                for child in map.values_mut() {
                    scrub(child);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    scrub(&mut value);
    value
}

pub use access_projections::export::{ActorView, AuditView};

/// A page of the audit trail.
#[derive(Serialize, ToSchema, Debug)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
