//! Personal data under per-customer keys, on both stores: stored only
//! sealed, readable with the key, forgotten for good once the key is
//! destroyed, and the master key checked at unlock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::{
    Credential, CustomerCommand, CustomerError, CustomerEvent, CustomerId, CustomerName,
    EmailAddress, Password, Personal, Role, Secret,
};
use access_store::prelude::*;
use access_store::testing::{
    api_caller, count_rows, dump_all_tables, exec_sql, fresh_store, insert_sealed_v1_fixture,
    query_texts, run, run_with, test_master_key,
};
use access_store::{ExecuteError, MasterKey, Store, StoreError, StoreOptions};
use chrono::Utc;

const PW: &str = "correct-Horse-battery-9";

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// A customer with a name, access, a manual password and a changed email;
/// returns its id. Addresses and name contain `tag`.
async fn history(store: &Store, tag: &str) -> CustomerId {
    let id = CustomerId::new_random();
    let steps = [
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: email(&format!("{tag}.first@example.com")),
            name: Some(CustomerName::parse(&format!("Ann {tag}")).unwrap()),
        },
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
        CustomerCommand::ChangeEmail {
            email: email(&format!("{tag}.second@example.com")),
            credential: Credential::ManualPassword {
                password: Password::parse(PW, &[]).unwrap(),
                password_confirm: Secret::new(PW),
                send_notification: true,
            },
        },
    ];
    for command in steps {
        run_with(store, id, command, &api_caller("crm"), Utc::now())
            .await
            .unwrap();
    }
    id
}

fn personal_fields(event: &CustomerEvent) -> Vec<String> {
    let shown = |p: &Personal<EmailAddress>| p.shown();
    match event {
        CustomerEvent::CustomerRegistered { email, name, .. } => {
            let mut v = vec![shown(email)];
            v.extend(name.as_ref().map(Personal::shown));
            v
        }
        CustomerEvent::EmailChanged {
            old_email,
            new_email,
            ..
        } => vec![shown(old_email), shown(new_email)],
        CustomerEvent::AccessNotificationSent { recipient, .. } => vec![shown(recipient)],
        _ => Vec::new(),
    }
}

async fn personal_data_is_stored_only_sealed(store: Store) {
    let id = history(&store, "zqxsealed").await;
    let dump = dump_all_tables(&store).await;
    assert!(dump.contains(&id.to_string()), "the dump reads the tables");
    assert!(
        !dump.to_lowercase().contains("zqxsealed"),
        "personal data in the clear:\n{}",
        dump.lines()
            .filter(|l| l.to_lowercase().contains("zqxsealed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(dump.contains("\"sealed\""), "events hold sealed fields");

    // With the key, everything reads back.
    let loaded = store.load(id).await.unwrap();
    assert_eq!(
        loaded.customer.email().unwrap().as_str(),
        "zqxsealed.second@example.com"
    );
    assert_eq!(loaded.customer.name().unwrap().as_str(), "Ann zqxsealed");
    let fields: Vec<String> = store
        .events_of(id)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| personal_fields(&e.event))
        .collect();
    assert!(fields.contains(&"zqxsealed.first@example.com".to_string()));
    assert!(fields.contains(&"Ann zqxsealed".to_string()));
    // Lookups work through the keyed hash.
    assert_eq!(
        store
            .customers_by_email(&email("ZQXSEALED.second@example.com"))
            .await
            .unwrap(),
        vec![id]
    );
    assert_eq!(
        store
            .email_holder(&email("zqxsealed.second@example.com"))
            .await
            .unwrap(),
        Some(id)
    );
}

