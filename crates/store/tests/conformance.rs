//! One conformance suite, run against both stores: every test below runs
//! once on a fresh PostgreSQL database and once on a fresh SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use access_domain::{
    Actor, ApiRole, CommandMetadata, Credential, CustomerCommand, CustomerId, EmailAddress,
    Password, Role, Secret,
};
use access_store::testing::{exec_sql, fake_services, run_with, TestDatabase};
use access_store::{
    Append, ExecuteError, Executed, Execution, IdempotencyRecord, Position, Store, StoreError,
    StoreOptions,
};
use chrono::Utc;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn meta() -> CommandMetadata {
    CommandMetadata::new(
        Actor::Api {
            name: "conformance".into(),
            role: ApiRole::Service,
        },
        "req-1",
    )
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// Runs a command as the `conformance` API caller.
async fn run(
    store: &Store,
    id: CustomerId,
    command: CustomerCommand,
) -> Result<Executed, ExecuteError> {
    run_with(store, id, command, &meta(), Utc::now()).await
}

fn register(address: &str) -> (CustomerId, CustomerCommand) {
    let id = CustomerId::new_random();
    (
        id,
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: email(address),
            name: None,
        },
    )
}

fn grant_with_link() -> CustomerCommand {
    CustomerCommand::GrantAccess {
        role: Role::CustomerCenter,
        credential: Credential::SetupLink,
    }
}

async fn customer_with_access(store: &Store, address: &str) -> CustomerId {
    let (id, cmd) = register(address);
    run(store, id, cmd).await.unwrap();
    run(store, id, grant_with_link()).await.unwrap();
    id
}

async fn read_all(store: &Store) -> Vec<access_store::RecordedEvent> {
    let mut after = Position::START;
    let mut all = Vec::new();
    loop {
        let batch = store.read_feed(after, 500).await.unwrap();
        if batch.is_empty() {
            return all;
        }
        after = batch.last().unwrap().position;
        all.extend(batch);
    }
}

// ---------------------------------------------------------------------------
// the suite
// ---------------------------------------------------------------------------

async fn append_and_load(store: Store) {
    let id = customer_with_access(&store, "ann@example.com").await;
    let loaded = store.load(id).await.unwrap();
    assert_eq!(loaded.version, 3);
    assert!(loaded.customer.has_access());
    assert!(loaded.customer.setup_link().is_some());
    let events = store.events_of(id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        events[0].metadata.get("actor_name").map(String::as_str),
        Some("conformance")
    );
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    // An unknown customer loads as empty (version 0).
    let none = store.load(CustomerId::new_random()).await.unwrap();
    assert_eq!(none.version, 0);
    assert!(!none.customer.is_registered());
    assert!(store.is_ready().await.unwrap());
}

async fn conflicts_are_detected_and_leave_nothing_behind(store: Store) {
    let id = customer_with_access(&store, "bob@example.com").await;
    let loaded = store.load(id).await.unwrap();
    let m = meta();
    let services = fake_services(Utc::now());
    let events = loaded
        .customer
        .decide(CustomerCommand::SendAccessNotification, &services)
        .await
        .unwrap()
        .events;
    let append = |_attempt: &'static str| Append {
        customer_id: id,
        expected_version: loaded.version,
        events: &events,
        metadata: &m,
        before: &loaded.customer,
        after: &loaded.customer,
        idempotency: None,
    };
    store.append(append("first")).await.unwrap();
    let before = store.count_events().await.unwrap();
    let err = store.append(append("second")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(err.code(), "concurrent_modification");
    assert_eq!(store.count_events().await.unwrap(), before);

    // With a pinned version, the command reports the mismatch.
    let err = store
        .execute(
            &services,
            Execution {
                customer_id: id,
                command: CustomerCommand::SendAccessNotification,
                metadata: &m,
                expected_version: Some(3),
                idempotency: None,
            },
            |_| String::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::VersionMismatch {
                expected: 3,
                actual: 4
            }
        ),
        "{err:?}"
    );
}

