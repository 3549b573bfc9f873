//! The NATS JetStream relay: follows the change feed with its own
//! checkpoint and publishes each event to `<prefix>.<event_type_snake>.
//! <customer_id>` with the feed item's JSON and `Nats-Msg-Id: <position>`.
//!
//! - The stream holds every event once, in position order. Each message
//!   is published with `Nats-Expected-Last-Sequence`: the stream sequence
//!   its predecessor got (or will get: a batch is published as a window of
//!   in-flight messages whose acknowledgements are awaited in order), so
//!   JetStream refuses a message that would not follow the one before it;
//!   after a refused or lost message every later one of the batch is
//!   refused too, and none is stored out of order. On start and after any
//!   failure the relay reads the stream's last message and resumes after
//!   its position (`Nats-Msg-Id`), not only after its checkpoint: what a
//!   crash left published but not checkpointed is not sent again, however
//!   long ago (the duplicate window, 2 minutes, is a second guard).
//! - The checkpoint (`nats:<stream>` in the projectors' checkpoint table)
//!   moves only after JetStream acknowledged every message of a batch; it
//!   is where the relay resumes when the stream is empty (new, or every
//!   message past its max age).
//! - One relay at a time across replicas. On PostgreSQL the replica that
//!   relays keeps a transaction open that holds an advisory lock on the
//!   checkpoint's name (it writes nothing, so it holds back no feed
//!   reader); the checkpoint moves in short transactions of their own,
//!   because a transaction that holds a row lock holds back every feed
//!   reader (the visibility watermark) for as long as NATS takes to
//!   answer. On SQLite (one process, one writer) the checkpoint moves
//!   under the checkpoint lock after the batch. Two relays at once (a lock
//!   lost with its connection) cannot disorder the stream either: each
//!   message expects its predecessor's sequence.
//! - A `CustomerForgotten` purges the customer's earlier messages from
//!   the stream (they carry its personal data); consumers must delete
//!   their own copies (docs/feed.md).
//! - NATS down or slow never fails a command: the relay retries with
//!   backoff and catches up; [`RelayStatus`] feeds `/metrics`.
//! - Idle, the relay costs nothing: it sleeps until a command of this
//!   process commits ([`FeedHub::local_commits`]) or [`IDLE_LOOK`] passes
//!   (commits of other replicas or tools); a replica that does not hold
//!   the relay tries for it every [`LEADER_RETRY`].

use access_store::prelude::*;
use std::time::Duration;

use access_domain::CustomerEvent;
use access_store::sql::{Db, Query, Tx};
use access_store::{Position, Store, StoreError};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::feed::{snake_case, FeedHub, FeedItem};
use crate::http::audit::parse_position;

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
    /// The stream's end is not where the relay saw it (another replica
    /// published meanwhile): read it again and go on from there.
    #[error("the stream moved on (another relay published)")]
    Moved,
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
    /// When the oldest event not yet in the stream was recorded (None
    /// when caught up).
    pub pending_since: Option<DateTime<Utc>>,
    /// Failed attempts since start (connect, publish, database).
    pub errors: u64,
    pub last_error: Option<String>,
    /// Whether this process holds the relay (another replica may).
    pub leader: bool,
    /// Looks at the store since start (each a round of the relay's loop).
    pub rounds: u64,
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
/// Longest rest of a relay that holds the relay and has nothing to do
/// (it also wakes at each commit of this process).
pub const IDLE_LOOK: Duration = Duration::from_secs(1);
/// How often a replica that does not hold the relay tries for it.
pub const LEADER_RETRY: Duration = Duration::from_secs(2);
/// The first pause while committed events wait for the visibility
/// watermark (doubling up to the feed's poll, `ACCESS_FEED_POLL_MS`).
const HELD_BACK_FIRST: Duration = Duration::from_millis(2);