async fn forgetting_destroys_the_key_of_that_customer_only(store: Store) {
    let forgotten = history(&store, "zqxgone").await;
    let kept = history(&store, "zqxkept").await;
    let executed = run(&store, forgotten, CustomerCommand::ForgetCustomer)
        .await
        .unwrap();
    assert!(matches!(
        executed.events.as_slice(),
        [
            CustomerEvent::AccessRevoked { .. },
            CustomerEvent::CustomerForgotten { .. }
        ]
    ));

    // Every personal field of the forgotten customer reads as forgotten.
    let events = store.events_of(forgotten).await.unwrap();
    assert_eq!(events.len(), 8);
    let fields: Vec<String> = events
        .iter()
        .flat_map(|e| personal_fields(&e.event))
        .collect();
    assert!(!fields.is_empty());
    assert!(fields.iter().all(|f| f == "[forgotten]"), "{fields:?}");
    let loaded = store.load(forgotten).await.unwrap();
    assert!(loaded.customer.is_forgotten());
    assert_eq!(loaded.customer.email(), None);
    assert_eq!(loaded, store.load_by_replay(forgotten).await.unwrap());

    // It takes no more commands.
    let refused = run(
        &store,
        forgotten,
        CustomerCommand::ChangeEmail {
            email: email("zqxgone.third@example.com"),
            credential: Credential::None,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            refused,
            ExecuteError::Rejected(CustomerError::CustomerForgotten)
        ),
        "{refused:?}"
    );

    // Lookups and reservations are gone; the address is free again.
    assert!(store
        .customers_by_email(&email("zqxgone.second@example.com"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .email_holder(&email("zqxgone.second@example.com"))
            .await
            .unwrap(),
        None
    );
    // The other customer is untouched.
    let other = store.load(kept).await.unwrap();
    assert_eq!(
        other.customer.email().unwrap().as_str(),
        "zqxkept.second@example.com"
    );
    assert!(other.customer.has_access());
    assert_eq!(count_rows(&store, "customer_keys").await, 2);
    let dump = dump_all_tables(&store).await;
    assert!(!dump.contains("zqxgone"));
    assert!(
        dump.lines()
            .any(|l| l.starts_with("customer_keys") && l.contains(&forgotten.to_string())),
        "the destroyed key's row stays, without the key"
    );
}

async fn events_written_before_encryption_still_read(store: Store) {
    // A stream as an earlier version wrote it: personal data in the clear,
    // no key row.
    let id = CustomerId::new_random();
    exec_sql(
        &store,
        &format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('Customer', '{id}', 1, 'CustomerRegistered', '1.0', \
             '{{\"CustomerRegistered\":{{\"customer_id\":\"{id}\",\"email\":\"legacy@example.com\",\"name\":null,\"at\":\"2026-01-01T00:00:00Z\"}}}}', '{{}}')"
        ),
    )
    .await;
    let loaded = store.load(id).await.unwrap();
    assert_eq!(
        loaded.customer.email().unwrap().as_str(),
        "legacy@example.com"
    );
    // The next command creates the customer's key and seals its events.
    run(
        &store,
        id,
        CustomerCommand::ChangeEmail {
            email: email("zqxnew@example.com"),
            credential: Credential::None,
        },
    )
    .await
    .unwrap();
    assert_eq!(count_rows(&store, "customer_keys").await, 1);
    assert!(!dump_all_tables(&store).await.contains("zqxnew"));
    assert_eq!(
        store
            .load(id)
            .await
            .unwrap()
            .customer
            .email()
            .unwrap()
            .as_str(),
        "zqxnew@example.com"
    );
}

async fn the_legacy_migration_seals_old_events_and_rekeys_lookups(store: Store) {
    let id = CustomerId::new_random();
    let at = "2026-01-01T00:00:00Z";
    let rows = [
        (1, "CustomerRegistered", format!(
            "{{\"CustomerRegistered\":{{\"customer_id\":\"{id}\",\"email\":\"zqxlegacy1@example.com\",\"name\":\"Zqx Legacy\",\"at\":\"{at}\"}}}}"
        )),
        (2, "EmailChanged", format!(
            "{{\"EmailChanged\":{{\"old_email\":\"zqxlegacy1@example.com\",\"new_email\":\"zqxlegacy2@example.com\",\"at\":\"{at}\"}}}}"
        )),
    ];
    for (sequence, kind, payload) in rows {
        exec_sql(
            &store,
            &format!(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Customer', '{id}', {sequence}, '{kind}', '1.0', '{payload}', '{{}}')"
            ),
        )
        .await;
    }
    // The lookup row as an earlier version wrote it: the plain address.
    exec_sql(
        &store,
        &format!("INSERT INTO customer_emails (customer_id, email_key) VALUES ('{id}', 'zqxlegacy2@example.com')"),
    )
    .await;
    assert!(dump_all_tables(&store).await.contains("zqxlegacy"));

    let done = store.seal_legacy_events().await.unwrap();
    assert_eq!((done.customers, done.events), (1, 2));
    let dump = dump_all_tables(&store).await;
    assert!(!dump.to_lowercase().contains("zqxlegacy"), "{dump}");
    let loaded = store.load(id).await.unwrap();
    assert_eq!(
        loaded.customer.email().unwrap().as_str(),
        "zqxlegacy2@example.com"
    );
    assert_eq!(loaded.customer.name().unwrap().as_str(), "Zqx Legacy");
    assert_eq!(
        store
            .customers_by_email(&email("zqxlegacy2@example.com"))
            .await
            .unwrap(),
        vec![id]
    );
    // Run again: nothing left to do.
    let again = store.seal_legacy_events().await.unwrap();
    assert_eq!(again.events, 0);
    // And the customer can be forgotten for good now.
    run(&store, id, CustomerCommand::ForgetCustomer)
        .await
        .unwrap();
    let fields: Vec<String> = store
        .events_of(id)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| personal_fields(&e.event))
        .collect();
    assert!(fields.iter().all(|f| f == "[forgotten]"), "{fields:?}");
}

