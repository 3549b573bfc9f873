//! What the fuzz targets check, as plain functions: libFuzzer calls them
//! from `fuzz_targets/` (nightly or `RUSTC_BOOTSTRAP=1`), and the ordinary
//! test suite replays the saved inputs in `fuzz/regressions/<target>/`
//! through them on stable (crates/accessd/tests/fuzz_regressions.rs, which
//! includes this file).
//!
//! Each function panics when a property is broken; any other input is fine.

use std::sync::OnceLock;

use access_domain::events::EVENT_VERSIONS;
use access_domain::upcasting::{upcast, upcasters};
use access_domain::{Customer, CustomerEvent, CustomerName, EmailAddress, Password};
use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
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
                for v in values {
                    let is_key = data_has_key(&value, &v);
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

fn data_has_key(value: &Value, key: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| k == key || data_has_key(v, key)),
        Value::Array(items) => items.iter().any(|v| data_has_key(v, key)),
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

/// The version rule of the store's codec (crates/store/src/codec.rs):
/// cqrs-es's upcaster panics on other versions, so they are refused first.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn shared_upcasters() -> &'static [Box<dyn EventUpcaster>] {
    static UPCASTERS: OnceLock<Vec<Box<dyn EventUpcaster>>> = OnceLock::new();
    UPCASTERS.get_or_init(upcasters)
}

/// A stored event row, as `event_type\nevent_version\npayload`: known
/// type and valid version as the store checks them, then upcasting and
/// deserialization as the store does them; a decoded event serializes and
/// reads back to the same JSON, and applies to an aggregate without panic.
pub fn stored_event(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(event_type), Some(version), Some(payload)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(payload) = serde_json::from_str::<Value>(payload) else {
        return;
    };
    if !EVENT_VERSIONS.iter().any(|(name, _)| *name == event_type) || !is_version(version) {
        return;
    }
    let serialized = SerializedEvent {
        aggregate_id: "00000000-0000-0000-0000-000000000000".into(),
        sequence: 1,
        aggregate_type: "Customer".into(),
        event_type: event_type.into(),
        event_version: version.into(),
        payload,
        metadata: Value::Null,
    };
    let upcast = upcast(serialized, shared_upcasters());
    let Ok(event) = serde_json::from_value::<CustomerEvent>(upcast.payload) else {
        return;
    };
    let written = serde_json::to_value(&event).expect("a decoded event serializes");
    let again: CustomerEvent =
        serde_json::from_value(written.clone()).expect("an event we wrote reads back");
    assert_eq!(
        serde_json::to_value(&again).expect("serializes"),
        written,
        "an event changes on a write/read round trip"
    );
    let mut customer = Customer::default();
    customer.apply(event);
}

/// Email, name and password parsing: no panic; a parsed address parses
/// again to the same address and stays within 254 characters; a password
/// is 10 to 128 characters.
pub fn values(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(email) = EmailAddress::parse(text) {
        assert!(email.as_str().chars().count() <= 254);
        let again = EmailAddress::parse(email.as_str()).expect("a parsed address parses again");
        assert_eq!(again.normalized(), email.normalized());
        assert_eq!(email.normalized(), email.as_str().to_lowercase());
    }
    let _ = CustomerName::parse(text);
    let (password, login) = text.split_once('\n').unwrap_or((text, ""));
    // zxcvbn is costly on long inputs; the length rule comes first.
    if let Ok(p) = Password::parse(password, &[login]) {
        let n = p.expose().chars().count();
        assert!(
            (10..=128).contains(&n),
            "password of {n} characters accepted"
        );
        if let Ok(login) = EmailAddress::parse(login) {
            let _ = p.check_against(&login);
        }
    }
}
