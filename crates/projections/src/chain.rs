//! The hash chain over the events: tamper evidence for the history.
//!
//! Every event row gets a SHA-256 hash over its stored content and the hash
//! of the event before it in the global order (`event_hashes`, one row per
//! event). The newest hash (the *head*) is a digest of the whole history up
//! to it: an auditor keeps it outside the system, and [`verify`] later
//! recomputes the chain from the events table and says whether the history
//! up to that digest is unchanged, and which events were altered, inserted
//! or removed. The recipe is in docs/audit.md ("Proving the history is
//! intact") so that it can be recomputed without this code.
//!
//! The chain covers the rows *as stored* (canonical JSON of the stored
//! payload and metadata), never the decoded or upcast events: an upcaster
//! or forgetting a customer (destroying the key its personal data is sealed
//! with) does not change a hash.
//!
//! [`extend`] hashes the events not hashed yet, in batches, each batch with
//! the chain's checkpoint (`projector_checkpoints`, name `chain`) in one
//! transaction. Several processes may extend at once: the checkpoint row is
//! locked, and a batch that finds it moved writes nothing.

use std::collections::VecDeque;

use access_store::{Position, Store};
use chrono::Utc;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{QueryBuilder, Row};

use crate::db::{self, on_store};
use crate::ProjectionError;

/// The chain's checkpoint row in `projector_checkpoints`.
pub const CHECKPOINT: &str = "chain";

/// The "previous hash" of the first event (and the digest of an empty
/// history): 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first field of every hashed message: names the recipe, so that a
/// future change of recipe cannot be confused with this one.
pub const RECIPE: &str = "access-event-chain-v1";

/// Events per transaction when extending.
pub const BATCH: u32 = 500;

/// Rows read per query when verifying.
const VERIFY_BATCH: u32 = 1000;

const BROKEN: &str = "the stored hash does not follow from the stored hash before it: \
                      hashes before this position were removed or rewritten";

/// How many problems a [`VerifyReport`] keeps (all are counted, and all
/// are passed to the callback of [`verify_with`]).
pub const MAX_KEPT_PROBLEMS: usize = 10_000;

/// The newest hashed event and its hash: the digest of the history up to
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub position: Position,
    pub hash: String,
}

impl ChainHead {
    /// `TX:GLOBAL:HASH`, the form `accessctl audit verify --digest` takes.
    pub fn digest(&self) -> String {
        format!(
            "{}:{}:{}",
            self.position.tx, self.position.global, self.hash
        )
    }
}

/// The digest of an empty history: `0:0:000…0`.
pub fn genesis_digest() -> String {
    format!("0:0:{GENESIS}")
}

/// Parses a kept digest, `TX:GLOBAL:HASH` or `GLOBAL:HASH`, into the
/// global position and the (lower-case) hash. The global position alone
/// names the event; `TX` is accepted because `digest` prints it.
pub fn parse_digest(raw: &str) -> Option<(i64, String)> {
    let parts: Vec<&str> = raw.trim().split(':').collect();
    let (global, hash) = match parts.as_slice() {
        [tx, global, hash] => {
            tx.parse::<u64>().ok()?;
            (global, hash)
        }
        [global, hash] => (global, hash),
        _ => return None,
    };
    let global: i64 = global.parse().ok().filter(|g| *g >= 0)?;
    let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| (global, hash.to_ascii_lowercase()))
}

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

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn tx_of(raw: &str) -> Result<u64, ProjectionError> {
    raw.parse()
        .map_err(|_| ProjectionError::Corrupt(format!("transaction id `{raw}` is not a number")))
}

/// Up to `limit` event rows after `after`, as stored, in the global order
/// (every aggregate type), never passing a transaction that may still
/// commit (the rule of `Store::read_feed`, docs/adr/0002-global-order.md).
pub async fn read_events(
    store: &Store,
    after: Position,
    limit: u32,
) -> Result<Vec<StoredEvent>, ProjectionError> {
    const COLUMNS: &str =
        "global_position, aggregate_type, aggregate_id, sequence, event_type, event_version";
    on_store!(store, read, |pool, _ts, _get_ts, pg| {
        let rows = if pg {
            sqlx::query(&format!(
                "SELECT tx_id::text AS tx, {COLUMNS}, payload::text AS payload, metadata::text AS metadata \
                 FROM events \
                 WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
                   AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx_id, global_position LIMIT $3"
            ))
            .bind(after.tx.to_string())
            .bind(after.global)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        } else {
            sqlx::query(&format!(
                "SELECT '0' AS tx, {COLUMNS}, payload, metadata FROM events \
                 WHERE global_position > $1 ORDER BY global_position LIMIT $2"
            ))
            .bind(after.global)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let tx: String = row.try_get("tx")?;
            out.push(StoredEvent {
                position: Position {
                    tx: tx_of(&tx)?,
                    global: row.try_get("global_position")?,
                },
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
            });
        }
        Ok(out)
    })
}

