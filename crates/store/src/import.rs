//! Bulk import of customers from an older system (`accessctl import`,
//! `POST /v1/customers/import`): the row format shared by the CLI and the
//! API, its parsing into `ImportCustomer` commands (per-line errors with
//! the field and the reason, never the hash), duplicate emails inside a
//! file, and the outcome of each row.
//!
//! Each row is one `ImportCustomer` command through the aggregate and the
//! store's append (one transaction per customer: its events, its login
//! reservation and its data key), so the rules are the aggregate's:
//! re-running a file writes nothing, other content for an imported
//! customer is a conflict, a taken login email is `email_in_use`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use access_domain::{
    CustomerCommand, CustomerError, CustomerId, CustomerName, EmailAddress, ExternalId,
    ImportCustomer, ImportSource, PasswordHash, Role, ValueError,
};
use serde::{Deserialize, Serialize};

use crate::{ExecuteError, StoreError};

/// Most rows in one `POST /v1/customers/import` request.
pub const MAX_ROWS_PER_REQUEST: usize = 10_000;

/// One line of an import file (CSV with a header row, or JSON lines).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    pub email: Option<String>,
    pub name: Option<String>,
    pub customer_id: Option<String>,
    pub external_id: Option<String>,
    /// `none` or `customer_center`.
    pub access: Option<String>,
    pub password_hash: Option<String>,
    pub must_change_password: Option<bool>,
    pub send_notification: Option<bool>,
}

/// Why a row was not imported: the field, a stable code and the reason
/// (never the hash or a password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub field: &'static str,
    pub code: String,
    pub reason: String,
}

impl RowError {
    fn new(field: &'static str, code: &str, reason: impl Into<String>) -> Self {
        Self {
            field,
            code: code.to_string(),
            reason: reason.into(),
        }
    }

    fn value(field: &'static str, e: ValueError) -> Self {
        Self::new(field, e.code(), e.to_string())
    }
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Written now.
    Imported,
    /// Imported before with the same content: nothing written.
    Unchanged,
    /// `--dry-run`: would be imported.
    WouldImport,
    /// The customer exists with other content: nothing written.
    Conflict,
    /// Refused for a reason in the row (see `error`): nothing written.
    Refused,
}

/// The answer for one row (one JSON line of the API's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowResult {
    /// 1-based line in the file (the CSV header is line 1).
    pub line: u64,
    pub status: RowStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RowError>,
}

impl RowResult {
    pub fn refused(line: u64, error: RowError) -> Self {
        Self {
            line,
            status: RowStatus::Refused,
            customer_id: None,
            external_id: None,
            error: Some(error),
        }
    }

    /// True when the row is in the store as the file says (imported now or
    /// before, or would be in a dry run).
    pub fn is_ok(&self) -> bool {
        matches!(
            self.status,
            RowStatus::Imported | RowStatus::Unchanged | RowStatus::WouldImport
        )
    }
}

/// A line that is not a row.
pub fn unreadable(reason: String) -> RowError {
    RowError {
        field: "line",
        code: "invalid_row".to_string(),
        reason,
    }
}

/// One JSON line as a row; the error names the problem, never a value
/// (it may be a hash).
pub fn parse_json_row(text: &str) -> Result<ImportRow, RowError> {
    serde_json::from_str::<ImportRow>(text).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("unknown field") {
            unreadable(message)
        } else {
            unreadable(format!(
                "not a JSON object of the row fields ({:?} error at column {})",
                e.classify(),
                e.column()
            ))
        }
    })
}

fn text(raw: &Option<String>) -> Option<&str> {
    raw.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Turns a row into its command. The customer id is the row's, else
/// derived from the external id, else from the email (so a re-run of the
/// same file lands on the same customers).
pub fn parse_row(row: &ImportRow, source: &ImportSource) -> Result<ImportCustomer, RowError> {
    let email = text(&row.email)
        .ok_or_else(|| RowError::new("email", "invalid_email", "the email is missing"))?;
    let email = EmailAddress::parse(email).map_err(|e| RowError::value("email", e))?;
    let name = text(&row.name)
        .map(CustomerName::parse)
        .transpose()
        .map_err(|e| RowError::value("name", e))?;
    let external_id = text(&row.external_id)
        .map(ExternalId::parse)
        .transpose()
        .map_err(|e| RowError::value("external_id", e))?;
    let customer_id = match text(&row.customer_id) {
        Some(raw) => raw
            .parse::<CustomerId>()
            .map_err(|e| RowError::value("customer_id", e))?,
        None => match &external_id {
            Some(external) => external.derived_customer_id(),
            None => derived_from_email(&email),
        },
    };
    let access = match text(&row.access) {
        Some("none") => None,
        Some(role) => Some(role.parse::<Role>().map_err(|_| {
            RowError::new(
                "access",
                "unknown_role",
                "`access` is `none` or `customer_center`",
            )
        })?),
        None => {
            return Err(RowError::new(
                "access",
                "unknown_role",
                "`access` is missing: `none` or `customer_center`",
            ))
        }
    };
    Ok(ImportCustomer {
        customer_id,
        source: source.clone(),
        external_id,
        email,
        name,
        access,
        password_hash: text(&row.password_hash).map(PasswordHash::new),
        must_change_password: row.must_change_password.unwrap_or(false),
        send_notification: row.send_notification.unwrap_or(false),
    })
}

/// The id of a row with neither a customer id nor an external id: a UUID
/// v8 from the SHA-256 of the normalized email.
fn derived_from_email(email: &EmailAddress) -> CustomerId {
    CustomerId::derived("email", email.normalized())
}

/// Emails seen earlier in the same file (64-bit keyed hashes of the
/// normalized address and their line: constant size per row, no address
/// kept in memory).
#[derive(Debug, Default)]
pub struct SeenEmails {
    hasher: RandomState,
    lines: HashMap<u64, u64>,
}

impl SeenEmails {
    /// Records `email` at `line`; the earlier line when it was seen before.
    pub fn first_line(&mut self, email: &EmailAddress, line: u64) -> Option<u64> {
        let key = self.hasher.hash_one(email.normalized());
        match self.lines.get(&key) {
            Some(first) => Some(*first),
            None => {
                self.lines.insert(key, line);
                None
            }
        }
    }
}

/// A duplicate email inside the file.
pub fn duplicate_email(first: u64) -> RowError {
    RowError::new(
        "email",
        "duplicate_email",
        format!("the same email is on line {first} of this file"),
    )
}

/// The field a refusal of the aggregate points at.
fn field_of(error: &CustomerError) -> &'static str {
    match error {
        CustomerError::InvalidImport { field, .. } => field,
        CustomerError::UnsupportedPasswordHash { .. } => "password_hash",
        CustomerError::LoginHasNoPassword { .. } => "password_hash",
        CustomerError::InvalidValue(ValueError::InvalidEmail(_)) => "email",
        CustomerError::InvalidValue(ValueError::InvalidName(_)) => "name",
        CustomerError::InvalidValue(ValueError::InvalidExternalId(_)) => "external_id",
        CustomerError::InvalidValue(ValueError::InvalidCustomerId(_)) => "customer_id",
        CustomerError::InvalidValue(ValueError::UnknownRole(_)) => "access",
        _ => "customer_id",
    }
}

