//! Helpers for tests: throwaway databases (a fresh PostgreSQL database per
//! test, created on the server named by `ACCESS_TEST_DATABASE_URL` and
//! dropped when the guard drops, or a SQLite file in a temporary
//! directory), commands run with fake services, raw SQL on either store,
//! and [`on_both_stores!`](crate::on_both_stores) to run a test on both.
//!
//! The SQL helpers panic on failure: they are for tests only.

use std::str::FromStr;

use access_domain::services::fakes::services_at;
use access_domain::{
    Actor, ApiRole, CommandMetadata, Credential, CustomerCommand, CustomerId, CustomerServices,
    EmailAddress, Password, Role, Secret,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::{ExecuteError, Executed, Execution, MasterKey, Store, StoreError, StoreOptions};

pub mod memory;
mod raw;

pub use raw::{
    count_rows, database_url, dump_all_tables, exec_sql, insert_sealed_v1_fixture, postgres_pool,
    query_texts,
};

/// The master key of test databases (64 hex characters; tests only).
pub const TEST_MASTER_KEY: &str =
    "7e57000000000000000000000000000000000000000000000000000000007e57";

/// [`TEST_MASTER_KEY`], parsed.
pub fn test_master_key() -> MasterKey {
    match MasterKey::parse(TEST_MASTER_KEY) {
        Ok(key) => key,
        Err(e) => panic!("the test master key: {e}"),
    }
}

/// The server tests may create databases on.
pub fn server_url() -> String {
    std::env::var("ACCESS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists for one test.
pub struct TestDatabase {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { server: String, name: String },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl TestDatabase {
    /// A new, empty PostgreSQL database.
    pub async fn postgres() -> Result<Self, StoreError> {
        let server = server_url();
        let name = format!("access_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnectOptions::from_str(&server)
            .map_err(|e| StoreError::UnsupportedUrl(e.to_string()))?
            .connect()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "test PostgreSQL server {}: {e}",
                    crate::redact_url(&server)
                ))
            })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let url = with_database(&server, &name);
        Ok(Self {
            url,
            cleanup: Cleanup::Postgres { server, name },
        })
    }

    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Database(e.to_string()))?;
        let url = format!("sqlite://{}", dir.path().join("access.db").display());
        Ok(Self {
            url,
            cleanup: Cleanup::Sqlite(dir),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on this database, unlocked with
    /// [`TEST_MASTER_KEY`].
    pub async fn store(&self, options: StoreOptions) -> Result<Store, StoreError> {
        let store = Store::connect(&self.url, options).await?;
        store.migrate().await?;
        store.unlock(test_master_key()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { server, name } = &self.cleanup {
            let server = server.clone();
            let name = name.clone();
            // Drop runs outside any async context we can rely on: use a
            // thread with its own small runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(opts) = PgConnectOptions::from_str(&server) {
                        if let Ok(mut conn) = opts.connect().await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&mut conn)
                            .await;
                            let _ = conn.close().await;
                        }
                    }
                });
            })
            .join();
        }
    }
}

/// Services built from the domain's fakes (fast unsalted hasher, counting
/// tokens), with a clock fixed at `now`.
pub fn fake_services(now: DateTime<Utc>) -> CustomerServices {
    services_at(now)
}

/// The metadata of a command sent by the API caller `name` (a service):
/// request id `req-<name>`, reason `because <name>`.
pub fn api_caller(name: &str) -> CommandMetadata {
    CommandMetadata::new(
        Actor::Api {
            name: name.into(),
            role: ApiRole::Service,
        },
        format!("req-{name}"),
    )
    .with_reason(Some(format!("because {name}")))
}

/// Runs `command` on the customer through [`Store::execute`] as the system
/// actor `test`, with fake services at the current time.
pub async fn run(
    store: &Store,
    customer_id: CustomerId,
    command: CustomerCommand,
) -> Result<Executed, ExecuteError> {
    let metadata = CommandMetadata::new(
        Actor::System {
            name: "test".into(),
        },
        "test",
    );
    run_with(store, customer_id, command, &metadata, Utc::now()).await
}

/// Runs `command` on the customer through [`Store::execute`] with the given
/// metadata, and fake services whose clock says `now`.
pub async fn run_with(
    store: &Store,
    customer_id: CustomerId,
    command: CustomerCommand,
    metadata: &CommandMetadata,
    now: DateTime<Utc>,
) -> Result<Executed, ExecuteError> {
    store
        .execute(
            &fake_services(now),
            Execution {
                customer_id,
                command,
                metadata,
                expected_version: None,
                idempotency: None,
            },
            |_| String::new(),
        )
        .await
}

