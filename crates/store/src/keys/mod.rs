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
//! [`KeyAdmin::seal_legacy_events`] re-seals them under `v2`.
//! Forgetting the customer sets the wrapped key to NULL in the same
//! transaction as the `CustomerForgotten` event: from then on the fields
//! read as forgotten, everywhere, and nothing else changes (events stay as
//! they were stored, so the hash chain still verifies).
//!
//! Login-email reservations and lookups go through [`Keyring::email_key`],
//! an HMAC of the normalised address under the email index key (random,
//! wrapped under the master key in `key_store`), never the address itself.
//!
//! Where things are:
//! - here: the unlocked [`Keyring`] and a customer's `KeyState`;
//! - `sealing`: the associated data of each sealed value, sealing and
//!   opening events, snapshots and queued mail;
//! - `key_store`: the SQL of the key tables (unlock, a customer's key for
//!   an append, forgetting, rotating the master key);
//! - `legacy`: re-sealing data written before encryption or under `v1`
//!   ([`KeyAdmin::seal_legacy_events`]);
//! - `admin`: [`KeyAdmin`], the operator's key work;
//! - `files`: where the master key comes from ([`master_key_for`]).

use access_domain::EmailAddress;
pub use access_security::keys::{DataKey, EmailIndexKey, KeyError, MasterKey, SealScheme};

use crate::error::StoreError;

mod admin;
mod files;
mod key_store;
mod legacy;
mod sealing;

pub use admin::KeyAdmin;
pub use files::{master_key_for, MasterKeyError, MasterKeySource};
pub(crate) use key_store::{erase_customer, key_for_append, unlock};
pub use legacy::LegacySealed;
pub(crate) use sealing::{open_mail, seal_events, seal_mail, seal_snapshot, MailBody, Opener};

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

    /// A keyed digest (HMAC under the email index key, hex) of one key of a
    /// bulk import: `purpose` says what it is for, `source` names the
    /// import. Customer ids derived for imported rows and the blind index
    /// of external ids come from it, so they cannot be computed from an
    /// email or an old system's id without the key. (None of the parts
    /// can hold a NUL: values refuse control characters.)
    pub fn import_digest(&self, purpose: &str, source: &str, key: &str) -> String {
        self.email_index.digest(&format!(
            "access-import\u{0}{purpose}\u{0}{source}\u{0}{key}"
        ))
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
