//! Events: what happened to a customer (past tense).
//!
//! Each event has an explicit type name and a version so that older stored
//! forms can be upcast (`crate::upcasting`). Together the events hold
//! everything needed to rebuild the aggregate and the audit trail. They never
//! hold a plain password or token: only PHC password hashes and SHA-256
//! token digests.
//!
//! Personal data (names, email addresses) sits only in fields of type
//! [`Personal`], which the store encrypts per customer (crypto-shredding,
//! docs/privacy.md) without changing the shape of the history.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::values::{
    CustomerId, CustomerName, EmailAddress, ExternalId, ImportSource, PasswordHash, Role,
    TokenDigest, TotpSecret,
};

/// What a forgotten value shows: in projections, exports and the API.
pub const FORGOTTEN: &str = "[forgotten]";

/// Personal data inside an event.
///
/// In memory it is [`Personal::Known`]. The store seals every personal field
/// with the customer's data key before writing ([`CustomerEvent::seal`]) and
/// opens it after reading ([`CustomerEvent::open`]); once the key has been
/// destroyed (the customer was forgotten) the value opens as
/// [`Personal::Forgotten`]. Serialized as the bare value when known,
/// `{"sealed": "v2.…"}` when sealed (the prefix names the
/// sealing scheme; `v1.` values, written before sealed values were bound to
/// their event and field, still open) and `"[forgotten]"` when forgotten; a
/// bare value in a stored row (written before encryption) reads as known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal<T> {
    Known(T),
    /// Ciphertext as stored, not yet opened.
    Sealed(String),
    /// The customer was forgotten: the key that opened this is gone.
    Forgotten,
}

impl<T> Personal<T> {
    /// The value, when known.
    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known(v) => Some(v),
            Self::Sealed(_) | Self::Forgotten => None,
        }
    }

    pub fn into_known(self) -> Option<T> {
        match self {
            Self::Known(v) => Some(v),
            Self::Sealed(_) | Self::Forgotten => None,
        }
    }

    /// The value as text, or [`FORGOTTEN`] when it is not readable.
    pub fn shown(&self) -> String
    where
        T: AsRef<str>,
    {
        self.known()
            .map_or_else(|| FORGOTTEN.to_string(), |v| v.as_ref().to_string())
    }
}

/// Seals and opens personal data for one event of one customer
/// (implemented by the store with the customer's data key; the domain does
/// no cryptography). `field` names the event's field the value belongs to
/// (`email`, `name`, `old_email`, `new_email`, `recipient`), so that the
/// cipher can bind the value to it: a value moved to another field does
/// not open.
pub trait PersonalCipher {
    /// Encrypts the serialized value of `field`.
    fn seal(&self, field: &str, plain: &[u8]) -> Result<String, PersonalDataError>;
    /// Decrypts the value of `field`; `Ok(None)` when the customer's key was
    /// destroyed.
    fn open(&self, field: &str, sealed: &str) -> Result<Option<Vec<u8>>, PersonalDataError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("personal data: {0}")]
pub struct PersonalDataError(pub String);

/// A personal field of any type, as sealing and opening see it.
trait PersonalField {
    fn seal_with(
        &mut self,
        field: &str,
        cipher: &dyn PersonalCipher,
    ) -> Result<(), PersonalDataError>;
    fn open_with(
        &mut self,
        field: &str,
        cipher: &dyn PersonalCipher,
    ) -> Result<(), PersonalDataError>;
    /// The stored form, while sealed.
    fn sealed(&self) -> Option<&str>;
}

impl<T: Serialize + DeserializeOwned> PersonalField for Personal<T> {
    fn seal_with(
        &mut self,
        field: &str,
        cipher: &dyn PersonalCipher,
    ) -> Result<(), PersonalDataError> {
        if let Self::Known(value) = self {
            let plain = serde_json::to_vec(value)
                .map_err(|e| PersonalDataError(format!("`{field}` does not serialize: {e}")))?;
            *self = Self::Sealed(cipher.seal(field, &plain)?);
        }
        Ok(())
    }

