//! The mail outbox on both stores: written with the events or not at all,
//! claimed with a lease, cleared when sent, retried, failed, queued again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::{Customer, CustomerCommand, CustomerId, EmailAddress};
use access_store::prelude::*;
use access_store::testing::{api_caller, count_rows, dump_all_tables, exec_sql, run};
use access_store::{Append, OutboxMessage, Store, StoreError};

fn mail(id: &str, customer_id: CustomerId) -> OutboxMessage {
    OutboxMessage {
        id: id.into(),
        customer_id,
        kind: "access_notice".into(),
        sender: "no-reply@localhost".into(),
        recipient: "ann@example.com".into(),
        message: "Subject: hi\r\n\r\nhttp://x/setup-password?token=secret".into(),
    }
}

async fn register(
    store: &Store,
    id: CustomerId,
    outbox: &[OutboxMessage],
) -> Result<(), StoreError> {
    let events = Customer::default()
        .decide(
            CustomerCommand::RegisterCustomer {
                customer_id: id,
                email: EmailAddress::parse("ann@example.com").unwrap(),
                name: None,
            },
            &access_store::testing::fake_services(chrono::Utc::now()),
        )
        .await
        .unwrap()
        .events;
    let after = access_store::Loaded::from_events(events.clone()).customer;
    store
        .append_with_outbox(
            Append {
                customer_id: id,
                expected_version: 0,
                events: &events,
                metadata: &api_caller("crm"),
                before: &Customer::default(),
                after: &after,
                idempotency: None,
            },
            outbox,
        )
        .await
        .map(|_| ())
}

async fn messages_commit_with_the_events_and_live_through_delivery(store: Store) {
    let id = CustomerId::new_random();
    register(&store, id, &[mail("a", id), mail("b", id)])
        .await
        .unwrap();
    // A refused append writes no mail either.
    let err = register(&store, id, &[mail("c", id)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(count_rows(&store, "mail_outbox").await, 2);

    let now = chrono::Utc::now().timestamp_millis() + 1_000;
    let claimed = store.outbox_claim(now, 60_000, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // Leased: a second worker gets nothing until the lease runs out.
    assert!(store
        .outbox_claim(now + 1, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .outbox_claim(now + 60_001, 60_000, 10)
            .await
            .unwrap()
            .len(),
        2
    );

    store.outbox_sent("a", now + 2).await.unwrap();
    store
        .outbox_retry_later("b", now + 5_000, "connection refused")
        .await
        .unwrap();
    let sent = store.outbox_list(Some("sent"), 10).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].message.is_none(),
        "the link must be cleared once sent"
    );
    let pending = store.outbox_list(Some("pending"), 10).await.unwrap();
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].last_error.as_deref(), Some("connection refused"));

    store.outbox_failed("b", "gave up").await.unwrap();
    assert!(
        !store.outbox_requeue("a", now).await.unwrap(),
        "a sent message is not requeued"
    );
    assert!(store.outbox_requeue("b", now).await.unwrap());
    let again = store.outbox_claim(now + 200_000, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0);
    assert!(again[0]
        .message
        .as_deref()
        .unwrap()
        .contains("token=secret"));
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(
        counts,
        vec![("pending".to_string(), 1), ("sent".to_string(), 1)]
    );
}

async fn queued_mail_is_sealed_and_opens_only_while_the_customer_is_known(store: Store) {
    let id = CustomerId::new_random();
    register(&store, id, &[mail("a", id)]).await.unwrap();
    // The link is stored only sealed with the customer's key.
    let dump = dump_all_tables(&store).await;
    assert!(dump.contains("mail_outbox"), "{dump}");
    assert!(!dump.contains("token=secret"), "{dump}");
    assert!(!dump.contains("Subject: hi"), "{dump}");
    // The worker gets it opened.
    let now = chrono::Utc::now().timestamp_millis() + 1_000;
    let claimed = store.outbox_claim(now, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message, Some(mail("a", id).message));
    store.outbox_retry_later("a", now, "later").await.unwrap();

    // The key is destroyed while the mail is queued (a forget by a replica
    // that did not cancel it): the mail fails cleanly, without its content.
    exec_sql(
        &store,
        &format!("UPDATE customer_keys SET wrapped_key = NULL, destroyed_ms = 1 WHERE customer_id = '{id}'"),
    )
    .await;
    assert!(store
        .outbox_claim(now + 1, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let failed = store.outbox_list(Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].message, None);
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("forgotten"),
        "{:?}",
        failed[0].last_error
    );

    // A message moved to another row does not open: failed, never sent.
    let moved = CustomerId::new_random();
    register(&store, moved, &[mail("c", moved), mail("d", moved)])
        .await
        .unwrap();
    exec_sql(
        &store,
        "UPDATE mail_outbox SET message = (SELECT message FROM mail_outbox WHERE id = 'c') WHERE id = 'd'",
    )
    .await;
    let claimed = store.outbox_claim(now + 2, 60_000, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    let failed = store.outbox_list(Some("failed"), 10).await.unwrap();
    let d = failed.iter().find(|e| e.id == "d").unwrap();
    assert!(
        d.last_error.as_deref().unwrap().contains("does not open"),
        "{:?}",
        d.last_error
    );
    store.outbox_sent("c", now + 3).await.unwrap();

    // A forget cancels the queued mail of its customer.
    let other = CustomerId::new_random();
    register(&store, other, &[mail("b", other)]).await.unwrap();
    run(&store, other, CustomerCommand::ForgetCustomer)
        .await
        .unwrap();
    assert!(store
        .outbox_claim(now + 4, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.outbox_list(Some("failed"), 10).await.unwrap().len(),
        3
    );
}

access_store::on_both_stores!(
    messages_commit_with_the_events_and_live_through_delivery,
    queued_mail_is_sealed_and_opens_only_while_the_customer_is_known,
);

#[test]
fn debug_output_shows_neither_the_message_nor_the_addresses() {
    let message = mail("a", CustomerId::new_random());
    let entry = access_store::OutboxEntry {
        id: "a".into(),
        customer_id: message.customer_id.to_string(),
        kind: message.kind.clone(),
        sender: message.sender.clone(),
        recipient: message.recipient.clone(),
        message: Some(message.message.clone()),
        status: "pending".into(),
        attempts: 2,
        next_attempt_ms: 0,
        last_error: Some("timeout".into()),
        created_ms: 0,
        sent_ms: None,
    };
    for shown in [format!("{message:?}"), format!("{entry:?}")] {
        assert!(shown.contains("access_notice"), "{shown}");
        for hidden in ["token=secret", "ann@example.com", "no-reply@localhost"] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }
    assert!(format!("{entry:?}").contains("timeout"));
}
