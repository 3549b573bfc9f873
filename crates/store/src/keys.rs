//! Personal data under per-customer keys (crypto-shredding,
//! docs/privacy.md).
//!
//! Every customer gets a random data key when its first event is written,
//! stored in `customer_keys` wrapped under the master key. Personal fields
//! of its events ([`access_domain::Personal`]), its snapshot and its queued
//! mail are sealed with that key before they are written and opened after
//! they are read.
//!
//! What each sealed value is bound to (its associated data, scheme `v2`,
//! the one written now):
//!
//! | value | bound to |
//! |---|---|
//! | a personal field of an event | customer id, the event's sequence, the field's name (`email`, `name`, `old_email`, `new_email`, `recipient`) |
//! | a snapshot | customer id, the snapshot's last sequence |
//! | a queued mail | customer id, the mail's id |
//!
//! So a sealed value copied to another customer, event or field, or an
//! older snapshot put back under a newer sequence, does not open: it is
//! reported as corrupt ([`StoreError::Corrupt`],
//! [`StoreError::CorruptSnapshot`]) and never used. Values sealed under
//! the first scheme (`v1`, bound to the customer id only) still open;
//! [`crate::Store::seal_legacy_events`] re-seals them under `v2`.
//! Forgetting the customer sets the wrapped key to NULL in the same
//! transaction as the `CustomerForgotten` event: from then on the fields
//! read as forgotten, everywhere, and nothing else changes (events stay as
//! they were stored, so the hash chain still verifies).
//!
//! Login-email reservations and lookups go through [`Keyring::email_key`],
//! an HMAC of the normalised address under the email index key (random,
//! wrapped under the master key in `key_store`), never the address itself.

use std::collections::HashMap;

use access_domain::events::{PersonalCipher, PersonalDataError};
use access_domain::{CustomerEvent, EmailAddress};
pub use access_security::keys::{DataKey, EmailIndexKey, KeyError, MasterKey, SealScheme};
use serde_json::Value;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::error::StoreError;

/// Purposes in the associated data of wrapped keys.
const DATA_KEY: &str = "data-key";
const EMAIL_INDEX: &str = "email-index";

/// The unlocked keys of one database: the master key and the email index.
#[derive(Clone, Debug)]
pub struct Keyring {
    master: MasterKey,
    email_index: EmailIndexKey,
}

impl Keyring {
    /// The master key's public fingerprint.
    pub fn master_key_id(&self) -> &str {
        self.master.id()
    }

    /// The stored form of a login email in reservations and lookups: an
    /// HMAC of the normalised address.
    pub fn email_key(&self, email: &EmailAddress) -> String {
        self.email_index.digest(email.normalized())
    }

    /// [`Keyring::email_key`] of an address as text (trimmed and
    /// lower-cased, as [`EmailAddress::normalized`]).
    pub fn email_key_text(&self, address: &str) -> String {
        self.email_index.digest(&address.trim().to_lowercase())
    }

    /// A new data key for `customer_id` and its wrapped (storable) form.
    pub(crate) fn new_data_key(&self, customer_id: &str) -> Result<(DataKey, String), StoreError> {
        let key = DataKey::generate().map_err(key_error)?;
        let wrapped = self
            .master
            .wrap(DATA_KEY, customer_id, &key)
            .map_err(key_error)?;
        Ok((key, wrapped))
    }

    pub(crate) fn unwrap_data_key(
        &self,
        customer_id: &str,
        wrapped: &str,
    ) -> Result<DataKey, StoreError> {
        self.master
            .unwrap(DATA_KEY, customer_id, wrapped)
            .map_err(|e| StoreError::Keys(format!("the data key of customer {customer_id}: {e}")))
    }
}

fn key_error(e: KeyError) -> StoreError {
    StoreError::Keys(e.to_string())
}

/// A customer's key as read next to its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// No key row: the customer's events predate encryption (or it has no
    /// events yet).
    Missing,
    /// The wrapped key.
    Live(String),
    /// The customer was forgotten.
    Destroyed,
}

impl KeyState {
    /// From the columns of a `LEFT JOIN customer_keys`: whether a key row
    /// exists and its wrapped key.
    pub(crate) fn from_columns(has_row: bool, wrapped: Option<String>) -> Self {
        match (has_row, wrapped) {
            (false, _) => Self::Missing,
            (true, Some(w)) => Self::Live(w),
            (true, None) => Self::Destroyed,
        }
    }
}

