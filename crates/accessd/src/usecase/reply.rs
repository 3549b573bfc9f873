//! A command's answer on success. One function ([`ReplyShape::reply`])
//! makes both the live answer and the one stored under an idempotency key
//! in the command's transaction, so a replay answers exactly what the
//! first answer said.

use access_domain::CustomerId;
use axum::http::{header, StatusCode};

pub use access_api_types::{CommandResponse, EmailChangeAccepted};

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
                customer_id: customer_id.as_uuid(),
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
