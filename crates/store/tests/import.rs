//! Bulk import on both stores: derived ids under the store's key, the
//! external id sealed and its blind index erased by a forget, the dry run
//! answering what the real run does, and the batched path (every new
//! customer once, in the global order; a refused line leaves nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::{
    Actor, CommandMetadata, CustomerCommand, CustomerEvent, CustomerServices, ImportSource,
    Personal,
};
use access_store::import::{self, ImportRow, PendingRow, RowResult, RowStatus};
use access_store::prelude::*;
use access_store::sql::Query;
use access_store::testing::{dump_all_tables, exec_sql, fake_services, fresh_store, run_with};
use access_store::{OutboxInput, OutboxMessage, Position, Store, StoreOptions};
use chrono::Utc;

fn source() -> ImportSource {
    ImportSource::parse("old-portal").unwrap()
}

fn meta(line: u64) -> CommandMetadata {
    CommandMetadata::new(
        Actor::System {
            name: "accessctl".into(),
        },
        format!("import-test-line-{line}"),
    )
}

fn no_mail(_: &OutboxInput<'_>) -> Result<Vec<OutboxMessage>, String> {
    Ok(Vec::new())
}

fn row(email: &str, external_id: Option<&str>) -> ImportRow {
    ImportRow {
        email: Some(email.to_string()),
        name: Some("Imported Person".to_string()),
        external_id: external_id.map(str::to_string),
        access: Some("customer_center".to_string()),
        password_hash: Some("fake:imported-password".to_string()),
        ..ImportRow::default()
    }
}

fn pending(store: &Store, rows: &[ImportRow]) -> Vec<PendingRow> {
    rows.iter()
        .zip(1u64..)
        .map(|(r, line)| PendingRow {
            line,
            import: import::parse_row(r, &source(), store.keyring().unwrap()).unwrap(),
            metadata: meta(line),
        })
        .collect()
}

async fn batch(store: &Store, rows: &[ImportRow], dry_run: bool) -> Vec<RowResult> {
    let services: CustomerServices = fake_services(Utc::now());
    store
        .import_batch(&services, &pending(store, rows), dry_run, &no_mail)
        .await
        .unwrap()
}

fn statuses(results: &[RowResult]) -> Vec<RowStatus> {
    results.iter().map(|r| r.status.clone()).collect()
}

fn codes(results: &[RowResult]) -> Vec<Option<String>> {
    results
        .iter()
        .map(|r| r.error.as_ref().map(|e| e.code.clone()))
        .collect()
}