    fn open_with(
        &mut self,
        field: &str,
        cipher: &dyn PersonalCipher,
    ) -> Result<(), PersonalDataError> {
        if let Self::Sealed(sealed) = self {
            *self = match cipher.open(field, sealed)? {
                Some(plain) => Self::Known(serde_json::from_slice(&plain).map_err(|e| {
                    // Only the error's category: its message may quote the
                    // decrypted value.
                    PersonalDataError(format!(
                        "opened `{field}` does not deserialize ({:?})",
                        e.classify()
                    ))
                })?),
                None => Self::Forgotten,
            };
        }
        Ok(())
    }

    fn sealed(&self) -> Option<&str> {
        match self {
            Self::Sealed(s) => Some(s),
            Self::Known(_) | Self::Forgotten => None,
        }
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Known(v) => v.serialize(serializer),
            Self::Sealed(s) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("sealed", s)?;
                map.end()
            }
            Self::Forgotten => serializer.serialize_str(FORGOTTEN),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match &value {
            serde_json::Value::String(s) if s == FORGOTTEN => return Ok(Self::Forgotten),
            serde_json::Value::Object(map) if map.len() == 1 => {
                if let Some(sealed) = map.get("sealed") {
                    return match sealed {
                        serde_json::Value::String(s) => Ok(Self::Sealed(s.clone())),
                        _ => Err(serde::de::Error::custom("`sealed` must be a string")),
                    };
                }
            }
            _ => {}
        }
        T::deserialize(value)
            .map(Self::Known)
            .map_err(serde::de::Error::custom)
    }
}

/// A single-use password-setup link, as stored: digest and expiry only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupLink {
    pub token_digest: TokenDigest,
    pub expires_at: DateTime<Utc>,
}

/// Why a password stopped working without a new one being set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordClearedReason {
    /// The login email changed and a setup link went to the new address.
    EmailChangedWithSetupLink,
}

