//! The store's vocabulary: places in the global order, recorded events, a
//! customer as loaded, what an append writes, idempotent responses, and
//! the store's settings.

use std::collections::HashMap;

use access_domain::{CommandMetadata, Customer, CustomerEvent, CustomerId};
use chrono::{DateTime, Utc};

/// A place in the global order of events.
///
/// On PostgreSQL an event's global position is taken at insert, not at
/// commit, so the order readers follow is (inserting transaction id,
/// position); a reader never moves past a transaction that may still
/// commit. On SQLite `tx` is always 0 and the position alone is the order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub tx: u64,
    pub global: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position { tx: 0, global: 0 };
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.tx, self.global)
    }
}

/// A stored event with its place in the global order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: Position,
    pub customer_id: CustomerId,
    /// 1-based sequence within the customer's stream.
    pub sequence: u64,
    pub event: CustomerEvent,
    pub metadata: HashMap<String, String>,
    pub recorded_at: DateTime<Utc>,
}

/// A customer's current state and version (number of events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub customer: Customer,
    pub version: u64,
}

impl Loaded {
    /// A customer rebuilt from its events (from the first).
    pub fn from_events(events: impl IntoIterator<Item = CustomerEvent>) -> Self {
        use cqrs_es::Aggregate;
        let mut loaded = Self::default();
        for event in events {
            loaded.customer.apply(event);
            loaded.version += 1;
        }
        loaded
    }
}

/// The stored response of a command sent with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The caller's name (keys are per caller).
    pub caller: String,
    pub key: String,
    /// A digest of the request (method, path, body), to tell a retry from
    /// a different request under the same key.
    pub request_digest: String,
    pub status: u16,
    pub body: String,
    /// Headers of the response (name, value), e.g. its ETag.
    pub headers: Vec<(String, String)>,
}

/// The part of an idempotent response known only once the command is
/// decided (its version): the body and the headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredReply {
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl From<String> for StoredReply {
    fn from(body: String) -> Self {
        Self {
            body,
            headers: Vec::new(),
        }
    }
}

/// Everything one command writes, in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    pub customer_id: CustomerId,
    /// The version the command was decided on; the append fails with
    /// [`StoreError::Conflict`] if the stream has moved on.
    pub expected_version: u64,
    pub events: &'a [CustomerEvent],
    pub metadata: &'a CommandMetadata,
    /// The state at `expected_version` and after the events: the store
    /// derives the login-email reservations from both.
    pub before: &'a Customer,
    pub after: &'a Customer,
    pub idempotency: Option<&'a IdempotencyRecord>,
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The customer's version after the append.
    pub version: u64,
    /// Position of the last event written (None when there were none).
    pub last_position: Option<Position>,
}

/// Store settings.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Maximum connections in the pool (PostgreSQL) or readers (SQLite).
    pub max_connections: u32,
    /// Write a snapshot every this many events of a customer (0: never).
    pub snapshot_interval: u64,
    /// Seal personal data under per-customer keys (docs/privacy.md). Off
    /// only to measure what sealing costs (`examples/encryption_cost.rs`):
    /// a store written with it off is like one written before encryption.
    pub seal_personal_data: bool,
    /// Customers whose latest state the command path keeps in memory
    /// (0: none): see `cache.rs`.
    pub aggregate_cache: usize,
    /// How long a cached state may be used after it was written.
    pub aggregate_cache_ttl: std::time::Duration,
    /// How long a command waits for the commands before it on the same
    /// customer in this process (one writer per customer per process:
    /// `writers.rs`) before it fails with `StoreError::Busy`. Zero turns
    /// the queue off (every command races to the append, as replicas do).
    pub customer_queue_wait: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            snapshot_interval: 100,
            seal_personal_data: true,
            aggregate_cache: 10_000,
            aggregate_cache_ttl: std::time::Duration::from_secs(30),
            customer_queue_wait: std::time::Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_transaction_then_position() {
        let a = Position { tx: 5, global: 10 };
        let b = Position { tx: 6, global: 3 };
        assert!(a < b);
        assert!(Position::START < a);
    }
}