async fn raw_events(store: &Store) -> String {
    let q = Query::new(format!(
        "SELECT payload{} AS p FROM events ORDER BY global_position",
        store.sql().sql().json_as_text
    ));
    let rows = store.sql().read(&q).await.unwrap();
    rows.iter()
        .map(|r| r.text("p").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn count(store: &Store, table: &str) -> i64 {
    let q = Query::new(format!("SELECT count(*) AS n FROM {table}"));
    store.sql().read(&q).await.unwrap()[0].int("n").unwrap()
}

/// 1a: an imported customer's id is not an unkeyed digest of its email
/// or external id: it takes the store's own key (another database derives
/// other ids from the same row), and the same row from the same source
/// always lands on the same customer.
async fn derived_customer_ids_need_the_stores_key(store: Store) {
    let (_other_db, other) = fresh_store(false, StoreOptions::default()).await;
    for r in [
        row("ann@example.com", None),
        row("bob@example.com", Some("crm-1")),
    ] {
        let id = |s: &Store, source: &ImportSource| {
            import::parse_row(&r, source, s.keyring().unwrap())
                .unwrap()
                .customer_id
        };
        assert_eq!(id(&store, &source()), id(&store, &source()));
        assert_ne!(id(&store, &source()), id(&other, &source()));
        let elsewhere = ImportSource::parse("another-system").unwrap();
        assert_ne!(id(&store, &source()), id(&store, &elsewhere));
    }
}

/// 1b: the old system's id is personal: sealed in the event like the
/// email, kept only as a keyed blind index, and both gone with a forget.
async fn a_forget_erases_the_external_id(store: Store) {
    let results = batch(&store, &[row("carl@example.com", Some("crm-4711"))], false).await;
    assert_eq!(statuses(&results), vec![RowStatus::Imported]);
    let id = results[0].customer_id.unwrap();
    let raw = raw_events(&store).await;
    assert!(raw.contains("CustomerImported"), "{raw}");
    assert!(!raw.contains("crm-4711") && !raw.contains("carl"), "{raw}");
    assert_eq!(count(&store, "import_external_ids").await, 1);
    let q = Query::new("SELECT external_key FROM import_external_ids");
    let key = store.sql().read(&q).await.unwrap()[0]
        .text("external_key")
        .unwrap();
    assert!(!key.contains("crm-4711"));

    run_with(
        &store,
        id,
        CustomerCommand::ForgetCustomer,
        &meta(9),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(count(&store, "import_external_ids").await, 0);
    let events = store.events_of(id).await.unwrap();
    let CustomerEvent::CustomerImported { external_id, .. } = &events[0].event else {
        panic!("{:?}", events[0].event);
    };
    assert_eq!(external_id, &Some(Personal::Forgotten));
}

/// 1c: a dry run answers what the real run then does, email_in_use
/// against the store and repeated customers included; it writes nothing.
async fn a_dry_run_reports_exactly_what_a_real_run_would(store: Store) {
    let first = batch(&store, &[row("dana@example.com", Some("crm-1"))], false).await;
    assert_eq!(statuses(&first), vec![RowStatus::Imported]);
    let events = store.count_events().await.unwrap();
    let mut same_id_other_email = row("erin@example.com", Some("crm-2"));
    let file = vec![
        // Already there, the same: unchanged.
        row("dana@example.com", Some("crm-1")),
        // Another customer with a login email of the store.
        row("DANA@example.com", Some("crm-9")),
        // New.
        row("erin@example.com", Some("crm-2")),
        // The same external id again with other content: a conflict.
        {
            same_id_other_email.email = Some("erin2@example.com".into());
            same_id_other_email
        },
        // The same again: unchanged.
        row("erin@example.com", Some("crm-2")),
    ];
    let dry = batch(&store, &file, true).await;
    assert_eq!(store.count_events().await.unwrap(), events);
    let real = batch(&store, &file, false).await;
    assert_eq!(
        statuses(&real),
        vec![
            RowStatus::Unchanged,
            RowStatus::Refused,
            RowStatus::Imported,
            RowStatus::Conflict,
            RowStatus::Unchanged
        ]
    );
    assert_eq!(codes(&real)[1].as_deref(), Some("email_in_use"));
    let expected: Vec<_> = statuses(&real)
        .into_iter()
        .map(|s| match s {
            RowStatus::Imported => RowStatus::WouldImport,
            other => other,
        })
        .collect();
    assert_eq!(statuses(&dry), expected);
    assert_eq!(codes(&dry), codes(&real));
}

/// 2: many new customers in one batch: each imported once, every event in
/// the feed in order, nothing written twice by a re-run, an external id
/// of another customer a conflict (also with a customer id of its own),
/// and two lines competing for one login email: the second refused and
/// nothing of it written.
async fn a_batch_writes_each_new_customer_once_and_refuses_per_line(store: Store) {
    let rows: Vec<_> = (0..300)
        .map(|n| row(&format!("bulk{n}@example.com"), Some(&format!("b-{n}"))))
        .collect();
    let results = batch(&store, &rows, false).await;
    assert!(results.iter().all(|r| r.status == RowStatus::Imported));
    assert_eq!(
        results.iter().map(|r| r.line).collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    // The feed shows an event once no older transaction can still commit
    // (on a shared PostgreSQL server other databases' transactions count).
    let mut feed = Vec::new();
    for _ in 0..200 {
        feed = store.read_feed(Position::START, 1000).await.unwrap();
        if feed.len() == 300 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(feed.len(), 300);
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(count(&store, "login_emails").await, 300);
    assert_eq!(count(&store, "customer_keys").await, 300);
    let (_, loaded) = store
        .load_login("bulk7@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.customer.has_access());

    let again = batch(&store, &rows, false).await;
    assert!(again.iter().all(|r| r.status == RowStatus::Unchanged));
    assert_eq!(store.count_events().await.unwrap(), 300);

    let mut own_id = row("fay@example.com", Some("b-3"));
    own_id.customer_id = Some("0b4c3a6e-3d1f-4a51-9a0d-5d1f3c2b1a00".into());
    let competing = vec![
        own_id,
        row("gus@example.com", Some("g-1")),
        row("Gus@Example.com", Some("g-2")),
    ];
    let results = batch(&store, &competing, false).await;
    assert_eq!(
        statuses(&results),
        vec![RowStatus::Conflict, RowStatus::Imported, RowStatus::Refused]
    );
    assert_eq!(codes(&results)[2].as_deref(), Some("email_in_use"));
    assert_eq!(store.count_events().await.unwrap(), 301);
    assert_eq!(count(&store, "import_external_ids").await, 301);
}

/// 3: a row the batch cannot write goes through the command path, one
/// customer per transaction; that transaction holds its external id's
/// index row too: the row is there after the import, and a failure of
/// its write leaves neither the customer's events nor the index row (a
/// crash in between would leave a customer a re-run imports again).
async fn a_row_imported_one_by_one_writes_its_external_id_in_the_same_transaction(store: Store) {
    // Two lines competing for one login email: the batch's transaction
    // fails, and each row goes the one-at-a-time way.
    let competing = vec![
        row("hal@example.com", Some("h-1")),
        row("Hal@Example.com", Some("h-2")),
    ];
    let results = batch(&store, &competing, false).await;
    assert_eq!(
        statuses(&results),
        vec![RowStatus::Imported, RowStatus::Refused]
    );
    let q = Query::new("SELECT customer_id FROM import_external_ids");
    let holders = store.sql().read(&q).await.unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(
        holders[0].text("customer_id").unwrap(),
        results[0].customer_id.unwrap().to_string()
    );
    let events = store.count_events().await.unwrap();
    assert_eq!(events, 1);

    // The index row cannot be written (the batch fails, then the row's
    // own transaction): nothing of the customer is left.
    if store.sql().kind() == "postgres" {
        exec_sql(
            &store,
            "CREATE FUNCTION refuse_external_id() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        )
        .await;
        exec_sql(
            &store,
            "CREATE TRIGGER refuse_external_id BEFORE INSERT ON import_external_ids \
             FOR EACH ROW EXECUTE FUNCTION refuse_external_id()",
        )
        .await;
    } else {
        exec_sql(
            &store,
            "CREATE TRIGGER refuse_external_id BEFORE INSERT ON import_external_ids \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .await;
    }
    let services: CustomerServices = fake_services(Utc::now());
    let failed = store
        .import_batch(
            &services,
            &pending(&store, &[row("ida@example.com", Some("i-1"))]),
            false,
            &no_mail,
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(store.count_events().await.unwrap(), events);
    assert_eq!(count(&store, "import_external_ids").await, 1);
    assert_eq!(count(&store, "customer_emails").await, 1);
    assert!(store.load_login("ida@example.com").await.unwrap().is_none());
}

/// 4: running a file again writes nothing: every line already imported
/// is decided in its batch on its customer's events, `unchanged`, and a
/// line with other content a `conflict`; afterwards the database is the
/// same row for row, and a dry run answers the same.
async fn a_re_run_writes_nothing_and_reports_every_row_unchanged(store: Store) {
    re_run_writes_nothing(store, 0).await;
}

/// 4b: the same for customers whose state has a snapshot (every append
/// writes one here): the re-run's answer is the events'.
async fn a_re_run_of_customers_with_snapshots_writes_nothing(store: Store) {
    re_run_writes_nothing(store, 40).await;
}

async fn re_run_writes_nothing(store: Store, snapshots: i64) {
    let rows: Vec<_> = (0..40)
        .map(|n| row(&format!("again{n}@example.com"), Some(&format!("a-{n}"))))
        .collect();
    let first = batch(&store, &rows, false).await;
    assert!(first.iter().all(|r| r.status == RowStatus::Imported));
    assert_eq!(count(&store, "snapshots").await, snapshots);
    let before = dump_all_tables(&store).await;

    let dry = batch(&store, &rows, true).await;
    assert!(dry.iter().all(|r| r.status == RowStatus::Unchanged));
    let again = batch(&store, &rows, false).await;
    assert!(again.iter().all(|r| r.status == RowStatus::Unchanged));
    let mut changed = rows.clone();
    changed[7].name = Some("Somebody Else".to_string());
    let results = batch(&store, &changed, false).await;
    let mut expected = vec![RowStatus::Unchanged; 40];
    expected[7] = RowStatus::Conflict;
    assert_eq!(statuses(&results), expected);
    assert_eq!(dump_all_tables(&store).await, before);
}

access_store::on_both_stores!(
    derived_customer_ids_need_the_stores_key,
    a_forget_erases_the_external_id,
    a_dry_run_reports_exactly_what_a_real_run_would,
    a_batch_writes_each_new_customer_once_and_refuses_per_line,
    a_row_imported_one_by_one_writes_its_external_id_in_the_same_transaction,
    a_re_run_writes_nothing_and_reports_every_row_unchanged,
    a_re_run_of_customers_with_snapshots_writes_nothing with StoreOptions { snapshot_interval: 1, ..StoreOptions::default() },
);