/// `type_name` is the variant's name (as stored); [`EventKind`] names the
/// kind without the data, in snake_case (the audit trail's kinds).
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumDiscriminants,
)]
#[strum_discriminants(
    name(EventKind),
    derive(strum::IntoStaticStr, strum::VariantNames),
    strum(serialize_all = "snake_case"),
    doc = "The kind of an event, without its data. Its snake_case name (`customer_registered`, …) is the audit trail's kind."
)]
pub enum CustomerEvent {
    CustomerRegistered {
        customer_id: CustomerId,
        email: Personal<EmailAddress>,
        name: Option<Personal<CustomerName>>,
        at: DateTime<Utc>,
    },
    /// An administrator or upstream service changed the login email.
    EmailChanged {
        old_email: Personal<EmailAddress>,
        new_email: Personal<EmailAddress>,
        at: DateTime<Utc>,
    },
    AccessGranted {
        role: Role,
        at: DateTime<Utc>,
    },
    /// An administrator assigned a password. `temporary`: the customer must
    /// change it at the next login.
    PasswordSet {
        password_hash: PasswordHash,
        temporary: bool,
        at: DateTime<Utc>,
    },
    /// The password stopped working (no new one yet).
    PasswordCleared {
        reason: PasswordClearedReason,
        at: DateTime<Utc>,
    },
    /// An access notification went to `recipient`: with a setup link, or,
    /// after a manually set password, as a plain notice (no password, no
    /// link). A new setup link voids every earlier one.
    AccessNotificationSent {
        recipient: Personal<EmailAddress>,
        setup_link: Option<SetupLink>,
        at: DateTime<Utc>,
    },
    /// Access removed: password, setup links and pending changes discarded.
    AccessRevoked {
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// The customer asked to move the login to `new_email`; a validation
    /// link went to the new address and a notice to the old one.
    EmailChangeRequested {
        old_email: Personal<EmailAddress>,
        new_email: Personal<EmailAddress>,
        token_digest: TokenDigest,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The customer followed the validation link: the login moved.
    EmailChangeConfirmed {
        old_email: Personal<EmailAddress>,
        new_email: Personal<EmailAddress>,
        at: DateTime<Utc>,
    },
    /// The customer set a password through a setup link (not temporary).
    PasswordSetupCompleted {
        password_hash: PasswordHash,
        at: DateTime<Utc>,
    },
    /// The customer changed the password, giving the current one.
    PasswordChanged {
        password_hash: PasswordHash,
        at: DateTime<Utc>,
    },
    /// The same password, hashed again with the hasher's current
    /// parameters at a successful login (the stored hash was made with
    /// older ones). Not a change of the login: sessions stay open.
    PasswordRehashed {
        password_hash: PasswordHash,
        at: DateTime<Utc>,
    },
    /// The customer's personal data was erased (right to erasure): the
    /// store destroyed the customer's data key in the same transaction, so
    /// every personal field of this customer now reads as forgotten. Always
    /// the last event of a stream.
    CustomerForgotten {
        at: DateTime<Utc>,
    },
    /// The customer was brought in from an older system (bulk import), with
    /// the password hash that system kept (argon2, bcrypt, scrypt or PBKDF2;
    /// rehashed to argon2id at the next login). Registers the customer, and
    /// gives access when `access` is set.
    CustomerImported {
        customer_id: CustomerId,
        source: ImportSource,
        /// The customer's id in the old system: personal (it names the
        /// person there), sealed like the email and the name.
        external_id: Option<Personal<ExternalId>>,
        email: Personal<EmailAddress>,
        name: Option<Personal<CustomerName>>,
        access: Option<Role>,
        password_hash: Option<PasswordHash>,
        must_change_password: bool,
        at: DateTime<Utc>,
    },
    /// The customer began enrolling a TOTP authenticator: a fresh secret,
    /// pending until a code from it is confirmed (a newer one replaces it).
    /// The secret is personal and secret: sealed like the email, shredded
    /// by a forget, never in the feed, an export or the audit trail.
    TotpEnrollmentBegun {
        totp_secret: Personal<TotpSecret>,
        at: DateTime<Utc>,
    },
    /// A code from the pending secret was confirmed: it is the customer's
    /// second factor. `step` is the time step of that code (not accepted
    /// again).
    TotpEnrolled {
        step: u64,
        at: DateTime<Utc>,
    },
    /// A new set of recovery codes, shown to the customer once; only their
    /// SHA-256 digests are kept. Replaces any earlier set.
    RecoveryCodesIssued {
        recovery_code_digests: Vec<TokenDigest>,
        at: DateTime<Utc>,
    },
    /// A TOTP code of time step `step` was accepted (at a login or to
    /// confirm a change): no code of this step or an earlier one is
    /// accepted again.
    TotpCodeAccepted {
        step: u64,
        at: DateTime<Utc>,
    },
    /// A recovery code was used up.
    RecoveryCodeUsed {
        recovery_code_digest: TokenDigest,
        at: DateTime<Utc>,
    },
    /// The customer removed the TOTP second factor (with the password and
    /// a code): secret and recovery codes discarded.
    TotpRemoved {
        at: DateTime<Utc>,
    },
    /// An administrator reset the customer's second factor (a lost device):
    /// secret and recovery codes discarded, sessions ended. `recipient` is
    /// the login email the notice goes to.
    SecondFactorReset {
        reason: Option<String>,
        recipient: Personal<EmailAddress>,
        at: DateTime<Utc>,
    },
}

/// Current version of each event type.
pub const EVENT_VERSIONS: &[(&str, &str)] = &[
    ("CustomerRegistered", "1.0"),
    ("EmailChanged", "1.0"),
    ("AccessGranted", "1.1"),
    ("PasswordSet", "1.1"),
    ("PasswordCleared", "1.0"),
    ("AccessNotificationSent", "1.0"),
    ("AccessRevoked", "1.0"),
    ("EmailChangeRequested", "1.0"),
    ("EmailChangeConfirmed", "1.0"),
    ("PasswordSetupCompleted", "1.0"),
    ("PasswordChanged", "1.0"),
    ("PasswordRehashed", "1.0"),
    ("CustomerForgotten", "1.0"),
    ("CustomerImported", "1.0"),
    ("TotpEnrollmentBegun", "1.0"),
    ("TotpEnrolled", "1.0"),
    ("RecoveryCodesIssued", "1.0"),
    ("TotpCodeAccepted", "1.0"),
    ("RecoveryCodeUsed", "1.0"),
    ("TotpRemoved", "1.0"),
    ("SecondFactorReset", "1.0"),
];

impl CustomerEvent {
    /// The event's type name, as stored (the variant's name).
    pub fn type_name(&self) -> &'static str {
        self.into()
    }

    /// The event's kind, named in snake_case (the audit trail's kind).
    pub fn kind(&self) -> EventKind {
        self.into()
    }

    /// The current version of this event's type.
    pub fn version(&self) -> &'static str {
        let name = self.type_name();
        EVENT_VERSIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("1.0", |(_, v)| v)
    }