/// The customer's data key when it is live (`None`: no key row yet, or
/// destroyed), for the command path to seal with without reading it again.
pub(crate) fn live_key(
    keyring: &Keyring,
    customer_id: &str,
    state: &KeyState,
) -> Result<Option<std::sync::Arc<DataKey>>, StoreError> {
    match state {
        KeyState::Live(wrapped) => Ok(Some(std::sync::Arc::new(
            keyring.unwrap_data_key(customer_id, wrapped)?,
        ))),
        KeyState::Missing | KeyState::Destroyed => Ok(None),
    }
}

/// The associated data of a personal field under `scheme`.
fn field_context(scheme: SealScheme, customer_id: &str, sequence: u64, field: &str) -> Vec<u8> {
    match scheme {
        SealScheme::V1 => customer_id.as_bytes().to_vec(),
        SealScheme::V2 => format!("access/personal/{customer_id}/{sequence}/{field}").into_bytes(),
    }
}

/// The associated data of a snapshot under `scheme`.
fn snapshot_context(scheme: SealScheme, customer_id: &str, last_sequence: u64) -> Vec<u8> {
    match scheme {
        SealScheme::V1 => format!("snapshot/{customer_id}").into_bytes(),
        SealScheme::V2 => format!("access/snapshot/{customer_id}/{last_sequence}").into_bytes(),
    }
}

/// The associated data of a queued mail (sealed under `v2` only; a `v1`
/// mail was never written, so its context opens nothing).
fn mail_context(scheme: SealScheme, customer_id: &str, mail_id: &str) -> Vec<u8> {
    match scheme {
        SealScheme::V1 => b"access/mail/never-sealed-under-v1".to_vec(),
        SealScheme::V2 => format!("access/mail/{customer_id}/{mail_id}").into_bytes(),
    }
}

/// Seals and opens the personal fields of one event of one customer,
/// bound to customer id, the event's sequence and the field's name.
pub(crate) struct CustomerCipher<'k> {
    key: Option<&'k DataKey>,
    customer_id: &'k str,
    sequence: u64,
}

impl PersonalCipher for CustomerCipher<'_> {
    fn seal(&self, field: &str, plain: &[u8]) -> Result<String, PersonalDataError> {
        let key = self.key.ok_or_else(|| {
            PersonalDataError("the customer's key is destroyed: nothing can be sealed".into())
        })?;
        let context = field_context(SealScheme::CURRENT, self.customer_id, self.sequence, field);
        key.seal(&context, plain)
            .map_err(|e| PersonalDataError(format!("`{field}`: {e}")))
    }

    fn open(&self, field: &str, sealed: &str) -> Result<Option<Vec<u8>>, PersonalDataError> {
        match self.key {
            None => Ok(None),
            Some(key) => key
                .open(sealed, |scheme| {
                    field_context(scheme, self.customer_id, self.sequence, field)
                })
                .map(Some)
                .map_err(|e| PersonalDataError(format!("`{field}`: {e}"))),
        }
    }
}

/// Seals every personal field of `events` with `key`; the first event gets
/// `first_sequence`, the next one more, and so on.
pub(crate) fn seal_events(
    key: &DataKey,
    customer_id: &str,
    first_sequence: u64,
    events: &[CustomerEvent],
) -> Result<Vec<CustomerEvent>, StoreError> {
    events
        .iter()
        .zip(first_sequence..)
        .map(|(e, sequence)| {
            let cipher = CustomerCipher {
                key: Some(key),
                customer_id,
                sequence,
            };
            let mut sealed = e.clone();
            sealed
                .seal(&cipher)
                .map_err(|err| StoreError::Keys(err.to_string()))?;
            Ok(sealed)
        })
        .collect()
}

/// The stored form of a snapshot at `last_sequence`: `{"sealed": "v2.…"}`.
pub(crate) fn seal_snapshot(
    key: &DataKey,
    customer_id: &str,
    last_sequence: u64,
    state: &Value,
) -> Result<Value, StoreError> {
    let plain = serde_json::to_vec(state)
        .map_err(|e| StoreError::Database(format!("snapshot does not serialize: {e}")))?;
    let context = snapshot_context(SealScheme::CURRENT, customer_id, last_sequence);
    let sealed = key.seal(&context, &plain).map_err(key_error)?;
    Ok(serde_json::json!({ "sealed": sealed }))
}

/// Marks a stored mail message as sealed (a rendered message never starts
/// with it: it starts with a header).
const SEALED_MAIL: &str = "sealed:";