access_store::on_both_stores!(
    the_legacy_migration_seals_old_events_and_rekeys_lookups,
    personal_data_is_stored_only_sealed,
    forgetting_destroys_the_key_of_that_customer_only,
    events_written_before_encryption_still_read,
    snapshots_are_sealed_and_dropped_on_forget with StoreOptions { snapshot_interval: 2, ..StoreOptions::default() },
    a_totp_secret_is_stored_only_sealed_and_shredded_by_a_forget with StoreOptions { snapshot_interval: 2, ..StoreOptions::default() },
    a_sealed_field_swapped_with_another_field_of_its_event_does_not_open,
    a_sealed_field_moved_to_another_event_does_not_open,
    a_rolled_back_snapshot_does_not_open with StoreOptions { snapshot_interval: 2, aggregate_cache: 0, ..StoreOptions::default() },
    data_sealed_with_the_first_scheme_still_opens_and_is_resealed with StoreOptions { snapshot_interval: 2, aggregate_cache: 0, ..StoreOptions::default() },
);

/// The stored payload of the customer's event at `sequence`.
async fn stored_payload(store: &Store, id: CustomerId, sequence: u64) -> serde_json::Value {
    let texts = query_texts(
        store,
        &format!(
            "SELECT CAST(payload AS TEXT) FROM events WHERE aggregate_id = '{id}' AND sequence = {sequence}"
        ),
    )
    .await;
    serde_json::from_str(&texts[0]).unwrap()
}

async fn store_payload(store: &Store, id: CustomerId, sequence: u64, payload: &serde_json::Value) {
    exec_sql(
        store,
        &format!(
            "UPDATE events SET payload = '{payload}' WHERE aggregate_id = '{id}' AND sequence = {sequence}"
        ),
    )
    .await;
}

/// Every way of reading the customer's events fails with a corrupt event
/// at `sequence`: the swapped value is never used.
async fn assert_corrupt_at(store: &Store, id: CustomerId, sequence: u64) {
    let err = store.events_of(id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { sequence: s, .. } if *s == sequence),
        "{err:?}"
    );
    assert_eq!(err.code(), "corrupt_event");
    assert!(err.to_string().contains("does not open"), "{err}");
    let err = store.load_by_replay(id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { sequence: s, .. } if *s == sequence),
        "{err:?}"
    );
}

async fn a_sealed_field_swapped_with_another_field_of_its_event_does_not_open(store: Store) {
    let id = history(&store, "zqxswap").await;
    // Event 4 is EmailChanged: its old and new address change places.
    let mut payload = stored_payload(&store, id, 4).await;
    let fields = &mut payload["EmailChanged"];
    let old = fields["old_email"].clone();
    fields["old_email"] = fields["new_email"].clone();
    fields["new_email"] = old;
    store_payload(&store, id, 4, &payload).await;
    assert_corrupt_at(&store, id, 4).await;
}

async fn a_sealed_field_moved_to_another_event_does_not_open(store: Store) {
    let id = history(&store, "zqxmove").await;
    // The first address (event 1) replaces the recipient of the last
    // notice (event 6).
    let registered = stored_payload(&store, id, 1).await;
    let mut notice = stored_payload(&store, id, 6).await;
    notice["AccessNotificationSent"]["recipient"] =
        registered["CustomerRegistered"]["email"].clone();
    store_payload(&store, id, 6, &notice).await;
    assert_corrupt_at(&store, id, 6).await;
    // The same value under the same field name of another event.
    let id = history(&store, "zqxmove2").await;
    let first_notice = stored_payload(&store, id, 3).await;
    let mut notice = stored_payload(&store, id, 6).await;
    notice["AccessNotificationSent"]["recipient"] =
        first_notice["AccessNotificationSent"]["recipient"].clone();
    store_payload(&store, id, 6, &notice).await;
    assert_corrupt_at(&store, id, 6).await;
}

