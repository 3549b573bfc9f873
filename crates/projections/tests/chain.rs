//! The hash chain over the events on both stores: a realistic history
//! verifies and its digest matches; events altered, removed or inserted
//! with plain SQL are named at their positions; an older digest still
//! verifies after new events; a wrong digest is reported; two processes
//! extending at once hash each event once; the projector keeps the chain
//! current.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::time::Duration;

use access_domain::CustomerId;
use access_projections::chain::{self, ChainHead, ProblemKind, StoredEvent, GENESIS};
use access_projections::{Projector, ProjectorOptions};
use access_store::testing::{count_rows, exec_sql, sample_history};
use access_store::{Position, Store};

const EVENTS_PER_HISTORY: i64 = access_store::testing::SAMPLE_HISTORY_EVENTS as i64;

/// Every event row as stored, in the global order.
async fn rows(store: &Store) -> Vec<StoredEvent> {
    chain::read_events(store, Position::START, 100_000)
        .await
        .unwrap()
}

/// The stored row of a customer's event.
async fn row_of(store: &Store, id: CustomerId, sequence: i64) -> StoredEvent {
    rows(store)
        .await
        .into_iter()
        .find(|r| r.aggregate_id == id.to_string() && r.sequence == sequence)
        .unwrap()
}

/// The chain extended over every committed event (on PostgreSQL, once
/// other transactions on the server no longer hold them back).
async fn extended(store: &Store) -> ChainHead {
    chain::catch_up(store, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("a chain head")
}

fn digest_of(head: &ChainHead) -> Option<(i64, String)> {
    Some((head.position.global, head.hash.clone()))
}

/// (global position, kind) of each problem, in the order found.
fn found(report: &chain::VerifyReport) -> Vec<(i64, ProblemKind)> {
    report
        .problems
        .iter()
        .map(|p| (p.position.global, p.kind))
        .collect()
}

/// Leaves a gap of 10 positions before the next event (as aborted
/// transactions do on PostgreSQL), so that a row can be slipped in later.
async fn leave_a_gap(store: &Store) {
    match store.kind() {
        "postgres" => {
            exec_sql(
                store,
                "SELECT setval(pg_get_serial_sequence('events', 'global_position'), \
                 (SELECT max(global_position) + 10 FROM events))",
            )
            .await
        }
        _ => {
            exec_sql(
                store,
                "UPDATE sqlite_sequence SET seq = seq + 10 WHERE name = 'events'",
            )
            .await
        }
    }
}

/// Backdates a stored EmailChanged event to 1926, as someone with SQL
/// access would.
async fn backdate_email_change(store: &Store, global: i64) {
    let sql = match store.kind() {
        "postgres" => format!(
            "UPDATE events SET payload = jsonb_set(payload::jsonb, '{{EmailChanged,at}}', \
             '\"1926-01-01T00:00:00Z\"')::json WHERE global_position = {global}"
        ),
        _ => format!(
            "UPDATE events SET payload = json_set(payload, '$.EmailChanged.at', \
             '1926-01-01T00:00:00Z') WHERE global_position = {global}"
        ),
    };
    exec_sql(store, &sql).await;
}

// ---------------------------------------------------------------------------

async fn a_realistic_history_verifies_and_its_digest_matches(store: Store) {
    // Nothing yet: no head, and the empty history verifies.
    assert_eq!(chain::extend(&store).await.unwrap(), None);
    assert!(chain::verify(&store, None).await.unwrap().is_intact());

    for n in 0..3 {
        sample_history(&store, n).await;
    }
    let head = extended(&store).await;
    assert_eq!(head.position, store.head().await.unwrap());
    assert_eq!(chain::head(&store).await.unwrap(), Some(head.clone()));
    assert_eq!(
        count_rows(&store, "event_hashes").await,
        3 * EVENTS_PER_HISTORY
    );
    assert_eq!(head.hash.len(), 64);
    assert_ne!(head.hash, GENESIS);

    // The stored hashes are the recipe applied to the rows, in order.
    let mut prev = GENESIS.to_string();
    for row in rows(&store).await {
        prev = chain::event_hash(&row, &prev).unwrap();
    }
    assert_eq!(prev, head.hash);

    let report = chain::verify(&store, digest_of(&head)).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 21);
    assert_eq!(report.hashes, 21);
    assert_eq!(report.hashed_up_to, Some(head.position));
    let digest = report.digest.unwrap();
    assert!(digest.intact);
    assert_eq!(digest.recomputed.as_deref(), Some(head.hash.as_str()));

    // Extending again changes nothing; so does the digest's text form.
    assert_eq!(extended(&store).await, head);
    assert_eq!(count_rows(&store, "event_hashes").await, 21);
    let kept = chain::parse_digest(&head.digest()).unwrap();
    assert!(chain::verify(&store, Some(kept)).await.unwrap().is_intact());
    // The empty history's digest holds for any history.
    let genesis = chain::parse_digest(&chain::genesis_digest()).unwrap();
    assert!(chain::verify(&store, Some(genesis))
        .await
        .unwrap()
        .is_intact());
}

