//! Value types that can only be built valid ("parse, don't validate").
//!
//! Handlers and the aggregate receive these types, never raw strings, so a
//! value that reaches the rules has already passed its syntax checks.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Longest email address accepted: the limit of a forward or reverse path in
/// RFC 5321 (256 octets) less the two angle brackets.
pub const MAX_EMAIL_LEN: usize = 254;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest password accepted (bounds hashing work per request).
pub const MAX_PASSWORD_LEN: usize = 128;
/// Longest customer name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// Why a raw value was rejected. Each variant has a stable code: its name
/// in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ValueError {
    #[error("invalid email address: {0}")]
    InvalidEmail(String),
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error("invalid customer id: {0}")]
    InvalidCustomerId(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("unknown role `{0}`: the only role is `customer_center`")]
    UnknownRole(String),
    #[error("invalid external id: {0}")]
    InvalidExternalId(String),
    #[error("invalid import source: {0}")]
    InvalidImportSource(String),
    /// A stored TOTP secret that is not 160 bits of base32 (never quotes
    /// the value).
    #[error("invalid TOTP secret: {0}")]
    InvalidTotpSecret(String),
}

impl ValueError {
    /// Stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        self.into()
    }
}

// ---------------------------------------------------------------------------
// CustomerId
// ---------------------------------------------------------------------------

/// The id of a customer: a UUID, also the aggregate id in the event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(Uuid);

impl CustomerId {
    /// A new random (v4) id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// A customer id derived from a key of an import: a UUID v8 from the
    /// first 16 bytes of a keyed digest the store computes (HMAC under its
    /// index key, so nobody without the key can compute an imported
    /// customer's id from an email or an old system's id).
    pub fn from_import_digest(digest: [u8; 16]) -> Self {
        Self(uuid::Builder::from_custom_bytes(digest).into_uuid())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for CustomerId {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| ValueError::InvalidCustomerId(format!("`{s}` is not a UUID")))
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// ---------------------------------------------------------------------------
// EmailAddress
// ---------------------------------------------------------------------------

/// A syntactically valid email address.
///
/// Keeps the spelling the user typed (trimmed) for display; equality and
/// hashing use the lower-cased form, so `Ann@Example.com` and
/// `ann@example.com` are the same login.
#[derive(Clone)]
pub struct EmailAddress {
    display: String,
    normalized: String,
}

impl EmailAddress {
    /// Parses and checks an address (syntax by the `email_address` crate).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let trimmed =
            bounded_text(raw, "address", MAX_EMAIL_LEN).map_err(ValueError::InvalidEmail)?;
        let options = email_address::Options::default()
            .without_display_text()
            .without_domain_literal();
        match email_address::EmailAddress::parse_with_options(trimmed, options) {
            Ok(_) => {}
            Err(e) => {
                return Err(ValueError::InvalidEmail(format!("`{trimmed}`: {e}")));
            }
        }
        if !trimmed
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.contains('.'))
        {
            return Err(ValueError::InvalidEmail(format!(
                "`{trimmed}`: the domain must contain a dot"
            )));
        }
        Ok(Self {
            display: trimmed.to_string(),
            normalized: trimmed.to_lowercase(),
        })
    }

    /// The address as the user typed it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The lower-cased form used for comparison and uniqueness.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The part before the `@`, lower-cased.
    pub fn local_part(&self) -> &str {
        self.normalized
            .rsplit_once('@')
            .map_or(self.normalized.as_str(), |(local, _)| local)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for EmailAddress {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}
impl Eq for EmailAddress {}

impl std::hash::Hash for EmailAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normalized.hash(state);
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({:?})", self.display)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl FromStr for EmailAddress {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.display)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// CustomerName
// ---------------------------------------------------------------------------

/// A customer's display name: trimmed, 1 to 200 characters, no control
/// characters.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CustomerName(String);

impl CustomerName {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        plain_text(raw, "name", MAX_NAME_LEN)
            .map(Self)
            .map_err(ValueError::InvalidName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CustomerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CustomerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerName({:?})", self.0)
    }
}

impl fmt::Display for CustomerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CustomerName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Role
// ---------------------------------------------------------------------------

/// The portal role a customer's access grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    CustomerCenter,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CustomerCenter => "customer_center",
        }
    }
}

impl FromStr for Role {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "customer_center" => Ok(Self::CustomerCenter),
            other => Err(ValueError::UnknownRole(other.to_string())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// A secret the user typed (a confirmation, a current password, a token).
/// Never printed: `Debug` shows `[REDACTED]`, there is no `Display`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(SecretString::from(raw.into()))
    }