async fn a_rolled_back_snapshot_does_not_open(store: Store) {
    let id = history(&store, "zqxroll").await;
    let snapshot = |store: Store| async move {
        query_texts(
            &store,
            &format!(
                "SELECT CAST(last_sequence AS TEXT) || ' ' || CAST(payload AS TEXT) FROM snapshots WHERE aggregate_id = '{id}'"
            ),
        )
        .await
        .remove(0)
    };
    let old = snapshot(store.clone()).await;
    let (old_sequence, old_payload) = old.split_once(' ').unwrap();
    // Access revoked afterwards: a newer snapshot replaces the old one.
    for command in [
        CustomerCommand::RevokeAccess {
            reason: Some("left".into()),
        },
        CustomerCommand::ChangeEmail {
            email: email("zqxroll.third@example.com"),
            credential: Credential::None,
        },
    ] {
        run(&store, id, command).await.unwrap();
    }
    let new = snapshot(store.clone()).await;
    let (new_sequence, _) = new.split_once(' ').unwrap();
    assert!(new_sequence.parse::<u64>().unwrap() > old_sequence.parse::<u64>().unwrap());
    // The old sealed state is put back with the new sequence: loading it
    // would bring the revoked access back.
    exec_sql(
        &store,
        &format!("UPDATE snapshots SET payload = '{old_payload}' WHERE aggregate_id = '{id}'"),
    )
    .await;
    let err = store.load(id).await.unwrap_err();
    assert_eq!(err.code(), "corrupt_snapshot", "{err:?}");
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    assert!(err.to_string().contains("does not open"), "{err}");
}

async fn data_sealed_with_the_first_scheme_still_opens_and_is_resealed(store: Store) {
    let id = insert_sealed_v1_fixture(&store).await;
    let check = |store: Store| async move {
        let loaded = store.load(id).await.unwrap();
        assert_eq!(
            loaded.customer.email().unwrap().as_str(),
            "zqxold.second@example.com"
        );
        assert_eq!(loaded.customer.name().unwrap().as_str(), "Ann Zqxold");
        assert_eq!(loaded, store.load_by_replay(id).await.unwrap());
        let fields: Vec<String> = store
            .events_of(id)
            .await
            .unwrap()
            .iter()
            .flat_map(|e| personal_fields(&e.event))
            .collect();
        assert_eq!(
            fields,
            [
                "zqxold.first@example.com",
                "Ann Zqxold",
                "zqxold.first@example.com",
                "zqxold.first@example.com",
                "zqxold.second@example.com",
                "zqxold.second@example.com",
            ]
        );
    };
    // The snapshot (at sequence 6) and every event open as they are.
    check(store.clone()).await;
    assert!(dump_all_tables(&store).await.contains("\"v1."));

    // The re-seal rewrites every old-scheme value with the current one.
    let done = store.seal_legacy_events().await.unwrap();
    assert_eq!((done.customers, done.events), (1, 4));
    let dump = dump_all_tables(&store).await;
    assert!(!dump.contains("\"v1."), "{dump}");
    assert!(!dump.to_lowercase().contains("zqxold"), "{dump}");
    check(store.clone()).await;
    assert_eq!(store.seal_legacy_events().await.unwrap().events, 0);
    // The customer lives on under the current scheme, and can be forgotten.
    run(
        &store,
        id,
        CustomerCommand::RevokeAccess {
            reason: Some("left".into()),
        },
    )
    .await
    .unwrap();
    run(
        &store,
        id,
        CustomerCommand::ChangeEmail {
            email: email("zqxold.third@example.com"),
            credential: Credential::None,
        },
    )
    .await
    .unwrap();
    assert!(!dump_all_tables(&store).await.contains("\"v1."));
    assert_eq!(
        store.load(id).await.unwrap(),
        store.load_by_replay(id).await.unwrap()
    );
    run(&store, id, CustomerCommand::ForgetCustomer)
        .await
        .unwrap();
    let fields: Vec<String> = store
        .events_of(id)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| personal_fields(&e.event))
        .collect();
    assert!(fields.iter().all(|f| f == "[forgotten]"), "{fields:?}");
}

