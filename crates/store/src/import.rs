//! Bulk import of customers from an older system (`accessctl import`,
//! `POST /v1/customers/import`): the row format shared by the CLI and the
//! API, its parsing into `ImportCustomer` commands (per-line errors with
//! the field and the reason, never the hash), duplicate emails inside a
//! file, and the outcome of each row.
//!
//! Rows are imported in batches ([`crate::Store::import_batch`]): the
//! rules stay the aggregate's (each row is decided by `decide` on its
//! customer), the I/O is batched: one read per lookup table for the whole
//! batch and one read of the events of its customers that exist (a
//! re-run: decided here, `unchanged` or `conflict`, nothing written),
//! then every new customer of the batch in one transaction with one bulk
//! insert per table (data keys, events, login reservations, email
//! lookups, the external-id index, mail). A row the batch cannot write
//! alone (a concurrent writer got there first, a snapshot falls due, …)
//! goes through the store's ordinary command path, one transaction per
//! customer, which holds the external-id index row too (written by the
//! append). So re-running a file writes nothing, other content for an
//! imported customer is a conflict, a taken login email is
//! `email_in_use`, and a refused line leaves nothing written.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use access_domain::{
    CommandMetadata, Customer, CustomerCommand, CustomerError, CustomerId, CustomerName,
    CustomerServices, EmailAddress, ExternalId, ImportCustomer, ImportSource, PasswordHash, Role,
    ValueError,
};
use serde::{Deserialize, Serialize};

use crate::codec::{self, AGGREGATE_TYPE};
use crate::keys::{self, Keyring};
use crate::sql::{Query, Value};
use crate::{ExecuteError, OutboxInput, OutboxMessage, StoreError};

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
/// derived from the source and the external id, else from the source and
/// the email, with a keyed digest ([`Keyring::import_digest`]): a re-run of
/// the same file from the same source lands on the same customers, and
/// nobody without the key can compute an id from an email.
pub fn parse_row(
    row: &ImportRow,
    source: &ImportSource,
    keyring: &Keyring,
) -> Result<ImportCustomer, RowError> {
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
            Some(external) => derived_id(keyring, source, "external_id", external.as_str()),
            None => derived_id(keyring, source, "email", email.normalized()),
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

/// The id of a row without a customer id: a UUID v8 from the keyed digest
/// of the source and `key` (the external id, else the normalized email).
fn derived_id(keyring: &Keyring, source: &ImportSource, kind: &str, key: &str) -> CustomerId {
    let digest = keyring.import_digest(&format!("customer-id/{kind}"), source.as_str(), key);
    let mut bytes = [0u8; 16];
    // The digest is the hex of an HMAC-SHA-256: 32 bytes, the first 16 used.
    if let Ok(raw) = hex::decode(digest.get(..32).unwrap_or_default()) {
        bytes.copy_from_slice(&raw);
    }
    CustomerId::from_import_digest(bytes)
}

/// The blind index of an external id: the keyed digest of the source and
/// the id (never the id itself, which is personal).
pub fn external_key(keyring: &Keyring, source: &ImportSource, external: &ExternalId) -> String {
    keyring.import_digest("external-id", source.as_str(), external.as_str())
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
        // The command's transaction met the external id's index row of
        // another customer: nothing was written.
        Err(ExecuteError::Store(StoreError::ExternalIdTaken)) => {
            return Ok(external_id_taken(line, command));
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

/// The conflict of a row whose external id is another customer's.
fn external_id_taken(line: u64, command: &ImportCustomer) -> RowResult {
    RowResult {
        line,
        status: RowStatus::Conflict,
        customer_id: Some(command.customer_id),
        external_id: command.external_id.as_ref().map(|e| e.as_str().to_string()),
        error: Some(RowError::new(
            "external_id",
            "conflict",
            "this external id belongs to another customer; nothing was written",
        )),
    }
}

/// A parsed row waiting for its batch.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub line: u64,
    pub import: ImportCustomer,
    /// The command's metadata (actor, request id, reason).
    pub metadata: CommandMetadata,
}

/// Builds the mail a decided import calls for (a setup link).
pub type OutboxFn<'a> =
    &'a (dyn Fn(&OutboxInput<'_>) -> Result<Vec<OutboxMessage>, String> + Send + Sync);

/// Who holds a login email now.
struct Holder {
    customer_id: String,
    kind: String,
    expires_ms: Option<i64>,
}

