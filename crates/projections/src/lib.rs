//! # access-projections
//!
//! Read models derived from the Customer events, never written any other
//! way:
//! - [`rows`]: the access state of each customer and the audit trail (one
//!   row per login change), as pure functions of the events.
//! - [`db`]: their tables on PostgreSQL and SQLite, and the one
//!   transaction that writes a batch of rows together with the checkpoint.
//! - [`projector`]: the catch-up projector that follows the store's global
//!   order from its checkpoint: each event takes effect exactly once, a
//!   crash loses nothing, an error stops it at the event instead of
//!   skipping it.
//! - [`chain`]: the hash chain over the events (tamper evidence): each
//!   event's hash covers its stored content and the hash before it; verify
//!   recomputes it and names what was altered, inserted or removed.

pub mod chain;
pub mod db;
pub mod export;
pub mod history;
pub mod projector;
pub mod rebuild;
pub mod rows;

use access_domain::CustomerId;
use access_store::{Position, StoreError};

pub use db::{AuditFilter, CustomerFilter, Tables, LIVE, REBUILD};
pub use projector::{Projector, ProjectorOptions, Status};
pub use rows::{AccessStateRow, AuditRow};

/// What can go wrong while projecting or reading projections.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another projector moved the checkpoint first (nothing was written).
    #[error("the checkpoint moved from {expected} to {found}")]
    CheckpointMoved { expected: Position, found: Position },
    /// An event out of sequence: the projection would be wrong.
    #[error("at position {position}: customer {customer_id} expected sequence {expected}, found {found}")]
    Gap {
        position: Position,
        customer_id: CustomerId,
        expected: u64,
        found: u64,
    },
    #[error("at position {position}: customer {customer_id} has events before its registration")]
    NotRegistered {
        position: Position,
        customer_id: CustomerId,
    },
    #[error("a projection row cannot be read: {0}")]
    Corrupt(String),
    /// The projector has not caught up within the wait.
    #[error("the projections are behind the events (at {checkpoint}, events up to {head})")]
    Lagging {
        checkpoint: Position,
        head: Position,
    },
    /// The projector stopped on an error.
    #[error("the projector stopped: {0}")]
    Stopped(String),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            // A projection row that does not read back (a NULL where a
            // value belongs, a timestamp that does not parse) is a corrupt
            // row, not a database failure.
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                Self::Corrupt(err.to_string())
            }
            other => Self::Store(StoreError::from(other)),
        }
    }
}

impl ProjectionError {
    /// True for failures worth retrying (the database is unreachable, or
    /// another projector got there first).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Unavailable(_)) | Self::CheckpointMoved { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_that_does_not_decode_is_corrupt_and_an_outage_is_transient() {
        let undecodable = ProjectionError::from(sqlx::Error::ColumnDecode {
            index: "updated_at".into(),
            source: "timestamp `yesterday`: input contains invalid characters".into(),
        });
        assert!(
            matches!(undecodable, ProjectionError::Corrupt(_)),
            "{undecodable}"
        );
        assert!(!undecodable.is_transient());
        let down = ProjectionError::from(sqlx::Error::PoolTimedOut);
        assert!(down.is_transient(), "{down}");
    }
}