/// Events in [`sample_history`].
pub const SAMPLE_HISTORY_EVENTS: u64 = 7;

/// A customer with a realistic history of 7 events; returns its id:
/// registered as `c{n}@example.com` (by `crm`), access with a setup link
/// (2 events), moved to `moved{n}@example.com` with a manual password and a
/// notice (3 events, by `erp`), revoked with reason `left`. Panics if a
/// command fails.
pub async fn sample_history(store: &Store, n: usize) -> CustomerId {
    let id = CustomerId::new_random();
    let pw = "correct-Horse-battery-9";
    let email = |s: String| match EmailAddress::parse(&s) {
        Ok(e) => e,
        Err(e) => panic!("{s}: {e}"),
    };
    let password = match Password::parse(pw, &[]) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let steps = [
        (
            "crm",
            CustomerCommand::RegisterCustomer {
                customer_id: id,
                email: email(format!("c{n}@example.com")),
                name: None,
            },
        ),
        (
            "crm",
            CustomerCommand::GrantAccess {
                role: Role::CustomerCenter,
                credential: Credential::SetupLink,
            },
        ),
        (
            "erp",
            CustomerCommand::ChangeEmail {
                email: email(format!("moved{n}@example.com")),
                credential: Credential::ManualPassword {
                    password,
                    password_confirm: Secret::new(pw),
                    send_notification: true,
                },
            },
        ),
        (
            "crm",
            CustomerCommand::RevokeAccess {
                reason: Some("left".into()),
            },
        ),
    ];
    for (actor, command) in steps {
        if let Err(e) = run_with(store, id, command, &api_caller(actor), Utc::now()).await {
            panic!("sample history of customer {n}: {e}");
        }
    }
    id
}

/// A migrated store on a new PostgreSQL database (`postgres`) or a new
/// SQLite file, with the guard that drops the database: keep it for as
/// long as the store is used. Panics if either cannot be had.
#[doc(hidden)]
pub async fn fresh_store(postgres: bool, options: StoreOptions) -> (TestDatabase, Store) {
    let db = if postgres {
        TestDatabase::postgres().await
    } else {
        TestDatabase::sqlite()
    }
    .unwrap_or_else(|e| panic!("a test database: {e}"));
    let store = db
        .store(options)
        .await
        .unwrap_or_else(|e| panic!("a migrated test store on {}: {e}", db.url()));
    (db, store)
}

/// Runs each listed `async fn(Store)` as two tests, `postgres::<name>` on a
/// fresh PostgreSQL database and `sqlite::<name>` on a fresh SQLite file,
/// each given a migrated store with [`StoreOptions::default()`] or, after
/// `with`, the options named:
///
/// ```text
/// access_store::on_both_stores!(
///     append_and_load,
///     snapshots_work with StoreOptions { snapshot_interval: 3, ..StoreOptions::default() },
/// );
/// ```
///
/// Nothing needs importing; the calling crate needs `tokio` (the tests are
/// `#[tokio::test]`s). The options are written as in the calling module.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident $(with $options:expr)?),* $(,)?) => {
        $crate::__tests_on_one_store!(postgres, true, $($name $(with $options)?),*);
        $crate::__tests_on_one_store!(sqlite, false, $($name $(with $options)?),*);
    };
}

/// The tests of [`on_both_stores!`](crate::on_both_stores) on one store:
/// `mod $store { … }`, PostgreSQL when `$postgres`, else SQLite.
#[doc(hidden)]
#[macro_export]
macro_rules! __tests_on_one_store {
    ($store:ident, $postgres:literal, $($name:ident $(with $options:expr)?),*) => {
        mod $store {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let options = $crate::__test_store_options!($($options)?);
                    let (_db, store) = $crate::testing::fresh_store($postgres, options).await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

/// The store options of one test of [`on_both_stores!`](crate::on_both_stores):
/// the default, or the expression given, evaluated with the names of the
/// calling module (the parent of the generated `postgres`/`sqlite`).
#[doc(hidden)]
#[macro_export]
macro_rules! __test_store_options {
    () => {
        $crate::StoreOptions::default()
    };
    ($options:expr) => {{
        #[allow(unused_imports)]
        use super::*;
        $options
    }};
}

/// `server` with its database name replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "x"),
            "postgres://u@h/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
