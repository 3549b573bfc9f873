//! Rebuild, rebuild --check, time travel, and the replay of a recorded
//! stream against a committed expected file. On both stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::time::Duration;

use access_domain::{
    Actor, CommandMetadata, Credential, CustomerCommand, CustomerId, EmailAddress, Role,
};
use access_projections::{db, history, rebuild, AuditFilter, Projector, ProjectorOptions};
use access_store::testing::{api_caller, exec_sql, run_with};
use access_store::Store;
use chrono::{DateTime, TimeZone, Utc};

/// Runs a command as the API caller `crm`, with the clock at `at`.
async fn run_at(store: &Store, id: CustomerId, at: DateTime<Utc>, command: CustomerCommand) {
    run_with(store, id, command, &api_caller("crm"), at)
        .await
        .unwrap();
}

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, 12, 0, 0).unwrap()
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// Ann: registered day 1, access day 2, email changed day 5, revoked day 8.
/// Bob: registered day 3, access day 4.
async fn story(store: &Store) -> (CustomerId, CustomerId) {
    let ann = CustomerId::new_random();
    let bob = CustomerId::new_random();
    run_at(
        store,
        ann,
        day(1),
        CustomerCommand::RegisterCustomer {
            customer_id: ann,
            email: email("ann@example.com"),
            name: None,
        },
    )
    .await;
    run_at(
        store,
        ann,
        day(2),
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
    )
    .await;
    run_at(
        store,
        bob,
        day(3),
        CustomerCommand::RegisterCustomer {
            customer_id: bob,
            email: email("bob@example.com"),
            name: None,
        },
    )
    .await;
    run_at(
        store,
        bob,
        day(4),
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
    )
    .await;
    run_at(
        store,
        ann,
        day(5),
        CustomerCommand::ChangeEmail {
            email: email("ann@new.example"),
            credential: Credential::SetupLink,
        },
    )
    .await;
    run_at(
        store,
        ann,
        day(8),
        CustomerCommand::RevokeAccess { reason: None },
    )
    .await;
    (ann, bob)
}

fn fast() -> ProjectorOptions {
    ProjectorOptions {
        poll: Duration::from_millis(20),
        ..ProjectorOptions::default()
    }
}

async fn rebuild_swaps_in_identical_tables_while_the_projector_runs(store: Store) {
    let projector = Projector::spawn(store.clone(), fast());
    let (ann, _) = story(&store).await;
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    let before = db::audit_page(&store, &AuditFilter::default(), 1000)
        .await
        .unwrap();
    let state_before = db::access_state(&store, ann).await.unwrap();

    let mut calls = 0;
    let report = rebuild::rebuild(&store, &mut |_| calls += 1).await.unwrap();
    assert_eq!(report.events, before.len() as u64);
    assert!(calls >= 1);
    assert_eq!(
        db::audit_page(&store, &AuditFilter::default(), 1000)
            .await
            .unwrap(),
        before
    );
    assert_eq!(db::access_state(&store, ann).await.unwrap(), state_before);

    // The live projector keeps going on the swapped-in tables.
    let carl = CustomerId::new_random();
    run_at(
        &store,
        carl,
        day(9),
        CustomerCommand::RegisterCustomer {
            customer_id: carl,
            email: email("carl@example.com"),
            name: None,
        },
    )
    .await;
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(db::access_state(&store, carl).await.unwrap().is_some());
    assert_eq!(
        db::audit_page(&store, &AuditFilter::default(), 1000)
            .await
            .unwrap()
            .len(),
        before.len() + 1
    );

    // And a second rebuild works too (index names do not collide).
    rebuild::rebuild(&store, &mut |_| {}).await.unwrap();
    let check = rebuild::check(&store, &mut |_| {}).await.unwrap();
    assert!(check.matches(), "{check:?}");

    // The rebuilt audit trail has the migrations' primary key and indexes
    // (on PostgreSQL they are built after the bulk load).
    if let Some(pool) = access_store::testing::postgres_pool(&store) {
        let indexes: Vec<(String, bool)> = sqlx::query_as(
            "SELECT regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', ''), indisprimary \
             FROM pg_index WHERE indrelid = 'audit_trail'::regclass ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            vec![
                ("btree (\"position\")".to_string(), true),
                ("btree (at)".to_string(), false),
                ("btree (customer_id, tx, \"position\")".to_string(), false),
                ("btree (tx, \"position\")".to_string(), false),
            ]
        );
    }
}

