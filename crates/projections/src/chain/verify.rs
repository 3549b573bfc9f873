//! Verifying the chain: recomputing it from the events table and
//! comparing it with the stored hashes and a digest kept outside.

use std::collections::VecDeque;

use access_store::{Position, Store};

use super::read::{last_hashed, read_events, read_hashes, HashRow};
use super::recipe::{event_hash, StoredEvent, GENESIS};
use super::CHECKPOINT;
use crate::db;
use crate::ProjectionError;

/// Rows read per query when verifying.
const VERIFY_BATCH: u32 = 1000;

const BROKEN: &str = "the stored hash does not follow from the stored hash before it: \
                      hashes before this position were removed or rewritten";

/// How many problems a [`VerifyReport`] keeps (all are counted, and all
/// are passed to the callback of [`verify_with`]).
pub const MAX_KEPT_PROBLEMS: usize = 10_000;

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
