//! A command's answer on success. One function ([`ReplyShape::reply`])
//! makes both the live answer and the one stored under an idempotency key
//! in the command's transaction, so a replay answers exactly what the
//! first answer said.

use access_domain::CustomerId;
use axum::http::{header, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A command's success.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct CommandResponse {
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    /// The customer's version after the command (also the `ETag`).
    pub version: u64,
}

/// The notice's confirmation of a self-service email change.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
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

/// The body of a command's answer on success.
#[derive(Debug, Clone, Default)]
pub enum ReplyShape {
    /// `{"customer_id", "version"}`.
    #[default]
    Command,
    /// The notice's answer to a self-service email change.
    EmailChangeAccepted { new_email: String },
}

/// A command's answer: status, headers (the ETag; on a replay also
/// `Idempotent-Replayed`) and JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ReplyShape {
    /// The answer to a command that brought `customer_id` to `version`.
    pub fn reply(&self, status: StatusCode, customer_id: CustomerId, version: u64) -> Reply {
        let body = match self {
            Self::Command => serde_json::to_string(&CommandResponse {
                customer_id,
                version,
            }),
            Self::EmailChangeAccepted { new_email } => {
                serde_json::to_string(&EmailChangeAccepted::new(new_email, version))
            }
        }
        .unwrap_or_default();
        let mut headers = vec![(header::ETAG.to_string(), etag(version))];
        if status == StatusCode::CREATED {
            // RFC 9110 §15.3.2: where the new resource is (kept in the
            // stored reply, so a replay names it too).
            headers.push((header::LOCATION.to_string(), customer_location(customer_id)));
        }
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// The path of a customer's resource: `/v1/customers/<id>`.
pub fn customer_location(customer_id: CustomerId) -> String {
    format!("/v1/customers/{customer_id}")
}

/// The ETag of a customer at `version`: `"<version>"`.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}
