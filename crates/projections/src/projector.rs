//! The catch-up projector: reads the store's feed from its checkpoint and
//! writes each batch of rows together with the new checkpoint.

use access_store::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use access_domain::CustomerEvent;
use access_store::{Position, Store, StoreError};
use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::chain;
use crate::db::{self, Tables};
use crate::ProjectionError;

/// Settings of a projector.
#[derive(Debug, Clone, Copy)]
pub struct ProjectorOptions {
    pub tables: Tables,
    /// Events per transaction.
    pub batch: u32,
    /// How often to look for new events when not nudged (other replicas'
    /// writes arrive this way).
    pub poll: Duration,
    /// Also keep the hash chain over the events current ([`chain`],
    /// docs/audit.md): a chain batch after each projected batch (before the
    /// new checkpoint is published, so caught-up projections mean a
    /// caught-up chain) and while idle until the chain has caught up.
    pub chain: bool,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            tables: db::LIVE,
            batch: 500,
            poll: Duration::from_millis(200),
            chain: true,
        }
    }
}

/// Where the projector is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub checkpoint: Position,
    /// The newest event known when last checked.
    pub head: Position,
    /// When the last projected event happened.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Set when the projector stopped on an error (its own, or the hash
    /// chain's: both run in one loop).
    pub failed: Option<String>,
    /// Set when that error was the hash chain's.
    pub chain_failed: Option<String>,
}

impl Status {
    /// Events behind (by global position; approximate on PostgreSQL, where
    /// aborted transactions leave gaps).
    pub fn events_behind(&self) -> u64 {
        u64::try_from(self.head.global.saturating_sub(self.checkpoint.global)).unwrap_or(0)
    }
}

/// A running projector.
pub struct Projector {
    store: Store,
    status: watch::Receiver<Status>,
    nudge: Arc<Notify>,
    task: JoinHandle<()>,
    chain: bool,
}

impl Projector {
    /// Starts following the feed in the background.
    pub fn spawn(store: Store, options: ProjectorOptions) -> Self {
        let (tx, rx) = watch::channel(Status::default());
        let nudge = Arc::new(Notify::new());
        let task = tokio::spawn(run(store.clone(), options, tx, nudge.clone()));
        Self {
            store,
            status: rx,
            nudge,
            task,
            chain: options.chain,
        }
    }

    /// Whether its loop is still running: false once it stopped on an
    /// error ([`Status::failed`] says why), was stopped, or panicked.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Whether this projector also keeps the hash chain current.
    pub fn keeps_chain(&self) -> bool {
        self.chain
    }

    /// New events were written: look now instead of at the next poll.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the projections include every event committed before
    /// the call (read-your-writes), at most `timeout`.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<(), ProjectionError> {
        let head = self.store.head().await?;
        self.wait_for(head, timeout).await
    }

    /// Waits until the checkpoint reaches `position`, at most `timeout`.
    pub async fn wait_for(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let mut rx = self.status.clone();
        let reached = |s: &Status| s.checkpoint >= position || s.failed.is_some();
        let result = tokio::time::timeout(timeout, async {
            if !reached(&rx.borrow()) {
                self.nudge();
            }
            rx.wait_for(reached).await.map(|s| s.clone())
        })
        .await;
        match result {
            Ok(Ok(status)) => match status.failed {
                Some(reason) => Err(ProjectionError::Stopped(reason)),
                None => Ok(()),
            },
            Ok(Err(_)) => Err(ProjectionError::Stopped("the projector task ended".into())),
            Err(_) => Err(ProjectionError::Lagging {
                checkpoint: self.status().checkpoint,
                head: position,
            }),
        }
    }

    /// Stops the projector (it holds no transaction between batches).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first wait for committed events held back by the visibility
/// watermark.
const HELD_BACK_FIRST: Duration = Duration::from_millis(2);

