//! `accessctl rebuild` and `accessctl rebuild --check` on a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use access_domain::{Credential, CustomerCommand, CustomerId, EmailAddress, Role};
use access_store::testing::{exec_sql, run, TestDatabase};
use access_store::{Store, StoreOptions};

fn accessctl(url: &str, args: &[&str]) -> (bool, String) {
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

async fn some_history(store: &Store, customers: usize) {
    for n in 0..customers {
        let id = CustomerId::new_random();
        for command in [
            CustomerCommand::RegisterCustomer {
                customer_id: id,
                email: EmailAddress::parse(&format!("r{n}@example.com")).unwrap(),
                name: None,
            },
            CustomerCommand::GrantAccess {
                role: Role::CustomerCenter,
                credential: Credential::SetupLink,
            },
        ] {
            run(store, id, command).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_and_check_on_both_stores() {
    let pg = TestDatabase::postgres().await.unwrap();
    let lite = TestDatabase::sqlite().unwrap();
    for db in [&pg, &lite] {
        let store = db.store(StoreOptions::default()).await.unwrap();
        some_history(&store, 4).await;
        // Nothing projected yet: the check sees the difference.
        let (ok, text) = accessctl(db.url(), &["rebuild", "--check"]);
        assert!(
            ok,
            "empty live tables at position 0 match an empty rebuild: {text}"
        );
        let (ok, text) = accessctl(db.url(), &["rebuild"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("rebuilt the projections from 12 events"),
            "{text}"
        );
        let (ok, text) = accessctl(db.url(), &["rebuild", "--check"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("access_state") && text.contains("same"),
            "{text}"
        );

        exec_sql(
            &store,
            "UPDATE audit_trail SET reason = 'forged' WHERE position = 2",
        )
        .await;
        let (ok, text) = accessctl(db.url(), &["rebuild", "--check"]);
        assert!(!ok, "{text}");
        assert!(
            text.contains("audit_trail") && text.contains("DIFFERENT"),
            "{text}"
        );
        let (ok, _) = accessctl(db.url(), &["rebuild"]);
        assert!(ok);
        let (ok, text) = accessctl(db.url(), &["rebuild", "--check"]);
        assert!(ok, "{text}");
        // The live projector would continue from the rebuilt checkpoint.
        let projector = access_projections::Projector::spawn(store.clone(), Default::default());
        projector
            .wait_caught_up(Duration::from_secs(10))
            .await
            .unwrap();
    }
}
