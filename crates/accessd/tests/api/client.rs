//! The typed client (`access-client`) against the real service: the
//! notice's story with typed errors, the headers of a command's answer,
//! and the lists that follow cursors (customers, events, mail) while
//! writes happen.

use std::collections::HashMap;

use access_client::{
    ChangeEmailRequest, CommandOptions, CustomerQuery, ErrorCode, GrantAccessRequest, MailQuery,
    ReasonRequest, RegisterRequest,
};
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use crate::helpers::*;

fn register_request(email: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.to_string(),
        name: None,
        customer_id: None,
        reason: None,
    }
}

async fn the_notices_story_through_the_client_with_typed_errors(db: Db) {
    let app = TestApp::spawn(db).await;
    let api = app.api(SERVICE);
    let none = CommandOptions::default();
    let created = api
        .register(&register_request("story@example.com"), &none)
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let id = created.body.customer_id;
    assert_eq!(
        created.location.as_deref(),
        Some(format!("/v1/customers/{id}").as_str())
    );
    assert_eq!(created.version(), Some(1));

    let refused = api
        .grant_access(id, &GrantAccessRequest::default(), &none)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(&ErrorCode::LoginHasNoPassword));
    assert_eq!(refused.status(), Some(422));
    assert_eq!(
        refused.message(),
        Some(format!("story@example.com{NOTICE_TAIL}").as_str())
    );

    let grant = GrantAccessRequest {
        send_notification: Some(true),
        ..Default::default()
    };
    let key = CommandOptions::idempotency_key("grant-story-1");
    let granted = api.grant_access(id, &grant, &key).await.unwrap();
    assert!(!granted.replayed);
    let again = api.grant_access(id, &grant, &key).await.unwrap();
    assert!(again.replayed, "the same key answers the stored answer");
    assert_eq!(again.etag, granted.etag);
    assert_eq!(again.body.version, granted.body.version);

    let change = ChangeEmailRequest {
        email: "story.new@example.org".to_string(),
        password: None,
        password_confirm: None,
        send_notification: Some(true),
        reason: None,
    };
    let stale = api
        .change_email(id, &change, &CommandOptions::if_match(1))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some(&ErrorCode::VersionMismatch));
    let changed = api
        .change_email(id, &change, &CommandOptions::if_match(granted.body.version))
        .await
        .unwrap();
    api.revoke_access(
        id,
        &ReasonRequest {
            reason: Some("contract ended".to_string()),
        },
        &CommandOptions::if_match(changed.body.version),
    )
    .await
    .unwrap();

    let now = app.api(AUDITOR).customer(id).await.unwrap();
    assert_eq!(now.body.email, "story.new@example.org");
    assert!(!now.body.access.granted);
    assert_eq!(now.version(), Some(now.body.version));

    // An unknown customer, and a code this client does not know yet.
    let missing = app.api(AUDITOR).customer(Uuid::new_v4()).await.unwrap_err();
    assert_eq!(missing.code(), Some(&ErrorCode::CustomerNotFound));
    assert_eq!(
        ErrorCode::parse("a_future_code"),
        ErrorCode::Other("a_future_code".to_string())
    );
}