async fn run(
    store: Store,
    options: ProjectorOptions,
    status: watch::Sender<Status>,
    nudge: Arc<Notify>,
) {
    let name = options.tables.checkpoint;
    let mut backoff = Duration::from_millis(100);
    // Start-up: the checkpoint row, then where we are.
    let mut checkpoint = loop {
        let started = async {
            db::ensure_checkpoint(&store, name).await?;
            db::checkpoint(&store, name).await
        };
        match started.await {
            Ok(position) => break position,
            Err(e) if e.is_transient() => {
                tracing::warn!(projector = name, error = %e, "projector waiting for the database");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return fail(&status, name, Position::START, &e),
        }
    };
    status.send_modify(|s| s.checkpoint = checkpoint);
    tracing::info!(projector = name, %checkpoint, "projector started");
    // Where the hash chain is, as far as this loop knows.
    let mut chain_at = Position::START;
    // The last wait for held-back events (doubles while they stay held).
    let mut held_back_wait = Duration::ZERO;

    loop {
        let events = match store.read_feed(checkpoint, options.batch).await {
            Ok(events) => events,
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(projector = name, error = %e, "projector: database unavailable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => return fail(&status, name, checkpoint, &e.into()),
        };
        if events.is_empty() {
            backoff = Duration::from_millis(100);
            if options.chain && chain_at < checkpoint {
                match extend_chain(&store, options.batch, chain_at).await {
                    Ok(at) if at != chain_at => {
                        chain_at = at;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => return fail(&status, chain::CHECKPOINT, chain_at, &e),
                }
            }
            let held_back = match store.head().await {
                Ok(head) => {
                    status.send_modify(|s| s.head = head.max(s.checkpoint));
                    head > checkpoint
                }
                Err(_) => false,
            };
            // Wait for a nudge or the next poll. Committed events the feed
            // does not show yet wait for the visibility watermark (a
            // transaction begun before theirs is still open): look again
            // soon, backing off to the poll interval, instead of waiting
            // for a nudge that may not come.
            let wait = if held_back {
                held_back_wait = (held_back_wait * 2).max(HELD_BACK_FIRST).min(options.poll);
                held_back_wait
            } else {
                options.poll
            };
            let _ = tokio::time::timeout(wait, nudge.notified()).await;
            continue;
        }
        held_back_wait = Duration::ZERO;
        match db::project_batch(&store, options.tables, checkpoint, &events).await {
            Ok(to) => {
                backoff = Duration::from_millis(100);
                checkpoint = to;
                if options.chain {
                    match extend_chain(&store, options.batch, chain_at).await {
                        Ok(at) => chain_at = at,
                        Err(e) => return fail(&status, chain::CHECKPOINT, chain_at, &e),
                    }
                }
                if events
                    .iter()
                    .any(|e| matches!(e.event, CustomerEvent::CustomerForgotten { .. }))
                {
                    // The forgotten customer's rows were just scrubbed: no
                    // older copy of them may stay in SQLite's -wal file.
                    if let Err(e) = store.purge_wal().await {
                        tracing::warn!(projector = name, error = %e, "WAL checkpoint after a forget failed");
                    }
                }
                let last_at = events.last().map(|e| e.recorded_at);
                status.send_modify(|s| {
                    s.checkpoint = to;
                    s.head = s.head.max(to);
                    s.last_event_at = last_at;
                });
            }
            Err(ProjectionError::CheckpointMoved { found, .. }) => {
                // Another replica projected these; continue from there.
                checkpoint = found;
                status.send_modify(|s| s.checkpoint = found);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(projector = name, error = %e, "projector: retrying the batch");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                let at = events.first().map_or(checkpoint, |e| e.position);
                return fail(&status, name, at, &e);
            }
        }
    }
}

/// One batch of the hash chain. Returns where the chain is; a transient
/// failure leaves it where it was (the loop tries again), a hard one (a
/// stored hash missing, an event that cannot be hashed) is returned.
async fn extend_chain(
    store: &Store,
    batch: u32,
    at: Position,
) -> Result<Position, ProjectionError> {
    match chain::extend_batch(store, batch).await {
        Ok(done) => Ok(done.at),
        // Another process extended it.
        Err(ProjectionError::CheckpointMoved { found, .. }) => Ok(found),
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "hash chain: retrying later");
            Ok(at)
        }
        Err(e) => Err(e),
    }
}

fn fail(status: &watch::Sender<Status>, name: &str, position: Position, error: &ProjectionError) {
    tracing::error!(
        projector = name,
        %position,
        error = %error,
        "projector stopped: the event at this position could not be projected; fix it and restart"
    );
    let reason = format!("at position {position}: {error}");
    status.send_modify(|s| {
        if name == chain::CHECKPOINT {
            s.chain_failed = Some(reason.clone());
        }
        s.failed = Some(reason);
    });
}
