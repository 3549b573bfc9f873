//! The canonical-JSON hash recipe of the chain (docs/audit.md, "Proving
//! the history is intact"): pure functions, no I/O.

use access_store::Position;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The "previous hash" of the first event (and the digest of an empty
/// history): 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first field of every hashed message: names the recipe, so that a
/// future change of recipe cannot be confused with this one.
pub const RECIPE: &str = "access-event-chain-v1";

/// An event row as stored, the input of the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: Position,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The stored payload, as JSON text.
    pub payload: String,
    /// The stored metadata, as JSON text.
    pub metadata: String,
}

/// `value` as canonical JSON: no whitespace, object members sorted by key
/// (by UTF-8 bytes, i.e. by code point), strings with the minimal escapes
/// (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as
/// `\u00xx` in lower-case hex; everything else literal), numbers as
/// serde_json writes them (integers in plain decimal).
///
/// Written out here rather than relying on serde_json's map order, which
/// changes with its `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn canonical_text(raw: &str, what: &str) -> Result<String, String> {
    serde_json::from_str::<Value>(raw)
        .map(|v| canonical_json(&v))
        .map_err(|e| format!("the {what} is not JSON: {e}"))
}

/// The hash of `event` chained to `prev` (the previous event's hash, or
/// [`GENESIS`]): lower-case hex SHA-256 over the length-prefixed fields
/// (docs/audit.md). Fails when the payload or metadata is not JSON.
pub fn event_hash(event: &StoredEvent, prev: &str) -> Result<String, String> {
    let payload = canonical_text(&event.payload, "payload")?;
    let metadata = canonical_text(&event.metadata, "metadata")?;
    let sequence = event.sequence.to_string();
    let position = event.position.global.to_string();
    let mut hasher = Sha256::new();
    for field in [
        RECIPE,
        &event.aggregate_type,
        &event.aggregate_id,
        &sequence,
        &event.event_type,
        &event.event_version,
        &payload,
        &metadata,
        &position,
        prev,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> StoredEvent {
        StoredEvent {
            position: Position { tx: 7, global: 42 },
            aggregate_type: "Customer".into(),
            aggregate_id: "0b6c6f3e-3d0e-4c8e-9a57-6f1c2a0d9e11".into(),
            sequence: 3,
            event_type: "AccessRevoked".into(),
            event_version: "1.0".into(),
            payload: r#"{"AccessRevoked": {"reason": "left", "at": "2026-01-31T10:00:00Z"}}"#
                .into(),
            metadata: r#"{"request_id":"req-1","actor":"api:crm:service"}"#.into(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": null, "a": true}], "a": "x\"\u0001é\n" }"#)
                .unwrap_or_default();
        assert_eq!(
            canonical_json(&v),
            "{\"a\":\"x\\\"\\u0001é\\n\",\"b\":[1,{\"a\":true,\"z\":null}]}"
        );
    }

    #[test]
    fn the_recipe_gives_the_documented_test_vector() {
        // The same vector is in docs/audit.md.
        let first = event_hash(&event(), GENESIS).unwrap_or_default();
        assert_eq!(first.len(), 64);
        // Whitespace and key order of the stored JSON do not matter…
        let mut reordered = event();
        reordered.payload =
            r#"{"AccessRevoked":{"at":"2026-01-31T10:00:00Z","reason":"left"}}"#.into();
        assert_eq!(event_hash(&reordered, GENESIS), Ok(first.clone()));
        // …its content, the position and the previous hash do.
        let mut changed = event();
        changed.payload =
            r#"{"AccessRevoked":{"at":"2026-01-31T10:00:00Z","reason":"Left"}}"#.into();
        assert_ne!(event_hash(&changed, GENESIS), Ok(first.clone()));
        let mut moved = event();
        moved.position.global = 43;
        assert_ne!(event_hash(&moved, GENESIS), Ok(first.clone()));
        assert_ne!(event_hash(&event(), &first), Ok(first.clone()));
        // The transaction id is not part of the hash.
        let mut other_tx = event();
        other_tx.position.tx = 0;
        assert_eq!(event_hash(&other_tx, GENESIS), Ok(first.clone()));
        assert_eq!(first, TEST_VECTOR);
    }

    const TEST_VECTOR: &str = "6207568b70c040fc94e6601a177d23c4da27305f1a5414558d18758774fbb662";

    #[test]
    fn bad_json_cannot_be_hashed() {
        let mut bad = event();
        bad.payload = "{not json".into();
        assert!(event_hash(&bad, GENESIS).is_err());
    }
}
