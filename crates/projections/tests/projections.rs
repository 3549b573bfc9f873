//! The projector on both stores: exactly once, crash and restart, two
//! projectors at once, errors stop it, read-your-writes, audit queries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::time::Duration;

use access_projections::{db, AuditFilter, Projector, ProjectorOptions};
use access_store::testing::{count_rows, exec_sql, sample_history};
use access_store::{Position, Store};
use chrono::Utc;

const EVENTS_PER_HISTORY: u64 = access_store::testing::SAMPLE_HISTORY_EVENTS;

fn fast() -> ProjectorOptions {
    ProjectorOptions {
        batch: 7,
        poll: Duration::from_millis(20),
        ..ProjectorOptions::default()
    }
}

// ---------------------------------------------------------------------------

async fn every_event_is_projected_exactly_once(store: Store) {
    let projector = Projector::spawn(store.clone(), fast());
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(sample_history(&store, n).await);
    }
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        count_rows(&store, "audit_trail").await,
        5 * EVENTS_PER_HISTORY as i64
    );
    assert_eq!(count_rows(&store, "access_state").await, 5);

    // The row agrees with the aggregate.
    for id in &ids {
        let row = db::access_state(&store, *id).await.unwrap().unwrap();
        let loaded = store.load(*id).await.unwrap();
        assert_eq!(row.version, loaded.version);
        assert_eq!(row.email, loaded.customer.email().unwrap().as_str());
        assert_eq!(row.access_granted, loaded.customer.has_access());
        assert_eq!(row.password_set, loaded.customer.has_password());
        assert_eq!(
            row.must_change_password,
            loaded.customer.must_change_password()
        );
    }
    let found = db::access_state_by_email(
        &store,
        &access_domain::EmailAddress::parse("moved3@example.com").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].customer_id, ids[3]);

    // The audit trail of one customer, in order, with actor, reason and emails.
    let rows = db::audit_page(
        &store,
        &AuditFilter {
            customer_id: Some(ids[0]),
            ..Default::default()
        },
        100,
    )
    .await
    .unwrap();
    let kinds: Vec<_> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "customer_registered",
            "access_granted",
            "access_notification_sent",
            "email_changed",
            "password_set",
            "access_notification_sent",
            "access_revoked"
        ]
    );
    let changed = &rows[3];
    assert_eq!(changed.old_email.as_deref(), Some("c0@example.com"));
    assert_eq!(changed.new_email.as_deref(), Some("moved0@example.com"));
    assert_eq!(changed.actor_name.as_deref(), Some("erp"));
    assert_eq!(changed.reason.as_deref(), Some("because erp"));
    assert_eq!(rows[4].password_source.as_deref(), Some("manual"));
    assert_eq!(rows[2].with_setup_link, Some(true));
    assert_eq!(rows[5].with_setup_link, Some(false));
    assert_eq!(rows[6].reason.as_deref(), Some("left"));
    let text = format!("{rows:?}");
    assert!(
        !text.contains("fake:") && !text.contains("digest"),
        "secrets in the audit trail"
    );
}

async fn a_crash_between_commit_and_projection_loses_nothing(store: Store) {
    // Events committed while no projector runs (the crash window)…
    for n in 0..3 {
        sample_history(&store, n).await;
    }
    let projector = Projector::spawn(store.clone(), fast());
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        count_rows(&store, "audit_trail").await,
        3 * EVENTS_PER_HISTORY as i64
    );
    // …a second crash mid-stream, and a restart from the checkpoint.
    projector.stop();
    drop(projector);
    for n in 3..5 {
        sample_history(&store, n).await;
    }
    let projector = Projector::spawn(store.clone(), fast());
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        count_rows(&store, "audit_trail").await,
        5 * EVENTS_PER_HISTORY as i64
    );
    assert_eq!(count_rows(&store, "access_state").await, 5);
    let checkpoint = db::checkpoint(&store, "projections").await.unwrap();
    assert_eq!(checkpoint, store.head().await.unwrap());
}