    /// When it happened (the clock of the service that handled the command).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::CustomerRegistered { at, .. }
            | Self::EmailChanged { at, .. }
            | Self::AccessGranted { at, .. }
            | Self::PasswordSet { at, .. }
            | Self::PasswordCleared { at, .. }
            | Self::AccessNotificationSent { at, .. }
            | Self::AccessRevoked { at, .. }
            | Self::EmailChangeRequested { at, .. }
            | Self::EmailChangeConfirmed { at, .. }
            | Self::PasswordSetupCompleted { at, .. }
            | Self::PasswordChanged { at, .. }
            | Self::PasswordRehashed { at, .. }
            | Self::CustomerImported { at, .. }
            | Self::TotpEnrollmentBegun { at, .. }
            | Self::TotpEnrolled { at, .. }
            | Self::RecoveryCodesIssued { at, .. }
            | Self::TotpCodeAccepted { at, .. }
            | Self::RecoveryCodeUsed { at, .. }
            | Self::TotpRemoved { at }
            | Self::SecondFactorReset { at, .. }
            | Self::CustomerForgotten { at } => *at,
        }
    }

    /// The personal fields of this event with their names, for sealing and
    /// opening.
    fn personal_fields(&mut self) -> Vec<(&'static str, &mut dyn PersonalField)> {
        let mut fields: Vec<(&'static str, &mut dyn PersonalField)> = Vec::new();
        match self {
            Self::CustomerRegistered { email, name, .. } => {
                fields.push(("email", email));
                fields.extend(name.as_mut().map(|n| ("name", n as &mut dyn PersonalField)));
            }
            Self::CustomerImported {
                email,
                name,
                external_id,
                ..
            } => {
                fields.push(("email", email));
                fields.extend(name.as_mut().map(|n| ("name", n as &mut dyn PersonalField)));
                fields.extend(
                    external_id
                        .as_mut()
                        .map(|e| ("external_id", e as &mut dyn PersonalField)),
                );
            }
            Self::EmailChanged {
                old_email,
                new_email,
                ..
            }
            | Self::EmailChangeRequested {
                old_email,
                new_email,
                ..
            }
            | Self::EmailChangeConfirmed {
                old_email,
                new_email,
                ..
            } => {
                fields.push(("old_email", old_email));
                fields.push(("new_email", new_email));
            }
            Self::AccessNotificationSent { recipient, .. }
            | Self::SecondFactorReset { recipient, .. } => fields.push(("recipient", recipient)),
            Self::TotpEnrollmentBegun { totp_secret, .. } => {
                fields.push(("totp_secret", totp_secret));
            }
            Self::TotpEnrolled { .. }
            | Self::RecoveryCodesIssued { .. }
            | Self::TotpCodeAccepted { .. }
            | Self::RecoveryCodeUsed { .. }
            | Self::TotpRemoved { .. }
            | Self::AccessGranted { .. }
            | Self::PasswordSet { .. }
            | Self::PasswordCleared { .. }
            | Self::AccessRevoked { .. }
            | Self::PasswordSetupCompleted { .. }
            | Self::PasswordChanged { .. }
            | Self::PasswordRehashed { .. }
            | Self::CustomerForgotten { .. } => {}
        }
        fields
    }

    /// Seals every personal field with `cipher` (before storing).
    pub fn seal(&mut self, cipher: &dyn PersonalCipher) -> Result<(), PersonalDataError> {
        self.personal_fields()
            .into_iter()
            .try_for_each(|(name, field)| field.seal_with(name, cipher))
    }

    /// Opens every sealed personal field with `cipher` (after reading):
    /// known again, or forgotten when the customer's key is gone.
    pub fn open(&mut self, cipher: &dyn PersonalCipher) -> Result<(), PersonalDataError> {
        self.personal_fields()
            .into_iter()
            .try_for_each(|(name, field)| field.open_with(name, cipher))
    }

    /// True when a personal field is still sealed (not opened).
    pub fn has_sealed_fields(&mut self) -> bool {
        !self.sealed_values().is_empty()
    }

    /// The stored (sealed) form of every personal field still sealed, for
    /// the store to tell which scheme each was sealed under.
    pub fn sealed_values(&mut self) -> Vec<String> {
        self.personal_fields()
            .into_iter()
            .filter_map(|(_, field)| field.sealed().map(str::to_string))
            .collect()
    }
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        self.type_name().to_string()
    }

    fn event_version(&self) -> String {
        self.version().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reversible stand-in cipher (tests of the field walk only; the
    /// store uses XChaCha20-Poly1305).
    struct Rot(bool);
    /// The field's name is written in front, and checked when opening.
    impl PersonalCipher for Rot {
        fn seal(&self, field: &str, plain: &[u8]) -> Result<String, PersonalDataError> {
            Ok(format!(
                "{field}:{}",
                hex::encode(plain.iter().map(|b| b ^ 0x5a).collect::<Vec<_>>())
            ))
        }
        fn open(&self, field: &str, sealed: &str) -> Result<Option<Vec<u8>>, PersonalDataError> {
            if !self.0 {
                return Ok(None);
            }
            let (name, body) = sealed.split_once(':').unwrap_or_default();
            if name != field {
                return Err(PersonalDataError(format!("{name} opened as {field}")));
            }
            let bytes = hex::decode(body).map_err(|e| PersonalDataError(e.to_string()))?;
            Ok(Some(bytes.iter().map(|b| b ^ 0x5a).collect()))
        }
    }

    fn every_event_with_personal_data() -> Vec<CustomerEvent> {
        let email = |s: &str| Personal::Known(EmailAddress::parse(s).unwrap());
        let at = Utc::now();
        vec![
            CustomerEvent::CustomerRegistered {
                customer_id: CustomerId::new_random(),
                email: email("ann@example.com"),
                name: Some(Personal::Known(CustomerName::parse("Ann Smith").unwrap())),
                at,
            },
            CustomerEvent::EmailChanged {
                old_email: email("ann@example.com"),
                new_email: email("ann@example.org"),
                at,
            },
            CustomerEvent::AccessNotificationSent {
                recipient: email("ann@example.org"),
                setup_link: None,
                at,
            },
            CustomerEvent::EmailChangeRequested {
                old_email: email("ann@example.org"),
                new_email: email("ann@example.net"),
                token_digest: TokenDigest::of("t"),
                expires_at: at,
                at,
            },
            CustomerEvent::EmailChangeConfirmed {
                old_email: email("ann@example.org"),
                new_email: email("ann@example.net"),
                at,
            },
            CustomerEvent::CustomerImported {
                customer_id: CustomerId::new_random(),
                source: ImportSource::parse("old portal").unwrap(),
                external_id: Some(Personal::Known(ExternalId::parse("ann-4711").unwrap())),
                email: email("ann@example.com"),
                name: Some(Personal::Known(CustomerName::parse("Ann Smith").unwrap())),
                access: Some(Role::CustomerCenter),
                password_hash: Some(PasswordHash::new("$2b$04$x")),
                must_change_password: false,
                at,
            },
            CustomerEvent::SecondFactorReset {
                reason: None,
                recipient: email("ann@example.org"),
                at,
            },
        ]
    }

    #[test]
    fn a_totp_secret_is_sealed_and_forgotten_like_personal_data() {
        let secret = TotpSecret::from_bytes([1; crate::values::TOTP_SECRET_BYTES]);
        let plain = secret.base32();
        let event = CustomerEvent::TotpEnrollmentBegun {
            totp_secret: Personal::Known(secret),
            at: Utc::now(),
        };
        let mut sealed = event.clone();
        sealed.seal(&Rot(true)).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains(&plain), "{json}");
        assert!(json.contains("{\"sealed\":\"totp_secret:"), "{json}");
        let mut opened = sealed.clone();
        opened.open(&Rot(true)).unwrap();
        assert_eq!(opened, event);
        sealed.open(&Rot(false)).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(
            !json.contains(&plain) && json.contains("[forgotten]"),
            "{json}"
        );
    }

    #[test]
    fn sealing_leaves_no_personal_data_and_opening_restores_it() {
        for event in every_event_with_personal_data() {
            let mut sealed = event.clone();
            sealed.seal(&Rot(true)).unwrap();
            let json = serde_json::to_string(&sealed).unwrap();
            // Names, emails and an old system's id (`ann-4711`) alike.
            assert!(!json.contains("ann") && !json.contains("Smith"), "{json}");
            assert!(json.contains("{\"sealed\":"), "{json}");
            // Stored and read back: still sealed until opened.
            let mut read: CustomerEvent = serde_json::from_str(&json).unwrap();
            assert!(read.has_sealed_fields());
            read.open(&Rot(true)).unwrap();
            assert_eq!(read, event);
        }
    }

    #[test]
    fn each_personal_field_is_sealed_under_its_own_name() {
        let mut event = every_event_with_personal_data().remove(1);
        event.seal(&Rot(true)).unwrap();
        let CustomerEvent::EmailChanged {
            old_email,
            new_email,
            ..
        } = &mut event
        else {
            panic!("{event:?}")
        };
        std::mem::swap(old_email, new_email);
        assert_eq!(event.sealed_values().len(), 2);
        let err = event.open(&Rot(true)).unwrap_err();
        assert!(err.0.contains("opened as old_email"), "{err}");
    }

    #[test]
    fn without_the_key_every_personal_field_is_forgotten() {
        for event in every_event_with_personal_data() {
            let mut sealed = event.clone();
            sealed.seal(&Rot(true)).unwrap();
            sealed.open(&Rot(false)).unwrap();
            let json = serde_json::to_string(&sealed).unwrap();
            assert!(!json.contains("ann"), "{json}");
            assert!(json.contains("[forgotten]"), "{json}");
            // The forgotten form reads back as forgotten (replay files).
            let back: CustomerEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(back, sealed);
        }
    }

    #[test]
    fn bare_values_written_before_encryption_read_as_known() {
        let json = r#"{"EmailChanged":{"old_email":"a@example.com","new_email":"b@example.com","at":"2026-01-01T00:00:00Z"}}"#;
        let event: CustomerEvent = serde_json::from_str(json).unwrap();
        let CustomerEvent::EmailChanged { new_email, .. } = &event else {
            panic!("{event:?}")
        };
        assert_eq!(new_email.shown(), "b@example.com");
        assert_eq!(serde_json::to_string(&event).unwrap(), json);
    }
}
