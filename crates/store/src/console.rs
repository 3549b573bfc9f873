//! [`Console`]: what the auditors' console keeps beside the events: its
//! sessions (an auditor's or admin's API key exchanged for a cookie) and
//! the results of the integrity checks started from it. Neither belongs to
//! a customer; both are in the database so that every replica sees them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::sql::{Query, Row, Value};
use crate::{Store, StoreError};

/// A console session as stored. The session's token is never stored, only
/// its digest; `key_digest` is the SHA-256 of the API key that opened it
/// (the same digest as the key's own), so a key that is removed or
/// replaced ends its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub token_digest: String,
    pub key_name: String,
    pub key_digest: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One integrity check (a verification of the hash chain) started from
/// the console: while it runs `finished_at` is `None` and `outcome` is
/// `running`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityCheck {
    pub id: String,
    /// The API key name of the person who started it.
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    /// Still `running` after this, the check was left by a replica that
    /// stopped (its time limit and a grace period, fixed at its start by
    /// the replica that runs it).
    pub deadline: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `intact`, `problems`, `timed_out` or `failed`.
    pub outcome: String,
    /// What was found, in a sentence (never a secret).
    pub summary: String,
}

/// The console's sessions and integrity checks.
#[async_trait]
pub trait Console: Send + Sync {
    /// Opens `session`, ending the session `previous` (a token digest) in
    /// the same transaction; returns the ended session if it existed.
    async fn replace_console_session(
        &self,
        session: &ConsoleSession,
        previous: Option<&str>,
    ) -> Result<Option<ConsoleSession>, StoreError>;

    async fn find_console_session(
        &self,
        token_digest: &str,
    ) -> Result<Option<ConsoleSession>, StoreError>;

    /// Ends a session; returns it if it existed.
    async fn delete_console_session(
        &self,
        token_digest: &str,
    ) -> Result<Option<ConsoleSession>, StoreError>;

    async fn purge_expired_console_sessions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConsoleSession>, StoreError>;

    /// Starts a check: first marks checks still `running` past their
    /// deadline at `check.started_at` as `abandoned` (their replica
    /// stopped), then inserts `check` unless another check is running. At
    /// most one runs at a time across replicas (a unique index on the
    /// running row): returns false, inserting nothing, when one does.
    async fn start_integrity_check(&self, check: &IntegrityCheck) -> Result<bool, StoreError>;

    /// Records the end of a running check.
    async fn finish_integrity_check(
        &self,
        id: &str,
        finished_at: DateTime<Utc>,
        outcome: &str,
        summary: &str,
    ) -> Result<(), StoreError>;

    /// The newest checks first.
    async fn latest_integrity_checks(&self, limit: u32) -> Result<Vec<IntegrityCheck>, StoreError>;

    /// Deletes all but the newest [`KEPT_CHECKS`] checks.
    async fn purge_old_integrity_checks(&self) -> Result<u64, StoreError>;
}

/// How many finished checks are kept (the newest).
pub const KEPT_CHECKS: u32 = 100;

/// The summary of a check whose replica stopped while it ran.
pub const ABANDONED: &str = "The verification stopped without a result (the service was \
                             restarted while it ran). Start another.";

const SESSION_COLUMNS: &str = "token_digest, key_name, key_digest, role, created_at, expires_at";
const CHECK_COLUMNS: &str = "id, started_by, started_at, deadline, finished_at, outcome, summary";

/// `statement` on the session with this token digest.
fn session_by_digest(statement: &str, token_digest: &str) -> Query {
    Query::new(format!("{statement} WHERE token_digest = $1")).bind(token_digest)
}

fn session(row: &Row) -> Result<ConsoleSession, StoreError> {
    Ok(ConsoleSession {
        token_digest: row.text("token_digest")?,
        key_name: row.text("key_name")?,
        key_digest: row.text("key_digest")?,
        role: row.text("role")?,
        created_at: row.stamp("created_at")?,
        expires_at: row.stamp("expires_at")?,
    })
}

