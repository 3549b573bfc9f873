//! Upcasters: turn stored events of an older version into the current shape.
//!
//! Event history:
//! - `AccessGranted` 1.0 had no `role` (the portal had one role);
//!   1.1 names it. 1.0 events get `"role": "customer_center"`.
//! - `PasswordSet` 1.0 had no `temporary` flag (every administrator's
//!   password was temporary); 1.1 has it. 1.0 events get `"temporary": true`.
//!
//! Stored payloads are externally tagged (`{"AccessGranted": {...}}`), so
//! each upcaster edits the object under the tag.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde_json::Value;

/// Sets `field` to `value` inside `{tag: {...}}` if it is missing.
fn add_default(mut payload: Value, tag: &str, field: &str, value: Value) -> Value {
    if let Some(body) = payload.get_mut(tag).and_then(Value::as_object_mut) {
        body.entry(field.to_string()).or_insert(value);
    }
    payload
}

/// Every upcaster, for the event stores.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(SemanticVersionEventUpcaster::new(
            "AccessGranted",
            "1.1",
            Box::new(|payload| {
                add_default(
                    payload,
                    "AccessGranted",
                    "role",
                    Value::from("customer_center"),
                )
            }),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "PasswordSet",
            "1.1",
            Box::new(|payload| add_default(payload, "PasswordSet", "temporary", Value::from(true))),
        )),
    ]
}

/// Applies every matching upcaster to a stored event, in order.
pub fn upcast(
    mut event: cqrs_es::persist::SerializedEvent,
    upcasters: &[Box<dyn EventUpcaster>],
) -> cqrs_es::persist::SerializedEvent {
    for upcaster in upcasters {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}