/// The TOTP secret is personal and secret: in no table in the clear (events
/// nor snapshots), readable with the key, and gone once the customer is
/// forgotten.
async fn a_totp_secret_is_stored_only_sealed_and_shredded_by_a_forget(store: Store) {
    let id = history(&store, "zqxtotp").await;
    // Twice (a newer pending secret replaces the older one): a snapshot is
    // due (every 2 events) after the first secret.
    run(&store, id, CustomerCommand::BeginTotpEnrollment)
        .await
        .unwrap();
    let begun = run(&store, id, CustomerCommand::BeginTotpEnrollment)
        .await
        .unwrap();
    let [CustomerEvent::TotpEnrollmentBegun {
        totp_secret: Personal::Known(secret),
        ..
    }] = begun.events.as_slice()
    else {
        panic!("{:?}", begun.events)
    };
    let plain = secret.base32();
    let in_clear = |dump: &str| dump.to_uppercase().contains(&plain);
    let dump = dump_all_tables(&store).await;
    assert!(!in_clear(&dump), "the TOTP secret in the clear");
    assert!(
        count_rows(&store, "snapshots").await >= 1,
        "a snapshot holds it too"
    );
    // With the key, it reads back (events and state).
    assert_eq!(
        store.load(id).await.unwrap().customer.pending_totp_secret(),
        Some(secret)
    );
    assert_eq!(
        store.load(id).await.unwrap(),
        store.load_by_replay(id).await.unwrap()
    );

    run(&store, id, CustomerCommand::ForgetCustomer)
        .await
        .unwrap();
    let begun: Vec<_> = store
        .events_of(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            CustomerEvent::TotpEnrollmentBegun { totp_secret, .. } => Some(totp_secret),
            _ => None,
        })
        .collect();
    assert_eq!(begun, vec![Personal::Forgotten, Personal::Forgotten]);
    assert!(!in_clear(&dump_all_tables(&store).await));
    assert_eq!(
        store.load(id).await.unwrap().customer.pending_totp_secret(),
        None
    );
}

async fn snapshots_are_sealed_and_dropped_on_forget(store: Store) {
    let id = history(&store, "zqxsnap").await;
    assert_eq!(count_rows(&store, "snapshots").await, 1);
    assert!(!dump_all_tables(&store).await.contains("zqxsnap"));
    assert_eq!(
        store.load(id).await.unwrap(),
        store.load_by_replay(id).await.unwrap()
    );
    run(&store, id, CustomerCommand::ForgetCustomer)
        .await
        .unwrap();
    assert_eq!(count_rows(&store, "snapshots").await, 0);
    assert!(store.load(id).await.unwrap().customer.is_forgotten());
}

/// Unlocking with another master key fails clearly; rotating re-wraps the
/// keys so that only the new master key opens them.
async fn master_keys_are_checked_and_rotate(postgres: bool) {
    let (db, store) = fresh_store(postgres, StoreOptions::default()).await;
    let id = history(&store, "zqxrotate").await;
    let (wrong, _) = MasterKey::generate().unwrap();
    let err = Store::connect(db.url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(wrong)
        .await
        .err()
        .expect("the wrong master key is refused");
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err:?}");
    assert!(err.to_string().contains("ACCESS_MASTER_KEY"), "{err}");

    let (new, _) = MasterKey::generate().unwrap();
    let new_id = new.id().to_string();
    assert_eq!(store.rotate_master_key(&new).await.unwrap(), 1);
    let old = Store::connect(db.url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(test_master_key())
        .await;
    assert!(matches!(old, Err(StoreError::WrongMasterKey { .. })));
    let reopened = Store::connect(db.url(), StoreOptions::default())
        .await
        .unwrap()
        .unlock(new)
        .await
        .unwrap();
    assert_eq!(reopened.keyring().unwrap().master_key_id(), new_id);
    let loaded = reopened.load(id).await.unwrap();
    assert_eq!(
        loaded.customer.email().unwrap().as_str(),
        "zqxrotate.second@example.com"
    );
    assert_eq!(
        reopened
            .customers_by_email(&email("zqxrotate.second@example.com"))
            .await
            .unwrap(),
        vec![id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_master_keys_are_checked_and_rotate() {
    master_keys_are_checked_and_rotate(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_master_keys_are_checked_and_rotate() {
    master_keys_are_checked_and_rotate(false).await;
}