/// The stored form of a queued mail message: sealed with the customer's
/// key, bound to customer id and mail id.
pub(crate) fn seal_mail(
    key: &DataKey,
    customer_id: &str,
    mail_id: &str,
    message: &str,
) -> Result<String, StoreError> {
    let context = mail_context(SealScheme::CURRENT, customer_id, mail_id);
    let sealed = key.seal(&context, message.as_bytes()).map_err(key_error)?;
    Ok(format!("{SEALED_MAIL}{sealed}"))
}

/// What a stored mail message is to the delivery worker.
pub(crate) enum MailBody {
    /// Ready to send.
    Plain(String),
    /// Sealed with a key that is destroyed: the customer was forgotten.
    Forgotten,
}

/// Opens a stored mail message (one written before mail was sealed, or by
/// a store that does not seal, is returned as it is).
pub(crate) fn open_mail(
    keyring: &Keyring,
    customer_id: &str,
    state: &KeyState,
    mail_id: &str,
    stored: String,
) -> Result<MailBody, StoreError> {
    let Some(sealed) = stored.strip_prefix(SEALED_MAIL) else {
        return Ok(MailBody::Plain(stored));
    };
    let key = match state {
        KeyState::Live(wrapped) => keyring.unwrap_data_key(customer_id, wrapped)?,
        KeyState::Destroyed => return Ok(MailBody::Forgotten),
        KeyState::Missing => {
            return Err(StoreError::Keys(format!(
                "mail {mail_id} is sealed but customer {customer_id} has no key"
            )))
        }
    };
    let plain = key
        .open(sealed, |scheme| mail_context(scheme, customer_id, mail_id))
        .map_err(|e| StoreError::Keys(format!("mail {mail_id}: {e}")))?;
    String::from_utf8(plain)
        .map(MailBody::Plain)
        .map_err(|_| StoreError::Keys(format!("mail {mail_id}: the opened message is not UTF-8")))
}

/// Opens events and snapshots of many customers, unwrapping each
/// customer's key at most once.
pub(crate) struct Opener<'k> {
    keyring: &'k Keyring,
    keys: HashMap<String, Option<DataKey>>,
}

impl<'k> Opener<'k> {
    pub(crate) fn new(keyring: &'k Keyring) -> Self {
        Self {
            keyring,
            keys: HashMap::new(),
        }
    }

    /// The customer's key: `Some` when live, `None` when destroyed.
    fn key(&mut self, customer_id: &str, state: &KeyState) -> Result<Option<&DataKey>, String> {
        if !self.keys.contains_key(customer_id) {
            let key = match state {
                KeyState::Live(wrapped) => Some(
                    self.keyring
                        .unwrap_data_key(customer_id, wrapped)
                        .map_err(|e| e.to_string())?,
                ),
                KeyState::Destroyed => None,
                KeyState::Missing => {
                    return Err("personal data is sealed but the customer has no key".into())
                }
            };
            self.keys.insert(customer_id.to_string(), key);
        }
        Ok(self.keys.get(customer_id).and_then(Option::as_ref))
    }

    /// Opens the sealed personal fields of `event` (events written before
    /// encryption have none and pass unchanged).
    pub(crate) fn open_event(
        &mut self,
        customer_id: &str,
        sequence: u64,
        state: &KeyState,
        event: &mut CustomerEvent,
    ) -> Result<(), String> {
        if !event.has_sealed_fields() {
            return Ok(());
        }
        let key = self.key(customer_id, state)?;
        let cipher = CustomerCipher {
            key,
            customer_id,
            sequence,
        };
        event.open(&cipher).map_err(|e| e.to_string())
    }

    /// The state of the snapshot at `last_sequence` as JSON: `None` when
    /// the key is destroyed (the caller then replays the events, whose
    /// fields read as forgotten).
    pub(crate) fn open_snapshot(
        &mut self,
        customer_id: &str,
        last_sequence: u64,
        state: &KeyState,
        payload: Value,
    ) -> Result<Option<Value>, String> {
        let Some(sealed) = payload.get("sealed").and_then(Value::as_str) else {
            // A snapshot written before encryption.
            return Ok(Some(payload));
        };
        let sealed = sealed.to_string();
        let Some(key) = self.key(customer_id, state)? else {
            return Ok(None);
        };
        let plain = key
            .open(&sealed, |scheme| {
                snapshot_context(scheme, customer_id, last_sequence)
            })
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| format!("opened snapshot is not JSON: {e}"))
    }
}