fn check(row: &Row) -> Result<IntegrityCheck, StoreError> {
    Ok(IntegrityCheck {
        id: row.text("id")?,
        started_by: row.text("started_by")?,
        started_at: row.stamp("started_at")?,
        deadline: row.stamp("deadline")?,
        finished_at: row.opt_stamp("finished_at")?,
        outcome: row.text("outcome")?,
        summary: row.text("summary")?,
    })
}

#[async_trait]
impl Console for Store {
    async fn replace_console_session(
        &self,
        s: &ConsoleSession,
        previous: Option<&str>,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let mut tx = self.db.begin().await?;
        let ended = match previous {
            Some(digest) => {
                let mut q = session_by_digest("DELETE FROM console_sessions", digest);
                q.push(&format!(" RETURNING {SESSION_COLUMNS}"));
                tx.fetch(&q).await?.first().map(session).transpose()?
            }
            None => None,
        };
        let q = Query::new(format!(
            "INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&s.token_digest)
        .bind(&s.key_name)
        .bind(&s.key_digest)
        .bind(&s.role)
        .bind(Value::stamp(s.created_at))
        .bind(Value::stamp(s.expires_at));
        tx.execute(&q).await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn find_console_session(
        &self,
        token_digest: &str,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let q = session_by_digest(
            &format!("SELECT {SESSION_COLUMNS} FROM console_sessions"),
            token_digest,
        );
        let rows = self.db.read(&q).await?;
        rows.first().map(session).transpose()
    }

    async fn delete_console_session(
        &self,
        token_digest: &str,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let mut q = session_by_digest("DELETE FROM console_sessions", token_digest);
        q.push(&format!(" RETURNING {SESSION_COLUMNS}"));
        // The deleting replica alone gets the row back: a session's end is
        // logged once however many replicas see the logout.
        let rows = self.db.write(&q).await?;
        rows.first().map(session).transpose()
    }

    async fn purge_expired_console_sessions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConsoleSession>, StoreError> {
        let q = Query::new(format!(
            "DELETE FROM console_sessions WHERE expires_at < $1 RETURNING {SESSION_COLUMNS}"
        ))
        .bind(Value::stamp(now));
        self.db.write(&q).await?.iter().map(session).collect()
    }

    async fn start_integrity_check(&self, c: &IntegrityCheck) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let abandon = Query::new(
            "UPDATE integrity_checks SET outcome = 'abandoned', finished_at = $1, summary = $2 \
             WHERE outcome = 'running' AND deadline < $1",
        )
        .bind(Value::stamp(c.started_at))
        .bind(ABANDONED);
        tx.execute(&abandon).await?;
        // The unique index on the running row decides between two
        // replicas starting at once: the second inserts nothing.
        let insert = Query::new(format!(
            "INSERT INTO integrity_checks ({CHECK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&c.id)
        .bind(&c.started_by)
        .bind(Value::stamp(c.started_at))
        .bind(Value::stamp(c.deadline))
        .bind(Value::stamp(c.finished_at))
        .bind(&c.outcome)
        .bind(&c.summary);
        let inserted = tx.execute(&insert).await? == 1;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn finish_integrity_check(
        &self,
        id: &str,
        finished_at: DateTime<Utc>,
        outcome: &str,
        summary: &str,
    ) -> Result<(), StoreError> {
        let q = Query::new(
            "UPDATE integrity_checks SET finished_at = $2, outcome = $3, summary = $4 \
             WHERE id = $1 AND outcome = 'running'",
        )
        .bind(id)
        .bind(Value::stamp(finished_at))
        .bind(outcome)
        .bind(summary);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn latest_integrity_checks(&self, limit: u32) -> Result<Vec<IntegrityCheck>, StoreError> {
        let q = Query::new(format!(
            "SELECT {CHECK_COLUMNS} FROM integrity_checks ORDER BY started_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit));
        self.db.read(&q).await?.iter().map(check).collect()
    }

    async fn purge_old_integrity_checks(&self) -> Result<u64, StoreError> {
        let q = Query::new(
            "DELETE FROM integrity_checks WHERE outcome <> 'running' AND id NOT IN \
             (SELECT id FROM integrity_checks ORDER BY started_at DESC, id DESC LIMIT $1)",
        )
        .bind(i64::from(KEPT_CHECKS));
        Ok(self.db.execute(&q).await?)
    }
}