impl Holder {
    /// A login, or a pending change whose link has not expired (an expired
    /// one is released by the next claim).
    fn holds(&self, now_ms: i64) -> bool {
        self.kind == "login" || self.expires_ms.is_none_or(|e| e > now_ms)
    }
}

/// A new customer of a batch, decided and ready to write.
struct Fresh {
    index: usize,
    id: String,
    decision: access_domain::Decision,
    after: Customer,
    external_key: Option<String>,
}

/// What a batch reads of the store before deciding.
struct Known {
    /// Customers that have events.
    existing: HashSet<String>,
    /// Login-email reservations by email key.
    holders: HashMap<String, Holder>,
    /// The external-id index by key.
    external: HashMap<String, String>,
}

impl crate::Store {
    /// One read per table for a batch: which customers exist, then, for
    /// the rows of the others (the new customers), who holds their emails
    /// and whose their external ids are (a re-run reads only the first).
    async fn import_known(
        &self,
        ids: &[String],
        email_keys: &[String],
        external: &[Option<String>],
    ) -> Result<Known, StoreError> {
        let mut known = Known {
            existing: HashSet::new(),
            holders: HashMap::new(),
            external: HashMap::new(),
        };
        if !ids.is_empty() {
            // Every customer written since encryption has a key row (kept,
            // emptied, when it is forgotten): a lookup on its one-column
            // key, which the planner uses whatever its statistics say (the
            // events' key starts with the aggregate type). A customer
            // whose events predate encryption has none: its row meets
            // the events' key in the batch's transaction, and goes the
            // one-at-a-time way.
            let mut q = Query::new("SELECT customer_id FROM customer_keys WHERE customer_id");
            q.push_in(ids.iter().map(String::as_str));
            for row in self.db.read(&q).await? {
                known.existing.insert(row.text("customer_id")?);
            }
        }
        let new = |index: &usize| !known.existing.contains(&ids[*index]);
        let email_keys: Vec<&str> = (0..ids.len())
            .filter(new)
            .filter_map(|i| email_keys.get(i).map(String::as_str))
            .collect();
        let external_keys: Vec<&str> = (0..ids.len())
            .filter(new)
            .filter_map(|i| external.get(i).and_then(Option::as_deref))
            .collect();
        if !email_keys.is_empty() {
            let mut q = Query::new(
                "SELECT email_key, customer_id, kind, expires_ms FROM login_emails WHERE email_key",
            );
            q.push_in(email_keys.iter().copied());
            for row in self.db.read(&q).await? {
                known.holders.insert(
                    row.text("email_key")?,
                    Holder {
                        customer_id: row.text("customer_id")?,
                        kind: row.text("kind")?,
                        expires_ms: row.opt_int("expires_ms")?,
                    },
                );
            }
        }
        if !external_keys.is_empty() {
            let mut q = Query::new(
                "SELECT external_key, customer_id FROM import_external_ids WHERE external_key",
            );
            q.push_in(external_keys.iter().copied());
            for row in self.db.read(&q).await? {
                known
                    .external
                    .insert(row.text("external_key")?, row.text("customer_id")?);
            }
        }
        Ok(known)
    }

    /// Refreshes the planner's statistics of the tables an import reads
    /// (`ANALYZE`, the same statement on both databases): a bulk load
    /// grows them faster than autovacuum looks, and on statistics of an
    /// empty table PostgreSQL reads them whole for every batch (the
    /// events too: a re-run reads the events of a batch's customers).
    /// Call it now and then during a long import (`accessctl import` does
    /// after batch 1, 2, 4, 8, …).
    pub async fn import_statistics(&self) -> Result<(), StoreError> {
        for table in [
            "customer_keys",
            "login_emails",
            "import_external_ids",
            "events",
        ] {
            self.db
                .execute(&Query::new(format!("ANALYZE {table}")))
                .await?;
        }
        Ok(())
    }

    /// [`crate::Store::import_batch`] for lines as read: a line that did
    /// not parse is refused in its place; the answers are in line order.
    pub async fn import_lines(
        &self,
        services: &CustomerServices,
        lines: Vec<(u64, Result<PendingRow, RowError>)>,
        dry_run: bool,
        outbox: OutboxFn<'_>,
    ) -> Result<Vec<RowResult>, ExecuteError> {
        let mut rows = Vec::with_capacity(lines.len());
        let mut refused = Vec::new();
        for (line, parsed) in lines {
            match parsed {
                Ok(row) => rows.push(row),
                Err(error) => refused.push(RowResult::refused(line, error)),
            }
        }
        let mut done = self.import_batch(services, &rows, dry_run, outbox).await?;
        if !refused.is_empty() {
            done.extend(refused);
            done.sort_by_key(|r| r.line);
        }
        Ok(done)
    }