    /// The plain text, for hashing or comparison only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl From<&str> for Secret {
    fn from(raw: &str) -> Self {
        Self::new(raw)
    }
}

impl From<String> for Secret {
    fn from(raw: String) -> Self {
        Self::new(raw)
    }
}

/// A new password that passed the length and strength checks.
///
/// The check that a password does not contain the login email needs the
/// customer's state, so the aggregate makes it (`Password::check_against`).
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// Checks length (10..=128 characters) and strength (zxcvbn score of at
    /// least 3 of 4). `user_inputs` are words the estimator should treat as
    /// guessable (the name, the email).
    pub fn parse(raw: &str, user_inputs: &[&str]) -> Result<Self, ValueError> {
        let length = raw.chars().count();
        if length < MIN_PASSWORD_LEN {
            return Err(ValueError::WeakPassword(format!(
                "it must be at least {MIN_PASSWORD_LEN} characters long"
            )));
        }
        if length > MAX_PASSWORD_LEN {
            return Err(ValueError::WeakPassword(format!(
                "it must be at most {MAX_PASSWORD_LEN} characters long"
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValueError::WeakPassword(
                "it must not contain control characters".into(),
            ));
        }
        let estimate = zxcvbn::zxcvbn(raw, user_inputs);
        if (estimate.score() as u8) < 3 {
            let why = estimate
                .feedback()
                .and_then(|f| f.warning().map(|w| w.to_string()))
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "it is too easy to guess".to_string());
            let hint = estimate
                .feedback()
                .and_then(|f| f.suggestions().first().map(|s| s.to_string()));
            let message = match hint {
                Some(hint) => format!("{why} ({hint})"),
                None => why,
            };
            return Err(ValueError::WeakPassword(message));
        }
        Ok(Self(SecretString::from(raw.to_string())))
    }

    /// Rejects a password that contains the login email or its local part
    /// (case-insensitive).
    pub fn check_against(&self, login: &EmailAddress) -> Result<(), ValueError> {
        let lowered = self.0.expose_secret().to_lowercase();
        if lowered.contains(login.normalized()) {
            return Err(ValueError::WeakPassword(
                "it must not contain the login email".into(),
            ));
        }
        let local = login.local_part();
        if local.chars().count() >= 4 && lowered.contains(local) {
            return Err(ValueError::WeakPassword(
                "it must not contain the login email's name part".into(),
            ));
        }
        Ok(())
    }

    /// The plain text, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Constant-time comparison with a typed confirmation.
    pub fn matches(&self, confirmation: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        self.expose()
            .as_bytes()
            .ct_eq(confirmation.expose().as_bytes())
            .into()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

/// A password hash in PHC string format (e.g. `$argon2id$v=19$…`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets in the strict sense, but they are offline-
        // crackable: keep them out of logs too.
        f.write_str("PasswordHash([REDACTED])")
    }
}

/// The SHA-256 digest of a token, hex-encoded. The only form of a token
/// that is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenDigest(String);

impl TokenDigest {
    /// Digest of a plain token.
    pub fn of(token: &str) -> Self {
        use sha2::{Digest, Sha256};
        Self(hex::encode(Sha256::digest(token.as_bytes())))
    }

    pub fn from_hex(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with another digest.
    pub fn matches_digest(&self, other: &TokenDigest) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }

    /// Constant-time comparison with the digest of a presented token.
    pub fn matches(&self, presented: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        let other = Self::of(presented.expose());
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_compared_case_insensitively() {
        let a = EmailAddress::parse("  Ann.Smith@Example.COM ").unwrap();
        let b = EmailAddress::parse("ann.smith@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "Ann.Smith@Example.COM");
        assert_eq!(a.normalized(), "ann.smith@example.com");
    }

    #[test]
    fn email_syntax_is_checked() {
        for bad in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "ann@",
            "ann@@example.com",
            "ann@localhost",
            "Ann <ann@example.com>",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_email", "{bad:?} was accepted");
        }
    }

    #[test]
    fn email_longer_than_254_characters_is_rejected() {
        let local = "a".repeat(60);
        let domain = format!(
            "{}.example.com",
            ["b".repeat(60), "c".repeat(60), "d".repeat(60)].join(".")
        );
        let long = format!("{local}@{domain}");
        assert!(long.len() > MAX_EMAIL_LEN);
        let err = EmailAddress::parse(&long).unwrap_err();
        assert!(err.to_string().contains("254"), "{err}");
    }

    #[test]
    fn email_round_trips_through_json_with_its_spelling() {
        let a = EmailAddress::parse("Ann@Example.com").unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"Ann@Example.com\"");
        let back: EmailAddress = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_str(), "Ann@Example.com");
        assert!(serde_json::from_str::<EmailAddress>("\"nope\"").is_err());
    }

    #[test]
    fn password_length_is_bounded() {
        let short = Password::parse("Xy7#kq", &[]).unwrap_err();
        assert!(short.to_string().contains("at least 10"), "{short}");
        let long = "Zq8#vT2!mL".repeat(13);
        let err = Password::parse(&long, &[]).unwrap_err();
        assert!(err.to_string().contains("at most 128"), "{err}");
    }

    #[test]
    fn weak_passwords_are_rejected_with_a_reason() {
        for weak in ["password123", "aaaaaaaaaaaa", "qwertyuiop12", "1234567890"] {
            let err = Password::parse(weak, &[]).unwrap_err();
            assert_eq!(err.code(), "weak_password");
            assert!(err.to_string().len() > "weak password: ".len(), "{err}");
        }
        assert!(Password::parse("correct-Horse-battery-9", &[]).is_ok());
    }

    #[test]
    fn password_containing_the_login_email_is_rejected() {
        let email = EmailAddress::parse("marguerite@example.com").unwrap();
        let p = Password::parse("xX-Marguerite@Example.com-9", &[]).unwrap();
        let err = p.check_against(&email).unwrap_err();
        assert!(err.to_string().contains("login email"), "{err}");
        let p = Password::parse("Marguerite-Tango-41!", &[]).unwrap();
        assert!(p.check_against(&email).is_err());
        let p = Password::parse("correct-Horse-battery-9", &[]).unwrap();
        assert!(p.check_against(&email).is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let p = Password::parse("correct-Horse-battery-9", &[]).unwrap();
        assert!(!format!("{p:?}").contains("Horse"));
        let s = Secret::new("top-secret-token");
        assert!(!format!("{s:?}").contains("top-secret"));
        let h = PasswordHash::new("$argon2id$v=19$abc");
        assert!(!format!("{h:?}").contains("argon2id"));
    }

    #[test]
    fn token_digest_is_sha256_hex_and_matches_in_constant_time() {
        let d = TokenDigest::of("abc");
        assert_eq!(
            d.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.matches(&Secret::new("abc")));
        assert!(!d.matches(&Secret::new("abd")));
    }

    #[test]
    fn customer_id_and_role_parse() {
        assert!("not-a-uuid".parse::<CustomerId>().is_err());
        let id = CustomerId::new_random();
        assert_eq!(id.to_string().parse::<CustomerId>().unwrap(), id);
        assert_eq!(
            "customer_center".parse::<Role>().unwrap(),
            Role::CustomerCenter
        );
        assert_eq!("admin".parse::<Role>().unwrap_err().code(), "unknown_role");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(CustomerName::parse("  Ann  ").unwrap().as_str(), "Ann");
        assert!(CustomerName::parse(" ").is_err());
        assert!(CustomerName::parse(&"x".repeat(201)).is_err());
        assert!(CustomerName::parse("a\u{0}b").is_err());
    }
}

// ---------------------------------------------------------------------------
// Import: the old system's id and the name of the import
// ---------------------------------------------------------------------------

/// Longest external id or import source, in characters.
pub const MAX_IMPORT_ID_LEN: usize = 200;

/// `raw` trimmed, when that is neither empty nor longer than `max`
/// characters; else why not, naming the value `what`.
fn bounded_text<'a>(raw: &'a str, what: &str, max: usize) -> Result<&'a str, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if trimmed.chars().count() > max {
        return Err(format!("the {what} is longer than {max} characters"));
    }
    Ok(trimmed)
}

/// Like [`bounded_text`], and without control characters.
fn plain_text(raw: &str, what: &str, max: usize) -> Result<String, String> {
    let trimmed = bounded_text(raw, what, max)?;
    if trimmed.chars().any(char::is_control) {
        return Err(format!("the {what} contains control characters"));
    }
    Ok(trimmed.to_string())
}