/// One stored link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HashRow {
    position: Position,
    hash: String,
    prev_hash: String,
}

/// Up to `limit` stored hashes after `after` and at most `up_to`, in the
/// chain's order.
async fn read_hashes(
    store: &Store,
    after: Position,
    up_to: Position,
    limit: u32,
) -> Result<Vec<HashRow>, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        let rows = sqlx::query(
            "SELECT position, tx, hash, prev_hash FROM event_hashes \
             WHERE (tx, position) > ($1, $2) AND (tx, position) <= ($3, $4) \
             ORDER BY tx, position LIMIT $5",
        )
        .bind(to_i64(after.tx))
        .bind(after.global)
        .bind(to_i64(up_to.tx))
        .bind(up_to.global)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let tx: i64 = row.try_get("tx")?;
            out.push(HashRow {
                position: Position {
                    tx: u64::try_from(tx).unwrap_or_default(),
                    global: row.try_get("position")?,
                },
                hash: row.try_get("hash")?,
                prev_hash: row.try_get("prev_hash")?,
            });
        }
        Ok(out)
    })
}

/// The last stored hash row's place (None when there is none).
async fn last_hashed(store: &Store) -> Result<Option<Position>, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        let row = sqlx::query(
            "SELECT tx, position FROM event_hashes ORDER BY tx DESC, position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(Position {
                tx: u64::try_from(row.try_get::<i64, _>("tx")?).unwrap_or_default(),
                global: row.try_get("position")?,
            })),
        }
    })
}

/// The stored hash of the event at `global`.
async fn stored_hash(store: &Store, global: i64) -> Result<Option<String>, ProjectionError> {
    on_store!(store, read, |pool, _ts, _get_ts, _pg| {
        Ok(
            sqlx::query_scalar("SELECT hash FROM event_hashes WHERE position = $1")
                .bind(global)
                .fetch_optional(pool)
                .await?,
        )
    })
}

/// What one [`extend_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extended {
    /// Events hashed (0: the chain was caught up).
    pub hashed: u64,
    /// The chain's checkpoint afterwards.
    pub at: Position,
}

