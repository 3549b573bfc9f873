//! Raw SQL on a test store's own pools (to corrupt or forge rows on
//! purpose, and to look at every row). Panics on failure: tests only.

use access_domain::CustomerId;
use sqlx::{PgPool, SqlitePool};

use crate::postgres::Postgres;
use crate::sql::pools_of;
use crate::sqlite::Sqlite;
use crate::Store;

/// The driver's own pools of a test store, for raw SQL.
enum Pools {
    Postgres(PgPool),
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
}

fn pools(store: &Store) -> Pools {
    if let Some(pg) = pools_of::<Postgres>(store.sql()) {
        return Pools::Postgres(pg.writer.clone());
    }
    match pools_of::<Sqlite>(store.sql()) {
        Some(lite) => Pools::Sqlite {
            writer: lite.writer.clone(),
            reader: lite.reader.clone(),
        },
        None => panic!("a store on neither PostgreSQL nor SQLite"),
    }
}

/// The PostgreSQL pool of a test store (`None` on SQLite), for tests that
/// hold PostgreSQL locks or use postgres-es themselves.
pub fn postgres_pool(store: &Store) -> Option<PgPool> {
    pools_of::<Postgres>(store.sql()).map(|p| p.writer.clone())
}

/// The URL of a test store's database (without a password), for tests
/// that start the binaries on it.
pub fn database_url(store: &Store) -> String {
    match pools(store) {
        Pools::Postgres(pool) => {
            let opts = pool.connect_options();
            format!(
                "postgres://{}@{}:{}/{}",
                opts.get_username(),
                opts.get_host(),
                opts.get_port(),
                opts.get_database().unwrap_or_default()
            )
        }
        Pools::Sqlite { writer, .. } => format!(
            "sqlite://{}",
            writer.connect_options().get_filename().display()
        ),
    }
}

/// Runs raw SQL on either database (to corrupt or forge rows on purpose).
/// Panics if it fails.
pub async fn exec_sql(store: &Store, sql: &str) {
    let done = match pools(store) {
        Pools::Postgres(pool) => sqlx::query(sql).execute(&pool).await.map(drop),
        Pools::Sqlite { writer, .. } => sqlx::query(sql).execute(&writer).await.map(drop),
    };
    if let Err(e) = done {
        panic!("{sql}: {e}");
    }
}

/// Every row of every table of the database as text, one line per row
/// prefixed with its table (to search for data that must not be there).
/// Panics on failure.
pub async fn dump_all_tables(store: &Store) -> String {
    use sqlx::Row as _;
    let mut out = String::new();
    match pools(store) {
        Pools::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("listing tables: {e}"));
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
                for row in rows {
                    out.push_str(&format!("{table}: {row}\n"));
                }
            }
        }
        Pools::Sqlite { reader, .. } => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1",
            )
            .fetch_all(&reader)
            .await
            .unwrap_or_else(|e| panic!("listing tables: {e}"));
            for table in tables {
                let columns: Vec<String> =
                    sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(&reader)
                        .await
                        .unwrap_or_else(|e| panic!("columns of {table}: {e}"))
                        .iter()
                        .map(|r| r.get::<String, _>("name"))
                        .collect();
                if columns.is_empty() {
                    continue;
                }
                let expr = columns
                    .iter()
                    .map(|c| format!("coalesce(quote(\"{c}\"), '')"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT {expr} FROM \"{table}\""))
                        .fetch_all(&reader)
                        .await
                        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
                for row in rows {
                    out.push_str(&format!("{table}: {row}\n"));
                }
            }
        }
    }
    out
}

/// The first column of every row `sql` returns, as text (write the
/// column as `CAST(… AS TEXT)` to read JSON on both databases). Panics if
/// it fails.
pub async fn query_texts(store: &Store, sql: &str) -> Vec<String> {
    let rows = match pools(store) {
        Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(&pool).await,
        Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_all(&reader).await,
    };
    rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Inserts one customer as the first sealing scheme (`v1`: associated data
/// the customer id only) wrote it, under [`TEST_MASTER_KEY`]: its key, six
/// events (registered as `zqxold.first@example.com`, name `Ann Zqxold`,
/// access with a setup link, moved to `zqxold.second@example.com` with a
/// notice) and its snapshot at sequence 6, as written by the code before
/// sealed values were bound to their event and field
/// (`tests/fixtures/sealed_v1.tsv`). Returns its id. Panics on failure.
pub async fn insert_sealed_v1_fixture(store: &Store) -> CustomerId {
    let fixture = include_str!("../../tests/fixtures/sealed_v1.tsv");
    let rows: Vec<Vec<&str>> = fixture.lines().map(|l| l.split('\t').collect()).collect();
    let id = rows
        .iter()
        .find(|r| r[0] == "KEY")
        .and_then(|r| r[1].parse::<CustomerId>().ok())
        .unwrap_or_else(|| panic!("the fixture names its customer"));
    // The key first: its row must exist before the events are read.
    for row in rows.iter().filter(|r| r[0] == "KEY") {
        exec_sql(
            store,
            &format!(
                "INSERT INTO customer_keys (customer_id, wrapped_key, created_ms) VALUES ('{id}', '{}', 0)",
                row[2]
            ),
        )
        .await;
    }
    for row in &rows {
        let sql = match row[0] {
            "EV" => format!(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Customer', '{id}', {}, '{}', '{}', '{}', '{}')",
                row[1], row[2], row[3], row[4], row[5]
            ),
            "SNAP" => format!(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
                 VALUES ('Customer', '{id}', {}, 1, '{}')",
                row[1], row[2]
            ),
            _ => continue,
        };
        exec_sql(store, &sql).await;
    }
    id
}

/// The number of rows in `table`. Panics if it cannot be counted.
pub async fn count_rows(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    let counted = match pools(store) {
        Pools::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(&pool).await,
        Pools::Sqlite { reader, .. } => sqlx::query_scalar(&sql).fetch_one(&reader).await,
    };
    counted.unwrap_or_else(|e| panic!("{sql}: {e}"))
}
