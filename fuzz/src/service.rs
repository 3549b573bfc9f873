//! The service target: command request bodies.

use access_domain::{CustomerName, EmailAddress};
use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode};
use serde_json::Value;

/// Every string value (not key) of at least 12 characters in `value`.
fn long_string_values(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.chars().count() >= 12 => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| long_string_values(v, out)),
        Value::Object(map) => map.values().for_each(|v| long_string_values(v, out)),
        _ => {}
    }
}

fn decode<T: serde::de::DeserializeOwned>(data: &[u8], content_type: &str) {
    use accessd::http::extract::JsonBody;
    let request = Request::builder()
        .method("POST")
        .uri("/v1/customers")
        .header("content-type", content_type)
        .body(Body::from(data.to_vec()))
        .expect("a request");
    match futures::executor::block_on(JsonBody::<T>::from_request(request, &())) {
        Ok(_) => {}
        Err(err) => {
            // A precise 4xx, never a 5xx.
            assert!(
                [
                    StatusCode::BAD_REQUEST,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                ]
                .contains(&err.status),
                "status {} for a bad body",
                err.status
            );
            // Values never come back in the message (they may be
            // passwords sent in the wrong field); keys (field names) may.
            if let Ok(value) = serde_json::from_slice::<Value>(data) {
                let mut values = Vec::new();
                long_string_values(&value, &mut values);
                let fields = field_names::<T>();
                for v in values {
                    // A piece of a key of the body (an unknown field is
                    // named in the message) or of one of the type's own
                    // field names (listed in "expected one of …") is no
                    // leak.
                    let is_key =
                        key_contains(&value, &v) || fields.iter().any(|f| f.contains(v.as_str()));
                    assert!(
                        is_key || !err.message.contains(&v),
                        "the error message repeats a value: {}",
                        err.message
                    );
                }
            }
        }
    }
}

/// The field names of `T`, as serde lists them in backticks for an unknown
/// field (every request type denies unknown fields), without the unknown
/// one.
fn field_names<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let message = serde_json::from_str::<T>(r#"{"\u0001": 0}"#)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| *name != "\u{1}")
        .map(str::to_string)
        .collect()
}

/// Whether a key anywhere in `value` contains `piece`.
fn key_contains(value: &Value, piece: &str) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(piece) || key_contains(v, piece)),
        Value::Array(items) => items.iter().any(|v| key_contains(v, piece)),
        _ => false,
    }
}

/// Command request decoding: the service's JSON extractor with each
/// command's body type.
pub fn command_json(data: &[u8]) {
    use accessd::http::dto::*;
    let content_type = if data.first() == Some(&b'!') {
        "text/plain"
    } else {
        "application/json"
    };
    decode::<RegisterRequest>(data, content_type);
    decode::<ChangeEmailRequest>(data, content_type);
    decode::<GrantAccessRequest>(data, content_type);
    decode::<SetPasswordRequest>(data, content_type);
    decode::<ReasonRequest>(data, content_type);
    decode::<SessionRequest>(data, content_type);
    decode::<SelfChangeEmailRequest>(data, content_type);
    decode::<ChangePasswordRequest>(data, content_type);
    decode::<ConfirmEmailRequest>(data, content_type);
    decode::<SetupPasswordRequest>(data, content_type);
    // The decoded values go through the value types next.
    if let Ok(request) = serde_json::from_slice::<RegisterRequest>(data) {
        let _ = EmailAddress::parse(&request.email);
        if let Some(name) = request.name {
            let _ = CustomerName::parse(&name);
        }
    }
}