/// An event committed and projected live after the rebuild's last read,
/// then the swap, then no further writes: the read model still shows it.
async fn a_rebuild_never_moves_the_read_model_back(store: Store) {
    let projector = Projector::spawn(store.clone(), fast());
    let (ann, _) = story(&store).await;
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();

    // The rebuild has read everything there is...
    let prepared = rebuild::prepare(&store, &mut |_| {}).await.unwrap();
    // ...then Ann gets access back, and the live projector applies it...
    run_at(
        &store,
        ann,
        day(10),
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
    )
    .await;
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    let live = db::access_state(&store, ann).await.unwrap().unwrap();
    assert!(live.access_granted);
    let live_audit = db::audit_page(&store, &AuditFilter::default(), 1000)
        .await
        .unwrap();
    // ...before the swap. No write follows.
    let report = rebuild::swap_in(&store, prepared, &mut |_| {})
        .await
        .unwrap();
    // Within the read wait, the read model shows the grant.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = db::access_state(&store, ann).await.unwrap().unwrap();
        if state == live {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read model went back: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        db::audit_page(&store, &AuditFilter::default(), 1000)
            .await
            .unwrap(),
        live_audit
    );
    assert_eq!(report.events, live_audit.len() as u64, "{report:?}");
    projector.stop();
    assert!(rebuild::check(&store, &mut |_| {}).await.unwrap().matches());
}

async fn check_finds_a_projection_that_differs_from_the_events(store: Store) {
    let projector = Projector::spawn(store.clone(), fast());
    let (ann, _) = story(&store).await;
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    let ok = rebuild::check(&store, &mut |_| {}).await.unwrap();
    assert!(ok.matches(), "{ok:?}");
    assert_eq!(ok.live.audit_trail_rows, 9);
    assert_eq!(ok.live.access_state_rows, 2);
    projector.stop();

    // Someone edits a projection row by hand: the check notices.
    exec_sql(
        &store,
        &format!("UPDATE access_state SET email = 'evil@example.com' WHERE customer_id = '{ann}'"),
    )
    .await;
    let bad = rebuild::check(&store, &mut |_| {}).await.unwrap();
    assert!(!bad.matches());
    assert_ne!(bad.live.access_state, bad.rebuilt.access_state);
    assert_eq!(bad.live.audit_trail, bad.rebuilt.audit_trail);
    // A rebuild repairs it.
    rebuild::rebuild(&store, &mut |_| {}).await.unwrap();
    assert_eq!(
        db::access_state(&store, ann).await.unwrap().unwrap().email,
        "ann@example.com".replace("example.com", "new.example")
    );
    assert!(rebuild::check(&store, &mut |_| {}).await.unwrap().matches());
}

async fn time_travel_shows_the_state_at_an_instant(store: Store) {
    let (ann, bob) = story(&store).await;
    assert!(
        history::state_at(&store, ann, day(1) - chrono::Duration::hours(1))
            .await
            .unwrap()
            .is_none()
    );
    let registered = history::state_at(&store, ann, day(1))
        .await
        .unwrap()
        .unwrap();
    assert!(!registered.access_granted);
    let day6 = history::state_at(&store, ann, day(6))
        .await
        .unwrap()
        .unwrap();
    assert!(day6.access_granted);
    assert_eq!(day6.email, "ann@new.example");
    assert!(
        !history::state_at(&store, ann, day(9))
            .await
            .unwrap()
            .unwrap()
            .access_granted
    );

    let who = |d| history::who_had_access(&store, day(d));
    assert!(who(1).await.unwrap().is_empty());
    let on_day_3: Vec<_> = who(3)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.customer_id, r.email))
        .collect();
    assert_eq!(on_day_3, vec![(ann, "ann@example.com".to_string())]);
    let on_day_6: Vec<_> = who(6)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.customer_id, r.email))
        .collect();
    assert_eq!(
        on_day_6,
        vec![
            (ann, "ann@new.example".to_string()),
            (bob, "bob@example.com".to_string())
        ]
    );
    let on_day_9: Vec<_> = who(9)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.customer_id)
        .collect();
    assert_eq!(on_day_9, vec![bob]);
}

