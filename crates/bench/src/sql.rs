//! Raw SQL on a benchmark database (counting rows, the server's version),
//! through a connection pool of the benchmark's own opened from the
//! database's URL: the store's pools stay its own business.

use anyhow::{Context, Result};
use sqlx::pool::PoolOptions;
use sqlx::{Database, PgPool, Pool, SqlitePool};

/// A small pool on a PostgreSQL or SQLite database.
pub enum Sql {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Sql {
    /// Connects to `url` (`postgres://…` or `sqlite://…`, as the store
    /// takes them); the database must exist.
    pub async fn open(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(one_connection(url).await?))
        } else {
            Ok(Self::Postgres(one_connection(url).await?))
        }
    }

    /// The one integer `sql` selects, as a count.
    pub async fn count(&self, sql: &str) -> Result<u64> {
        let n = match self {
            Sql::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Sql::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        }
        .with_context(|| sql.to_string())?;
        u64::try_from(n).with_context(|| format!("{sql}: {n}"))
    }

    /// The database server's version, or "unknown (why)".
    pub async fn version(&self) -> String {
        let result = match self {
            Sql::Postgres(pool) => {
                sqlx::query_scalar::<_, String>("SHOW server_version")
                    .fetch_one(pool)
                    .await
            }
            Sql::Sqlite(pool) => {
                sqlx::query_scalar::<_, String>("SELECT sqlite_version()")
                    .fetch_one(pool)
                    .await
            }
        };
        result.unwrap_or_else(|e| format!("unknown ({e})"))
    }

    pub async fn close(self) {
        match self {
            Sql::Postgres(pool) => pool.close().await,
            Sql::Sqlite(pool) => pool.close().await,
        }
    }
}

/// A pool of one connection to `url`.
async fn one_connection<DB: Database>(url: &str) -> Result<Pool<DB>> {
    PoolOptions::<DB>::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| format!("connect to {}", access_store::redact_url(url)))
}
