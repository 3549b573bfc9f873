//! The soft lock's state per account, in the database so every replica
//! sees the same count: one row per account (its key is an HMAC of the
//! account's name, never the name), read and written under a row lock in
//! one short transaction. The policy (how many, how long) is the caller's.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use crate::{Store, StoreError};

/// An account's password checks since its last success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountAttempts {
    /// Checks begun (those still in flight included).
    pub failures: u32,
    /// No check before this time (milliseconds since the epoch).
    pub locked_until_ms: i64,
}

/// Creates the account's row or locks the one there, and reads it, in one
/// statement: no other transaction can delete it (a right password, the
/// purge) between a read and the row lock. On SQLite the statement also
/// takes the write lock at once (no upgrade from a read lock, which would
/// fail at once instead of waiting for another process's writer).
const RESERVE: &str =
    "INSERT INTO login_attempts (account_key, failures, locked_until, updated_at) \
     VALUES ($1, 0, 0, $2) \
     ON CONFLICT (account_key) DO UPDATE SET account_key = excluded.account_key \
     RETURNING failures, locked_until";
const UPDATE: &str =
    "UPDATE login_attempts SET failures = $2, locked_until = $3, updated_at = $4 WHERE account_key = $1";

impl Store {
    /// Reads the account's attempts and writes what `decide` makes of
    /// them, atomically across processes: concurrent calls for one account
    /// queue on its row. `now_ms` is the caller's clock.
    pub async fn update_account_attempts<R>(
        &self,
        account: &str,
        now_ms: i64,
        decide: impl FnOnce(AccountAttempts) -> (AccountAttempts, R),
    ) -> Result<R, StoreError> {
        let key = self.keyring()?.email_key_text(account);
        match self {
            Self::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let result =
                    read_modify_write::<sqlx::Postgres, R>(&mut tx, &key, now_ms, decide).await?;
                tx.commit().await?;
                Ok(result)
            }
            Self::Sqlite(s) => {
                let mut tx = s.writer().begin().await?;
                let result =
                    read_modify_write::<sqlx::Sqlite, R>(&mut tx, &key, now_ms, decide).await?;
                tx.commit().await?;
                Ok(result)
            }
        }
    }

    /// Forgets the account's attempts (a right password).
    pub async fn clear_account_attempts(&self, account: &str) -> Result<(), StoreError> {
        let key = self.keyring()?.email_key_text(account);
        on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM login_attempts WHERE account_key = $1"
        )
        .bind(&key)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes accounts neither locked nor touched since `before_ms`;
    /// returns how many.
    pub async fn purge_account_attempts(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM login_attempts WHERE updated_at < $1 AND locked_until < $1"
        )
        .bind(before_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(done)
    }
}

async fn read_modify_write<DB, R>(
    conn: &mut DB::Connection,
    key: &str,
    now_ms: i64,
    decide: impl FnOnce(AccountAttempts) -> (AccountAttempts, R),
) -> Result<R, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    (i64, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let (failures, locked): (i64, i64) = sqlx::query_as::<DB, (i64, i64)>(RESERVE)
        .bind(key)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await?;
    let (next, result) = decide(attempts(failures, locked));
    sqlx::query::<DB>(UPDATE)
        .bind(key)
        .bind(i64::from(next.failures))
        .bind(next.locked_until_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(result)
}

fn attempts(failures: i64, locked_until_ms: i64) -> AccountAttempts {
    AccountAttempts {
        failures: u32::try_from(failures.max(0)).unwrap_or(u32::MAX),
        locked_until_ms,
    }
}
