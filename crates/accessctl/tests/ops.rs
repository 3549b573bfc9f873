//! `accessctl audit who-had-access` and `accessctl mail list|retry`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::process::Command;

use access_domain::{Credential, CustomerCommand, CustomerId, EmailAddress, Role};
use access_store::testing::{exec_sql, run};
use access_store::{OutboxMessage, Store};

fn accessctl(store: &Store, args: &[&str]) -> (bool, String) {
    let url = access_store::testing::database_url(store);
    let out = Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(args)
        .env("ACCESS_DATABASE_URL", url)
        .env("ACCESS_MASTER_KEY", access_store::testing::TEST_MASTER_KEY)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn who_had_access_and_the_mail_queue(store: Store) {
    let id = CustomerId::new_random();
    run(
        &store,
        id,
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: EmailAddress::parse("who@example.com").unwrap(),
            name: None,
        },
    )
    .await
    .unwrap();
    run(
        &store,
        id,
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
    )
    .await
    .unwrap();
    let (ok, text) = accessctl(&store, &["audit", "who-had-access", "--at", "2999-01-01"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("1 customer(s)") && text.contains("who@example.com"),
        "{text}"
    );
    let (ok, text) = accessctl(
        &store,
        &["audit", "who-had-access", "--at", "2000-01-01T00:00:00Z"],
    );
    assert!(ok && text.contains("0 customer(s)"), "{text}");
    let (ok, text) = accessctl(&store, &["audit", "who-had-access", "--at", "yesterday"]);
    assert!(!ok && text.contains("not an RFC 3339 time"), "{text}");

    // A failed message in the queue: listed, then queued again.
    let before = access_domain::Customer::default();
    store
        .append_with_outbox(
            access_store::Append {
                customer_id: id,
                expected_version: 3,
                events: &[],
                metadata: &access_store::testing::api_caller("crm"),
                before: &before,
                after: &before,
                idempotency: None,
            },
            &[OutboxMessage {
                id: "m1".into(),
                customer_id: id,
                kind: "access_notice".into(),
                sender: "no-reply@localhost".into(),
                recipient: "who@example.com".into(),
                message: "Subject: hi\r\n\r\nbody".into(),
            }],
        )
        .await
        .unwrap();
    exec_sql(&store, "UPDATE mail_outbox SET status = 'failed', last_error = 'connection refused' WHERE id = 'm1'").await;
    let (ok, text) = accessctl(&store, &["mail", "list", "--failed"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("m1") && text.contains("connection refused"),
        "{text}"
    );
    let (ok, text) = accessctl(&store, &["mail", "retry", "m1"]);
    assert!(ok, "{text}");
    let (ok, text) = accessctl(&store, &["mail", "list", "--status", "pending"]);
    assert!(ok && text.contains("m1"), "{text}");
    let (ok, text) = accessctl(&store, &["mail", "retry", "m1"]);
    assert!(!ok && text.contains("no failed message"), "{text}");
}

async fn forget_and_the_master_key_from_the_command_line(store: Store) {
    let id = access_store::testing::sample_history(&store, 7).await;
    let (ok, text) = accessctl(&store, &["forget", &id.to_string(), "--reason", " "]);
    assert!(!ok && text.contains("--reason"), "{text}");
    let (ok, text) = accessctl(&store, &["forget", "not-an-id", "--reason", "gdpr"]);
    assert!(!ok && text.contains("not a customer id"), "{text}");
    let (ok, text) = accessctl(
        &store,
        &["forget", &id.to_string(), "--reason", "erasure request 12"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("forgotten"), "{text}");
    assert!(store.load(id).await.unwrap().customer.is_forgotten());
    let (ok, text) = accessctl(&store, &["forget", &id.to_string(), "--reason", "again"]);
    assert!(!ok && text.contains("forgotten"), "{text}");

    // A new master key: generated, rotated to; the old one no longer opens.
    access_store::testing::sample_history(&store, 8).await;
    let (ok, key) = accessctl(&store, &["keys", "generate"]);
    assert!(ok && key.trim().len() == 64, "{key}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.key");
    std::fs::write(&file, key.trim()).unwrap();
    let (ok, text) = accessctl(
        &store,
        &[
            "keys",
            "rotate-master",
            "--new-key-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("re-wrapped 1 customer key"), "{text}");
    let (ok, text) = accessctl(&store, &["audit", "who-had-access", "--at", "2099-01-01"]);
    assert!(!ok && text.contains("master key"), "{text}");
}

/// `accessctl keys seal-legacy` re-seals data sealed under the first
/// scheme (bound to the customer only) under the current one, and restarts
/// the hash chain.
async fn seal_legacy_reseals_data_of_the_first_scheme(store: Store) {
    let id = access_store::testing::insert_sealed_v1_fixture(&store).await;
    let (ok, text) = accessctl(&store, &["keys", "seal-legacy"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "sealed the personal data of 4 event(s) of 1 customer(s) under the current scheme"
        ),
        "{text}"
    );
    let dump = access_store::testing::dump_all_tables(&store).await;
    assert!(!dump.contains("\"v1."), "{dump}");
    assert_eq!(
        store
            .load(id)
            .await
            .unwrap()
            .customer
            .email()
            .unwrap()
            .as_str(),
        "zqxold.second@example.com"
    );
    let (ok, text) = accessctl(&store, &["keys", "seal-legacy"]);
    assert!(ok && text.contains("nothing else changed"), "{text}");
}

access_store::on_both_stores!(
    who_had_access_and_the_mail_queue,
    forget_and_the_master_key_from_the_command_line,
    seal_legacy_reseals_data_of_the_first_scheme,
);
