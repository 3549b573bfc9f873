//! The aggregate cache of the command path (`cache.rs`): commands decided
//! on a cached state are as correct as those decided on state read from
//! the database, also with two stores ("replicas") writing the same
//! customers, each with its own cache going stale. Both stores, PostgreSQL
//! and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::{Credential, CustomerCommand, CustomerError, CustomerId, EmailAddress, Role};
use access_store::prelude::*;
use access_store::testing::{fake_services, fresh_store, run, test_master_key, TestDatabase};
use access_store::{CacheStats, ExecuteError, Execution, Store, StoreOptions};
use chrono::Utc;

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// A second store on the same database: another replica, its own cache.
async fn replica(db: &TestDatabase) -> Store {
    Store::connect(db.url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(test_master_key())
        .await
        .unwrap()
}

async fn customer_with_access(store: &Store, address: &str) -> CustomerId {
    let id = CustomerId::new_random();
    run(
        store,
        id,
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: email(address),
            name: None,
        },
    )
    .await
    .unwrap();
    run(
        store,
        id,
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap();
    id
}

fn stats(store: &Store) -> CacheStats {
    store.cache_stats().expect("the cache is on by default")
}

async fn with_if_match(
    store: &Store,
    id: CustomerId,
    command: CustomerCommand,
    expected: u64,
) -> Result<u64, ExecuteError> {
    let metadata = access_domain::CommandMetadata::new(
        access_domain::Actor::System {
            name: "test".into(),
        },
        "test",
    );
    store
        .execute(
            &fake_services(Utc::now()),
            Execution {
                customer_id: id,
                command,
                metadata: &metadata,
                expected_version: Some(expected),
                idempotency: None,
            },
            |_| String::new(),
        )
        .await
        .map(|e| e.version)
}

async fn a_customers_next_command_is_decided_on_its_cached_state(postgres: bool) {
    let (_db, store) = fresh_store(postgres, StoreOptions::default()).await;
    let id = customer_with_access(&store, "cached@example.com").await;
    let before = stats(&store);
    for _ in 0..3 {
        run(&store, id, CustomerCommand::SendAccessNotification)
            .await
            .unwrap();
    }
    let after = stats(&store);
    assert_eq!(after.hits - before.hits, 3, "{after:?}");
    assert_eq!(after.misses, before.misses);
    // The result is the state a replay gives.
    let loaded = store.load(id).await.unwrap();
    assert_eq!(loaded.version, 6);
    assert_eq!(loaded, store.load_by_replay(id).await.unwrap());
}

async fn two_replicas_with_stale_caches_lose_no_update(postgres: bool) {
    let (db, a) = fresh_store(postgres, StoreOptions::default()).await;
    let b = replica(&db).await;
    let id = customer_with_access(&a, "shared@example.com").await;
    // Alternate: each replica's cached state is one command behind.
    let mut acknowledged = 3;
    for round in 0..6 {
        let store = if round % 2 == 0 { &b } else { &a };
        let executed = run(store, id, CustomerCommand::SendAccessNotification)
            .await
            .unwrap();
        acknowledged += 1;
        assert_eq!(executed.version, acknowledged);
    }
    // A's cache went stale every time it was used, and the commands were
    // decided again on fresh state.
    assert!(stats(&a).stale >= 2, "{:?}", stats(&a));
    let versions: Vec<u64> = a
        .events_of(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(versions, (1..=acknowledged).collect::<Vec<_>>());

    // A change of the login through B is seen by A's next decision: the
    // address A cached is no longer the login.
    run(
        &b,
        id,
        CustomerCommand::ChangeEmail {
            email: email("moved@example.com"),
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap();
    let executed = run(
        &a,
        id,
        CustomerCommand::ChangeEmail {
            email: email("moved@example.com"),
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap();
    assert!(executed.events.is_empty(), "already moved: nothing to do");
}

async fn a_customer_forgotten_through_another_replica_is_refused(postgres: bool) {
    let (db, a) = fresh_store(postgres, StoreOptions::default()).await;
    let b = replica(&db).await;
    let id = customer_with_access(&a, "gone@example.com").await;
    run(&a, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap();
    run(&b, id, CustomerCommand::ForgetCustomer).await.unwrap();
    // A still holds the customer, with its key, in its cache.
    let err = run(&a, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::Rejected(CustomerError::CustomerForgotten)
        ),
        "{err:?}"
    );
    assert!(a.load(id).await.unwrap().customer.is_forgotten());
}

async fn if_match_is_checked_against_the_database_not_a_stale_cache(postgres: bool) {
    let (db, a) = fresh_store(postgres, StoreOptions::default()).await;
    let b = replica(&db).await;
    let id = customer_with_access(&a, "ifmatch@example.com").await;
    // A caches version 3; B moves the customer to 4.
    run(&b, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap();
    // The caller knows version 4: A must not answer "you have 3".
    let version = with_if_match(&a, id, CustomerCommand::SendAccessNotification, 4)
        .await
        .unwrap();
    assert_eq!(version, 5);
    // B's cache says 4, the database 5: a caller expecting 4 is refused
    // with the real version.
    let err = with_if_match(&b, id, CustomerCommand::SendAccessNotification, 4)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::VersionMismatch {
                expected: 4,
                actual: 5
            }
        ),
        "{err:?}"
    );
}

/// Refusals and no-ops write no event, so no append checks the version they
/// were decided on: the store checks it and decides again on fresh state.
async fn refusals_and_no_ops_on_a_stale_cached_state_are_decided_again(postgres: bool) {
    let (db, a) = fresh_store(postgres, StoreOptions::default()).await;
    let b = replica(&db).await;

    // A caches a customer without access; B grants access.
    let id = CustomerId::new_random();
    run(
        &a,
        id,
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: email("late@example.com"),
            name: None,
        },
    )
    .await
    .unwrap();
    run(
        &b,
        id,
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap();
    // Refused on A's cached state ("no access"), allowed on the real one.
    let executed = run(&a, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap();
    assert_eq!(executed.version, 4);

    // A caches version 4; B moves to 5. A no-op with If-Match 4 on A: the
    // caller is behind, whatever A's cache says.
    run(&b, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap();
    let same_address = CustomerCommand::ChangeEmail {
        email: email("late@example.com"),
        credential: Credential::None,
    };
    let err = with_if_match(&a, id, same_address.clone(), 4)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::VersionMismatch {
                expected: 4,
                actual: 5
            }
        ),
        "{err:?}"
    );

    // A caches version 6, then B forgets the customer: a no-op on A is
    // refused, not acknowledged.
    let executed = run(&a, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap();
    assert_eq!(executed.version, 6);
    run(&b, id, CustomerCommand::ForgetCustomer).await.unwrap();
    let err = run(&a, id, same_address).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::Rejected(CustomerError::CustomerForgotten)
        ),
        "{err:?}"
    );
    assert!(stats(&a).stale >= 3, "{:?}", stats(&a));
}

async fn the_cache_can_be_turned_off(postgres: bool) {
    let options = StoreOptions {
        aggregate_cache: 0,
        ..StoreOptions::default()
    };
    let (_db, store) = fresh_store(postgres, options).await;
    let id = customer_with_access(&store, "nocache@example.com").await;
    run(&store, id, CustomerCommand::SendAccessNotification)
        .await
        .unwrap();
    assert!(store.cache_stats().is_none());
    assert_eq!(store.load(id).await.unwrap().version, 4);
}

/// Two replicas swapping two customers' login emails at the same moment:
/// each transaction releases its old address, then takes the other's, so
/// PostgreSQL can find them waiting for each other (a deadlock, SQLSTATE
/// 40P01) and abort one. That one is decided again, never a database error
/// (it was an `internal` 500 over HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_swapping_login_emails_never_fail_with_a_database_error() {
    let (db, a) = fresh_store(true, StoreOptions::default()).await;
    let b = replica(&db).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..40 {
        let (x, y) = (
            format!("x{round}@example.com"),
            format!("y{round}@example.com"),
        );
        let first = customer_with_access(&a, &x).await;
        let second = customer_with_access(&a, &y).await;
        let change = |to: &str| CustomerCommand::ChangeEmail {
            email: email(to),
            credential: Credential::SetupLink,
        };
        let (one, two) = tokio::join!(run(&a, first, change(&y)), run(&b, second, change(&x)));
        for result in [one, two] {
            let outcome = match result {
                Ok(_) => "ok".to_string(),
                Err(ExecuteError::Store(access_store::StoreError::EmailInUse { .. })) => {
                    "email_in_use".to_string()
                }
                Err(other) => panic!("round {round}: {other:?}"),
            };
            *outcomes.entry(outcome).or_insert(0) += 1;
        }
    }
    assert!(outcomes.contains_key("email_in_use"), "{outcomes:?}");
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(true).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(false).await;
                }
            )*
        }
    };
}

on_both!(
    a_customers_next_command_is_decided_on_its_cached_state,
    two_replicas_with_stale_caches_lose_no_update,
    a_customer_forgotten_through_another_replica_is_refused,
    if_match_is_checked_against_the_database_not_a_stale_cache,
    refusals_and_no_ops_on_a_stale_cached_state_are_decided_again,
    the_cache_can_be_turned_off,
);