async fn the_customer_list_skips_nobody_while_customers_change_between_pages(db: Db) {
    let app = TestApp::spawn(db).await;
    let api = app.api(SERVICE);
    let none = CommandOptions::default();
    let mut ids = Vec::new();
    for n in 0..7 {
        let reply = api
            .register(&register_request(&format!("list{n}@example.com")), &none)
            .await
            .unwrap();
        ids.push(reply.body.customer_id);
    }
    let reader = app.api(AUDITOR);
    let query = CustomerQuery {
        page_size: Some(3),
        ..Default::default()
    };

    // The first page, then writes: one customer of that page changes, one
    // customer of a later page changes, a new customer registers.
    let first = reader.customers_page(&query, None).await.unwrap();
    assert_eq!(first.customers.len(), 3);
    let seen_first: Vec<Uuid> = first.customers.iter().map(|c| c.customer_id).collect();
    assert_eq!(seen_first, ids[..3], "in the order of their last change");
    let cursor = first.next_cursor.clone().expect("more pages");
    let grant = GrantAccessRequest {
        send_notification: Some(true),
        ..Default::default()
    };
    let v0 = api
        .grant_access(ids[0], &grant, &none)
        .await
        .unwrap()
        .body
        .version;
    let v5 = api
        .grant_access(ids[5], &grant, &none)
        .await
        .unwrap()
        .body
        .version;
    let late = api
        .register(&register_request("late@example.com"), &none)
        .await
        .unwrap()
        .body
        .customer_id;

    let mut rest = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = reader.customers_page(&query, Some(&cursor)).await.unwrap();
        assert!(page.customers.len() <= 3);
        rest.extend(page.customers);
        next = page.next_cursor;
    }
    let mut newest: HashMap<Uuid, u64> = HashMap::new();
    for c in first.customers.iter().chain(rest.iter()) {
        let v = newest.entry(c.customer_id).or_default();
        *v = (*v).max(c.version);
    }
    for id in ids.iter().chain([&late]) {
        assert!(newest.contains_key(id), "customer {id} was skipped");
    }
    assert_eq!(newest[&ids[0]], v0, "a changed customer shows again, newer");
    assert_eq!(newest[&ids[5]], v5);
    let ids_in_rest: Vec<Uuid> = rest.iter().map(|c| c.customer_id).collect();
    assert_eq!(
        ids_in_rest.iter().filter(|id| **id == ids[5]).count(),
        1,
        "a customer not yet seen shows once, with its newest state"
    );

    // The stream follows the cursors: every customer, filters applied.
    let all: Vec<_> = reader.customers(query.clone()).try_collect().await.unwrap();
    assert_eq!(all.len(), 8);
    let with_access: Vec<Uuid> = reader
        .customers(CustomerQuery {
            has_access: Some(true),
            page_size: Some(1),
            ..Default::default()
        })
        .map_ok(|c| c.customer_id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(with_access, vec![ids[0], ids[5]]);
    let without: Vec<_> = reader
        .customers(CustomerQuery {
            has_access: Some(false),
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(without.len(), 6);
    let future = chrono::Utc::now() + chrono::Duration::days(1);
    let none_since: Vec<_> = reader
        .customers(CustomerQuery {
            updated_since: Some(future),
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert!(none_since.is_empty());

    // A reconciling service resumes where its last pass ended: only what
    // changed since.
    let pass = reader
        .customers_page(&CustomerQuery::default(), None)
        .await
        .unwrap();
    let resume = pass.resume_cursor.expect("a place to resume from");
    api.revoke_access(ids[0], &ReasonRequest::default(), &none)
        .await
        .unwrap();
    let since = reader
        .customers_page(
            &CustomerQuery {
                cursor: Some(resume.clone()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let changed: Vec<Uuid> = since.customers.iter().map(|c| c.customer_id).collect();
    assert_eq!(changed, vec![ids[0]]);
    assert_ne!(since.resume_cursor, Some(resume));

    // The email lookup still answers on the same path.
    let found = reader.find_by_email("list3@example.com").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].customer_id, ids[3]);
}

async fn bad_list_parameters_are_refused_naming_the_parameter(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("params@example.com").await;
    for (path, name) in [
        ("/v1/customers?cursor=nope", "`cursor`"),
        ("/v1/customers?limit=0", "`limit`"),
        ("/v1/customers?limit=1001", "`limit`"),
        ("/v1/customers?limit=ten", "`limit`"),
        ("/v1/customers?has_access=maybe", "`has_access`"),
        ("/v1/customers?updated_since=yesterday", "`updated_since`"),
        ("/v1/customers?email=a@example.com&limit=5", "`email`"),
        (&format!("/v1/customers/{id}/events?cursor=x"), "`cursor`"),
        (&format!("/v1/customers/{id}/events?limit=0"), "`limit`"),
        ("/v1/mail?cursor=nocolon", "`cursor`"),
        ("/v1/mail?limit=-1", "`limit`"),
    ] {
        let key = if path.starts_with("/v1/mail") {
            ADMIN
        } else {
            AUDITOR
        };
        let answer = app
            .get(path, key)
            .await
            .expect_error(400, "malformed_request");
        assert!(answer.message().contains(name), "{path}: {}", answer.body);
    }
}

async fn events_and_mail_pages_follow_their_cursors(db: Db) {
    let app = TestApp::spawn(db).await;
    let api = app.api(SERVICE);
    let id: Uuid = app.register("pages@example.com").await.parse().unwrap();
    let none = CommandOptions::default();
    let grant = GrantAccessRequest {
        send_notification: Some(true),
        ..Default::default()
    };
    api.grant_access(id, &grant, &none).await.unwrap();
    for _ in 0..2 {
        api.send_access_notification(id, &ReasonRequest::default(), &none)
            .await
            .unwrap();
    }
    let reader = app.api(AUDITOR);
    let whole = reader.events_page(id, None, None).await.unwrap();
    assert!(whole.next_cursor.is_none());
    let paged: Vec<_> = reader.events(id, Some(2)).try_collect().await.unwrap();
    assert_eq!(paged.len(), whole.events.len());
    let sequences: Vec<u64> = paged.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=whole.events.len() as u64).collect::<Vec<_>>()
    );
    let first = reader.events_page(id, Some(2), None).await.unwrap();
    assert_eq!(first.events.len(), 2);
    assert_eq!(first.next_cursor.as_deref(), Some("2"));

    app.wait_for_mails_to("pages@example.com", 3).await;
    let admin = app.api(ADMIN);
    let one_by_one: Vec<_> = admin
        .mail(MailQuery {
            page_size: Some(1),
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    let at_once = admin.mail_page(&MailQuery::default(), None).await.unwrap();
    assert!(at_once.next_cursor.is_none());
    let ids = |v: &[access_client::MailView]| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&one_by_one), ids(&at_once.messages));
    assert_eq!(one_by_one.len(), 3);
    // The stream stops at the first error, with the typed error.
    let mut forbidden = app.api(SERVICE).mail(MailQuery::default());
    let error = forbidden.next().await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(&ErrorCode::Forbidden));
    assert!(forbidden.next().await.is_none());
}

async fn metrics_carry_process_and_build_info_and_one_outcome_label(db: Db) {
    let app = TestApp::spawn(db).await;
    app.register("metrics@example.com").await;
    let (status, _, text) = app.get_text("/metrics", ADMIN).await;
    assert_eq!(status, 200);
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "access_build_info{version=\"0.1.0\",commit=\"",
        "access_commands_total{command=\"register_customer\",outcome=\"ok\"}",
    ] {
        assert!(text.contains(name), "no {name} in\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("kind=\"hit\"") && !line.contains("kind=\"miss\""),
            "{line}"
        );
    }
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1_000_000.0, "resident memory {rss}");
}

crate::on_both_stores!(
    the_notices_story_through_the_client_with_typed_errors,
    the_customer_list_skips_nobody_while_customers_change_between_pages,
    bad_list_parameters_are_refused_naming_the_parameter,
    events_and_mail_pages_follow_their_cursors,
    metrics_carry_process_and_build_info_and_one_outcome_label,
);