/// Hashes up to `limit` events after the chain's checkpoint and moves the
/// checkpoint, in one transaction. Fails with `CheckpointMoved` (nothing
/// written) when another process extended the chain in the meantime.
pub async fn extend_batch(store: &Store, limit: u32) -> Result<Extended, ProjectionError> {
    let from = db::checkpoint(store, CHECKPOINT).await?;
    let events = read_events(store, from, limit.max(1)).await?;
    let Some(last) = events.last() else {
        return Ok(Extended {
            hashed: 0,
            at: from,
        });
    };
    let to = last.position;
    on_store!(store, write, |pool, ts, _get_ts, _pg| {
        let mut tx = pool.begin().await?;
        // Lock the checkpoint row with a write before any read: a row lock
        // on PostgreSQL (a second extender waits here, then sees the moved
        // checkpoint), the database write lock on SQLite (taken before the
        // transaction reads anything, so another process's commit cannot
        // make it stale).
        let lock = "UPDATE projector_checkpoints SET updated_at = $1 WHERE name = $2 \
                    RETURNING tx, position";
        let mut row = sqlx::query(lock)
            .bind(ts(Utc::now()))
            .bind(CHECKPOINT)
            .fetch_optional(&mut *tx)
            .await?;
        if row.is_none() {
            sqlx::query(
                "INSERT INTO projector_checkpoints (name, tx, position, updated_at) \
                 VALUES ($1, 0, 0, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(CHECKPOINT)
            .bind(ts(Utc::now()))
            .execute(&mut *tx)
            .await?;
            row = sqlx::query(lock)
                .bind(ts(Utc::now()))
                .bind(CHECKPOINT)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let current = match row {
            None => Position::START,
            Some(row) => Position {
                tx: u64::try_from(row.try_get::<i64, _>("tx")?).unwrap_or_default(),
                global: row.try_get("position")?,
            },
        };
        if current != from {
            return Err(ProjectionError::CheckpointMoved {
                expected: from,
                found: current,
            });
        }
        let mut prev = if from == Position::START {
            GENESIS.to_string()
        } else {
            sqlx::query_scalar::<_, String>("SELECT hash FROM event_hashes WHERE position = $1")
                .bind(from.global)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    ProjectionError::Corrupt(format!(
                        "the hash chain's last hash (position {from}) is missing from event_hashes; \
                         run `accessctl audit verify`"
                    ))
                })?
        };
        let mut links = Vec::with_capacity(events.len());
        for event in &events {
            let hash = event_hash(event, &prev).map_err(|detail| {
                ProjectionError::Corrupt(format!(
                    "event at position {} (customer {}, sequence {}) cannot be hashed: {detail}",
                    event.position, event.aggregate_id, event.sequence
                ))
            })?;
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            links.push((event.position, hash, prev_hash));
        }
        // 4 parameters a row: 1,000 rows stay under SQLite's limit.
        for chunk in links.chunks(1000) {
            let mut insert =
                QueryBuilder::new("INSERT INTO event_hashes (position, tx, hash, prev_hash) ");
            insert.push_values(chunk, |mut b, (position, hash, prev_hash)| {
                b.push_bind(position.global)
                    .push_bind(to_i64(position.tx))
                    .push_bind(hash.clone())
                    .push_bind(prev_hash.clone());
            });
            insert.build().execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE projector_checkpoints SET tx = $1, position = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(to_i64(to.tx))
        .bind(to.global)
        .bind(ts(Utc::now()))
        .bind(CHECKPOINT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Extended {
            hashed: events.len() as u64,
            at: to,
        })
    })
}

/// Hashes every event not hashed yet (in batches of [`BATCH`], each in one
/// transaction) and returns the head: the newest hashed event and its hash
/// (None while there are no events).
pub async fn extend(store: &Store) -> Result<Option<ChainHead>, ProjectionError> {
    loop {
        match extend_batch(store, BATCH).await {
            Ok(done) if done.hashed == 0 => break,
            Ok(_) => {}
            // Another process hashed these: go on from where it is.
            Err(ProjectionError::CheckpointMoved { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    head(store).await
}

/// [`extend`] until the chain includes every event committed before the
/// call. On PostgreSQL an event is only hashed once no older transaction
/// is still running (docs/adr/0002-global-order.md), so this may take a
/// moment; fails with `Lagging` after `timeout`.
pub async fn catch_up(
    store: &Store,
    timeout: std::time::Duration,
) -> Result<Option<ChainHead>, ProjectionError> {
    let target = store.head().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let head = extend(store).await?;
        let at = head.as_ref().map_or(Position::START, |h| h.position);
        if at >= target {
            return Ok(head);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProjectionError::Lagging {
                checkpoint: at,
                head: target,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Drops every stored hash so that the chain is computed again from the
/// first event. Only for the one-time migration that seals personal data
/// of events written before encryption (`accessctl keys seal-legacy`):
/// it changes stored events on purpose, so the chain starts over and the
/// operator records the new head (docs/operations.md).
pub async fn restart(store: &Store) -> Result<(), ProjectionError> {
    on_store!(store, write, |pool, _ts, _get_ts, _pg| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM event_hashes")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM projector_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}

/// The newest hashed event and its hash, as stored (None while nothing is
/// hashed).
pub async fn head(store: &Store) -> Result<Option<ChainHead>, ProjectionError> {
    let at = db::checkpoint(store, CHECKPOINT).await?;
    if at == Position::START {
        return Ok(None);
    }
    let hash = stored_hash(store, at.global).await?.ok_or_else(|| {
        ProjectionError::Corrupt(format!(
            "the hash chain's head (position {at}) is missing from event_hashes"
        ))
    })?;
    Ok(Some(ChainHead { position: at, hash }))
}

/// What is wrong at a place in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The event row no longer produces its stored hash: its content
    /// changed.
    Altered,
    /// An event row without a stored hash, although later events are
    /// hashed: it was added behind the chain's back.
    Inserted,
    /// A stored hash whose event row is gone.
    Removed,
    /// The stored hash does not follow from the stored hash before it:
    /// hashes (and probably their events) before this position were
    /// deleted, or the stored hashes were rewritten.
    Broken,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Altered => "altered",
            Self::Inserted => "inserted",
            Self::Removed => "removed",
            Self::Broken => "broken",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub position: Position,
    pub kind: ProblemKind,
    /// A sentence for people.
    pub detail: String,
}

/// The comparison with a digest kept outside the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCheck {
    pub global: i64,
    pub expected: String,
    /// The hash recomputed from the events as they are now (None when no
    /// event is at that position any more, or the chain could not be
    /// recomputed up to it).
    pub recomputed: Option<String>,
    /// True when the history up to the digest is unchanged.
    pub intact: bool,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Event rows read.
    pub events: u64,
    /// Stored hashes checked.
    pub hashes: u64,
    /// The last stored hash checked (None: nothing is hashed).
    pub hashed_up_to: Option<Position>,
    /// The first [`MAX_KEPT_PROBLEMS`] problems, in the global order.
    pub problems: Vec<Problem>,
    /// Every problem found.
    pub problem_count: u64,
    /// The result for the given digest.
    pub digest: Option<DigestCheck>,
}

impl VerifyReport {
    /// No problem, and the digest (if any) matches.
    pub fn is_intact(&self) -> bool {
        self.problem_count == 0 && self.digest.as_ref().is_none_or(|d| d.intact)
    }
}

/// A batched reader over one ordered table.
struct Batches<T> {
    buffer: VecDeque<T>,
    after: Position,
    done: bool,
}

impl<T> Batches<T> {
    fn new() -> Self {
        Self {
            buffer: VecDeque::new(),
            after: Position::START,
            done: false,
        }
    }

    fn fill(&mut self, rows: Vec<T>, last: Option<Position>, limit: u32) {
        self.done = rows.len() < limit as usize;
        if let Some(last) = last {
            self.after = last;
        }
        self.buffer.extend(rows);
    }
}

/// Recomputes the chain from the events table and compares it with the
/// stored hashes and, if given, with a digest kept outside (`up_to`: the
/// global position and the hash). See [`verify_with`].
pub async fn verify(
    store: &Store,
    up_to: Option<(i64, String)>,
) -> Result<VerifyReport, ProjectionError> {
    verify_with(store, up_to, |_| {}).await
}

/// [`verify`], calling `on_problem` for every problem as it is found (the
/// report keeps the first [`MAX_KEPT_PROBLEMS`]). Reads both tables in
/// batches, in the global order: memory stays constant however long the
/// history. Writes nothing.
///
/// Each stored hash is checked on its own (its event recomputed on its
/// stored predecessor hash, and the predecessor compared with the stored
/// hash before it), so each altered, inserted or removed event is reported
/// once, at its position. The digest is compared with the chain recomputed
/// from the events alone, which no rewrite of the stored hashes can fake.
pub async fn verify_with(
    store: &Store,
    up_to: Option<(i64, String)>,
    mut on_problem: impl FnMut(&Problem),
) -> Result<VerifyReport, ProjectionError> {
    // The checkpoint first, then the last stored hash: a concurrent
    // extension writes both together, so only tampering makes the
    // checkpoint pass the last hash.
    let checkpoint = db::checkpoint(store, CHECKPOINT).await?;
    let bound = last_hashed(store).await?;
    let mut report = VerifyReport {
        hashed_up_to: bound,
        ..VerifyReport::default()
    };
    let mut problem = |report: &mut VerifyReport, position: Position, kind, detail: String| {
        let p = Problem {
            position,
            kind,
            detail,
        };
        on_problem(&p);
        report.problem_count += 1;
        if report.problems.len() < MAX_KEPT_PROBLEMS {
            report.problems.push(p);
        }
    };

    let mut events: Batches<StoredEvent> = Batches::new();
    let mut hashes: Batches<HashRow> = Batches::new();
    hashes.done = bound.is_none();
    // The chain recomputed from the events alone (None once an event
    // cannot be hashed).
    let mut recomputed: Option<String> = Some(GENESIS.to_string());
    // The stored hash before the current one.
    let mut stored_prev = GENESIS.to_string();
    // The digest: (global, expected hash, recomputed there if reached).
    let mut digest = up_to.map(|(global, hash)| (global, hash.to_ascii_lowercase()));
    let mut digest_found: Option<Option<String>> = match &digest {
        Some((0, _)) => Some(Some(GENESIS.to_string())),
        _ => None,
    };

    loop {
        if hashes.buffer.is_empty() && !hashes.done {
            if let Some(bound) = bound {
                let rows = read_hashes(store, hashes.after, bound, VERIFY_BATCH).await?;
                let last = rows.last().map(|r| r.position);
                hashes.fill(rows, last, VERIFY_BATCH);
            }
        }
        let digest_pending = digest.is_some() && digest_found.is_none();
        let need_events = !hashes.buffer.is_empty() || digest_pending;
        if events.buffer.is_empty() && !events.done && need_events {
            let rows = read_events(store, events.after, VERIFY_BATCH).await?;
            let last = rows.last().map(|r| r.position);
            events.fill(rows, last, VERIFY_BATCH);
        }
        let next_event = events.buffer.front().map(|e| e.position);
        let next_hash = hashes.buffer.front().map(|h| h.position);
        let take_event = match (next_event, next_hash) {
            (None, None) => break,
            // Past the last stored hash: only the digest still needs events.
            (Some(_), None) if !digest_pending => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(e), Some(h)) => e <= h,
        };
        if take_event {
            let Some(event) = events.buffer.pop_front() else {
                break;
            };
            let e = event.position;
            report.events += 1;
            let previous = recomputed.take();
            let own = previous.as_deref().map(|prev| event_hash(&event, prev));
            recomputed = own.as_ref().and_then(|own| own.as_ref().ok().cloned());
            if let Some((global, _)) = &digest {
                if digest_pending && e.global == *global {
                    digest_found = Some(recomputed.clone());
                }
            }
            if next_hash == Some(e) {
                let Some(link) = hashes.buffer.pop_front() else {
                    break;
                };
                report.hashes += 1;
                if link.prev_hash != stored_prev {
                    problem(&mut report, e, ProblemKind::Broken, BROKEN.into());
                }
                // Usually the stored predecessor is the recomputed one.
                let check = match (&previous, own) {
                    (Some(prev), Some(own)) if *prev == link.prev_hash => own,
                    _ => event_hash(&event, &link.prev_hash),
                };
                let detail = match check {
                    Ok(hash) if hash == link.hash => None,
                    Ok(_) => Some("no longer matches its stored hash".to_string()),
                    Err(why) => Some(format!("cannot be hashed: {why}")),
                };
                if let Some(detail) = detail {
                    let detail = format!(
                        "the event (customer {}, sequence {}) {detail}",
                        event.aggregate_id, event.sequence
                    );
                    problem(&mut report, e, ProblemKind::Altered, detail);
                }
                stored_prev = link.hash;
            } else if next_hash.is_some() {
                let detail = format!(
                    "the event (customer {}, sequence {}) has no stored hash, but later events have",
                    event.aggregate_id, event.sequence
                );
                problem(&mut report, e, ProblemKind::Inserted, detail);
            }
            // Else: after the last stored hash, not hashed yet.
        } else {
            let Some(link) = hashes.buffer.pop_front() else {
                break;
            };
            report.hashes += 1;
            if link.prev_hash != stored_prev {
                problem(
                    &mut report,
                    link.position,
                    ProblemKind::Broken,
                    BROKEN.into(),
                );
            }
            let detail = "the event was hashed, but its row is gone".to_string();
            problem(&mut report, link.position, ProblemKind::Removed, detail);
            stored_prev = link.hash;
        }
    }

    if let Some(bound) = bound {
        if checkpoint > bound {
            problem(
                &mut report,
                checkpoint,
                ProblemKind::Broken,
                format!(
                    "the chain's checkpoint is at {checkpoint} but the last stored hash is at \
                     {bound}: stored hashes were removed"
                ),
            );
        }
    } else if checkpoint != Position::START {
        problem(
            &mut report,
            checkpoint,
            ProblemKind::Broken,
            format!("the chain's checkpoint is at {checkpoint} but no hash is stored"),
        );
    }

    report.digest = digest.take().map(|(global, expected)| {
        let recomputed = digest_found.flatten();
        DigestCheck {
            global,
            intact: recomputed.as_deref() == Some(expected.as_str()),
            expected,
            recomputed,
        }
    });
    Ok(report)
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

    #[test]
    fn digests_parse_with_or_without_the_transaction() {
        let hash = "AB".repeat(32);
        assert_eq!(
            parse_digest(&format!("12:345:{hash}")),
            Some((345, hash.to_ascii_lowercase()))
        );
        assert_eq!(
            parse_digest(&format!("345:{hash}")),
            Some((345, hash.to_ascii_lowercase()))
        );
        assert_eq!(parse_digest(&genesis_digest()), Some((0, GENESIS.into())));
        for bad in ["", "1:2", "x:1:ab", "1:-2:00", &format!("1:{}", &hash[1..])] {
            assert_eq!(parse_digest(bad), None, "{bad}");
        }
        let head = ChainHead {
            position: Position { tx: 9, global: 10 },
            hash: GENESIS.into(),
        };
        assert_eq!(parse_digest(&head.digest()), Some((10, GENESIS.into())));
    }
}