/// The recorded stream (older event versions included) replays into
/// projections equal to the committed expected file
/// (`ACCESS_UPDATE_SNAPSHOTS=1` rewrites it after an intended change).
async fn a_recorded_stream_replays_into_the_expected_projections(store: Store) {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/customer-stream-v1.0.json"
    );
    let expected_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/customer-stream-v1.0.projections.json"
    );
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let id = raw["aggregate_id"].as_str().unwrap();
    for e in raw["events"].as_array().unwrap() {
        // The stored form, exactly as an older version wrote it.
        let sql = format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('Customer', '{id}', {}, '{}', '{}', '{}', '{}')",
            e["sequence"],
            e["event_type"].as_str().unwrap(),
            e["event_version"].as_str().unwrap(),
            e["payload"].to_string().replace('\'', "''"),
            e["metadata"].to_string().replace('\'', "''"),
        );
        exec_sql(&store, &sql).await;
    }
    let projector = Projector::spawn(store.clone(), fast());
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    let state = db::access_state(&store, id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let audit: Vec<_> = db::audit_page(&store, &AuditFilter::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.tx = 0; // transaction ids differ between databases and runs
            r
        })
        .collect();
    let actual = serde_json::to_string_pretty(
        &serde_json::json!({"access_state": state, "audit_trail": audit}),
    )
    .unwrap()
        + "\n";
    if std::env::var("ACCESS_UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    assert!(
        expected == actual,
        "projections differ from {expected_path} (ACCESS_UPDATE_SNAPSHOTS=1 rewrites it):\n{actual}"
    );
}

/// A rebuild batch of 5,000 events can hold thousands of customers: the
/// statements must stay under the databases' parameter limits.
async fn rebuild_handles_batches_with_thousands_of_customers(store: Store) {
    let meta = CommandMetadata::new(
        Actor::System {
            name: "bulk".into(),
        },
        "bulk",
    );
    for n in 0..2600 {
        let id = CustomerId::new_random();
        let before = access_domain::Customer::default();
        let events = vec![access_domain::CustomerEvent::CustomerRegistered {
            customer_id: id,
            email: access_domain::Personal::Known(email(&format!("bulk{n}@example.com"))),
            name: None,
            at: day(1),
        }];
        let after = access_store::Loaded::from_events(events.clone()).customer;
        store
            .append(access_store::Append {
                customer_id: id,
                expected_version: 0,
                events: &events,
                metadata: &meta,
                before: &before,
                after: &after,
                idempotency: None,
            })
            .await
            .unwrap();
    }
    let report = rebuild::rebuild(&store, &mut |_| {}).await.unwrap();
    assert_eq!(report.events, 2600);
    assert_eq!(
        db::access_state_by_email(&store, &email("bulk2599@example.com"))
            .await
            .unwrap()
            .len(),
        1
    );
}

access_store::on_both_stores!(
    rebuild_swaps_in_identical_tables_while_the_projector_runs,
    a_rebuild_never_moves_the_read_model_back,
    check_finds_a_projection_that_differs_from_the_events,
    time_travel_shows_the_state_at_an_instant,
    a_recorded_stream_replays_into_the_expected_projections,
    rebuild_handles_batches_with_thousands_of_customers,
);
