//! Checkpoints of the readers that follow the feed (projectors, the hash
//! chain): a named place in the global order, in `projector_checkpoints`,
//! moved in the same transaction as what was written up to it.

use chrono::Utc;

use super::{Db, Query, Tx, Value};
use crate::Position;

impl Db {
    /// The checkpoint `name` (START when it was never written).
    pub async fn checkpoint(&self, name: &str) -> Result<Position, sqlx::Error> {
        let q =
            Query::new("SELECT tx, position FROM projector_checkpoints WHERE name = $1").bind(name);
        match self.read_optional(&q).await? {
            Some(row) => row.position("tx", "position"),
            None => Ok(Position::START),
        }
    }

    /// Makes sure the checkpoint row exists (at START if it did not).
    pub async fn ensure_checkpoint(&self, name: &str) -> Result<(), sqlx::Error> {
        self.execute(&insert_missing(name)).await?;
        Ok(())
    }
}

fn insert_missing(name: &str) -> Query {
    Query::new(
        "INSERT INTO projector_checkpoints (name, tx, position, updated_at) VALUES ($1, 0, 0, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(Value::stamp(Utc::now()))
}

impl Tx {
    /// Locks the checkpoint `name` (created at START if missing) until the
    /// transaction ends, and returns where it is: the caller compares it
    /// with where it started from. A write takes the lock before anything
    /// is read: the row lock on PostgreSQL (a second writer waits here,
    /// then sees the moved checkpoint), the database's write lock on
    /// SQLite (so another process's commit cannot make the read stale).
    pub async fn lock_checkpoint(&mut self, name: &str) -> Result<Position, sqlx::Error> {
        let lock = Query::new(
            "UPDATE projector_checkpoints SET updated_at = updated_at WHERE name = $1 \
             RETURNING tx, position",
        )
        .bind(name);
        if let Some(row) = self.fetch_optional(&lock).await? {
            return row.position("tx", "position");
        }
        self.execute(&insert_missing(name)).await?;
        match self.fetch_optional(&lock).await? {
            Some(row) => row.position("tx", "position"),
            None => Ok(Position::START),
        }
    }

    /// Moves the checkpoint `name` to `at`.
    pub async fn set_checkpoint(&mut self, name: &str, at: Position) -> Result<(), sqlx::Error> {
        let q = Query::new(
            "INSERT INTO projector_checkpoints (name, tx, position, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(Value::count(at.tx))
        .bind(at.global)
        .bind(Value::stamp(Utc::now()));
        self.execute(&q).await?;
        Ok(())
    }

    /// Deletes the checkpoint `name`.
    pub async fn drop_checkpoint(&mut self, name: &str) -> Result<(), sqlx::Error> {
        let q = Query::new("DELETE FROM projector_checkpoints WHERE name = $1").bind(name);
        self.execute(&q).await?;
        Ok(())
    }
}