async fn run(
    store: Store,
    hub: FeedHub,
    options: RelayOptions,
    status: watch::Sender<RelayStatus>,
) {
    let name = options.checkpoint();
    let mut backoff = Duration::from_millis(100);
    let mut held_back = Duration::ZERO;
    let mut commits = hub.local_commits();
    let mut jetstream: Option<jetstream::Context> = None;
    // The stream's end as last seen (None: read it before publishing).
    let mut tail: Option<Tail> = None;
    // The hold on the relay (PostgreSQL; see `hold`).
    let mut lease: Option<Tx> = None;
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
        status.send_modify(|s| s.rounds += 1);
        let round = Round {
            store: &store,
            js: &js,
            options: &options,
            name: &name,
            status: &status,
        };
        match round.relay_batch(&mut tail, &mut lease).await {
            Ok(Step::Relayed { to }) => {
                backoff = Duration::from_millis(100);
                held_back = Duration::ZERO;
                let head = store.head().await.unwrap_or(to);
                status.send_modify(|s| {
                    s.checkpoint = to;
                    s.head = head.max(to);
                    s.leader = true;
                    s.last_error = None;
                });
            }
            Ok(Step::Idle { at, leader: false }) => {
                backoff = Duration::from_millis(100);
                tail = None;
                status.send_modify(|s| {
                    s.checkpoint = at;
                    s.head = s.head.max(at);
                    s.pending_since = None;
                    s.leader = false;
                });
                tokio::time::sleep(LEADER_RETRY).await;
            }
            Ok(Step::Idle { at, leader: true }) => {
                backoff = Duration::from_millis(100);
                let head = store.head().await.unwrap_or(at);
                status.send_modify(|s| {
                    s.checkpoint = at;
                    s.head = head.max(at);
                    s.pending_since = None;
                    s.leader = true;
                });
                // Committed events the feed does not show yet wait for the
                // visibility watermark (an older transaction is still
                // open): look again soon, less often the longer it takes.
                let pause = if head > at {
                    held_back = (held_back * 2).max(HELD_BACK_FIRST).min(hub.poll());
                    held_back
                } else {
                    held_back = Duration::ZERO;
                    IDLE_LOOK
                };
                tokio::select! {
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(RelayError::Moved) => {
                // Not a failure: read the stream's end and go on.
                tracing::info!(relay = %name, "NATS relay: the stream moved on; resuming after its last message");
                tail = None;
                tokio::time::sleep(HELD_BACK_FIRST).await;
            }
            Err(e) => {
                tail = None;
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
        s.pending_since = oldest;
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

/// The end of the stream: its last sequence and the position its last
/// message carries (None: no message, as in a new stream or one whose
/// messages all passed their max age).
#[derive(Debug, Clone, Copy)]
struct Tail {
    sequence: u64,
    position: Option<Position>,
}

/// Takes or keeps the relay (PostgreSQL): a transaction kept open for as
/// long as this replica relays holds a transaction-level advisory lock on
/// the checkpoint's name. It writes nothing (so it has no transaction id
/// and holds back no feed reader); each round checks it is still there (a
/// dropped connection releases the lock, and this replica then tries for it
/// again like any other).
async fn hold(db: &Db, name: &str, lease: &mut Option<Tx>) -> Result<bool, RelayError> {
    if let Some(tx) = lease.as_mut() {
        match tx.fetch_optional(&Query::new("SELECT 1 AS alive")).await {
            Ok(_) => return Ok(true),
            Err(e) => {
                *lease = None;
                return Err(StoreError::from(e).into());
            }
        }
    }
    let mut tx = db.begin().await.map_err(StoreError::from)?;
    let lock = Query::new("SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked").bind(name);
    let locked = match tx.fetch_optional(&lock).await.map_err(StoreError::from)? {
        Some(row) => row.bool("locked").map_err(StoreError::from)?,
        None => false,
    };
    if locked {
        *lease = Some(tx);
    }
    Ok(locked)
}

/// Reads the stream's end.
async fn stream_tail(js: &jetstream::Context, options: &RelayOptions) -> Result<Tail, RelayError> {
    let mut stream = js.get_stream(&options.stream).await.map_err(nats)?;
    let state = stream.info().await.map_err(nats)?.state.clone();
    if state.messages == 0 {
        return Ok(Tail {
            sequence: state.last_sequence,
            position: None,
        });
    }
    let last = stream
        .get_raw_message(state.last_sequence)
        .await
        .map_err(nats)?;
    let id = last
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|id| id.as_str().to_string())
        .unwrap_or_default();
    let position = parse_position(&id).ok_or_else(|| {
        RelayError::Nats(format!(
            "the stream's last message (sequence {}) has no position as Nats-Msg-Id (`{id}`): \
             is another publisher using the subjects `{}.>`?",
            state.last_sequence, options.subject_prefix
        ))
    })?;
    Ok(Tail {
        sequence: state.last_sequence,
        position: Some(position),
    })
}

enum Step {
    Relayed {
        to: Position,
    },
    Idle {
        at: Position,
        /// False when another replica holds the relay.
        leader: bool,
    },
}

/// One round of the relay: what it needs.
struct Round<'a> {
    store: &'a Store,
    js: &'a jetstream::Context,
    options: &'a RelayOptions,
    name: &'a str,
    status: &'a watch::Sender<RelayStatus>,
}

/// What one batch is: the events after where the relay resumes.
struct Batch {
    events: Vec<access_store::RecordedEvent>,
    /// The stream's end the first message must follow.
    tail: Tail,
    /// When the oldest event after the batch was recorded (None: the batch
    /// holds everything the feed shows).
    after: Option<DateTime<Utc>>,
}

impl Round<'_> {
    /// Where to resume (after the stream's last message, or the checkpoint
    /// when that is further: a stream emptied by its max age) and the
    /// events after it.
    async fn read(
        &self,
        checkpoint: Position,
        tail: &mut Option<Tail>,
    ) -> Result<Batch, RelayError> {
        let known = match *tail {
            Some(known) => known,
            None => {
                let read = stream_tail(self.js, self.options).await?;
                *tail = Some(read);
                read
            }
        };
        let at = known.position.map_or(checkpoint, |p| p.max(checkpoint));
        // One more than the batch: the oldest event still waiting after it.
        let mut events = self.store.read_feed(at, self.options.batch + 1).await?;
        let after = if events.len() > self.options.batch as usize {
            events.pop().map(|e| e.recorded_at)
        } else {
            None
        };
        if let Some(oldest) = events.first().map(|e| e.recorded_at) {
            self.status.send_modify(|s| s.pending_since = Some(oldest));
        }
        Ok(Batch {
            events,
            tail: known,
            after,
        })
    }

    async fn relay_batch(
        &self,
        tail: &mut Option<Tail>,
        lease: &mut Option<Tx>,
    ) -> Result<Step, RelayError> {
        let (store, name) = (self.store, self.name);
        let db = store.sql();
        if db.kind() == "postgres" && !hold(db, name, lease).await? {
            let at = db.checkpoint(name).await.map_err(StoreError::from)?;
            return Ok(Step::Idle { at, leader: false });
        }
        let checkpoint = db.checkpoint(name).await.map_err(StoreError::from)?;
        let batch = self.read(checkpoint, tail).await?;
        let after = batch.after;
        let published = self.publish(batch, tail).await?;
        let at = tail
            .and_then(|t| t.position)
            .unwrap_or(checkpoint)
            .max(checkpoint);
        if at > checkpoint {
            // After the acknowledgement (or, when the stream holds more
            // than the checkpoint says, as after a crash between the two:
            // catching up). A short transaction of its own: one that holds
            // a row lock holds back every feed reader on PostgreSQL.
            let mut tx = db.begin().await.map_err(StoreError::from)?;
            let found = tx.lock_checkpoint(name).await.map_err(StoreError::from)?;
            if found < at {
                tx.set_checkpoint(name, at)
                    .await
                    .map_err(StoreError::from)?;
                tx.commit().await.map_err(StoreError::from)?;
            }
        }
        Ok(match published {
            Some(to) => {
                self.status.send_modify(|s| s.pending_since = after);
                Step::Relayed { to }
            }
            None => Step::Idle { at, leader: true },
        })
    }

    /// Publishes a batch as a window of in-flight messages, each expecting
    /// its predecessor's stream sequence, and waits for the
    /// acknowledgements in order; returns the last position (None: nothing
    /// to publish) and leaves the stream's new end in `tail`.
    async fn publish(
        &self,
        batch: Batch,
        tail: &mut Option<Tail>,
    ) -> Result<Option<Position>, RelayError> {
        let (js, options) = (self.js, self.options);
        let Batch {
            events, tail: from, ..
        } = batch;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(None);
        };
        // Until every acknowledgement is in, the stream's end is unknown.
        *tail = None;
        let sent = async {
            let mut acks = Vec::with_capacity(events.len());
            let mut forgotten = Vec::new();
            // Each message expects its predecessor's stream sequence.
            for (expected, event) in (from.sequence..).zip(events) {
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
                    .expected_last_sequence(expected)
                    .payload(payload.into());
                acks.push(js.send_publish(subject, message).await.map_err(nats)?);
            }
            let mut sequence = from.sequence;
            let mut sequences = Vec::with_capacity(acks.len());
            for ack in acks {
                let ack = ack.await.map_err(refused)?;
                if ack.duplicate || ack.sequence != sequence + 1 {
                    // Already in the stream (another relay was here).
                    return Err(RelayError::Moved);
                }
                sequence = ack.sequence;
                sequences.push(sequence);
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
            Ok::<_, RelayError>(sequence)
        };
        let sequence = tokio::time::timeout(options.ack_timeout, sent)
            .await
            .map_err(|_| RelayError::AckTimeout(options.ack_timeout))??;
        *tail = Some(Tail {
            sequence,
            position: Some(last),
        });
        Ok(Some(last))
    }
}

/// A refused publish: the stream's end was not the expected one (another
/// relay published, or an earlier message of the window was refused).
fn refused(e: jetstream::context::PublishError) -> RelayError {
    match e.kind() {
        jetstream::context::PublishErrorKind::WrongLastSequence => RelayError::Moved,
        _ => nats(e),
    }
}
