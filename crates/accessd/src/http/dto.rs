//! Request and response bodies. Unknown fields are rejected (400
//! `malformed_request` naming the field), so a typo such as `pasword`
//! never silently drops a password. Bodies holding secrets do not derive
//! `Debug`.

use access_domain::{Customer, CustomerId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// The answers of use cases, in the shape they are stored and replayed in.
pub use crate::usecase::reply::{CommandResponse, EmailChangeAccepted};
pub use crate::usecase::session::SessionResponse;

pub use access_api_types::{
    AccessView, ActorView, AuditPage, AuditView, ChangeEmailRequest, ChangePasswordRequest,
    ConfirmEmailRequest, CustomerList, CustomerView, EventList, EventView, ForgetRequest,
    GrantAccessRequest, GrantedRole, PasswordChanged, ReasonRequest, RecoveryCodes,
    RegisterRequest, RemoveTotpRequest, SecondFactorCodeRequest, SelfChangeEmailRequest,
    SessionRequest, SetPasswordRequest, SetupPasswordRequest, TotpEnrollment,
};

/// A customer's current state, from the aggregate.
pub fn customer_view(
    id: CustomerId,
    customer: &Customer,
    version: u64,
    now: DateTime<Utc>,
) -> CustomerView {
    CustomerView {
        customer_id: id.as_uuid(),
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

/// A customer's state from the access-state projection.
pub fn customer_view_from_row(
    row: &access_projections::AccessStateRow,
    now: DateTime<Utc>,
) -> CustomerView {
    CustomerView {
        customer_id: row.customer_id.as_uuid(),
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

/// The fields of an event's JSON that are secrets: password hashes,
/// token and recovery-code digests, and the TOTP secret.
pub const SECRET_FIELDS: [&str; 5] = [
    "password_hash",
    "token_digest",
    "totp_secret",
    "recovery_code_digests",
    "recovery_code_digest",
];

/// Removes password hashes, token and recovery-code digests and TOTP
/// secrets from an event's JSON.
pub fn without_secrets(mut value: serde_json::Value) -> serde_json::Value {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for field in SECRET_FIELDS {
                    map.remove(field);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_and_exports_never_show_a_totp_secret_or_recovery_code_digests() {
        let events = [
            serde_json::json!({"TotpEnrollmentBegun": {"totp_secret": "AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB", "at": "2026-01-01T00:00:00Z"}}),
            serde_json::json!({"RecoveryCodesIssued": {"recovery_code_digests": ["d1", "d2"], "at": "2026-01-01T00:00:00Z"}}),
            serde_json::json!({"RecoveryCodeUsed": {"recovery_code_digest": "d1", "at": "2026-01-01T00:00:00Z"}}),
        ];
        for event in events {
            let shown = without_secrets(event).to_string();
            assert!(
                !shown.contains("AEAQ") && !shown.contains("d1") && !shown.contains("d2"),
                "{shown}"
            );
            assert!(shown.contains("\"at\""), "{shown}");
        }
    }
}