async fn an_altered_and_a_removed_event_are_named(store: Store) {
    let a = sample_history(&store, 1).await;
    let b = sample_history(&store, 2).await;
    sample_history(&store, 3).await;
    let head = extended(&store).await;
    let early = row_of(&store, a, 1).await.position.global;
    let altered = row_of(&store, a, 4).await.position.global;
    let removed = row_of(&store, b, 2).await.position.global;
    assert!(early < altered && altered < removed);

    // a's email change, backdated by a century; one event of b, deleted.
    backdate_email_change(&store, altered).await;
    assert!(row_of(&store, a, 4).await.payload.contains("1926-01-01"));
    exec_sql(
        &store,
        &format!("DELETE FROM events WHERE global_position = {removed}"),
    )
    .await;

    let report = chain::verify(&store, digest_of(&head)).await.unwrap();
    assert_eq!(
        found(&report),
        [
            (altered, ProblemKind::Altered),
            (removed, ProblemKind::Removed)
        ],
        "{report:?}"
    );
    assert_eq!(report.problem_count, 2);
    assert!(!report.is_intact());
    assert!(report.problems[0].detail.contains(&a.to_string()));
    // The digest taken before the tampering no longer holds…
    let digest = report.digest.unwrap();
    assert!(!digest.intact);
    assert_ne!(digest.recomputed, Some(head.hash.clone()));
    // …one of a point before both still does.
    let mut prev = GENESIS.to_string();
    for row in rows(&store).await {
        prev = chain::event_hash(&row, &prev).unwrap();
        if row.position.global == early {
            break;
        }
    }
    let report = chain::verify(&store, Some((early, prev))).await.unwrap();
    assert!(report.digest.unwrap().intact);
    assert_eq!(report.problem_count, 2);

    // Every problem is passed on as found.
    let mut seen = Vec::new();
    chain::verify_with(&store, None, |p| seen.push((p.position.global, p.kind)))
        .await
        .unwrap();
    assert_eq!(seen.len(), 2);
}

async fn an_inserted_event_is_named(store: Store) {
    let a = sample_history(&store, 1).await;
    leave_a_gap(&store).await;
    sample_history(&store, 2).await;
    let head = extended(&store).await;
    let last_of_a = row_of(&store, a, 7).await;
    let slipped_in = last_of_a.position.global + 5;

    // A forged event in the gap, sorting between a and the next customer.
    let forged = CustomerId::new_random();
    let sql = match store.kind() {
        "postgres" => format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, global_position, tx_id) OVERRIDING SYSTEM VALUE \
             SELECT aggregate_type, '{forged}', 1, event_type, event_version, payload, metadata, \
             {slipped_in}, tx_id FROM events WHERE global_position = {}",
            last_of_a.position.global
        ),
        _ => format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, global_position) \
             SELECT aggregate_type, '{forged}', 1, event_type, event_version, payload, metadata, \
             {slipped_in} FROM events WHERE global_position = {}",
            last_of_a.position.global
        ),
    };
    exec_sql(&store, &sql).await;

    let report = chain::verify(&store, digest_of(&head)).await.unwrap();
    assert_eq!(
        found(&report),
        [(slipped_in, ProblemKind::Inserted)],
        "{report:?}"
    );
    assert!(!report.digest.unwrap().intact);
}

async fn a_digest_from_before_new_events_still_verifies(store: Store) {
    sample_history(&store, 1).await;
    let before = extended(&store).await;
    sample_history(&store, 2).await;
    // Not hashed yet: not a problem, and the old digest holds.
    let report = chain::verify(&store, digest_of(&before)).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    let after = extended(&store).await;
    assert!(after.position > before.position);
    let report = chain::verify(&store, digest_of(&before)).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.hashes, 2 * EVENTS_PER_HISTORY as u64);
    assert!(chain::verify(&store, digest_of(&after))
        .await
        .unwrap()
        .is_intact());
}

