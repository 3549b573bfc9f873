//! The domain targets: stored events, value types.

use std::sync::OnceLock;

use access_domain::events::EVENT_VERSIONS;
use access_domain::upcasting::{upcast, upcasters};
use access_domain::{Customer, CustomerEvent, CustomerName, EmailAddress, Password};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use serde_json::Value;

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
