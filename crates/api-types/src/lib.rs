//! The request and response bodies of the access service's HTTP API, in
//! one crate that both the service (`accessd`) and its Rust client
//! (`access-client`) depend on: a field renamed on one side is renamed on
//! the other, and the OpenAPI document (`utoipa`) is derived from the same
//! types.
//!
//! Requests refuse unknown fields (400 `malformed_request` naming the
//! field), so a typo such as `pasword` never silently drops a password.
//! Bodies holding secrets do not derive `Debug`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A command's success.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct CommandResponse {
    pub customer_id: Uuid,
    /// The customer's version after the command (also the `ETag`).
    pub version: u64,
}

/// The notice's confirmation of a self-service email change.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct EmailChangeAccepted {
    #[schema(example = "Validation email sent successfully.")]
    pub message: String,
    pub detail: String,
    pub pending_email: String,
    pub version: u64,
}

impl EmailChangeAccepted {
    /// The notice's answer to an email change request to `new_email`.
    pub fn new(new_email: &str, version: u64) -> Self {
        Self {
            message: "Validation email sent successfully.".into(),
            detail: format!(
                "To complete the pending email change, you must click the link provided in the validation email sent to {new_email}."
            ),
            pending_email: new_email.to_string(),
            version,
        }
    }
}

/// A new customer session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token for `/v1/self/*`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub must_change_password: bool,
    /// The customer has a second factor: this session only serves
    /// `POST /v1/self/sessions/verify` (a TOTP or recovery code, within 5
    /// minutes) and logging out; anything else answers 403
    /// `second_factor_required`.
    #[serde(default)]
    pub second_factor_required: bool,
}

/// `POST /v1/self/sessions/verify`, `POST /v1/self/second-factor/totp/confirm`,
/// `POST /v1/self/second-factor/recovery-codes`
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorCodeRequest {
    /// The 6-digit code of the authenticator app, or (to log in, or for
    /// new recovery codes) an unused recovery code.
    #[schema(example = "123456")]
    pub code: String,
}

/// `DELETE /v1/self/second-factor/totp`
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveTotpRequest {
    pub current_password: String,
    /// A code of the authenticator app or an unused recovery code.
    pub code: String,
}

/// A begun TOTP enrollment: the secret to put into an authenticator app
/// (by the URI as a QR code, or typed in), until confirmed with a code.
/// Shown to its customer only; never logged or stored in plain.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TotpEnrollment {
    /// The shared secret, base32 (RFC 4648, unpadded), 160 bits.
    pub secret: String,
    /// `otpauth://totp/…` (SHA-1, 6 digits, 30-second steps).
    pub otpauth_uri: String,
}

/// New recovery codes, shown this once (only their digests are kept):
/// each logs in once in place of a TOTP code.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
    pub version: u64,
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ErrorResponse {
    pub error: ErrorMessage,
}

/// The code (stable, machine-readable) and message (for people) of an
/// error answer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ErrorMessage {
    pub code: String,
    pub message: String,
}

/// `POST /v1/customers`
#[derive(Serialize, Deserialize, ToSchema)]
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
#[derive(Serialize, Deserialize, ToSchema)]
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
#[derive(Serialize, Deserialize, ToSchema, Default)]
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
#[derive(Serialize, Deserialize, ToSchema)]
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
#[derive(Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

/// `POST /v1/customers/{id}/forget`
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// Why the customer is forgotten (required; kept in the event's
    /// metadata and the audit trail, so it must not hold personal data).
    /// Not blank.
    #[schema(pattern = "\\S")]
    pub reason: String,
}

/// The roles access can be granted with.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GrantedRole {
    CustomerCenter,
}

/// A customer's access, as `GET /v1/customers/{id}` shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct AccessView {
    pub granted: bool,
    /// `customer_center` while access is granted.
    pub role: Option<String>,
    pub password_set: bool,
    pub must_change_password: bool,
    pub setup_link_pending: bool,
}

/// A customer's current state.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct CustomerView {
    pub customer_id: Uuid,
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

/// `GET /v1/customers` (a page of the list) and `GET /v1/customers?email=`
/// (the customers with that login email; no cursors).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct CustomerList {
    pub customers: Vec<CustomerView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// The place of this page's last customer (or the `cursor` given, on an
    /// empty page): pass it as `cursor` later to get only the customers
    /// changed since. Absent for an email lookup.
    pub resume_cursor: Option<String>,
}

/// One stored event, without password hashes or token digests.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
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
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct EventList {
    pub customer_id: Uuid,
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/self/sessions`
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub email: String,
    pub password: String,
}

/// `POST /v1/self/change-email`
#[derive(Serialize, Deserialize, ToSchema)]
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
#[derive(Serialize, Deserialize, ToSchema)]
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
    pub customer_id: Uuid,
    pub version: u64,
    pub session: SessionResponse,
}

/// `POST /v1/self/confirm-email`
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmEmailRequest {
    /// The token from the validation link.
    pub token: String,
}

/// `POST /v1/self/setup-password`
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupPasswordRequest {
    /// The token from the setup link.
    pub token: String,
    /// 10 to 128 characters, not guessable (else 422 `weak_password`).
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    pub password_confirm: String,
}

/// Who made a change.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct ActorView {
    /// `api`, `customer` or `system`.
    pub kind: String,
    /// The API key's name (for `api` and `system`).
    pub name: Option<String>,
    pub role: Option<String>,
    /// For changes made by the customer.
    pub customer_id: Option<String>,
}

/// One row of the audit trail.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct AuditView {
    /// Place in the global order (`tx:position`), also the cursor.
    pub position: String,
    pub customer_id: Uuid,
    pub sequence: u64,
    pub at: DateTime<Utc>,
    /// `customer_registered`, `email_changed`, `access_granted`, `password_set`, `password_cleared`,
    /// `access_notification_sent`, `access_revoked`, `email_change_requested`, `email_change_confirmed`,
    /// `password_setup_completed`, `password_changed`, `password_rehashed`, `customer_forgotten`, `customer_imported`,
    /// `totp_enrollment_begun`, `totp_enrolled`, `recovery_codes_issued`, `totp_code_accepted`, `recovery_code_used`,
    /// `totp_removed`, `second_factor_reset`.
    pub kind: String,
    pub actor: ActorView,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub old_email: Option<String>,
    pub new_email: Option<String>,
    /// `manual`, `setup_link`, `customer` or `imported`, where a password
    /// was set.
    pub password_source: Option<String>,
    /// For access notifications: whether a setup link was sent.
    pub with_setup_link: Option<bool>,
}

/// A page of the audit trail.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One message of the mail queue (never its content: it holds a live link).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct MailView {
    pub id: String,
    pub customer_id: String,
    /// The template kind.
    pub kind: String,
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// `GET /v1/mail`
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct MailList {
    pub messages: Vec<MailView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
