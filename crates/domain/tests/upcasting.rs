//! Replays a stream recorded with older event versions through the
//! upcasters (fixture under the repository's `tests/fixtures/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::upcasting::{upcast, upcasters};
use access_domain::{CommandMetadata, Customer, CustomerEvent, Role};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/customer-stream-v1.0.json"
);

fn stored_events() -> Vec<SerializedEvent> {
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let id = raw["aggregate_id"].as_str().unwrap().to_string();
    raw["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| SerializedEvent {
            aggregate_id: id.clone(),
            sequence: e["sequence"].as_u64().unwrap() as usize,
            aggregate_type: "Customer".into(),
            event_type: e["event_type"].as_str().unwrap().into(),
            event_version: e["event_version"].as_str().unwrap().into(),
            payload: e["payload"].clone(),
            metadata: e["metadata"].clone(),
        })
        .collect()
}

fn semver(v: &str) -> [u32; 3] {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
    [
        parts.next().unwrap(),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    ]
}

#[test]
fn a_stream_of_version_1_0_events_replays_through_the_upcasters() {
    let upcasters = upcasters();
    let mut customer = Customer::default();
    let mut seen = Vec::new();
    for stored in stored_events() {
        let upcast = upcast(stored, &upcasters);
        let event: CustomerEvent = serde_json::from_value(upcast.payload.clone())
            .unwrap_or_else(|e| panic!("{} {}: {e}", upcast.event_type, upcast.event_version));
        // After upcasting, the stored version is the current one
        // (cqrs-es writes it as `major.minor.patch`).
        assert_eq!(
            semver(&upcast.event_version),
            semver(&event.event_version()),
            "{}",
            upcast.event_type
        );
        let metadata: std::collections::HashMap<String, String> =
            serde_json::from_value(upcast.metadata).unwrap();
        CommandMetadata::from_map(&metadata).unwrap();
        seen.push(event.clone());
        customer.apply(event);
    }
    assert_eq!(customer.access(), Some(Role::CustomerCenter));
    assert!(customer.has_password());
    assert!(
        customer.must_change_password(),
        "1.0 passwords were temporary"
    );
    assert_eq!(customer.email().unwrap().as_str(), "old.timer@example.net");
    assert!(matches!(
        seen[1],
        CustomerEvent::AccessGranted {
            role: Role::CustomerCenter,
            ..
        }
    ));
}

#[test]
fn without_upcasters_the_old_events_do_not_deserialize() {
    // Guards the test above: the fixture really is in the old shape.
    let old = stored_events();
    assert!(serde_json::from_value::<CustomerEvent>(old[1].payload.clone()).is_err());
    assert!(serde_json::from_value::<CustomerEvent>(old[2].payload.clone()).is_err());
}

#[test]
fn current_events_pass_through_the_upcasters_unchanged() {
    let event = CustomerEvent::AccessGranted {
        role: Role::CustomerCenter,
        at: chrono::Utc::now(),
    };
    let stored = SerializedEvent {
        aggregate_id: "x".into(),
        sequence: 1,
        aggregate_type: "Customer".into(),
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(&event).unwrap(),
        metadata: Value::Null,
    };
    let after = upcast(stored.clone(), &upcasters());
    assert_eq!(after.payload, stored.payload);
    assert_eq!(semver(&after.event_version), [1, 1, 0]);
}