/// Reads the key store with `master`, creating it on first use. A
/// different master key than the one the database was set up with is a
/// clear error, never silent garbage.
pub(crate) async fn unlock<'e, DB, E>(executor: E, master: MasterKey) -> Result<Keyring, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB> + Copy,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let select = "SELECT master_key_id, email_index_key FROM key_store WHERE id = 1";
    let mut row = sqlx::query::<DB>(select).fetch_optional(executor).await?;
    if row.is_none() {
        // First start on this database: a new email index key. Another
        // replica may do the same at the same moment; one insert wins and
        // both read the winner's row.
        let index = DataKey::generate().map_err(key_error)?;
        let wrapped = master.wrap(EMAIL_INDEX, "1", &index).map_err(key_error)?;
        sqlx::query::<DB>(
            "INSERT INTO key_store (id, master_key_id, email_index_key, created_ms) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(master.id())
        .bind(wrapped.as_str())
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(executor)
        .await?;
        row = sqlx::query::<DB>(select).fetch_optional(executor).await?;
    }
    let row = row.ok_or_else(|| StoreError::Keys("the key store is empty".into()))?;
    let stored_id: String = row.try_get("master_key_id")?;
    let wrapped: String = row.try_get("email_index_key")?;
    if stored_id != master.id() {
        return Err(StoreError::WrongMasterKey {
            expected: stored_id,
            given: master.id().to_string(),
        });
    }
    let index =
        master
            .unwrap(EMAIL_INDEX, "1", &wrapped)
            .map_err(|_| StoreError::WrongMasterKey {
                expected: stored_id,
                given: master.id().to_string(),
            })?;
    Ok(Keyring {
        master,
        email_index: index.into_email_index().map_err(key_error)?,
    })
}

/// The customer's data key for an append, inside the append's
/// transaction: created with the customer's first event (or, for a
/// customer whose events predate encryption, with its next one).
pub(crate) async fn key_for_append<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    customer_id: &str,
) -> Result<DataKey, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let existing =
        sqlx::query::<DB>("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(row) = existing {
        let wrapped: Option<String> = row.try_get("wrapped_key")?;
        return match wrapped {
            Some(w) => keyring.unwrap_data_key(customer_id, &w),
            None => Err(StoreError::Keys(format!(
                "customer {customer_id} was forgotten: its key is destroyed"
            ))),
        };
    }
    let (key, wrapped) = keyring.new_data_key(customer_id)?;
    sqlx::query::<DB>(
        "INSERT INTO customer_keys (customer_id, wrapped_key, created_ms) VALUES ($1, $2, $3)",
    )
    .bind(customer_id)
    .bind(wrapped.as_str())
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&mut *conn)
    .await
    .map_err(|e| match crate::error::classify(&e) {
        // A concurrent first command for the same customer: the events
        // insert would conflict anyway.
        Some(_) => StoreError::Conflict {
            customer_id: customer_id.to_string(),
            expected: 0,
        },
        None => e.into(),
    })?;
    Ok(key)
}