async fn concurrent_commands_on_one_customer_are_retried_without_lost_updates(store: Store) {
    let id = customer_with_access(&store, "carol@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            run(&store, id, CustomerCommand::SendAccessNotification).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ExecuteError::Store(StoreError::Conflict { .. })) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    let loaded = store.load(id).await.unwrap();
    // Every acknowledged command is there, versions gapless.
    assert_eq!(loaded.version, 3 + ok);
    let seqs: Vec<u64> = store
        .events_of(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(seqs, (1..=3 + ok).collect::<Vec<_>>());
    assert!(ok >= 1);
}

/// Issue 19: a process does not conflict with itself. Commands on one
/// customer from one process wait their turn (bounded) instead of racing
/// each other into optimistic-lock conflicts; conflicts remain only
/// between processes (replicas), where the retries above handle them.
async fn one_process_queues_commands_on_one_customer_and_none_conflicts(store: Store) {
    let id = customer_with_access(&store, "queue@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..25 {
                if let Err(e) = run(&store, id, CustomerCommand::SendAccessNotification).await {
                    failures.push(format!("{e:?}"));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of 200 commands failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(store.load(id).await.unwrap().version, 3 + 200);
}

async fn snapshots_give_exactly_the_replayed_state(store: Store) {
    // The store in this test snapshots every 3 events.
    let id = customer_with_access(&store, "dora@example.com").await;
    let pw = "correct-Horse-battery-9";
    for i in 0..20 {
        let cmd = if i % 2 == 0 {
            CustomerCommand::SetPassword {
                password: Password::parse(pw, &[]).unwrap(),
                password_confirm: Secret::new(pw),
                send_notification: i % 4 == 0,
            }
        } else {
            CustomerCommand::SendAccessNotification
        };
        run(&store, id, cmd).await.unwrap();
    }
    let via_snapshot = store.load(id).await.unwrap();
    let via_replay = store.load_by_replay(id).await.unwrap();
    assert_eq!(via_snapshot, via_replay);
    assert!(via_snapshot.version > 20);

    // A snapshot that no longer deserializes falls back to a full replay.
    exec_sql(
        &store,
        "UPDATE snapshots SET payload = '{\"not\": \"a customer\"}'",
    )
    .await;
    assert_eq!(store.load(id).await.unwrap(), via_replay);
}

async fn the_feed_sees_every_event_once_and_in_order_under_concurrent_writers(store: Store) {
    const WRITERS: usize = 12;
    const CUSTOMERS_PER_WRITER: usize = 5;
    // Set to the final event count once every writer is done.
    let expected = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let reader = {
        let store = store.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            let mut after = Position::START;
            let mut seen = Vec::new();
            let mut deadline = None;
            loop {
                let target = expected.load(std::sync::atomic::Ordering::SeqCst);
                if seen.len() >= target {
                    // Read once more: nothing may follow the last event.
                    let extra = store.read_feed(after, 37).await.unwrap();
                    assert!(extra.is_empty(), "events after the last one: {extra:?}");
                    return seen;
                }
                if target != usize::MAX {
                    let d = *deadline.get_or_insert_with(|| {
                        std::time::Instant::now() + std::time::Duration::from_secs(30)
                    });
                    assert!(
                        std::time::Instant::now() < d,
                        "the reader saw {} of {target} events",
                        seen.len()
                    );
                }
                let batch = store.read_feed(after, 37).await.unwrap();
                if let Some(last) = batch.last() {
                    after = last.position;
                }
                let empty = batch.is_empty();
                seen.extend(
                    batch
                        .into_iter()
                        .map(|e| (e.customer_id, e.sequence, e.position)),
                );
                if empty {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for c in 0..CUSTOMERS_PER_WRITER {
                let id = customer_with_access(&store, &format!("w{w}c{c}@example.com")).await;
                run(&store, id, CustomerCommand::SendAccessNotification)
                    .await
                    .unwrap();
                run(&store, id, CustomerCommand::RevokeAccess { reason: None })
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = store.count_events().await.unwrap() as usize;
    expected.store(total, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert_eq!(total, WRITERS * CUSTOMERS_PER_WRITER * 5);
    assert_eq!(seen.len(), total, "the reader missed or repeated events");
    let unique: HashSet<_> = seen.iter().map(|(c, s, _)| (*c, *s)).collect();
    assert_eq!(unique.len(), total, "an event was seen twice");
    // Positions strictly increase in the order read…
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2));
    // …and each customer's events come in sequence order.
    let mut per_customer: HashMap<CustomerId, Vec<u64>> = HashMap::new();
    for (c, s, _) in &seen {
        per_customer.entry(*c).or_default().push(*s);
    }
    for (c, seqs) in per_customer {
        assert_eq!(seqs, (1..=5).collect::<Vec<_>>(), "customer {c}");
    }
    // A second full read gives the same order.
    let again: Vec<_> = read_all(&store).await.iter().map(|e| e.position).collect();
    assert_eq!(again, seen.iter().map(|s| s.2).collect::<Vec<_>>());
}

async fn login_emails_are_unique_under_concurrency(store: Store) {
    const CONTENDERS: usize = 12;
    let mut ids = Vec::new();
    for i in 0..CONTENDERS {
        // Same address, different spellings: case-insensitive.
        let address = if i % 2 == 0 {
            "Shared@Example.com"
        } else {
            "shared@example.COM"
        };
        let (id, cmd) = register(address);
        run(&store, id, cmd).await.unwrap();
        ids.push(id);
    }
    let before = store.count_events().await.unwrap();
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            (id, run(&store, id, grant_with_link()).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(_) => winners.push(id),
            Err(ExecuteError::Store(StoreError::EmailInUse { .. })) => {
                // Refused: no events, no reservation.
                assert_eq!(store.load(id).await.unwrap().version, 1);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one customer may hold the login");
    assert_eq!(store.count_events().await.unwrap(), before + 2);
    assert_eq!(holder(&store, "SHARED@example.com").await, Some(winners[0]));

    // A revoke frees the address for another customer.
    run(
        &store,
        winners[0],
        CustomerCommand::RevokeAccess { reason: None },
    )
    .await
    .unwrap();
    assert_eq!(holder(&store, "shared@example.com").await, None);
    let other = *ids.iter().find(|i| **i != winners[0]).unwrap();
    run(&store, other, grant_with_link()).await.unwrap();
    assert_eq!(holder(&store, "shared@example.com").await, Some(other));

    // An email change frees the old address and takes the new one.
    run(
        &store,
        other,
        CustomerCommand::ChangeEmail {
            email: email("moved@example.com"),
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap();
    assert_eq!(holder(&store, "shared@example.com").await, None);
    assert_eq!(holder(&store, "moved@example.com").await, Some(other));
}

/// Who holds `address` as a login (or pending change target).
async fn holder(store: &Store, address: &str) -> Option<CustomerId> {
    store.email_holder(&email(address)).await.unwrap()
}

/// alice@example.com with access and a password, asking at `at` to move
/// to target@example.com; her id and the validation link's token.
async fn alice_moving_to_target(store: &Store, at: chrono::DateTime<Utc>) -> (CustomerId, Secret) {
    let pw = "correct-Horse-battery-9";
    let (a, cmd) = register("alice@example.com");
    run_with(store, a, cmd, &meta(), at).await.unwrap();
    run_with(store, a, grant_with_link(), &meta(), at)
        .await
        .unwrap();
    let set = CustomerCommand::SetPassword {
        password: Password::parse(pw, &[]).unwrap(),
        password_confirm: Secret::new(pw),
        send_notification: false,
    };
    run_with(store, a, set, &meta(), at).await.unwrap();
    let request = CustomerCommand::RequestEmailChange {
        current_password: Secret::new(pw),
        new_email: email("target@example.com"),
        new_email_confirm: email("target@example.com"),
    };
    let requested = run_with(store, a, request, &meta(), at).await.unwrap();
    (a, requested.issued_tokens[0].token.clone())
}

/// A password check counted while a right password clears the account
/// (another tab, the owner logging in during a guessing run) neither
/// fails nor loses its count: the row is created or locked in one
/// statement. (PostgreSQL: on SQLite the writer lock already serializes.)
async fn an_attempt_racing_a_reset_is_counted(store: Store) {
    use access_store::AccountAttempts;
    let Some(pool) = access_store::testing::postgres_pool(&store) else {
        return;
    };
    let bump = |a: AccountAttempts| {
        (
            AccountAttempts {
                failures: a.failures + 1,
                ..a
            },
            a.failures + 1,
        )
    };
    store
        .update_account_attempts("ann@example.com", 0, bump)
        .await
        .unwrap();
    // A reset holds the row while the next check arrives.
    let mut reset = pool.begin().await.unwrap();
    sqlx::query("SELECT failures FROM login_attempts FOR UPDATE")
        .fetch_all(&mut *reset)
        .await
        .unwrap();
    let racing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .update_account_attempts("ann@example.com", 1, bump)
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("DELETE FROM login_attempts")
        .execute(&mut *reset)
        .await
        .unwrap();
    reset.commit().await.unwrap();
    let counted = racing.await.unwrap();
    assert_eq!(counted.unwrap(), 1, "counted afresh after the reset");
}

/// Re-indexing (`accessctl keys seal-legacy`) judges expiry by today, not
/// by the customer's last change: a customer whose last event is its
/// (since expired) email-change request does not take back an address
/// another customer has claimed meanwhile.
async fn a_reindex_does_not_take_back_a_released_address(store: Store) {
    use chrono::{Duration, TimeZone};
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let run_at = |id, command, hours| {
        let store = store.clone();
        async move { run_with(&store, id, command, &meta(), t0 + Duration::hours(hours)).await }
    };
    // Her last event is the request, whose link has long expired.
    let (a, _) = alice_moving_to_target(&store, t0).await;
    let (b, cmd) = register("target@example.com");
    run_at(b, cmd, 25).await.unwrap();
    run_at(b, grant_with_link(), 25).await.unwrap();
    let resealed = store.seal_legacy_events().await;
    assert!(resealed.is_ok(), "{resealed:?}");
    assert_eq!(holder(&store, "target@example.com").await, Some(b));
    assert_eq!(holder(&store, "alice@example.com").await, Some(a));
}

/// An unconfirmed self-service email change stops holding its target once
/// its link expired: another customer can claim the address (which
/// releases the old reservation in the claim's transaction); the old link
/// then fails cleanly and writes nothing.
async fn an_expired_email_change_no_longer_holds_its_address(store: Store) {
    use chrono::{Duration, TimeZone};
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let at = |hours: i64| t0 + Duration::hours(hours);
    let run_at = |id, command, hours| {
        let store = store.clone();
        async move { run_with(&store, id, command, &meta(), at(hours)).await }
    };
    let pw = "correct-Horse-battery-9";
    let (a, link) = alice_moving_to_target(&store, at(0)).await;
    let (b, cmd) = register("target@example.com");
    run_at(b, cmd, 1).await.unwrap();
    // While the link lives, the address is held.
    let err = run_at(b, grant_with_link(), 23).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(StoreError::EmailInUse { .. })),
        "{err:?}"
    );
    // Once it expired (24 hours), B can claim it.
    run_at(b, grant_with_link(), 25).await.unwrap();
    assert_eq!(holder(&store, "target@example.com").await, Some(b));
    // A's state shows the change as expired.
    let before = store.load(a).await.unwrap();
    let pending = before.customer.pending_email_change().unwrap();
    assert!(pending.is_expired(at(25)), "{pending:?}");
    // A's old link fails cleanly: nothing is written.
    let err = run_at(a, CustomerCommand::ConfirmEmailChange { token: link }, 26)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::Rejected(access_domain::CustomerError::InvalidToken)
        ),
        "{err:?}"
    );
    let after = store.load(a).await.unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.customer.email(), Some(&email("alice@example.com")));
    assert_eq!(holder(&store, "alice@example.com").await, Some(a));
    assert_eq!(holder(&store, "target@example.com").await, Some(b));
    // A's other commands are not blocked by the address it no longer holds.
    run_at(a, CustomerCommand::SendAccessNotification, 27)
        .await
        .unwrap();
    run_at(a, CustomerCommand::RevokeAccess { reason: None }, 27)
        .await
        .unwrap();
    run_at(a, grant_with_link(), 28).await.unwrap();
    // And A cannot take the address back with a new request.
    run_at(
        a,
        CustomerCommand::SetPassword {
            password: Password::parse(pw, &[]).unwrap(),
            password_confirm: Secret::new(pw),
            send_notification: false,
        },
        28,
    )
    .await
    .unwrap();
    let err = run_at(
        a,
        CustomerCommand::RequestEmailChange {
            current_password: Secret::new(pw),
            new_email: email("target@example.com"),
            new_email_confirm: email("target@example.com"),
        },
        28,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(StoreError::EmailInUse { .. })),
        "{err:?}"
    );
}

async fn a_pending_email_change_reserves_its_target(store: Store) {
    let pw = "correct-Horse-battery-9";
    let a = customer_with_access(&store, "alice@example.com").await;
    run(
        &store,
        a,
        CustomerCommand::SetPassword {
            password: Password::parse(pw, &[]).unwrap(),
            password_confirm: Secret::new(pw),
            send_notification: false,
        },
    )
    .await
    .unwrap();
    run(
        &store,
        a,
        CustomerCommand::RequestEmailChange {
            current_password: Secret::new(pw),
            new_email: email("target@example.com"),
            new_email_confirm: email("target@example.com"),
        },
    )
    .await
    .unwrap();
    let (b, cmd) = register("target@example.com");
    run(&store, b, cmd).await.unwrap();
    let err = run(&store, b, grant_with_link()).await.unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(StoreError::EmailInUse { .. })),
        "{err:?}"
    );
    // Nor can another customer request a change to it.
    let c = customer_with_access(&store, "carl@example.com").await;
    run(
        &store,
        c,
        CustomerCommand::ChangeEmail {
            email: email("TARGET@example.com"),
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        store.load(c).await.unwrap().customer.email(),
        Some(&email("carl@example.com"))
    );
    // Revoking A frees the target.
    run(&store, a, CustomerCommand::RevokeAccess { reason: None })
        .await
        .unwrap();
    run(&store, b, grant_with_link()).await.unwrap();
}

async fn idempotency_records_are_stored_with_the_events(store: Store) {
    let (id, cmd) = register("ida@example.com");
    let m = meta();
    let record = IdempotencyRecord {
        caller: "crm".into(),
        key: "key-1".into(),
        request_digest: "digest-a".into(),
        status: 201,
        body: String::new(),
        headers: Vec::new(),
    };
    let executed = store
        .execute(
            &fake_services(Utc::now()),
            Execution {
                customer_id: id,
                command: cmd.clone(),
                metadata: &m,
                expected_version: None,
                idempotency: Some(record.clone()),
            },
            |v| access_store::StoredReply {
                body: format!("{{\"version\":{v}}}"),
                headers: vec![("etag".into(), format!("\"{v}\""))],
            },
        )
        .await
        .unwrap();
    assert_eq!(executed.version, 1);
    let stored = store
        .idempotency_lookup("crm", "key-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, 201);
    assert_eq!(stored.request_digest, "digest-a");
    assert_eq!(stored.body, "{\"version\":1}");
    assert_eq!(
        stored.headers,
        vec![("etag".to_string(), "\"1\"".to_string())]
    );
    // Keys are per caller.
    assert_eq!(
        store.idempotency_lookup("erp", "key-1").await.unwrap(),
        None
    );

    // The same key again: refused, and the command's events are not written.
    let (other, cmd) = register("other@example.com");
    let before = store.count_events().await.unwrap();
    let err = store
        .execute(
            &fake_services(Utc::now()),
            Execution {
                customer_id: other,
                command: cmd,
                metadata: &m,
                expected_version: None,
                idempotency: Some(record.clone()),
            },
            |_| String::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Store(StoreError::IdempotencyKeyTaken)),
        "{err:?}"
    );
    assert_eq!(store.count_events().await.unwrap(), before);

    // A response that wrote no events can be stored on its own.
    let noop = IdempotencyRecord {
        key: "key-2".into(),
        ..record
    };
    store.idempotency_save(&noop).await.unwrap();
    assert!(store.idempotency_save(&noop).await.is_err());
    assert!(store
        .idempotency_lookup("crm", "key-2")
        .await
        .unwrap()
        .is_some());
}

async fn corrupt_rows_give_clear_errors_naming_customer_and_position(store: Store) {
    let id = customer_with_access(&store, "eve@example.com").await;
    exec_sql(
        &store,
        &format!(
            "UPDATE events SET payload = '{{\"AccessGranted\": {{\"role\": 42}}}}' WHERE aggregate_id = '{id}' AND sequence = 2"
        ),
    )
    .await;
    let err = store.load(id).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Corrupt { sequence: 2, .. }),
        "{err:?}"
    );
    assert!(
        text.contains(&id.to_string()) && text.contains("sequence 2"),
        "{text}"
    );

    exec_sql(
        &store,
        &format!(
            "UPDATE events SET event_type = 'Mystery' WHERE aggregate_id = '{id}' AND sequence = 2"
        ),
    )
    .await;
    let err = store.load(id).await.unwrap_err().to_string();
    assert!(err.contains("unknown event type `Mystery`"), "{err}");

    exec_sql(
        &store,
        &format!(
            "UPDATE events SET event_type = 'AccessGranted', event_version = 'one' WHERE aggregate_id = '{id}' AND sequence = 2"
        ),
    )
    .await;
    let err = store.load(id).await.unwrap_err().to_string();
    assert!(err.contains("invalid event version `one`"), "{err}");

    // The feed reports the same, instead of skipping the event. (On
    // PostgreSQL the feed may hold back while older transactions of other
    // tests on the server are still open: keep reading.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let err = loop {
        match store.read_feed(Position::START, 100).await {
            Err(e) => break e,
            Ok(events) => {
                assert!(events.len() < 2, "the feed skipped the corrupt event");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the feed never reached the corrupt event"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        matches!(err, StoreError::Corrupt { sequence: 2, .. }),
        "{err:?}"
    );
}

async fn sessions_api_keys_and_lookup_by_email(store: Store) {
    use access_store::{SessionRecord, StoredApiKey};
    let now = Utc::now();
    // Lookup by email finds customers with and without access, and follows
    // email changes.
    let with = customer_with_access(&store, "Look@Example.com").await;
    let (without, cmd) = register("look@example.com");
    run(&store, without, cmd).await.unwrap();
    let mut found = store
        .customers_by_email(&email("LOOK@example.com"))
        .await
        .unwrap();
    found.sort();
    let mut expected = vec![with, without];
    expected.sort();
    assert_eq!(found, expected);
    run(
        &store,
        without,
        CustomerCommand::ChangeEmail {
            email: email("elsewhere@example.com"),
            credential: Credential::None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .customers_by_email(&email("look@example.com"))
            .await
            .unwrap(),
        vec![with]
    );
    assert_eq!(
        store
            .customers_by_email(&email("elsewhere@example.com"))
            .await
            .unwrap(),
        vec![without]
    );

    // Sessions.
    let session = SessionRecord {
        token_digest: "d1".into(),
        customer_id: with,
        login_epoch: 3,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        second_factor_pending: false,
    };
    store.create_session(&session).await.unwrap();
    let back = store.find_session("d1").await.unwrap().unwrap();
    assert_eq!(back.customer_id, with);
    assert_eq!(back.login_epoch, 3);
    assert!(!back.second_factor_pending);
    // A session waiting for the second factor reads back so.
    let waiting = SessionRecord {
        token_digest: "d3".into(),
        second_factor_pending: true,
        ..session.clone()
    };
    store.create_session(&waiting).await.unwrap();
    assert!(
        store
            .find_session("d3")
            .await
            .unwrap()
            .unwrap()
            .second_factor_pending
    );
    assert!(
        (back.expires_at - session.expires_at)
            .num_milliseconds()
            .abs()
            < 1
    );
    let old = SessionRecord {
        token_digest: "d2".into(),
        expires_at: now - chrono::Duration::seconds(1),
        ..session.clone()
    };
    store.create_session(&old).await.unwrap();
    store.purge_expired_sessions(now).await.unwrap();
    assert!(store.find_session("d2").await.unwrap().is_none());
    assert!(store.find_session("d1").await.unwrap().is_some());
    assert!(store.delete_session("d1").await.unwrap());
    assert!(
        !store.delete_session("d1").await.unwrap(),
        "a session ends once"
    );
    assert!(store.find_session("d1").await.unwrap().is_none());
    store.create_session(&session).await.unwrap();
    store.delete_sessions_of(with).await.unwrap();
    assert!(store.find_session("d1").await.unwrap().is_none());

    // API keys.
    assert!(store.api_keys().await.unwrap().is_empty());
    let key = StoredApiKey {
        name: "admin".into(),
        role: "admin".into(),
        secret_digest: "abc".into(),
        created_at: now,
    };
    store.insert_api_key(&key).await.unwrap();
    assert!(store.insert_api_key(&key).await.is_err());
    let keys = store.api_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].secret_digest, "abc");
}

/// A filtered feed read gives the matching events in the feed's order,
/// looks at no more than `scan` events, and its cursor passes every event
/// it looked at; read on from the cursors, it sees every match once.
async fn a_filtered_feed_read_is_bounded_and_loses_nothing(store: Store) {
    let mut granted = Vec::new();
    for i in 0..6 {
        let id = customer_with_access(&store, &format!("f{i}@example.com")).await;
        granted.push(id);
    }
    // On PostgreSQL another open transaction on the server holds the feed
    // back for a moment (the watermark): wait until it shows everything.
    let total = store.count_events().await.unwrap() as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut all = read_all(&store).await;
    while all.len() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed shows {} of {total}",
            all.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        all = read_all(&store).await;
    }
    let grants = vec!["AccessGranted".to_string()];
    let wanted: Vec<_> = all
        .iter()
        .filter(|e| e.event.type_name() == "AccessGranted")
        .map(|e| e.position)
        .collect();
    assert_eq!(wanted.len(), 6);
    let selection = access_store::FeedSelection {
        event_types: &grants,
        customer_id: None,
    };
    // A window of 4 events: at most 4 looked at, the cursor at the 4th.
    let first = store
        .read_feed_matching(Position::START, 4, 100, selection)
        .await
        .unwrap();
    assert_eq!(first.scanned, 4);
    assert_eq!(first.next, all[3].position);
    assert!(first.events.iter().all(|e| e.position <= all[3].position));
    // Read on in windows of 5, 2 matches a read at most.
    let mut after = Position::START;
    let mut seen = Vec::new();
    loop {
        let page = store
            .read_feed_matching(after, 5, 2, selection)
            .await
            .unwrap();
        assert!(page.scanned <= 5 && page.events.len() <= 2);
        seen.extend(page.events.iter().map(|e| e.position));
        if page.next == after {
            break;
        }
        after = page.next;
    }
    assert_eq!(seen, wanted);
    // One customer's events.
    let one = store
        .read_feed_matching(
            Position::START,
            1000,
            100,
            access_store::FeedSelection {
                event_types: &[],
                customer_id: Some(granted[2]),
            },
        )
        .await
        .unwrap();
    assert_eq!(one.events.len(), 3);
    assert!(one.events.iter().all(|e| e.customer_id == granted[2]));
    assert_eq!(one.next, all.last().unwrap().position);
    assert_eq!(
        store.feed_head().await.unwrap(),
        all.last().unwrap().position
    );
}

/// The console's sessions and integrity checks: a session found by its
/// digest and deleted once (one replica gets the row back, so its end is
/// logged once); at most one integrity check running across replicas,
/// a stale one abandoned by the next start, and the end of a check
/// recorded only while it runs.
async fn console_sessions_and_one_running_integrity_check(store: Store) {
    use access_store::{ConsoleSession, IntegrityCheck};
    let now = Utc::now();
    let session = ConsoleSession {
        token_digest: "d1".into(),
        key_name: "audit".into(),
        key_digest: "k1".into(),
        role: "auditor".into(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(8),
    };
    assert_eq!(
        store.replace_console_session(&session, None).await.unwrap(),
        None
    );
    let found = store.find_console_session("d1").await.unwrap().unwrap();
    assert_eq!(found.key_name, "audit");
    assert_eq!(
        found.expires_at.timestamp_micros(),
        session.expires_at.timestamp_micros()
    );
    // Signing in again ends the browser's earlier session in the same
    // transaction.
    let again = ConsoleSession {
        token_digest: "d0".into(),
        ..session.clone()
    };
    let ended = store
        .replace_console_session(&again, Some("d1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.token_digest, "d1");
    assert!(store.find_console_session("d1").await.unwrap().is_none());
    // A session that cannot be opened (its digest exists) ends nothing:
    // one transaction.
    let other = ConsoleSession {
        token_digest: "d5".into(),
        ..session.clone()
    };
    store.replace_console_session(&other, None).await.unwrap();
    let clash = ConsoleSession {
        token_digest: "d0".into(),
        ..session.clone()
    };
    assert!(store
        .replace_console_session(&clash, Some("d5"))
        .await
        .is_err());
    assert!(store.find_console_session("d5").await.unwrap().is_some());
    store.delete_console_session("d5").await.unwrap();
    let (a, b) = tokio::join!(
        store.delete_console_session("d0"),
        store.delete_console_session("d0")
    );
    assert_eq!(
        [a.unwrap().is_some(), b.unwrap().is_some()]
            .iter()
            .filter(|x| **x)
            .count(),
        1,
        "exactly one delete gets the session back"
    );
    let expired = ConsoleSession {
        token_digest: "d2".into(),
        expires_at: now - chrono::Duration::seconds(1),
        ..session.clone()
    };
    store.replace_console_session(&expired, None).await.unwrap();
    store
        .replace_console_session(
            &ConsoleSession {
                token_digest: "d3".into(),
                ..session.clone()
            },
            None,
        )
        .await
        .unwrap();
    let purged = store.purge_expired_console_sessions(now).await.unwrap();
    assert_eq!(
        purged
            .iter()
            .map(|s| s.token_digest.as_str())
            .collect::<Vec<_>>(),
        ["d2"]
    );
    assert!(store.find_console_session("d3").await.unwrap().is_some());

    // Checks: the deadline is fixed at the start by the replica that runs
    // the check.
    let check = |id: &str, at: chrono::DateTime<Utc>| IntegrityCheck {
        id: id.into(),
        started_by: "audit".into(),
        started_at: at,
        deadline: at + chrono::Duration::minutes(6),
        finished_at: None,
        outcome: "running".into(),
        summary: "running".into(),
    };
    // Two starts at once (two replicas): one runs.
    let (ca, cb) = (check("a", now), check("b", now));
    let (x, y) = tokio::join!(
        store.start_integrity_check(&ca),
        store.start_integrity_check(&cb)
    );
    assert_eq!([x.unwrap(), y.unwrap()].iter().filter(|s| **s).count(), 1);
    let running = store.latest_integrity_checks(10).await.unwrap();
    assert_eq!(running.len(), 1);
    let first = running[0].id.clone();
    // A start before its deadline inserts nothing.
    let soon = now + chrono::Duration::minutes(5);
    assert!(!store
        .start_integrity_check(&check("c", soon))
        .await
        .unwrap());
    // Past its deadline (its replica stopped), the next start abandons it.
    let later = now + chrono::Duration::minutes(7);
    assert!(store
        .start_integrity_check(&check("d", later))
        .await
        .unwrap());
    let checks = store.latest_integrity_checks(10).await.unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(
        (checks[0].id.as_str(), checks[0].outcome.as_str()),
        ("d", "running")
    );
    assert_eq!(
        (checks[1].id.as_str(), checks[1].outcome.as_str()),
        (first.as_str(), "abandoned")
    );
    // The abandoned check's late result does not overwrite it.
    store
        .finish_integrity_check(&first, later, "intact", "late")
        .await
        .unwrap();
    store
        .finish_integrity_check("d", later, "intact", "fine")
        .await
        .unwrap();
    let checks = store.latest_integrity_checks(10).await.unwrap();
    assert_eq!(checks[0].outcome, "intact");
    assert_eq!(checks[1].outcome, "abandoned");
    // Only the newest 100 are kept.
    for n in 0..105 {
        let at = later + chrono::Duration::minutes(10 + n);
        let c = check(&format!("old{n:03}"), at);
        assert!(store.start_integrity_check(&c).await.unwrap());
        store
            .finish_integrity_check(&c.id, at, "intact", "fine")
            .await
            .unwrap();
    }
    assert_eq!(store.purge_old_integrity_checks().await.unwrap(), 7);
    let kept = store.latest_integrity_checks(200).await.unwrap();
    assert_eq!(kept.len(), 100);
    assert_eq!(kept[0].id, "old104");
}

// ---------------------------------------------------------------------------
// each test on both stores
// ---------------------------------------------------------------------------

access_store::on_both_stores!(
    append_and_load,
    conflicts_are_detected_and_leave_nothing_behind,
    // The queue off: commands race to the append as from several replicas.
    concurrent_commands_on_one_customer_are_retried_without_lost_updates with StoreOptions { customer_queue_wait: std::time::Duration::ZERO, ..StoreOptions::default() },
    one_process_queues_commands_on_one_customer_and_none_conflicts,
    snapshots_give_exactly_the_replayed_state with StoreOptions { snapshot_interval: 3, ..StoreOptions::default() },
    the_feed_sees_every_event_once_and_in_order_under_concurrent_writers,
    login_emails_are_unique_under_concurrency,
    a_pending_email_change_reserves_its_target,
    an_expired_email_change_no_longer_holds_its_address,
    a_reindex_does_not_take_back_a_released_address,
    an_attempt_racing_a_reset_is_counted,
    idempotency_records_are_stored_with_the_events,
    corrupt_rows_give_clear_errors_naming_customer_and_position,
    sessions_api_keys_and_lookup_by_email,
    a_filtered_feed_read_is_bounded_and_loses_nothing,
    console_sessions_and_one_running_integrity_check,
);

// ---------------------------------------------------------------------------
// cqrs-es compatibility: postgres-es reads and writes our PostgreSQL tables;
// our SQLite store is a cqrs-es PersistedEventRepository.
// ---------------------------------------------------------------------------

mod cqrs_es_compat {
    use super::*;
    use access_domain::Customer;
    use cqrs_es::persist::{
        PersistedEventRepository, PersistedEventStore, PersistenceError, SerializedEvent,
    };
    use cqrs_es::CqrsFramework;

    async fn through_cqrs_es<R: PersistedEventRepository>(repo: R, store: &Store) {
        let cqrs = CqrsFramework::new(
            PersistedEventStore::<R, Customer>::new_event_store(repo),
            vec![],
            fake_services(Utc::now()),
        );
        let id = CustomerId::new_random();
        cqrs.execute_with_metadata(
            &id.to_string(),
            CustomerCommand::RegisterCustomer {
                customer_id: id,
                email: email("via-cqrs@example.com"),
                name: None,
            },
            meta().to_map(),
        )
        .await
        .unwrap();
        cqrs.execute_with_metadata(&id.to_string(), grant_with_link(), meta().to_map())
            .await
            .unwrap();
        // Our store reads what cqrs-es wrote, with global positions.
        let loaded = store.load(id).await.unwrap();
        assert_eq!(loaded.version, 3);
        assert!(loaded.customer.has_access());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let feed = read_all(store).await;
            if feed.iter().filter(|e| e.customer_id == id).count() == 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "feed never showed the events"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // A rule broken through cqrs-es is the domain error.
        let err = cqrs
            .execute(&id.to_string(), grant_with_link())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already has access"), "{err}");
    }

    async fn repository_contract<R: PersistedEventRepository>(repo: &R, store: &Store) {
        // Events written by our store are read through the trait.
        let id = customer_with_access(store, "repo@example.com").await;
        let events = repo.get_events::<Customer>(&id.to_string()).await.unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].event_type, "AccessGranted");
        let last = repo
            .get_last_events::<Customer>(&id.to_string(), 2)
            .await
            .unwrap();
        assert_eq!(last.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![3]);
        // A taken sequence is an optimistic-lock error.
        let dup = SerializedEvent {
            metadata: serde_json::json!({}),
            ..events[2].clone()
        };
        let err = repo.persist::<Customer>(&[dup], None).await.unwrap_err();
        assert!(
            matches!(err, PersistenceError::OptimisticLockError),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_es_reads_and_writes_our_tables() {
        let db = TestDatabase::postgres().await.unwrap();
        let store = db.store(StoreOptions::default()).await.unwrap();
        let repo = store.postgres_repository().unwrap();
        repository_contract(&repo, &store).await;
        through_cqrs_es(store.postgres_repository().unwrap(), &store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_store_is_a_cqrs_es_repository() {
        let db = TestDatabase::sqlite().unwrap();
        let store = db.store(StoreOptions::default()).await.unwrap();
        let lite = store.sqlite_repository().unwrap();
        repository_contract(&lite, &store).await;
        through_cqrs_es(lite.clone(), &store).await;

        // Streams deliver every event in order, and end.
        let mut stream = lite.stream_all_events::<Customer>().await.unwrap();
        let mut n = 0;
        while let Some(event) = stream.next::<Customer>(&[]).await {
            event.unwrap();
            n += 1;
        }
        assert_eq!(n as u64, store.count_events().await.unwrap());

        // Snapshots through the trait: n replaces n-1, never a stale one.
        let id = "snap-1";
        let state = serde_json::json!({"k": 1});
        lite.persist::<Customer>(&[], Some((id.into(), state.clone(), 1)))
            .await
            .unwrap();
        lite.persist::<Customer>(&[], Some((id.into(), state.clone(), 2)))
            .await
            .unwrap();
        let err = lite
            .persist::<Customer>(&[], Some((id.into(), state, 2)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PersistenceError::OptimisticLockError),
            "{err:?}"
        );
        let snap = lite.get_snapshot::<Customer>(id).await.unwrap().unwrap();
        assert_eq!(snap.current_snapshot, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_row_ends_a_sqlite_stream_with_an_error_not_a_panic() {
        let db = TestDatabase::sqlite().unwrap();
        let store = db.store(StoreOptions::default()).await.unwrap();
        let lite = store.sqlite_repository().unwrap();
        customer_with_access(&store, "broken@example.com").await;
        exec_sql(
            &store,
            "UPDATE events SET payload = 'not json' WHERE sequence = 2",
        )
        .await;
        let mut stream = lite.stream_all_events::<Customer>().await.unwrap();
        let mut results = Vec::new();
        while let Some(event) = stream.next::<Customer>(&[]).await {
            results.push(event.is_ok());
        }
        assert_eq!(results, vec![true, false]);
    }
}
