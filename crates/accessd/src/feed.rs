//! The change feed: every event of every customer in the store's global
//! order, as downstream systems see it (`GET /v1/feed`, its server-sent
//! events, and the NATS JetStream relay in [`crate::relay`]).
//!
//! - Reads go through the store's feed read ([`EventStore::read_feed`]),
//!   the one the projector follows: it never passes an event whose
//!   transaction may still commit (the visibility watermark), so a cursor
//!   handed out here never skips a slower transaction's event.
//! - Waiting: one tail reader per replica ([`FeedHub`]) follows the feed
//!   while anyone waits: at once when a command of this process commits
//!   ([`FeedHub::committed`]), every [`FeedHub::poll`] for commits made by
//!   other replicas or tools. Waiters at the feed's head take their events
//!   from its memory (filtered there); a waiter further behind reads the
//!   store, its filter in the SQL, at most [`MAX_SCAN`] events a request.
//! - Items carry the event's data with personal fields opened (the store
//!   opens them; `[forgotten]` once the customer is forgotten) and without
//!   password hashes or token digests ([`without_secrets`]).

use access_store::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use access_domain::CustomerId;
use access_store::{FeedSelection, Position, RecordedEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::http::dto::without_secrets;

/// Most events one request looks at in the store (matching or not) before
/// it answers with what it has (a cursor further on): a filter that
/// matches rarely cannot make one request read the whole store.
pub const MAX_SCAN: u64 = 20_000;
/// Events the shared tail keeps for the waiters at the feed's head.
const TAIL_KEEP: usize = 4096;
/// Events the tail reader reads per query.
const TAIL_BATCH: u32 = 1000;
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
    /// Events of the store looked at (matching or not).
    pub scanned: u64,
}

/// Up to `limit` matching events after `after`, without waiting, looking
/// at no more than `budget` events of the store (the filter runs in the
/// database).
pub async fn read_page(
    store: &Store,
    after: Position,
    limit: usize,
    filter: &FeedFilter,
    budget: u64,
) -> Result<Page, StoreError> {
    let limit32 = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
    if filter.is_empty() {
        let events = store.read_feed(after, limit32).await?;
        return Ok(Page {
            next: events.last().map_or(after, |e| e.position),
            scanned: events.len() as u64,
            events,
            closing: false,
        });
    }
    let scan = u32::try_from(budget.min(MAX_SCAN))
        .unwrap_or(u32::MAX)
        .max(1);
    let found = store
        .read_feed_matching(
            after,
            scan,
            limit32,
            FeedSelection {
                event_types: &filter.event_types,
                customer_id: filter.customer_id,
            },
        )
        .await?;
    Ok(Page {
        events: found.events,
        next: found.next,
        closing: false,
        scanned: found.scanned,
    })
}

/// The newest events of the feed as this replica's tail reader read them:
/// every event after `start` up to `end`, in the feed's order. Waiters at
/// the head of the feed take their events from here (filtered in memory)
/// instead of each reading the store.
#[derive(Debug, Default)]
struct Tail {
    /// False while nobody waits (the reader rests; waiters read the store).
    live: bool,
    start: Position,
    end: Position,
    events: VecDeque<RecordedEvent>,
}

impl Tail {
    /// The page for a reader after `cursor`, when the tail covers it.
    fn serve(&self, cursor: Position, limit: usize, filter: &FeedFilter) -> Option<Page> {
        if !self.live || cursor < self.start {
            return None;
        }
        let mut page = Page {
            next: cursor.max(self.end),
            ..Page::default()
        };
        let from = self.events.partition_point(|e| e.position <= cursor);
        for e in self.events.range(from..) {
            if page.events.len() >= limit {
                break;
            }
            page.next = e.position;
            if filter.matches(e) {
                page.events.push(e.clone());
            }
        }
        if page.events.len() < limit {
            page.next = cursor.max(self.end);
        }
        Some(page)
    }
}

/// Wakes the feed's waiters (long polls, SSE streams, the relay).
#[derive(Clone)]
pub struct FeedHub {
    /// The shared tail (its receivers are the waiters).
    tail: watch::Sender<Tail>,
    /// Commits of this process (the tail reader and the relay).
    local: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    poll: Duration,
}

impl FeedHub {
    /// A hub whose tail reader follows the feed while anyone waits: at
    /// once when a command of this process commits, and every `poll` for
    /// commits of other processes.
    pub fn spawn(store: Store, poll: Duration) -> Self {
        let (tail, _) = watch::channel(Tail::default());
        let (local, _) = watch::channel(0u64);
        let (closing, _) = watch::channel(false);
        let hub = Self {
            tail,
            local,
            closing,
            poll,
        };
        tokio::spawn(hub.clone().follow(store));
        hub
    }