/// The result of one executed (or, in a dry run, decided) row. `Err` for
/// a failure of the store itself: the run stops (it can simply be run
/// again).
pub fn outcome(
    line: u64,
    command: &ImportCustomer,
    result: Result<usize, ExecuteError>,
    dry_run: bool,
) -> Result<RowResult, ExecuteError> {
    let mut answer = RowResult {
        line,
        status: RowStatus::Imported,
        customer_id: Some(command.customer_id),
        external_id: command.external_id.as_ref().map(|e| e.as_str().to_string()),
        error: None,
    };
    match result {
        Ok(0) => answer.status = RowStatus::Unchanged,
        Ok(_) if dry_run => answer.status = RowStatus::WouldImport,
        Ok(_) => {}
        Err(ExecuteError::Rejected(CustomerError::ImportConflict)) => {
            answer.status = RowStatus::Conflict;
            let field = if command.external_id.is_some() {
                "external_id"
            } else {
                "customer_id"
            };
            answer.error = Some(RowError::new(
                field,
                "conflict",
                "this customer exists with other content; nothing was written",
            ));
        }
        Err(ExecuteError::Rejected(error)) => {
            answer.status = RowStatus::Refused;
            let reason = match &error {
                // The notice's message, said for an import row.
                CustomerError::LoginHasNoPassword { .. } => {
                    "access needs a `password_hash` or `send_notification`".to_string()
                }
                other => other.to_string(),
            };
            answer.error = Some(RowError::new(field_of(&error), error.code(), reason));
        }
        Err(ExecuteError::Store(StoreError::EmailInUse { .. })) => {
            answer.status = RowStatus::Refused;
            answer.error = Some(RowError::new(
                "email",
                "email_in_use",
                "the email is the login of another customer",
            ));
        }
        Err(other) => return Err(other),
    }
    Ok(answer)
}

/// The command of a parsed row.
pub fn command(import: ImportCustomer) -> CustomerCommand {
    CustomerCommand::ImportCustomer(Box::new(import))
}

/// Counts of a run, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub imported: u64,
    pub unchanged: u64,
    pub would_import: u64,
    pub conflict: u64,
    pub refused: u64,
}

impl Summary {
    pub fn add(&mut self, result: &RowResult) {
        match result.status {
            RowStatus::Imported => self.imported += 1,
            RowStatus::Unchanged => self.unchanged += 1,
            RowStatus::WouldImport => self.would_import += 1,
            RowStatus::Conflict => self.conflict += 1,
            RowStatus::Refused => self.refused += 1,
        }
    }

    pub fn rows(&self) -> u64 {
        self.imported + self.unchanged + self.would_import + self.conflict + self.refused
    }

    /// Every row is in the store as the file says.
    pub fn all_ok(&self) -> bool {
        self.conflict == 0 && self.refused == 0
    }
}

impl crate::Store {
    /// Imports one parsed row (or, with `dry_run`, only decides it on the
    /// current state): the command runs through the aggregate and the
    /// store's append like any other; `outbox` builds the mail a setup link
    /// calls for. `Err` only for a failure of the store.
    pub async fn import_row(
        &self,
        services: &access_domain::CustomerServices,
        metadata: &access_domain::CommandMetadata,
        line: u64,
        import: ImportCustomer,
        dry_run: bool,
        outbox: impl Fn(&crate::OutboxInput<'_>) -> Result<Vec<crate::OutboxMessage>, String>,
    ) -> Result<RowResult, ExecuteError> {
        use crate::EventStore as _;
        let customer_id = import.customer_id;
        let result = if dry_run {
            match self.load(customer_id).await {
                Ok(loaded) => loaded
                    .customer
                    .decide(command(import.clone()), services)
                    .await
                    .map(|d| d.events.len())
                    .map_err(ExecuteError::from),
                Err(e) => Err(e.into()),
            }
        } else {
            self.execute_with_outbox(
                services,
                crate::Execution {
                    customer_id,
                    command: command(import.clone()),
                    metadata,
                    expected_version: None,
                    idempotency: None,
                },
                |_| String::new(),
                outbox,
            )
            .await
            .map(|executed| executed.events.len())
        };
        outcome(line, &import, result, dry_run)
    }
}
