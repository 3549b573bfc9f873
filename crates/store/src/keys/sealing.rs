//! Sealing and opening personal data with a customer's key: what each
//! sealed value is bound to (its associated data, by scheme), and the
//! ciphers for events, snapshots and queued mail.

use std::collections::HashMap;

use access_domain::events::{PersonalCipher, PersonalDataError};
use access_domain::CustomerEvent;
use serde_json::Value;

use super::{key_error, DataKey, KeyState, Keyring, SealScheme};
use crate::error::StoreError;

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
pub(super) struct CustomerCipher<'k> {
    pub(super) key: Option<&'k DataKey>,
    pub(super) customer_id: &'k str,
    pub(super) sequence: u64,
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