/// A customer's id in the system it was imported from (unique among the
/// imported customers): the key that makes an import idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        plain_text(raw, "external id", MAX_IMPORT_ID_LEN)
            .map(Self)
            .map_err(ValueError::InvalidExternalId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an import (`accessctl import --source`): which old system
/// the customers came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImportSource(String);

impl ImportSource {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        plain_text(raw, "import source", MAX_IMPORT_ID_LEN)
            .map(Self)
            .map_err(ValueError::InvalidImportSource)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImportSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// Second factor: TOTP secret and recovery codes
// ---------------------------------------------------------------------------

/// Bytes in a TOTP secret: 160 bits, the length RFC 4226 recommends.
pub const TOTP_SECRET_BYTES: usize = 20;
/// Digits of a TOTP code.
pub const TOTP_DIGITS: usize = 6;
/// Seconds of one TOTP time step.
pub const TOTP_STEP_SECS: u64 = 30;
/// Steps of tolerance either way for a device's clock.
pub const TOTP_TOLERANCE_STEPS: u64 = 1;
/// Recovery codes issued at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Random bytes in one recovery code (80 bits: 16 base32 characters, so
/// their plain SHA-256 digests cannot be searched through).
pub const RECOVERY_CODE_BYTES: usize = 10;

/// The shared secret of a customer's TOTP authenticator (RFC 6238): 160
/// random bits. Personal and secret: events keep it only as a
/// [`crate::Personal`] field (sealed with the customer's data key, shredded
/// by a forget). Serialized as base32 (what an authenticator app is given);
/// `Debug` shows `[REDACTED]`, there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    pub fn from_bytes(bytes: [u8; TOTP_SECRET_BYTES]) -> Self {
        Self(bytes.to_vec())
    }

    /// Reads the base32 form (RFC 4648, unpadded, any letter case).
    pub fn parse_base32(raw: &str) -> Result<Self, ValueError> {
        let cleaned: String = raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .collect::<String>()
            .to_uppercase();
        let bytes = totp_rs::Secret::Encoded(cleaned)
            .to_bytes()
            .map_err(|_| ValueError::InvalidTotpSecret("it is not base32".into()))?;
        if bytes.len() != TOTP_SECRET_BYTES {
            return Err(ValueError::InvalidTotpSecret(format!(
                "it must be {} bits",
                TOTP_SECRET_BYTES * 8
            )));
        }
        Ok(Self(bytes))
    }

    /// The secret in base32 (RFC 4648, unpadded): for manual entry in an
    /// authenticator app and the `otpauth://` URI. Show it to its customer
    /// only; never log it.
    pub fn base32(&self) -> String {
        match totp_rs::Secret::Raw(self.0.clone()).to_encoded() {
            totp_rs::Secret::Encoded(s) => s,
            totp_rs::Secret::Raw(_) => String::new(),
        }
    }

    /// The `otpauth://totp/…` URI an authenticator app reads (from a QR
    /// code): `issuer` and `account` (the login email) percent-encoded,
    /// with this service's parameters (SHA1, 6 digits, 30 s). It contains
    /// the secret: show it to its customer only.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        fn encode(text: &str) -> String {
            text.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(b).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect()
        }
        format!(
            "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
            issuer = encode(issuer),
            account = encode(account),
            secret = self.base32(),
        )
    }

    fn totp(&self) -> totp_rs::TOTP {
        // `new_unchecked`: the length is checked when the secret is made
        // (160 bits, above the crate's 128-bit floor).
        totp_rs::TOTP::new_unchecked(
            totp_rs::Algorithm::SHA1,
            TOTP_DIGITS,
            0,
            TOTP_STEP_SECS,
            self.0.clone(),
        )
    }

    /// The time step of `at` (Unix seconds / 30); 0 before 1970.
    pub fn step_of(at: chrono::DateTime<chrono::Utc>) -> u64 {
        u64::try_from(at.timestamp()).unwrap_or(0) / TOTP_STEP_SECS
    }

    /// The code of time step `step` (SHA-1, 6 digits).
    pub fn code_at_step(&self, step: u64) -> String {
        self.totp().generate(step.saturating_mul(TOTP_STEP_SECS))
    }

    /// The step whose code `code` is, among the step of `now` and one step
    /// either way, and later than `after` (a step accepted before is not
    /// accepted again). Compared in constant time.
    pub fn matching_step(
        &self,
        code: &str,
        now: chrono::DateTime<chrono::Utc>,
        after: Option<u64>,
    ) -> Option<u64> {
        use subtle::ConstantTimeEq;
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = Self::step_of(now);
        let first = current.saturating_sub(TOTP_TOLERANCE_STEPS);
        let mut found = None;
        for step in first..=current.saturating_add(TOTP_TOLERANCE_STEPS) {
            let matches: bool = self
                .code_at_step(step)
                .as_bytes()
                .ct_eq(code.as_bytes())
                .into();
            if matches && after.is_none_or(|last| step > last) {
                found = Some(step);
            }
        }
        found
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

impl Serialize for TotpSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.base32())
    }
}

