//! Between stored rows and domain events: serialization, upcasting, and
//! clear errors for rows that cannot be read.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use access_domain::upcasting::{upcast, upcasters};
use access_domain::{CommandMetadata, CustomerEvent, CustomerId};
use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

use crate::error::StoreError;
use crate::keys::{KeyState, Opener};
use crate::{Position, RecordedEvent};

/// The aggregate type written in every row.
pub const AGGREGATE_TYPE: &str = "Customer";

/// Upcasters, built once.
pub(crate) fn shared_upcasters() -> Arc<Vec<Box<dyn EventUpcaster>>> {
    static UPCASTERS: OnceLock<Arc<Vec<Box<dyn EventUpcaster>>>> = OnceLock::new();
    UPCASTERS.get_or_init(|| Arc::new(upcasters())).clone()
}

/// One event as it goes into a row.
pub(crate) struct EncodedEvent {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

pub(crate) fn encode(
    events: &[CustomerEvent],
    first_sequence: u64,
    metadata: &CommandMetadata,
) -> Result<Vec<EncodedEvent>, StoreError> {
    let meta = serde_json::to_value(metadata.to_map())
        .map_err(|e| StoreError::Database(format!("metadata does not serialize: {e}")))?;
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            Ok(EncodedEvent {
                sequence: i64::try_from(first_sequence + i as u64)
                    .map_err(|_| StoreError::Database("sequence out of range".into()))?,
                event_type: event.type_name().to_string(),
                event_version: event.version().to_string(),
                payload: serde_json::to_value(event)
                    .map_err(|e| StoreError::Database(format!("event does not serialize: {e}")))?,
                metadata: meta.clone(),
            })
        })
        .collect()
}

/// A row as read from either database, with its customer's key.
pub(crate) struct RawRow {
    pub key: KeyState,
    pub position: i64,
    pub tx: u64,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

pub(crate) fn corrupt(row: &RawRow, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        customer_id: row.aggregate_id.clone(),
        sequence: u64::try_from(row.sequence).unwrap_or_default(),
        position: row.position,
        detail: detail.into(),
    }
}

/// Upcasts and deserializes a row; never panics on bad data.
pub(crate) fn decode(
    row: RawRow,
    upcasters: &[Box<dyn EventUpcaster>],
    opener: &mut Opener<'_>,
) -> Result<RecordedEvent, StoreError> {
    let customer_id: CustomerId = row
        .aggregate_id
        .parse()
        .map_err(|_| corrupt(&row, "the aggregate id is not a UUID"))?;
    let known = access_domain::events::EVENT_VERSIONS
        .iter()
        .any(|(name, _)| *name == row.event_type);
    if !known {
        return Err(corrupt(
            &row,
            format!("unknown event type `{}`", row.event_type),
        ));
    }
    if !is_version(&row.event_version) {
        return Err(corrupt(
            &row,
            format!("invalid event version `{}`", row.event_version),
        ));
    }
    let serialized = SerializedEvent {
        aggregate_id: row.aggregate_id.clone(),
        sequence: usize::try_from(row.sequence).unwrap_or_default(),
        aggregate_type: AGGREGATE_TYPE.to_string(),
        event_type: row.event_type.clone(),
        event_version: row.event_version.clone(),
        payload: row.payload.clone(),
        metadata: Value::Null,
    };
    let upcast = upcast(serialized, upcasters);
    let mut event: CustomerEvent = serde_json::from_value(upcast.payload).map_err(|e| {
        corrupt(
            &row,
            format!(
                "{} {} does not deserialize: {e}",
                row.event_type, row.event_version
            ),
        )
    })?;
    if event.type_name() != row.event_type {
        return Err(corrupt(
            &row,
            format!(
                "event_type says {} but the payload is {}",
                row.event_type,
                event.type_name()
            ),
        ));
    }
    opener
        .open_event(
            &row.aggregate_id,
            u64::try_from(row.sequence).unwrap_or_default(),
            &row.key,
            &mut event,
        )
        .map_err(|e| corrupt(&row, e))?;
    let metadata: HashMap<String, String> = serde_json::from_value(row.metadata.clone())
        .map_err(|e| corrupt(&row, format!("metadata is not a string map: {e}")))?;
    Ok(RecordedEvent {
        position: Position {
            tx: row.tx,
            global: row.position,
        },
        customer_id,
        sequence: u64::try_from(row.sequence).unwrap_or_default(),
        event,
        metadata,
        recorded_at: row.recorded_at,
    })
}

/// `major[.minor[.patch]]`, digits only: cqrs-es's upcaster panics on
/// anything else, so we check first.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_before_cqrs_es_sees_them() {
        for ok in ["1", "1.0", "1.1.0"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["", "x", "1.", "1.0.0.0", "1.a", "99999999999"] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