async fn a_wrong_digest_is_reported(store: Store) {
    sample_history(&store, 1).await;
    let head = extended(&store).await;
    let mut wrong = head.hash.clone().into_bytes();
    wrong[10] = if wrong[10] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let report = chain::verify(&store, Some((head.position.global, wrong.clone())))
        .await
        .unwrap();
    assert_eq!(report.problem_count, 0);
    assert!(!report.is_intact());
    let digest = report.digest.unwrap();
    assert!(!digest.intact);
    assert_eq!(digest.expected, wrong);
    assert_eq!(digest.recomputed, Some(head.hash.clone()));

    // A position that holds no event.
    let report = chain::verify(&store, Some((head.position.global + 1000, head.hash)))
        .await
        .unwrap();
    let digest = report.digest.unwrap();
    assert!(!digest.intact);
    assert_eq!(digest.recomputed, None);
}

async fn only_the_kept_digest_catches_a_rewritten_chain(store: Store) {
    let a = sample_history(&store, 1).await;
    sample_history(&store, 2).await;
    let head = extended(&store).await;
    let victim = row_of(&store, a, 2).await;

    // Deleting an event together with its hash breaks the stored links.
    let next = row_of(&store, a, 3).await.position.global;
    let g = victim.position.global;
    exec_sql(
        &store,
        &format!("DELETE FROM events WHERE global_position = {g}"),
    )
    .await;
    exec_sql(
        &store,
        &format!("DELETE FROM event_hashes WHERE position = {g}"),
    )
    .await;
    let report = chain::verify(&store, None).await.unwrap();
    assert_eq!(found(&report), [(next, ProblemKind::Broken)], "{report:?}");

    // Whoever also rewrites every stored hash after it (and the chain's
    // checkpoint) hides it from the stored chain…
    let first = row_of(&store, a, 1).await.position;
    exec_sql(
        &store,
        &format!("DELETE FROM event_hashes WHERE position >= {g}"),
    )
    .await;
    exec_sql(
        &store,
        &format!(
            "UPDATE projector_checkpoints SET tx = {}, position = {} WHERE name = 'chain'",
            first.tx, first.global
        ),
    )
    .await;
    extended(&store).await;
    assert!(chain::verify(&store, None).await.unwrap().is_intact());
    // …but not from the digest kept outside.
    let report = chain::verify(&store, digest_of(&head)).await.unwrap();
    assert!(!report.is_intact());
    assert!(!report.digest.unwrap().intact);
}

async fn concurrent_extenders_hash_each_event_once(store: Store) {
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..3 {
                    sample_history(&store, w * 10 + n).await;
                }
            })
        })
        .collect();
    let extenders: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    chain::extend(&store).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(extenders) {
        task.await.unwrap();
    }
    let head = extended(&store).await;
    assert_eq!(head.position, store.head().await.unwrap());
    // A duplicate would have failed the primary key; a miss shows here.
    assert_eq!(
        count_rows(&store, "event_hashes").await,
        9 * EVENTS_PER_HISTORY
    );
    assert!(chain::verify(&store, digest_of(&head))
        .await
        .unwrap()
        .is_intact());
}

async fn the_projector_keeps_the_chain_current(store: Store) {
    // Events from before the chain existed are hashed too.
    sample_history(&store, 0).await;
    let projector = Projector::spawn(
        store.clone(),
        ProjectorOptions {
            batch: 5,
            poll: Duration::from_millis(20),
            ..ProjectorOptions::default()
        },
    );
    for n in 1..4 {
        sample_history(&store, n).await;
        projector.nudge();
    }
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    // Caught-up projections mean a caught-up chain.
    let head = chain::head(&store).await.unwrap().unwrap();
    assert_eq!(head.position, store.head().await.unwrap());
    assert_eq!(
        count_rows(&store, "event_hashes").await,
        4 * EVENTS_PER_HISTORY
    );
    assert!(chain::verify(&store, digest_of(&head))
        .await
        .unwrap()
        .is_intact());
}

access_store::on_both_stores!(
    a_realistic_history_verifies_and_its_digest_matches,
    an_altered_and_a_removed_event_are_named,
    an_inserted_event_is_named,
    a_digest_from_before_new_events_still_verifies,
    a_wrong_digest_is_reported,
    only_the_kept_digest_catches_a_rewritten_chain,
    concurrent_extenders_hash_each_event_once,
    the_projector_keeps_the_chain_current,
);
