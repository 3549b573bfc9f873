//! The NATS JetStream relay: follows the change feed with its own
//! checkpoint and publishes each event to `<prefix>.<event_type_snake>.
//! <customer_id>` with the feed item's JSON and `Nats-Msg-Id: <position>`.
//!
//! - The checkpoint (`nats:<stream>` in the projectors' checkpoint table)
//!   moves only after JetStream acknowledged every message of a batch: a
//!   crash re-sends at most one batch, and JetStream drops what it already
//!   holds by the message id (the stream's duplicate window, 2 minutes).
//!   At-least-once into the stream, exactly once in it.
//! - One relay at a time across replicas. On PostgreSQL a transaction-level
//!   advisory lock on the checkpoint's name is held from reading the
//!   checkpoint to moving it; the checkpoint row's own lock is taken only
//!   at the end, because a transaction that holds a row lock holds back
//!   every feed reader (the visibility watermark) for as long as NATS takes
//!   to answer. On SQLite (one process, one writer) the batch is published
//!   first and the checkpoint moved under the checkpoint lock after; a
//!   second process that relayed the same batch meanwhile only makes
//!   JetStream drop duplicates.
//! - A `CustomerForgotten` purges the customer's earlier messages from
//!   the stream (they carry its personal data); consumers must delete
//!   their own copies (docs/feed.md).
//! - NATS down or slow never fails a command: the relay retries with
//!   backoff and catches up; [`RelayStatus`] feeds `/metrics`.

use access_store::prelude::*;
use std::time::Duration;

use access_domain::CustomerEvent;
use access_store::sql::Query;
use access_store::{Position, Store, StoreError};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::feed::{snake_case, FeedHub, FeedItem};

/// Settings of the relay (from `ACCESS_NATS_*`).
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub max_age: Duration,
    /// Events per batch (one checkpoint move).
    pub batch: u32,
    /// Longest wait for JetStream to acknowledge a batch.
    pub ack_timeout: Duration,
}

impl RelayOptions {
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            subject_prefix: prefix.into(),
            max_age: Duration::from_secs(30 * 86_400),
            batch: 1000,
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// The checkpoint's name.
    pub fn checkpoint(&self) -> String {
        format!("nats:{}", self.stream)
    }
}

/// Why a relay step failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("JetStream did not acknowledge within {0:?}")]
    AckTimeout(Duration),
    #[error("feed item not encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

fn nats(e: impl std::fmt::Display) -> RelayError {
    RelayError::Nats(e.to_string())
}

/// Where the relay is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayStatus {
    pub checkpoint: Position,
    /// The newest committed event when last checked.
    pub head: Position,
    /// When the oldest event not yet relayed was recorded (None when
    /// caught up).
    pub pending_since: Option<DateTime<Utc>>,
    /// Failed attempts since start (connect, publish, database).
    pub errors: u64,
    pub last_error: Option<String>,
    /// Whether this process holds the relay (another replica may).
    pub leader: bool,
}

impl RelayStatus {
    /// Events behind (by global position; approximate on PostgreSQL).
    pub fn events_behind(&self) -> u64 {
        u64::try_from(self.head.global.saturating_sub(self.checkpoint.global)).unwrap_or(0)
    }
}

/// A running relay.
pub struct Relay {
    status: watch::Receiver<RelayStatus>,
    task: JoinHandle<()>,
}

