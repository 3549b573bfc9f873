//! Reading the export: one event a line, checked against the event types
//! and versions this `accessctl` knows, secrets the export left out
//! filled with placeholders, older versions upcast as the stores do.

use std::collections::HashMap;
use std::io::BufRead;

use access_domain::events::EVENT_VERSIONS;
use access_domain::upcasting::{upcast, upcasters};
use access_domain::{Actor, CommandMetadata, CustomerEvent};
use anyhow::{bail, Context};
use cqrs_es::persist::SerializedEvent;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ReplayArgs, PLACEHOLDER_DIGEST, PLACEHOLDER_HASH};

/// One line of the export (an `EventView`); other fields are ignored.
#[derive(Deserialize)]
struct Line {
    sequence: Option<u64>,
    event_type: String,
    event_version: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    data: Value,
}

/// An event read back from a line.
pub(super) struct Parsed {
    pub(super) line: usize,
    pub(super) sequence: Option<u64>,
    pub(super) event: CustomerEvent,
    pub(super) metadata: CommandMetadata,
}

/// `1.10` as `[1, 10]`.
fn version_parts(raw: &str) -> Option<Vec<u64>> {
    raw.split('.').map(|p| p.parse().ok()).collect()
}

/// Puts placeholders where the export left secrets out.
fn fill_secrets(event_type: &str, data: &mut serde_json::Map<String, Value>) {
    let placeholder = |map: &mut serde_json::Map<String, Value>, field: &str, value: &str| {
        map.entry(field.to_string())
            .or_insert_with(|| Value::from(value));
    };
    match event_type {
        "PasswordSet" | "PasswordSetupCompleted" | "PasswordChanged" | "PasswordRehashed" => {
            placeholder(data, "password_hash", PLACEHOLDER_HASH);
        }
        "EmailChangeRequested" => placeholder(data, "token_digest", PLACEHOLDER_DIGEST),
        // The TOTP secret left out reads as forgotten: the replayed state
        // has no secret (a second factor must be enrolled anew).
        "TotpEnrollmentBegun" => placeholder(data, "totp_secret", access_domain::events::FORGOTTEN),
        "RecoveryCodesIssued" => {
            data.entry("recovery_code_digests".to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
        }
        "RecoveryCodeUsed" => placeholder(data, "recovery_code_digest", PLACEHOLDER_DIGEST),
        "AccessNotificationSent" => {
            if let Some(link) = data.get_mut("setup_link").and_then(Value::as_object_mut) {
                placeholder(link, "token_digest", PLACEHOLDER_DIGEST);
            }
        }
        _ => {}
    }
}

/// Reads one non-empty line (`n` is 1-based).
fn parse_line(
    n: usize,
    text: &str,
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> anyhow::Result<Parsed> {
    let value: Value = serde_json::from_str(text).with_context(|| format!("line {n}: not JSON"))?;
    if value.get("events").is_some() && value.get("event_type").is_none() {
        bail!(
            "line {n}: this is the JSON answer of /v1/customers/{{id}}/events; \
             export with `?format=jsonl` (one event per line)"
        );
    }
    let line: Line = serde_json::from_value(value)
        .with_context(|| format!("line {n}: not an exported event"))?;
    let Some((_, current)) = EVENT_VERSIONS
        .iter()
        .find(|(name, _)| *name == line.event_type)
    else {
        let known: Vec<_> = EVENT_VERSIONS.iter().map(|(name, _)| *name).collect();
        bail!(
            "line {n}: unknown event type `{}` (known: {})",
            line.event_type,
            known.join(", ")
        );
    };
    let version = line.event_version.unwrap_or_else(|| current.to_string());
    match (version_parts(&version), version_parts(current)) {
        (Some(v), Some(c)) if v > c => bail!(
            "line {n}: {} version {version} is newer than this accessctl reads ({current}); \
             use a newer accessctl",
            line.event_type
        ),
        (Some(_), _) => {}
        (None, _) => bail!("line {n}: event_version `{version}` is not a version such as 1.0"),
    }
    let Value::Object(mut data) = line.data else {
        bail!("line {n}: `data` must be an object with the event's fields");
    };
    fill_secrets(&line.event_type, &mut data);
    let stored = SerializedEvent {
        aggregate_id: String::new(),
        sequence: usize::try_from(line.sequence.unwrap_or(0)).unwrap_or(0),
        aggregate_type: access_store::AGGREGATE_TYPE.to_string(),
        event_type: line.event_type.clone(),
        event_version: version.clone(),
        payload: json!({ line.event_type.as_str(): Value::Object(data) }),
        metadata: Value::Null,
    };
    let stored = upcast(stored, upcasters);
    let event: CustomerEvent = serde_json::from_value(stored.payload)
        .with_context(|| format!("line {n}: not a valid {} {version} event", line.event_type))?;
    let metadata = CommandMetadata::from_map(&line.metadata).unwrap_or_else(|_| {
        CommandMetadata::new(
            Actor::System {
                name: "accessctl-replay".into(),
            },
            format!("replay-line-{n}"),
        )
    });
    Ok(Parsed {
        line: n,
        sequence: line.sequence,
        event,
        metadata,
    })
}

/// Every event of the file, in order.
pub(super) fn read_events(args: &ReplayArgs, shown: &str) -> anyhow::Result<Vec<Parsed>> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("opening {shown}"))?;
        Box::new(std::io::BufReader::new(file))
    };
    let upcasters = upcasters();
    let mut events = Vec::new();
    for (i, text) in reader.lines().enumerate() {
        let n = i + 1;
        let text = text.with_context(|| format!("{shown}: reading line {n}"))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        events.push(parse_line(n, text, &upcasters).with_context(|| shown.to_string())?);
    }
    if events.is_empty() {
        bail!("{shown}: no events");
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(version_parts("1.10") > version_parts("1.9"));
        assert_eq!(version_parts("x"), None);
    }

    #[test]
    fn placeholders_fill_only_missing_secrets() {
        let mut data = serde_json::Map::new();
        fill_secrets("PasswordChanged", &mut data);
        assert_eq!(data["password_hash"], PLACEHOLDER_HASH);
        let mut data =
            json!({"setup_link": {"expires_at": "2026-01-01T00:00:00Z"}, "token_digest": "kept"})
                .as_object()
                .cloned()
                .unwrap();
        fill_secrets("AccessNotificationSent", &mut data);
        assert_eq!(data["setup_link"]["token_digest"], PLACEHOLDER_DIGEST);
        fill_secrets("EmailChangeRequested", &mut data);
        assert_eq!(data["token_digest"], "kept");
    }

    #[test]
    fn an_exported_second_factor_replays_without_its_secrets() {
        let at = json!("2026-01-01T00:00:00Z");
        for (event_type, mut data) in [
            ("TotpEnrollmentBegun", json!({ "at": at })),
            ("RecoveryCodesIssued", json!({ "at": at })),
            ("RecoveryCodeUsed", json!({ "at": at })),
        ] {
            let map = data.as_object_mut().unwrap();
            fill_secrets(event_type, map);
            let event: CustomerEvent = serde_json::from_value(json!({ event_type: data })).unwrap();
            match event {
                CustomerEvent::TotpEnrollmentBegun { totp_secret, .. } => {
                    assert_eq!(totp_secret, access_domain::Personal::Forgotten);
                }
                CustomerEvent::RecoveryCodesIssued {
                    recovery_code_digests,
                    ..
                } => assert!(recovery_code_digests.is_empty()),
                CustomerEvent::RecoveryCodeUsed { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
}
