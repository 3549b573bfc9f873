//! [`LoginAttempts`]: the soft lock's state per account, in the database
//! so every replica sees the same count: one row per account (its key is an HMAC of the
//! account's name, never the name), read and written under a row lock in
//! one short transaction. The policy (how many, how long) is the caller's.

use async_trait::async_trait;

use crate::sql::Query;
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

/// The soft lock's counts per account.
#[async_trait]
pub trait LoginAttempts: Send + Sync {
    /// Reads the account's attempts and writes what `decide` makes of
    /// them, atomically across processes: concurrent calls for one account
    /// queue on its row. `now_ms` is the caller's clock.
    async fn update_account_attempts<R, F>(
        &self,
        account: &str,
        now_ms: i64,
        decide: F,
    ) -> Result<R, StoreError>
    where
        R: Send,
        F: FnOnce(AccountAttempts) -> (AccountAttempts, R) + Send;

    /// Forgets the account's attempts (a right password).
    async fn clear_account_attempts(&self, account: &str) -> Result<(), StoreError>;

    /// Deletes accounts neither locked nor touched since `before_ms`;
    /// returns how many.
    async fn purge_account_attempts(&self, before_ms: i64) -> Result<u64, StoreError>;
}

#[async_trait]
impl LoginAttempts for Store {
    async fn update_account_attempts<R, F>(
        &self,
        account: &str,
        now_ms: i64,
        decide: F,
    ) -> Result<R, StoreError>
    where
        R: Send,
        F: FnOnce(AccountAttempts) -> (AccountAttempts, R) + Send,
    {
        let key = self.keyring()?.email_key_text(account);
        let mut tx = self.db.begin().await?;
        let row = tx
            .fetch_optional(&Query::new(RESERVE).bind(&key).bind(now_ms))
            .await?
            .ok_or_else(|| {
                StoreError::Database("the login attempts row was not returned".into())
            })?;
        let (next, result) = decide(attempts(row.int("failures")?, row.int("locked_until")?));
        let update = Query::new(UPDATE)
            .bind(&key)
            .bind(i64::from(next.failures))
            .bind(next.locked_until_ms)
            .bind(now_ms);
        tx.execute(&update).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn clear_account_attempts(&self, account: &str) -> Result<(), StoreError> {
        let key = self.keyring()?.email_key_text(account);
        let q = Query::new("DELETE FROM login_attempts WHERE account_key = $1").bind(key);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn purge_account_attempts(&self, before_ms: i64) -> Result<u64, StoreError> {
        let q =
            Query::new("DELETE FROM login_attempts WHERE updated_at < $1 AND locked_until < $1")
                .bind(before_ms);
        Ok(self.db.execute(&q).await?)
    }
}

fn attempts(failures: i64, locked_until_ms: i64) -> AccountAttempts {
    AccountAttempts {
        failures: u32::try_from(failures.max(0)).unwrap_or(u32::MAX),
        locked_until_ms,
    }
}