    /// Imports a batch of parsed rows (or, with `dry_run`, decides each on
    /// the store's current state, the same way, writing nothing). The
    /// answers are in the rows' order. `Err` only for a failure of the
    /// store.
    ///
    /// Each row is decided by the aggregate. A row whose customer exists
    /// is decided on its events, read for the whole batch at once: a row
    /// that changes nothing is `unchanged`, a refusal (`conflict`) is
    /// answered, neither writes. New customers are written together in
    /// one transaction (one bulk insert per table); a row with something
    /// to write to an existing customer, and every row of a batch whose
    /// transaction fails (a concurrent writer took an email or a customer
    /// id first), goes through [`crate::Store::import_row`] instead, one
    /// customer at a time, so its answer is what the ordinary command path
    /// says.
    pub async fn import_batch(
        &self,
        services: &CustomerServices,
        rows: &[PendingRow],
        dry_run: bool,
        outbox: OutboxFn<'_>,
    ) -> Result<Vec<RowResult>, ExecuteError> {
        let keyring = self.keyring()?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.import.customer_id.to_string())
            .collect();
        let external: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.import
                    .external_id
                    .as_ref()
                    .map(|e| external_key(keyring, &r.import.source, e))
            })
            .collect();
        let email_keys: Vec<String> = rows
            .iter()
            .map(|r| keyring.email_key(&r.import.email))
            .collect();
        let known = self.import_known(&ids, &email_keys, &external).await?;

        // The customers of the batch that exist (a re-run), each from its
        // events, in one read: a row that changes nothing (`unchanged`) or
        // is refused (`conflict`) is decided here, writing nothing.
        let mut existing_ids: Vec<&str> = ids
            .iter()
            .filter(|id| known.existing.contains(*id))
            .map(String::as_str)
            .collect();
        existing_ids.sort_unstable();
        existing_ids.dedup();
        let states = self.load_replayed(&existing_ids).await?;

        let now_ms = services.now().timestamp_millis();
        let mut results: Vec<Option<RowResult>> = vec![None; rows.len()];
        // Rows for the one-at-a-time path, after the batch.
        let mut one_by_one = Vec::new();
        let mut fresh = Vec::new();
        // Customers and external ids decided earlier in this batch: their
        // state after it (a dry run decides a repeated one on it, as the
        // real run would find it written).
        let mut batch_ids: HashMap<String, Customer> = HashMap::new();
        let mut batch_external: HashMap<String, String> = HashMap::new();
        for (index, row) in rows.iter().enumerate() {
            let id = &ids[index];
            let earlier_external = external[index]
                .as_ref()
                .and_then(|k| batch_external.get(k))
                .filter(|holder| *holder != id);
            if dry_run && earlier_external.is_some() {
                results[index] = Some(external_id_taken(row.line, &row.import));
                continue;
            }
            if let (true, Some(earlier)) = (dry_run, batch_ids.get(id)) {
                let decided = earlier
                    .decide(command(row.import.clone()), services)
                    .await
                    .map(|d| d.events.len())
                    .map_err(ExecuteError::from);
                results[index] = Some(outcome(row.line, &row.import, decided, true)?);
                continue;
            }
            let repeated = batch_ids.contains_key(id) || earlier_external.is_some();
            if let (false, Some(loaded)) = (repeated, states.get(id)) {
                match loaded
                    .customer
                    .decide(command(row.import.clone()), services)
                    .await
                {
                    // Already there as the line says: nothing to write.
                    Ok(decision) if decision.events.is_empty() => {
                        results[index] = Some(outcome(row.line, &row.import, Ok(0), dry_run)?);
                    }
                    // Something to write: the command path.
                    Ok(_) => one_by_one.push(index),
                    Err(e) => {
                        let refused = Err(ExecuteError::from(e));
                        results[index] = Some(outcome(row.line, &row.import, refused, dry_run)?);
                    }
                }
                continue;
            }
            if known.existing.contains(id) || repeated || !self.options.seal_personal_data {
                one_by_one.push(index);
                continue;
            }
            let decided = Customer::default()
                .decide(command(row.import.clone()), services)
                .await;
            let decision = match decided {
                Ok(decision) => decision,
                Err(e) => {
                    results[index] = Some(outcome(row.line, &row.import, Err(e.into()), dry_run)?);
                    continue;
                }
            };
            if let Some(holder) = external[index].as_ref().and_then(|k| known.external.get(k)) {
                if holder != id {
                    results[index] = Some(external_id_taken(row.line, &row.import));
                    continue;
                }
            }
            let mut after = Customer::default();
            for event in &decision.events {
                cqrs_es::Aggregate::apply(&mut after, event.clone());
            }
            let reserves = !after.reserved_emails(services.now()).is_empty();
            match known.holders.get(&email_keys[index]) {
                Some(holder) if reserves && holder.customer_id != *id => {
                    if holder.holds(now_ms) {
                        let taken = Err(ExecuteError::Store(StoreError::EmailInUse {
                            email: row.import.email.normalized().to_string(),
                        }));
                        results[index] = Some(outcome(row.line, &row.import, taken, dry_run)?);
                        continue;
                    }
                    // An expired pending change: the command path releases
                    // it in its transaction.
                    if !dry_run {
                        one_by_one.push(index);
                        continue;
                    }
                }
                _ => {}
            }
            if crate::append::snapshot_due(
                self.options.snapshot_interval,
                0,
                decision.events.len() as u64,
            ) {
                one_by_one.push(index);
                continue;
            }
            batch_ids.insert(id.clone(), after.clone());
            if let Some(key) = &external[index] {
                batch_external.insert(key.clone(), id.clone());
            }
            if dry_run {
                let decided = Ok(decision.events.len());
                results[index] = Some(outcome(row.line, &row.import, decided, true)?);
                continue;
            }
            fresh.push(Fresh {
                index,
                id: id.clone(),
                decision,
                after,
                external_key: external[index].clone(),
            });
        }
        if !fresh.is_empty() {
            match self.write_fresh(keyring, rows, &fresh, outbox).await {
                Ok(()) => {
                    if let Some(cache) = self.cache() {
                        for f in &fresh {
                            cache.forget(&rows[f.index].import.customer_id);
                        }
                    }
                    for f in &fresh {
                        let row = &rows[f.index];
                        let written = Ok(f.decision.events.len());
                        results[f.index] = Some(outcome(row.line, &row.import, written, false)?);
                    }
                }
                Err(ExecuteError::Outbox(e)) => return Err(ExecuteError::Outbox(e)),
                Err(e) => {
                    tracing::debug!(error = %e, rows = fresh.len(), "import batch not written at once; one row at a time");
                    one_by_one.extend(fresh.iter().map(|f| f.index));
                }
            }
        }
        one_by_one.sort_unstable();
        for index in one_by_one {
            let row = &rows[index];
            // A dry run checks the external id here; a real run's
            // transaction does (`ExternalIdTaken`), also against a
            // concurrent writer.
            if let (true, Some(key)) = (dry_run, &external[index]) {
                if !known.existing.contains(&ids[index])
                    && self
                        .external_holder(key)
                        .await?
                        .is_some_and(|holder| holder != ids[index])
                {
                    results[index] = Some(external_id_taken(row.line, &row.import));
                    continue;
                }
            }
            let result = self
                .import_row(
                    services,
                    &row.metadata,
                    row.line,
                    row.import.clone(),
                    dry_run,
                    |input| outbox(input),
                )
                .await?;
            results[index] = Some(result);
        }
        Ok(results
            .into_iter()
            .zip(rows)
            .map(|(result, row)| {
                result.unwrap_or_else(|| {
                    RowResult::refused(
                        row.line,
                        RowError::new("line", "invalid_row", "the row was not decided"),
                    )
                })
            })
            .collect())
    }

    /// The customer an external id's key belongs to.
    async fn external_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let q = Query::new("SELECT customer_id FROM import_external_ids WHERE external_key = $1")
            .bind(key);
        match self.db.read_optional(&q).await? {
            Some(row) => Ok(Some(row.text("customer_id")?)),
            None => Ok(None),
        }
    }

    /// Writes the new customers of a batch in one transaction: their data
    /// keys, events (sealed), login reservations, email lookups, external
    /// ids and mail, one bulk insert per table. Any failure rolls it all
    /// back.
    async fn write_fresh(
        &self,
        keyring: &Keyring,
        rows: &[PendingRow],
        fresh: &[Fresh],
        outbox: OutboxFn<'_>,
    ) -> Result<(), ExecuteError> {
        let sql = self.db.sql();
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis();
        let mut data_keys = Vec::with_capacity(fresh.len());
        let mut events = Vec::with_capacity(fresh.len());
        let mut logins = Vec::new();
        let mut lookups = Vec::with_capacity(fresh.len());
        let mut externals = Vec::new();
        let mut mails = Vec::new();
        for f in fresh {
            let row = &rows[f.index];
            let (key, wrapped) = keyring.new_data_key(&f.id)?;
            data_keys.push(vec![
                Value::from(&f.id),
                Value::from(wrapped),
                Value::from(now_ms),
            ]);
            let sealed = keys::seal_events(&key, &f.id, 1, &f.decision.events)?;
            for e in codec::encode(&sealed, 1, &row.metadata)? {
                let mut values = vec![
                    Value::from(AGGREGATE_TYPE),
                    Value::from(&f.id),
                    Value::from(e.sequence),
                    Value::from(e.event_type),
                    Value::from(e.event_version),
                    Value::Json(Some(e.payload)),
                    Value::Json(Some(e.metadata)),
                ];
                if !sql.recorded_at_default {
                    values.push(Value::stamp(now));
                }
                events.push(values);
            }
            for (email, kind) in f.after.reserved_emails(now) {
                logins.push(vec![
                    Value::from(keyring.email_key(&email)),
                    Value::from(&f.id),
                    Value::from(kind.as_str()),
                    Value::Int(None),
                ]);
            }
            lookups.push(vec![
                Value::from(&f.id),
                Value::from(keyring.email_key(&row.import.email)),
            ]);
            if let Some(external) = &f.external_key {
                externals.push(vec![Value::from(external), Value::from(&f.id)]);
            }
            let input = OutboxInput {
                customer_id: row.import.customer_id,
                events: &f.decision.events,
                issued_tokens: &f.decision.issued,
                after: &f.after,
            };
            for mail in outbox(&input).map_err(ExecuteError::Outbox)? {
                mails.push(vec![
                    Value::from(mail.id.as_str()),
                    Value::from(&f.id),
                    Value::from(mail.kind.as_str()),
                    Value::from(mail.sender.as_str()),
                    Value::from(mail.recipient.as_str()),
                    Value::from(keys::seal_mail(&key, &f.id, &mail.id, &mail.message)?),
                    Value::from("pending"),
                    Value::I32(Some(0)),
                    Value::from(now_ms),
                    Value::from(0i64),
                    Value::from(now_ms),
                ]);
            }
        }
        let mut tx = self.db.begin().await.map_err(StoreError::from)?;
        // The reservations first: an address taken since the batch read
        // the store fails the batch (its rows then go one at a time).
        for chunk in logins.chunks(1000) {
            let mut insert =
                Query::new("INSERT INTO login_emails (email_key, customer_id, kind, expires_ms) ");
            insert.push_values(chunk.iter().cloned(), |r| r);
            insert.push(" ON CONFLICT (email_key) DO NOTHING RETURNING email_key");
            let inserted = tx.fetch(&insert).await.map_err(StoreError::from)?;
            if inserted.len() != chunk.len() {
                return Err(ExecuteError::Store(StoreError::EmailInUse {
                    email: "(one of the batch)".to_string(),
                }));
            }
        }
        let recorded_at = if sql.recorded_at_default {
            ""
        } else {
            ", recorded_at"
        };
        let tables = [
            (
                "customer_keys",
                "customer_id, wrapped_key, created_ms".to_string(),
                data_keys,
            ),
            (
                "events",
                format!(
                    "aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
                     metadata{recorded_at}"
                ),
                events,
            ),
            (
                "customer_emails",
                "customer_id, email_key".to_string(),
                lookups,
            ),
            (
                "import_external_ids",
                "external_key, customer_id".to_string(),
                externals,
            ),
            (
                "mail_outbox",
                "id, customer_id, kind, sender, recipient, message, status, attempts, \
                 next_attempt_ms, claimed_until_ms, created_ms"
                    .to_string(),
                mails,
            ),
        ];
        for (table, columns, values) in &tables {
            tx.bulk_insert(table, columns, values)
                .await
                .map_err(StoreError::from)?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Imports one parsed row (or, with `dry_run`, only decides it on the
    /// current state): the command runs through the aggregate and the
    /// store's append like any other; `outbox` builds the mail a setup link
    /// calls for. `Err` only for a failure of the store.
    pub async fn import_row(
        &self,
        services: &CustomerServices,
        metadata: &CommandMetadata,
        line: u64,
        import: ImportCustomer,
        dry_run: bool,
        outbox: impl Fn(&OutboxInput<'_>) -> Result<Vec<OutboxMessage>, String>,
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