impl Relay {
    pub fn spawn(store: Store, hub: FeedHub, options: RelayOptions) -> Self {
        let (tx, rx) = watch::channel(RelayStatus::default());
        let task = tokio::spawn(run(store, hub, options, tx));
        Self { status: rx, task }
    }

    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// A receiver of the status (tests wait on it).
    pub fn watch(&self) -> watch::Receiver<RelayStatus> {
        self.status.clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn run(
    store: Store,
    hub: FeedHub,
    options: RelayOptions,
    status: watch::Sender<RelayStatus>,
) {
    let name = options.checkpoint();
    let mut backoff = Duration::from_millis(100);
    let mut commits = hub.subscribe();
    let mut jetstream: Option<jetstream::Context> = None;
    let fail = |status: &watch::Sender<RelayStatus>, e: &RelayError| {
        tracing::warn!(relay = %name, error = %e, "NATS relay: retrying");
        status.send_modify(|s| {
            s.errors += 1;
            s.last_error = Some(e.to_string());
        });
    };
    loop {
        if hub.is_closing() {
            return;
        }
        let js = match &jetstream {
            Some(js) => js.clone(),
            None => match connect(&options).await {
                Ok(js) => {
                    tracing::info!(stream = %options.stream, "NATS relay connected");
                    jetstream = Some(js.clone());
                    js
                }
                Err(e) => {
                    fail(&status, &e);
                    behind(&store, &status).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        commits.borrow_and_update();
        match relay_batch(&store, &js, &options, &name).await {
            Ok(Step::Relayed { to, first_at }) => {
                backoff = Duration::from_millis(100);
                status.send_modify(|s| {
                    s.checkpoint = to;
                    s.head = s.head.max(to);
                    s.pending_since = Some(first_at);
                    s.leader = true;
                    s.last_error = None;
                });
            }
            Ok(Step::Idle { at, leader }) => {
                backoff = Duration::from_millis(100);
                let head = store.head().await.unwrap_or(at);
                status.send_modify(|s| {
                    s.checkpoint = at;
                    s.head = head.max(at);
                    s.pending_since = None;
                    s.leader = leader;
                });
                // Wait for a commit (this process's at once, others' at
                // the hub's poll), or look again at the poll interval
                // (held-back events, another replica's relay stopping).
                let pause = if head > at && leader {
                    Duration::from_millis(5)
                } else {
                    hub.poll()
                };
                tokio::select! {
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => {
                if matches!(e, RelayError::Nats(_) | RelayError::AckTimeout(_)) {
                    // Make sure the stream exists again at the next try
                    // (the client itself reconnects).
                    jetstream = None;
                }
                fail(&status, &e);
                behind(&store, &status).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Refreshes the head and the oldest waiting event while the relay cannot
/// publish (so the lag shows it).
async fn behind(store: &Store, status: &watch::Sender<RelayStatus>) {
    let checkpoint = status.borrow().checkpoint;
    let Ok(head) = store.head().await else {
        return;
    };
    let oldest = match store.read_feed(checkpoint, 1).await {
        Ok(events) => events.first().map(|e| e.recorded_at),
        Err(_) => None,
    };
    status.send_modify(|s| {
        s.head = head.max(s.checkpoint);
        if oldest.is_some() {
            s.pending_since = oldest;
        }
    });
}

/// Connects and makes sure the stream exists.
async fn connect(options: &RelayOptions) -> Result<jetstream::Context, RelayError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(options.url.as_str())
        .await
        .map_err(nats)?;
    let js = jetstream::new(client);
    js.get_or_create_stream(stream::Config {
        name: options.stream.clone(),
        subjects: vec![format!("{}.>", options.subject_prefix)],
        storage: stream::StorageType::File,
        max_age: options.max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(nats)?;
    Ok(js)
}

enum Step {
    Relayed {
        to: Position,
        first_at: DateTime<Utc>,
    },
    Idle {
        at: Position,
        /// False when another replica holds the relay.
        leader: bool,
    },
}

async fn relay_batch(
    store: &Store,
    js: &jetstream::Context,
    options: &RelayOptions,
    name: &str,
) -> Result<Step, RelayError> {
    let db = store.sql();
    if db.kind() == "postgres" {
        let mut tx = db.begin().await.map_err(StoreError::from)?;
        let lock =
            Query::new("SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked").bind(name);
        let locked = match tx.fetch_optional(&lock).await.map_err(StoreError::from)? {
            Some(row) => row.bool("locked").map_err(StoreError::from)?,
            None => false,
        };
        if !locked {
            let at = db.checkpoint(name).await.map_err(StoreError::from)?;
            return Ok(Step::Idle { at, leader: false });
        }
        let at = db.checkpoint(name).await.map_err(StoreError::from)?;
        let events = store.read_feed(at, options.batch).await?;
        let Some(first_at) = events.first().map(|e| e.recorded_at) else {
            return Ok(Step::Idle { at, leader: true });
        };
        let to = publish(js, options, events).await?;
        tx.set_checkpoint(name, to)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Step::Relayed { to, first_at })
    } else {
        let at = db.checkpoint(name).await.map_err(StoreError::from)?;
        let events = store.read_feed(at, options.batch).await?;
        let Some(first_at) = events.first().map(|e| e.recorded_at) else {
            return Ok(Step::Idle { at, leader: true });
        };
        let to = publish(js, options, events).await?;
        let mut tx = db.begin().await.map_err(StoreError::from)?;
        let found = tx.lock_checkpoint(name).await.map_err(StoreError::from)?;
        if found == at {
            tx.set_checkpoint(name, to)
                .await
                .map_err(StoreError::from)?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(Step::Relayed { to, first_at })
        } else {
            // Another process moved it meanwhile: go on from there.
            Ok(Step::Relayed {
                to: found.max(to),
                first_at,
            })
        }
    }
}

/// Publishes a batch and waits for every acknowledgement; returns the
/// last position.
async fn publish(
    js: &jetstream::Context,
    options: &RelayOptions,
    events: Vec<access_store::RecordedEvent>,
) -> Result<Position, RelayError> {
    let mut last = Position::START;
    let sent = async {
        let mut acks = Vec::with_capacity(events.len());
        let mut forgotten = Vec::new();
        for event in events {
            last = event.position;
            let forgets = matches!(event.event, CustomerEvent::CustomerForgotten { .. });
            let item = FeedItem::from_event(event);
            if forgets {
                forgotten.push((acks.len(), item.customer_id));
            }
            let subject = format!(
                "{}.{}.{}",
                options.subject_prefix,
                snake_case(&item.event_type),
                item.customer_id
            );
            let payload = serde_json::to_vec(&item)?;
            let message = PublishMessage::build()
                .message_id(&item.position)
                .payload(payload.into());
            acks.push(js.send_publish(subject, message).await.map_err(nats)?);
        }
        let mut sequences = Vec::with_capacity(acks.len());
        for ack in acks {
            sequences.push(ack.await.map_err(nats)?.sequence);
        }
        // A forgotten customer's earlier messages (which carry their
        // personal data) leave the stream; `CustomerForgotten` stays.
        for (index, customer_id) in forgotten {
            let stream = js.get_stream(&options.stream).await.map_err(nats)?;
            stream
                .purge()
                .filter(format!("{}.*.{customer_id}", options.subject_prefix))
                .sequence(sequences[index])
                .await
                .map_err(nats)?;
        }
        Ok::<_, RelayError>(())
    };
    tokio::time::timeout(options.ack_timeout, sent)
        .await
        .map_err(|_| RelayError::AckTimeout(options.ack_timeout))??;
    Ok(last)
}
