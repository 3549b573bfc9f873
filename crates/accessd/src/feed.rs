//! The change feed: every event of every customer in the store's global
//! order, as downstream systems see it (`GET /v1/feed`, its server-sent
//! events, and the NATS JetStream relay in [`crate::relay`]).
//!
//! - Reads go through the store's feed read ([`EventStore::read_feed`]),
//!   the one the projector follows: it never passes an event whose
//!   transaction may still commit (the visibility watermark), so a cursor
//!   handed out here never skips a slower transaction's event.
//! - Waiting: [`FeedHub`] wakes waiters when a command of this process
//!   commits ([`FeedHub::committed`]), and a watcher polls the store's head
//!   every [`FeedHub::poll`] while anyone waits, for commits made by other
//!   replicas or tools.
//! - Items carry the event's data with personal fields opened (the store
//!   opens them; `[forgotten]` once the customer is forgotten) and without
//!   password hashes or token digests ([`without_secrets`]).

use access_store::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

use access_domain::CustomerId;
use access_store::{Position, RecordedEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::http::dto::without_secrets;

/// Events read per query when a filter may drop most of them.
const SCAN_BATCH: u32 = 500;
/// Most events one page looks at (matching or not) before it answers with
/// what it has (a cursor further on): a filter that matches rarely cannot
/// make one request read the whole store.
const MAX_SCAN: usize = 20_000;
/// The first pause while committed events wait for the watermark.
const HELD_BACK_FIRST: Duration = Duration::from_millis(2);

/// One event as the feed gives it (the JSON of `GET /v1/feed`, of each
/// server-sent event and of each JetStream message).
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct FeedItem {
    /// Place in the global order (`tx:position`): the cursor to pass as
    /// `after`, the SSE `id` and the JetStream `Nats-Msg-Id`.
    #[schema(example = "0:1234")]
    pub position: String,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    /// 1-based sequence within the customer's events.
    pub sequence: u64,
    #[schema(example = "AccessRevoked")]
    pub event_type: String,
    #[schema(example = "1.0")]
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// Actor, request id, reason and correlation id.
    pub metadata: HashMap<String, String>,
    /// The event's fields: personal data opened (`[forgotten]` once the
    /// customer is forgotten); never passwords, hashes or tokens.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl FeedItem {
    pub fn from_event(e: RecordedEvent) -> Self {
        let event_type = e.event.type_name();
        let data = serde_json::to_value(&e.event)
            .ok()
            .and_then(|v| v.get(event_type).cloned())
            .unwrap_or_default();
        Self {
            position: e.position.to_string(),
            customer_id: e.customer_id,
            sequence: e.sequence,
            event_type: event_type.to_string(),
            event_version: e.event.version().to_string(),
            recorded_at: e.recorded_at,
            metadata: e.metadata,
            data: without_secrets(data),
        }
    }
}

/// `CustomerRegistered` → `customer_registered` (JetStream subjects).
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Which events a reader wants (empty: all).
#[derive(Debug, Clone, Default)]
pub struct FeedFilter {
    /// Any of these event types.
    pub event_types: Vec<String>,
    pub customer_id: Option<CustomerId>,
}

impl FeedFilter {
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.customer_id.is_none()
    }

    pub fn matches(&self, e: &RecordedEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == e.event.type_name()))
            && self.customer_id.is_none_or(|id| id == e.customer_id)
    }
}

/// A page of the feed: the matching events and the cursor after every
/// event looked at (matching or not).
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<RecordedEvent>,
    pub next: Position,
    /// The wait ended because the service is stopping.
    pub closing: bool,
}

/// Up to `limit` matching events after `after`, without waiting.
pub async fn read_page(
    store: &Store,
    after: Position,
    limit: usize,
    filter: &FeedFilter,
) -> Result<Page, StoreError> {
    let batch = if filter.is_empty() {
        u32::try_from(limit).unwrap_or(SCAN_BATCH).max(1)
    } else {
        SCAN_BATCH
    };
    let mut page = Page {
        next: after,
        ..Page::default()
    };
    let mut scanned = 0;
    loop {
        let events = store.read_feed(page.next, batch).await?;
        let read = events.len();
        for e in events {
            if page.events.len() >= limit {
                return Ok(page);
            }
            page.next = e.position;
            if filter.matches(&e) {
                page.events.push(e);
            }
        }
        scanned += read;
        if read < batch as usize || page.events.len() >= limit || scanned >= MAX_SCAN {
            return Ok(page);
        }
    }
}

/// Wakes the feed's waiters (long polls, SSE streams, the relay).
#[derive(Clone)]
pub struct FeedHub {
    commits: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    poll: Duration,
}

impl FeedHub {
    /// A hub whose watcher polls `store`'s head every `poll` while anyone
    /// waits (commits of other processes).
    pub fn spawn(store: Store, poll: Duration) -> Self {
        let (commits, _) = watch::channel(0u64);
        let (closing, _) = watch::channel(false);
        let hub = Self {
            commits,
            closing,
            poll,
        };
        let watcher = hub.commits.clone();
        let mut stop = hub.closing.subscribe();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => return,
                }
                if watcher.receiver_count() == 0 {
                    // Nobody waits: the next waiter reads the store first.
                    last = None;
                    continue;
                }
                match store.head().await {
                    Ok(head) if Some(head) != last => {
                        last = Some(head);
                        watcher.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "feed watcher: head not read"),
                }
            }
        });
        hub
    }

    /// How often other processes' commits are looked for.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// A command of this process committed: wake the waiters now.
    pub fn committed(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The service is stopping: open waits and streams end.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// A receiver woken at each commit seen (for the relay).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Up to `limit` matching events after `after`; when there are none,
    /// waits up to `wait` for some (returns as soon as there is one).
    pub async fn wait_page(
        &self,
        store: &Store,
        after: Position,
        limit: usize,
        filter: &FeedFilter,
        wait: Duration,
    ) -> Result<Page, StoreError> {
        let deadline = Instant::now() + wait;
        let mut commits = self.commits.subscribe();
        let mut closing = self.closing.subscribe();
        let mut cursor = after;
        let mut held_back_wait = Duration::ZERO;
        loop {
            commits.borrow_and_update();
            let mut page = read_page(store, cursor, limit, filter).await?;
            if !page.events.is_empty() || wait.is_zero() {
                return Ok(page);
            }
            cursor = page.next;
            let now = Instant::now();
            if now >= deadline || *closing.borrow() {
                page.closing = *closing.borrow();
                return Ok(page);
            }
            // Committed events the feed does not show yet wait for the
            // visibility watermark (an older transaction is still open):
            // look again soon rather than wait for a wake-up.
            let pause = if store.head().await? > cursor {
                held_back_wait = (held_back_wait * 2).max(HELD_BACK_FIRST).min(self.poll);
                held_back_wait
            } else {
                held_back_wait = Duration::ZERO;
                deadline - now
            };
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(self.poll.min(deadline - now)).await;
                    }
                }
                () = tokio::time::sleep(pause.min(deadline - now)) => {}
                _ = closing.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_become_snake_case_subject_tokens() {
        assert_eq!(snake_case("CustomerRegistered"), "customer_registered");
        assert_eq!(snake_case("AccessRevoked"), "access_revoked");
        assert_eq!(snake_case("PasswordSet"), "password_set");
    }
}
