//! Throwaway databases for tests: a fresh PostgreSQL database per test
//! (created on the server named by `ACCESS_TEST_DATABASE_URL`, dropped when
//! the guard drops), or a SQLite file in a temporary directory.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::{Store, StoreError, StoreOptions};

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

    /// A migrated store on this database.
    pub async fn store(&self, options: StoreOptions) -> Result<Store, StoreError> {
        let store = Store::connect(&self.url, options).await?;
        store.migrate().await?;
        Ok(store)
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
