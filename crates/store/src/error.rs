//! The store's errors. Each maps to one HTTP status in the service.

/// What went wrong in the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another command wrote to the same customer first (optimistic lock).
    #[error("concurrent modification of customer {customer_id}: expected version {expected}")]
    Conflict { customer_id: String, expected: u64 },
    /// Other commands on the same customer in this process kept this one
    /// waiting longer than `StoreOptions::customer_queue_wait`.
    #[error(
        "customer {customer_id} is busy: other commands on it kept this one waiting {waited_ms} ms"
    )]
    Busy { customer_id: String, waited_ms: u64 },
    /// The database aborted the transaction because it ran into another
    /// one (PostgreSQL: a deadlock between two replicas' appends, or a
    /// serialization failure). Nothing was written; the command is decided
    /// again (`execute`), and answered like a conflict if that keeps
    /// happening.
    #[error("the database aborted a transaction that collided with another: {0}")]
    Contention(String),
    /// Another customer holds this login email.
    #[error("the email address is already the login of another customer")]
    EmailInUse { email: String },
    /// An import's external id (its blind index) belongs to another
    /// customer of the same source. Nothing was written.
    #[error("the external id belongs to another customer")]
    ExternalIdTaken,
    /// The (caller, key) pair was stored by another request in the meantime.
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    /// A stored event or snapshot cannot be read.
    #[error("corrupt event of customer {customer_id} at sequence {sequence} (position {position}): {detail}")]
    Corrupt {
        customer_id: String,
        sequence: u64,
        position: i64,
        detail: String,
    },
    /// A stored snapshot does not open: altered, moved from another
    /// customer, or an older state put back under a newer sequence. Never
    /// used; the customer cannot be loaded until it is deleted (the next
    /// load then replays the events).
    #[error("corrupt snapshot of customer {customer_id} at sequence {last_sequence}: {detail} (delete the row from `snapshots` once the cause is known; the events are replayed instead)")]
    CorruptSnapshot {
        customer_id: String,
        last_sequence: u64,
        detail: String,
    },
    /// The database cannot be reached (connection refused, pool timed out,
    /// server shutting down). Worth retrying later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database URL is not one we support.
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// Anything else the database said.
    #[error("database error: {0}")]
    Database(String),
    /// A key could not be made, wrapped or opened.
    #[error("personal data keys: {0}")]
    Keys(String),
    /// The master key given is not the one this database was set up with.
    #[error("the master key given (id {given}) is not the master key this database's keys are wrapped with (id {expected}): start with the right ACCESS_MASTER_KEY / ACCESS_MASTER_KEY_FILE")]
    WrongMasterKey { expected: String, given: String },
    /// Personal data needs keys, and no master key was given.
    #[error("the key store is locked: no master key was given")]
    Locked,
}

impl StoreError {
    /// Stable code, as the HTTP layer reports it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Conflict { .. } | Self::Busy { .. } | Self::Contention(_) => {
                "concurrent_modification"
            }
            Self::EmailInUse { .. } => "email_in_use",
            Self::ExternalIdTaken => "conflict",
            Self::IdempotencyKeyTaken => "idempotency_key_taken",
            Self::Corrupt { .. } => "corrupt_event",
            Self::CorruptSnapshot { .. } => "corrupt_snapshot",
            Self::Unavailable(_) => "unavailable",
            Self::UnsupportedUrl(_) => "unsupported_database_url",
            Self::Migration(_) => "migration_failed",
            Self::Database(_) => "database_error",
            Self::Keys(_) => "key_error",
            Self::WrongMasterKey { .. } => "wrong_master_key",
            Self::Locked => "keys_locked",
        }
    }
}

/// Which unique rule a database error broke, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    EventSequence,
    LoginEmail,
    IdempotencyKey,
    Other,
}

/// Whether a database error code, of either database, says `what`. The
/// codes are each dialect's (`postgres.rs`, `sqlite.rs`); they do not
/// overlap (SQLSTATEs are five characters, SQLite's codes numbers), so an
/// error is classified without knowing which database it came from.
fn code_says(code: &str, what: ErrorCode) -> bool {
    use crate::sql::Dialect as _;
    crate::postgres::Postgres::code_says(code, what) || crate::sqlite::Sqlite::code_says(code, what)
}

/// What a database error code can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A unique index refused a row.
    UniqueViolation,
    /// The database cannot serve now (shutting down, not reachable,
    /// locked past the busy timeout): worth retrying later.
    Unavailable,
    /// The transaction collided with another and was aborted (a
    /// deadlock): worth deciding again at once.
    Contention,
}

/// Classifies an sqlx error: a unique violation (named by its constraint,
/// or by the message where the database gives no constraint name).
pub(crate) fn classify(err: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let unique = db
        .code()
        .is_some_and(|code| code_says(&code, ErrorCode::UniqueViolation));
    if !unique {
        return None;
    }
    let constraint = db.constraint().unwrap_or_default();
    let message = db.message();
    let names = |needle: &str| constraint.starts_with(needle) || message.contains(needle);
    Some(if names("events") {
        Violation::EventSequence
    } else if names("login_emails") {
        Violation::LoginEmail
    } else if names("idempotency_keys") {
        Violation::IdempotencyKey
    } else {
        Violation::Other
    })
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if code_says(&code, ErrorCode::Unavailable) {
                    Self::Unavailable(err.to_string())
                } else if code_says(&code, ErrorCode::Contention) {
                    Self::Contention(err.to_string())
                } else {
                    Self::Database(err.to_string())
                }
            }
            _ => Self::Database(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::Execute(e) => match Self::from(e) {
                Self::Unavailable(m) => Self::Unavailable(m),
                other => Self::Migration(other.to_string()),
            },
            other => Self::Migration(other.to_string()),
        }
    }
}