    /// The tail reader: one read of the store per wake-up, whatever the
    /// number of waiters.
    async fn follow(self, store: Store) {
        let mut local = self.local.subscribe();
        let mut stop = self.closing.subscribe();
        let mut held_back = Duration::ZERO;
        loop {
            if *stop.borrow() {
                return;
            }
            let pause = if self.tail.receiver_count() == 0 {
                // Nobody waits: forget the tail (the next waiter reads the
                // store until the reader has a place again).
                if self.tail.borrow().live {
                    self.tail.send_replace(Tail::default());
                }
                Some(self.poll)
            } else {
                match self.read_tail(&store).await {
                    Ok(Read::More) => None,
                    Ok(Read::UpToDate) => {
                        held_back = Duration::ZERO;
                        Some(self.poll)
                    }
                    Ok(Read::HeldBack) => {
                        held_back = (held_back * 2).max(HELD_BACK_FIRST).min(self.poll);
                        Some(held_back)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "feed tail not read");
                        Some(self.poll)
                    }
                }
            };
            if let Some(pause) = pause {
                local.borrow_and_update();
                tokio::select! {
                    _ = local.changed() => {}
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Reads what follows the tail.
    async fn read_tail(&self, store: &Store) -> Result<Read, StoreError> {
        let (live, end) = {
            let tail = self.tail.borrow();
            (tail.live, tail.end)
        };
        if !live {
            // A place no later commit can come before.
            let head = store.feed_head().await?;
            self.tail.send_replace(Tail {
                live: true,
                start: head,
                end: head,
                events: VecDeque::new(),
            });
            return Ok(Read::More);
        }
        let events = store.read_feed(end, TAIL_BATCH).await?;
        if events.is_empty() {
            return Ok(if store.head().await? > end {
                Read::HeldBack
            } else {
                Read::UpToDate
            });
        }
        let full = events.len() >= TAIL_BATCH as usize;
        self.tail.send_modify(|tail| {
            for e in events {
                tail.end = e.position;
                tail.events.push_back(e);
            }
            while tail.events.len() > TAIL_KEEP {
                if let Some(e) = tail.events.pop_front() {
                    tail.start = e.position;
                }
            }
        });
        Ok(if full { Read::More } else { Read::UpToDate })
    }

    /// How often other processes' commits are looked for.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// A command of this process committed: wake the tail reader now.
    pub fn committed(&self) {
        self.local.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The service is stopping: open waits and streams end.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// A receiver woken at each commit of this process (for the relay; it
    /// does not keep the tail reader polling the store).
    pub fn local_commits(&self) -> watch::Receiver<u64> {
        self.local.subscribe()
    }

    /// Up to `limit` matching events after `after`; when there are none,
    /// waits up to `wait` for some (returns as soon as there is one). One
    /// request looks at no more than [`MAX_SCAN`] events of the store.
    pub async fn wait_page(
        &self,
        store: &Store,
        after: Position,
        limit: usize,
        filter: &FeedFilter,
        wait: Duration,
    ) -> Result<Page, StoreError> {
        let deadline = Instant::now() + wait;
        let mut tail = self.tail.subscribe();
        let mut closing = self.closing.subscribe();
        let mut cursor = after;
        let mut budget = MAX_SCAN;
        loop {
            let served = tail.borrow_and_update().serve(cursor, limit, filter);
            let mut page = match served {
                Some(page) => page,
                None => {
                    let page = read_page(store, cursor, limit, filter, budget).await?;
                    budget = budget.saturating_sub(page.scanned.max(1));
                    page
                }
            };
            if !page.events.is_empty() || wait.is_zero() || budget == 0 {
                return Ok(page);
            }
            let moved = page.next > cursor;
            cursor = page.next;
            let now = Instant::now();
            if now >= deadline || *closing.borrow() {
                page.closing = *closing.borrow();
                return Ok(page);
            }
            if moved {
                // Passed events a filter left out: look on at once.
                continue;
            }
            tokio::select! {
                changed = tail.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(self.poll.min(deadline - now)).await;
                    }
                }
                () = tokio::time::sleep(deadline - now) => {}
                _ = closing.changed() => {}
            }
        }
    }
}

/// What a read of the tail found.
enum Read {
    /// Events, maybe more: read again at once.
    More,
    UpToDate,
    /// Committed events wait for the visibility watermark.
    HeldBack,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(global: i64) -> Position {
        Position { tx: 0, global }
    }

    fn forgotten(global: i64) -> RecordedEvent {
        RecordedEvent {
            position: at(global),
            customer_id: CustomerId::new_random(),
            sequence: 1,
            event: access_domain::CustomerEvent::CustomerForgotten { at: Utc::now() },
            metadata: HashMap::new(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn the_shared_tail_serves_only_the_cursors_it_covers() {
        let tail = Tail {
            live: true,
            start: at(2),
            end: at(5),
            events: [3, 4, 5].into_iter().map(forgotten).collect(),
        };
        let all = FeedFilter::default();
        let positions = |page: &Page| page.events.iter().map(|e| e.position).collect::<Vec<_>>();
        // Behind the tail: the reader reads the store.
        assert!(tail.serve(at(1), 10, &all).is_none());
        let page = tail.serve(at(3), 10, &all).unwrap();
        assert_eq!((positions(&page), page.next), (vec![at(4), at(5)], at(5)));
        let page = tail.serve(at(2), 1, &all).unwrap();
        assert_eq!((positions(&page), page.next), (vec![at(3)], at(3)));
        // Ahead of the tail (a cursor from another replica): wait.
        let page = tail.serve(at(7), 10, &all).unwrap();
        assert_eq!((positions(&page), page.next), (vec![], at(7)));
        // A filter passes what it leaves out.
        let revoked = FeedFilter {
            event_types: vec!["AccessRevoked".into()],
            customer_id: None,
        };
        let page = tail.serve(at(2), 10, &revoked).unwrap();
        assert_eq!((positions(&page), page.next), (vec![], at(5)));
        // Not live: nothing is served from memory.
        assert!(Tail::default().serve(at(0), 10, &all).is_none());
    }

    #[test]
    fn event_types_become_snake_case_subject_tokens() {
        assert_eq!(snake_case("CustomerRegistered"), "customer_registered");
        assert_eq!(snake_case("AccessRevoked"), "access_revoked");
        assert_eq!(snake_case("PasswordSet"), "password_set");
    }
}