/// Everything a forget erases besides the key's wrapped copy, in the
/// append's transaction: the snapshot, email lookups, sessions, stored
/// responses, and the customer's mail (pending mail is cancelled; the
/// delivery log keeps only that a message existed).
pub(crate) async fn erase_customer<DB>(
    conn: &mut DB::Connection,
    customer_id: &str,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let now_ms = chrono::Utc::now().timestamp_millis();
    sqlx::query::<DB>(
        "UPDATE customer_keys SET wrapped_key = NULL, destroyed_ms = $2 WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    for statement in [
        "DELETE FROM snapshots WHERE aggregate_id = $1",
        "DELETE FROM customer_emails WHERE customer_id = $1",
        "DELETE FROM login_emails WHERE customer_id = $1",
        "DELETE FROM customer_sessions WHERE customer_id = $1",
        // Responses name the customer in their body (no-op responses are
        // stored without the customer column).
        "DELETE FROM idempotency_keys WHERE customer_id = $1 OR body LIKE '%' || $1 || '%'",
        "UPDATE mail_outbox SET recipient = '[forgotten]', message = NULL, last_error = \
         CASE WHEN status = 'pending' THEN 'cancelled: the customer was forgotten' ELSE NULL END, \
         status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END WHERE customer_id = $1",
    ] {
        sqlx::query::<DB>(statement)
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Re-wraps every live data key and the email index key under `new`, in
/// one transaction; events are untouched. Returns the number of customer
/// keys re-wrapped.
pub(crate) async fn rotate_master<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    new: &MasterKey,
) -> Result<u64, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let rows = sqlx::query::<DB>(
        "SELECT customer_id, wrapped_key FROM customer_keys WHERE wrapped_key IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut count = 0;
    for row in rows {
        let customer_id: String = row.try_get("customer_id")?;
        let wrapped: String = row.try_get("wrapped_key")?;
        let key = keyring.unwrap_data_key(&customer_id, &wrapped)?;
        let rewrapped = new.wrap(DATA_KEY, &customer_id, &key).map_err(key_error)?;
        sqlx::query::<DB>("UPDATE customer_keys SET wrapped_key = $1 WHERE customer_id = $2")
            .bind(rewrapped.as_str())
            .bind(customer_id.as_str())
            .execute(&mut *conn)
            .await?;
        count += 1;
    }
    let wrapped_index: String =
        sqlx::query::<DB>("SELECT email_index_key FROM key_store WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
            .try_get("email_index_key")?;
    let index = keyring
        .master
        .unwrap(EMAIL_INDEX, "1", &wrapped_index)
        .map_err(key_error)?;
    let rewrapped = new.wrap(EMAIL_INDEX, "1", &index).map_err(key_error)?;
    sqlx::query::<DB>(
        "UPDATE key_store SET master_key_id = $1, email_index_key = $2, rotated_ms = $3 WHERE id = 1",
    )
    .bind(new.id())
    .bind(rewrapped.as_str())
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&mut *conn)
    .await?;
    Ok(count)
}

/// What [`seal_legacy_events`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacySealed {
    /// Customers whose events held personal data in the clear or sealed
    /// under an older scheme.
    pub customers: u64,
    /// Events rewritten with their personal fields sealed under the
    /// current scheme.
    pub events: u64,
}

/// Event types that carry personal fields (all at version 1.0).
pub(crate) const PERSONAL_TYPES: &[&str] = &[
    "CustomerRegistered",
    "EmailChanged",
    "AccessNotificationSent",
    "EmailChangeRequested",
    "EmailChangeConfirmed",
];

/// One customer's events written before encryption, or sealed under an
/// older scheme, rewritten with their personal fields sealed under the
/// current one (same transaction for all of them). `rows` are (global
/// position, sequence, payload). Each row keeps its type, version and every
/// other field.
pub(crate) async fn seal_legacy_customer<DB>(
    conn: &mut DB::Connection,
    keyring: &Keyring,
    customer_id: &str,
    rows: Vec<(i64, i64, Value)>,
    update_sql: &str,
) -> Result<u64, StoreError>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let wrapped: Option<Option<String>> =
        sqlx::query::<DB>("SELECT wrapped_key FROM customer_keys WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| row.try_get("wrapped_key"))
            .transpose()?;
    // A forgotten customer's sealed values never open again: nothing to
    // re-seal (values in the clear still are an error below).
    let destroyed = matches!(wrapped, Some(None));
    let mut todo = Vec::new();
    for (position, sequence, payload) in rows {
        let mut event: CustomerEvent = serde_json::from_value(payload).map_err(|e| {
            StoreError::Database(format!(
                "event at position {position} of customer {customer_id} does not read: {e}"
            ))
        })?;
        let sealed = event.sealed_values();
        let old_scheme = sealed
            .iter()
            .any(|s| SealScheme::of(s).ok() != Some(SealScheme::CURRENT));
        if sealed.is_empty() || (old_scheme && !destroyed) {
            todo.push((position, sequence, event));
        }
    }
    if todo.is_empty() {
        return Ok(0);
    }
    let key = key_for_append::<DB>(&mut *conn, keyring, customer_id).await?;
    let mut rewritten = 0;
    for (position, sequence, mut event) in todo {
        let as_json = |e: &CustomerEvent| {
            serde_json::to_string(e)
                .map_err(|err| StoreError::Database(format!("event does not serialize: {err}")))
        };
        let before = as_json(&event)?;
        let cipher = CustomerCipher {
            key: Some(&key),
            customer_id,
            sequence: u64::try_from(sequence).unwrap_or_default(),
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            customer_id: customer_id.to_string(),
            sequence: u64::try_from(sequence).unwrap_or_default(),
            position,
            detail,
        };
        event.open(&cipher).map_err(|e| corrupt(e.to_string()))?;
        event.seal(&cipher).map_err(|e| corrupt(e.to_string()))?;
        let after = as_json(&event)?;
        if after == before {
            continue;
        }
        sqlx::query::<DB>(update_sql)
            .bind(after.as_str())
            .bind(position)
            .execute(&mut *conn)
            .await?;
        rewritten += 1;
    }
    if rewritten > 0 {
        // Its snapshot was written in the clear or under the older scheme
        // too; the next one due is sealed under the current one.
        sqlx::query::<DB>("DELETE FROM snapshots WHERE aggregate_id = $1")
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rewritten)
}