/// Only the canonical form (upper case, unpadded, as serialized) reads:
/// a stored secret reads back to the same JSON.
impl<'de> Deserialize<'de> for TotpSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let secret = Self::parse_base32(&raw).map_err(serde::de::Error::custom)?;
        if secret.base32() != raw {
            return Err(serde::de::Error::custom(ValueError::InvalidTotpSecret(
                "it is not upper-case unpadded base32".into(),
            )));
        }
        Ok(secret)
    }
}

/// A recovery code from random bytes, as shown to the customer once:
/// 16 lower-case base32 characters in groups of four (`abcd-efgh-…`).
pub fn recovery_code(bytes: [u8; RECOVERY_CODE_BYTES]) -> Secret {
    let encoded = match totp_rs::Secret::Raw(bytes.to_vec()).to_encoded() {
        totp_rs::Secret::Encoded(s) => s.to_lowercase(),
        totp_rs::Secret::Raw(_) => String::new(),
    };
    let groups: Vec<String> = encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Secret::new(groups.join("-"))
}

/// The digest a recovery code is stored as: SHA-256 of the code without
/// dashes or spaces, upper-cased (so it may be typed in any case and
/// grouping).
pub fn recovery_code_digest(presented: &str) -> TokenDigest {
    let normalized: String = presented
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_uppercase();
    TokenDigest::of(&normalized)
}

#[cfg(test)]
mod second_factor_tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// RFC 6238, appendix B: the SHA-1 test secret and times (the last 6
    /// of its 8 digits).
    #[test]
    fn totp_codes_are_those_of_rfc_6238() {
        let secret = TotpSecret(b"12345678901234567890".to_vec());
        for (unix, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let at = Utc.timestamp_opt(unix, 0).unwrap();
            assert_eq!(secret.code_at_step(TotpSecret::step_of(at)), code, "{unix}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_way_and_not_twice() {
        let secret = TotpSecret::from_bytes([7; TOTP_SECRET_BYTES]);
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let step = TotpSecret::step_of(now);
        for s in [step - 1, step, step + 1] {
            assert_eq!(
                secret.matching_step(&secret.code_at_step(s), now, None),
                Some(s)
            );
        }
        for s in [step - 2, step + 2] {
            assert_eq!(
                secret.matching_step(&secret.code_at_step(s), now, None),
                None
            );
        }
        let code = secret.code_at_step(step);
        assert_eq!(secret.matching_step(&code, now, Some(step)), None);
        assert_eq!(secret.matching_step("12345", now, None), None);
        assert_eq!(secret.matching_step("abcdef", now, None), None);
    }

    #[test]
    fn a_totp_secret_is_base32_and_never_prints() {
        let secret = TotpSecret::from_bytes([1; TOTP_SECRET_BYTES]);
        assert_eq!(secret.base32(), "AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB");
        assert_eq!(
            TotpSecret::parse_base32("aeaq caib aeaq caib aeaq caib aeaq caib").unwrap(),
            secret
        );
        assert!(!format!("{secret:?}").contains("AEAQ"));
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            "\"AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB\""
        );
        assert!(
            serde_json::from_str::<TotpSecret>("\"aeaqcaibaeaqcaibaeaqcaibaeaqcaib\"").is_err()
        );
        assert!(TotpSecret::parse_base32("AEAQ").is_err());
        assert!(TotpSecret::parse_base32("not base32!").is_err());
    }

    #[test]
    fn the_otpauth_uri_names_the_issuer_the_login_and_the_parameters() {
        let secret = TotpSecret::from_bytes([1; TOTP_SECRET_BYTES]);
        assert_eq!(
            secret.otpauth_uri("Customer Center", "ann+1@example.com"),
            "otpauth://totp/Customer%20Center:ann%2B1%40example.com?secret=AEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIB&issuer=Customer%20Center&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn a_recovery_code_is_grouped_and_its_digest_ignores_case_and_dashes() {
        let code = recovery_code([1; RECOVERY_CODE_BYTES]);
        assert_eq!(code.expose(), "aeaq-caib-aeaq-caib");
        assert_eq!(
            recovery_code_digest(code.expose()),
            recovery_code_digest("AEAQCAIB AEAQCAIB")
        );
        assert_ne!(
            recovery_code_digest(code.expose()),
            recovery_code_digest("aeaq-caib-aeaq-caic")
        );
    }
}
