//! Time travel: the access state as it was at an instant, by replaying the
//! events up to it (the projections hold only the present).

use access_store::prelude::*;
use std::collections::HashMap;

use access_domain::CustomerId;
use access_store::Store;
use chrono::{DateTime, Utc};

use crate::rows::{apply, AccessStateRow};
use crate::ProjectionError;

/// Events read per batch when replaying the whole store.
const BATCH: u32 = 5000;

/// A customer's state at `at` (`None`: not registered yet, or unknown).
pub async fn state_at(
    store: &Store,
    id: CustomerId,
    at: DateTime<Utc>,
) -> Result<Option<AccessStateRow>, ProjectionError> {
    let mut row = None;
    for event in store.events_of(id).await? {
        if event.event.at() > at {
            break;
        }
        row = apply(row, &event);
    }
    Ok(row)
}

/// Every customer who had portal access at `at`, with the login email
/// then in force, ordered by email. Replays the whole store (memory grows
/// with the number of customers, not of events).
pub async fn who_had_access(
    store: &Store,
    at: DateTime<Utc>,
) -> Result<Vec<AccessStateRow>, ProjectionError> {
    let mut rows: HashMap<CustomerId, AccessStateRow> = HashMap::new();
    let mut from = 0;
    loop {
        // Every committed event (no feed hold-back: this read keeps no
        // checkpoint, and events of other transactions still open are not
        // part of the past anyway).
        let events = store.scan(from, BATCH).await?;
        let Some(last) = events.last() else { break };
        from = last.position.global;
        for event in &events {
            // A customer's events are in time order; later ones are ignored.
            if event.event.at() > at {
                continue;
            }
            let current = rows.remove(&event.customer_id);
            if let Some(next) = apply(current, event) {
                rows.insert(event.customer_id, next);
            }
        }
    }
    let mut with_access: Vec<_> = rows.into_values().filter(|r| r.access_granted).collect();
    with_access.sort_by(|a, b| {
        a.email
            .to_lowercase()
            .cmp(&b.email.to_lowercase())
            .then(a.customer_id.cmp(&b.customer_id))
    });
    Ok(with_access)
}