/// Where the master key came from (for the start-up log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `ACCESS_MASTER_KEY`.
    Given,
    /// `ACCESS_MASTER_KEY_FILE`, or the embedded default's key file.
    File(std::path::PathBuf),
    /// Generated now into this file (the embedded default's first start).
    Generated(std::path::PathBuf),
    /// Generated for an in-memory database (lives as long as the process).
    Ephemeral,
}

/// Why no master key could be had.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("ACCESS_MASTER_KEY: {0}")]
    Invalid(KeyError),
    #[error("master key file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("a PostgreSQL store needs a master key: set ACCESS_MASTER_KEY or ACCESS_MASTER_KEY_FILE (64 hex characters; `accessctl keys generate` prints one)")]
    Missing,
}

/// The master key for `database_url`: `given` (the key itself) or `file`,
/// or, for the embedded SQLite default only, the file `<database>.key`
/// next to the database, generated on first use with mode 0600.
pub fn master_key_for(
    database_url: &str,
    given: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<(MasterKey, MasterKeySource), MasterKeyError> {
    if let Some(text) = given {
        let key = MasterKey::parse(text).map_err(MasterKeyError::Invalid)?;
        return Ok((key, MasterKeySource::Given));
    }
    if let Some(path) = file {
        return read_key_file(path).map(|k| (k, MasterKeySource::File(path.to_path_buf())));
    }
    let Some(rest) = database_url.strip_prefix("sqlite:") else {
        return Err(MasterKeyError::Missing);
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || database_url.contains("mode=memory") {
        let (key, _) = MasterKey::generate().map_err(MasterKeyError::Invalid)?;
        return Ok((key, MasterKeySource::Ephemeral));
    }
    let key_path = std::path::PathBuf::from(format!("{path}.key"));
    if key_path.exists() {
        return read_key_file(&key_path).map(|k| (k, MasterKeySource::File(key_path)));
    }
    let (key, text) = MasterKey::generate().map_err(MasterKeyError::Invalid)?;
    write_new_key_file(&key_path, &text)?;
    Ok((key, MasterKeySource::Generated(key_path)))
}

fn file_error(path: &std::path::Path, detail: impl std::fmt::Display) -> MasterKeyError {
    MasterKeyError::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn read_key_file(path: &std::path::Path) -> Result<MasterKey, MasterKeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    MasterKey::parse(&text).map_err(|e| file_error(path, e))
}

/// Writes a new key file readable by its owner only; never overwrites.
fn write_new_key_file(path: &std::path::Path, text: &str) -> Result<(), MasterKeyError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| file_error(path, e))?;
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_gets_a_key_file_once_with_owner_only_access() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let (first, source) = master_key_for(&url, None, None).unwrap();
        let MasterKeySource::Generated(path) = source else {
            panic!("expected a generated key, got {source:?}")
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = master_key_for(&url, None, None).unwrap();
        assert_eq!(source, MasterKeySource::File(path));
        assert_eq!(first.id(), again.id());
    }

    #[test]
    fn postgres_needs_a_key_and_a_bad_key_is_refused() {
        assert!(matches!(
            master_key_for("postgres://h/db", None, None),
            Err(MasterKeyError::Missing)
        ));
        assert!(matches!(
            master_key_for("postgres://h/db", Some("nope"), None),
            Err(MasterKeyError::Invalid(_))
        ));
        let given = "11".repeat(32);
        let (key, source) = master_key_for("postgres://h/db", Some(&given), None).unwrap();
        assert_eq!(source, MasterKeySource::Given);
        assert_eq!(key.id(), MasterKey::parse(&given).unwrap().id());
        let err = master_key_for(
            "postgres://h/db",
            None,
            Some(std::path::Path::new("/nonexistent/k")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/k"), "{err}");
    }
}