async fn two_projectors_at_once_project_each_event_once(store: Store) {
    let a = Projector::spawn(store.clone(), fast());
    let b = Projector::spawn(store.clone(), fast());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..3 {
                    sample_history(&store, w * 10 + n).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    a.wait_caught_up(Duration::from_secs(30)).await.unwrap();
    b.wait_caught_up(Duration::from_secs(30)).await.unwrap();
    // A duplicate would have failed the primary key; a miss shows here.
    assert_eq!(
        count_rows(&store, "audit_trail").await,
        12 * EVENTS_PER_HISTORY as i64
    );
    assert_eq!(count_rows(&store, "access_state").await, 12);
}

async fn an_unreadable_event_stops_the_projector_at_its_position(store: Store) {
    let first = sample_history(&store, 0).await;
    let second = sample_history(&store, 1).await;
    exec_sql(
        &store,
        &format!("UPDATE events SET payload = '{{\"Nope\": {{}}}}' WHERE aggregate_id = '{second}' AND sequence = 2"),
    )
    .await;
    let projector = Projector::spawn(store.clone(), fast());
    let err = projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap_err();
    let status = projector.status();
    let failed = status
        .failed
        .clone()
        .expect("the projector should have stopped");
    assert!(failed.contains(&second.to_string()), "{failed}");
    assert!(err.to_string().contains("stopped"), "{err}");
    // Everything before the bad event is projected; nothing after it.
    assert!(db::access_state(&store, first).await.unwrap().is_some());
    let row = db::access_state(&store, second).await.unwrap();
    assert!(row.is_none_or(|r| r.version < 2));
    assert!(status.checkpoint < store.head().await.unwrap());
}

async fn audit_queries_filter_and_page(store: Store) {
    let projector = Projector::spawn(store.clone(), fast());
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(sample_history(&store, n).await);
    }
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    // Pages of 5 cover everything exactly once, in order.
    let mut after: Option<Position> = None;
    let mut seen = Vec::new();
    loop {
        let page = db::audit_page(
            &store,
            &AuditFilter {
                after,
                ..Default::default()
            },
            5,
        )
        .await
        .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| Position {
            tx: r.tx,
            global: r.position,
        });
        seen.extend(page.into_iter().map(|r| r.position));
    }
    assert_eq!(seen.len() as u64, 4 * EVENTS_PER_HISTORY);
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len());

    // Newest first (the console's latest changes): pages of 5 walk the
    // same rows backwards, each exactly once.
    let mut before: Option<Position> = None;
    let mut backwards = Vec::new();
    loop {
        let page = db::audit_page(
            &store,
            &AuditFilter {
                after: before,
                newest_first: true,
                ..Default::default()
            },
            5,
        )
        .await
        .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|r| Position {
            tx: r.tx,
            global: r.position,
        });
        backwards.extend(page.into_iter().map(|r| r.position));
    }
    let mut forwards = seen.clone();
    forwards.reverse();
    assert_eq!(backwards, forwards);

    let by_kind = AuditFilter {
        kind: Some("email_changed".into()),
        ..Default::default()
    };
    assert_eq!(
        db::audit_page(&store, &by_kind, 100).await.unwrap().len(),
        4
    );
    let by_actor = AuditFilter {
        actor: Some("erp".into()),
        ..Default::default()
    };
    assert_eq!(
        db::audit_page(&store, &by_actor, 100).await.unwrap().len(),
        4 * 3
    );
    let future = AuditFilter {
        from: Some(Utc::now() + chrono::Duration::hours(1)),
        ..Default::default()
    };
    assert!(db::audit_page(&store, &future, 100)
        .await
        .unwrap()
        .is_empty());
    let past = AuditFilter {
        to: Some(Utc::now() - chrono::Duration::hours(1)),
        ..Default::default()
    };
    assert!(db::audit_page(&store, &past, 100).await.unwrap().is_empty());
    let window = AuditFilter {
        from: Some(Utc::now() - chrono::Duration::hours(1)),
        to: Some(Utc::now() + chrono::Duration::hours(1)),
        customer_id: Some(ids[1]),
        ..Default::default()
    };
    assert_eq!(
        db::audit_page(&store, &window, 100).await.unwrap().len() as u64,
        EVENTS_PER_HISTORY
    );
}

/// Audit rows go to PostgreSQL by COPY (text format): values with the
/// format's special characters, NULLs and booleans come back as written.
async fn audit_values_survive_the_bulk_write(store: Store) {
    use access_domain::{Credential, CustomerCommand, CustomerId, EmailAddress, Role};
    use access_store::testing::run;
    let tricky = "tab\there, new\nline, cr\r, back\\slash, \\N, \\t, ü 🙂, 'quote' \"dq\"";
    let id = CustomerId::new_random();
    for command in [
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: EmailAddress::parse("copy@example.com").unwrap(),
            name: None,
        },
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
        CustomerCommand::RevokeAccess {
            reason: Some(tricky.to_string()),
        },
    ] {
        run(&store, id, command).await.unwrap();
    }
    let projector = Projector::spawn(store.clone(), fast());
    projector
        .wait_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    let rows = db::audit_page(
        &store,
        &AuditFilter {
            customer_id: Some(id),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3].reason.as_deref(), Some(tricky));
    assert_eq!(rows[0].reason, None);
    assert_eq!(rows[0].new_email.as_deref(), Some("copy@example.com"));
    assert_eq!(rows[0].with_setup_link, None);
    assert_eq!(rows[2].with_setup_link, Some(true));
    let events = store.events_of(id).await.unwrap();
    for (row, event) in rows.iter().zip(&events) {
        assert_eq!(
            row.at.timestamp_micros(),
            event.event.at().timestamp_micros(),
            "timestamps to the microsecond"
        );
        assert_eq!(row.sequence, event.sequence);
    }
}

access_store::on_both_stores!(
    audit_values_survive_the_bulk_write,
    every_event_is_projected_exactly_once,
    a_crash_between_commit_and_projection_loses_nothing,
    two_projectors_at_once_project_each_event_once,
    an_unreadable_event_stops_the_projector_at_its_position,
    audit_queries_filter_and_page,
);
