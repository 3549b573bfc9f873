//! Keys for personal data (crypto-shredding, docs/privacy.md).
//!
//! - [`MasterKey`]: given to the service (`ACCESS_MASTER_KEY[_FILE]`), never
//!   stored in the database. It wraps every other key.
//! - [`DataKey`]: one per customer, stored wrapped under the master key.
//!   Personal data in that customer's events is sealed with it; destroying
//!   the wrapped copy makes the data unreadable for good.
//! - [`EmailIndexKey`]: the HMAC key for looking up and reserving login
//!   emails without storing the address.
//!
//! All encryption is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`)
//! with a fresh random 192-bit nonce per message, so random nonces never
//! collide in practice. Associated data binds each ciphertext to where it
//! belongs: a wrapped key to its purpose and subject here
//! ([`MasterKey::wrap`]); a sealed value to what its caller names
//! ([`DataKey::seal`]: the store binds personal fields to customer, event
//! sequence and field, see `access_store::keys`), so a ciphertext copied
//! anywhere else does not open. Sealed values carry their scheme
//! ([`SealScheme`]) as a prefix, so values sealed under an older scheme
//! still open with the associated data of that scheme.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The scheme a value was sealed under, written as its prefix (`v1.`,
/// `v2.`). The cipher and format are the same; what the associated data
/// holds differs, and is the caller's to build for each scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealScheme {
    /// The first scheme: the store bound values to the customer only.
    V1,
    /// The store binds values to customer, sequence and field.
    V2,
}

impl SealScheme {
    /// The scheme [`DataKey::seal`] writes.
    pub const CURRENT: Self = Self::V2;

    /// The prefix of values sealed under this scheme.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::V1 => "v1.",
            Self::V2 => "v2.",
        }
    }

    /// The scheme of a stored sealed value, from its prefix.
    pub fn of(sealed: &str) -> Result<Self, KeyError> {
        [Self::V1, Self::V2]
            .into_iter()
            .find(|s| sealed.starts_with(s.prefix()))
            .ok_or(KeyError::Malformed {
                what: "sealed value",
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the master key must be 32 bytes written as 64 hexadecimal characters (`accessctl keys generate` prints one)")]
    MasterKeyFormat,
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// Authentication failed: the wrong key, or altered data.
    #[error("{what} does not open with this key (wrong key or altered data)")]
    WrongKey { what: &'static str },
    #[error("{what} is not in the stored format")]
    Malformed { what: &'static str },
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Encrypts `plain` under `key` with a fresh nonce: `nonce || ciphertext`,
/// base64url without padding.
fn seal_with(key: &[u8; KEY_LEN], aad: &[u8], plain: &[u8]) -> Result<String, KeyError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce_bytes = random::<NONCE_LEN>()?;
    let nonce = XNonce::from_slice(&nonce_bytes);
    let ciphertext = cipher
        .encrypt(nonce, Payload { msg: plain, aad })
        // Only fails for messages beyond the cipher's length limit (256 GiB).
        .map_err(|_| KeyError::Malformed { what: "plaintext" })?;
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    Ok(URL_SAFE_NO_PAD.encode(out))
}

fn open_with(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &str,
    what: &'static str,
) -> Result<Vec<u8>, KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| KeyError::Malformed { what })?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(KeyError::Malformed { what });
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| KeyError::WrongKey { what })
}

/// The key that wraps all others. Never printed (no Debug of the bytes).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    key: [u8; KEY_LEN],
    #[zeroize(skip)]
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// From 64 hexadecimal characters (surrounding whitespace ignored, so a
    /// key file may end with a newline).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut key).map_err(|_| KeyError::MasterKeyFormat)?;
        Ok(Self::from_bytes(key))
    }

    /// A new random master key and its hexadecimal form (to store).
    pub fn generate() -> Result<(Self, String), KeyError> {
        let key = random::<KEY_LEN>()?;
        let text = hex::encode(key);
        Ok((Self::from_bytes(key), text))
    }

    fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"access master key id\0");
        hasher.update(key);
        let id = hex::encode(&hasher.finalize()[..8]);
        Self { key, id }
    }

    /// A public fingerprint of the key (not secret): tells which master key
    /// a database was set up with, without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps `key` for `purpose`/`subject` (for example "data-key" and a
    /// customer id): it opens only under this master key and with the same
    /// purpose and subject.
    pub fn wrap(&self, purpose: &str, subject: &str, key: &DataKey) -> Result<String, KeyError> {
        seal_with(&self.key, &wrap_aad(purpose, subject), &key.0)
    }

    pub fn unwrap(&self, purpose: &str, subject: &str, wrapped: &str) -> Result<DataKey, KeyError> {
        let mut plain = open_with(
            &self.key,
            &wrap_aad(purpose, subject),
            wrapped,
            "wrapped key",
        )?;
        if plain.len() != KEY_LEN {
            plain.zeroize();
            return Err(KeyError::Malformed {
                what: "wrapped key",
            });
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&plain);
        plain.zeroize();
        Ok(DataKey(key))
    }
}

fn wrap_aad(purpose: &str, subject: &str) -> Vec<u8> {
    format!("access/{purpose}/{subject}").into_bytes()
}

/// A symmetric key: a customer's data key, or the email index key before
/// it becomes an [`EmailIndexKey`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self(random::<KEY_LEN>()?))
    }

    /// Seals `plain` under the current scheme, bound to `context` (the
    /// associated data: where the value belongs): the scheme's prefix +
    /// base64url(nonce || ciphertext).
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<String, KeyError> {
        let scheme = SealScheme::CURRENT;
        Ok(format!(
            "{}{}",
            scheme.prefix(),
            seal_with(&self.0, context, plain)?
        ))
    }

    /// Opens a sealed value; `context` gives the associated data for the
    /// scheme the value was sealed under. Fails with
    /// [`KeyError::WrongKey`] when the key or the associated data differs
    /// (a value moved elsewhere, or altered).
    pub fn open(
        &self,
        sealed: &str,
        context: impl FnOnce(SealScheme) -> Vec<u8>,
    ) -> Result<Vec<u8>, KeyError> {
        let scheme = SealScheme::of(sealed)?;
        let body = &sealed[scheme.prefix().len()..];
        open_with(&self.0, &context(scheme), body, "sealed value")
    }

    /// Turns this key into the HMAC key of the email index.
    pub fn into_email_index(self) -> Result<EmailIndexKey, KeyError> {
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).map_err(|_| KeyError::Malformed {
                what: "email index key",
            })?;
        Ok(EmailIndexKey(mac))
    }
}

/// HMAC-SHA-256 over normalised email addresses: the value stored and
/// looked up instead of the address.
#[derive(Clone)]
pub struct EmailIndexKey(Hmac<Sha256>);

impl std::fmt::Debug for EmailIndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailIndexKey(..)")
    }
}

impl EmailIndexKey {
    /// The index value of an already normalised (lower-cased) address:
    /// 64 hexadecimal characters.
    pub fn digest(&self, normalised: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(normalised.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_and_context_only() {
        let key = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let sealed = key.seal(b"customer-1", b"ann@example.com").unwrap();
        assert!(sealed.starts_with("v2."));
        assert!(!sealed.contains("ann"));
        let context = |c: &'static [u8]| move |_| c.to_vec();
        assert_eq!(
            key.open(&sealed, context(b"customer-1")).unwrap(),
            b"ann@example.com"
        );
        assert!(matches!(
            key.open(&sealed, context(b"customer-2")),
            Err(KeyError::WrongKey { .. })
        ));
        assert!(matches!(
            other.open(&sealed, context(b"customer-1")),
            Err(KeyError::WrongKey { .. })
        ));
        assert!(matches!(
            key.open("v2.@@@", context(b"customer-1")),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            key.open("v9.abc", context(b"customer-1")),
            Err(KeyError::Malformed { .. })
        ));
        // Fresh nonce each time: the same value seals differently.
        assert_ne!(sealed, key.seal(b"customer-1", b"ann@example.com").unwrap());
    }

    #[test]
    fn a_value_opens_with_the_context_of_the_scheme_it_was_sealed_under() {
        let key = DataKey::generate().unwrap();
        let v1 = format!(
            "v1.{}",
            seal_with(&key.0, b"old context", b"ann@example.com").unwrap()
        );
        let v2 = key.seal(b"new context", b"ann@example.com").unwrap();
        let context = |scheme: SealScheme| match scheme {
            SealScheme::V1 => b"old context".to_vec(),
            SealScheme::V2 => b"new context".to_vec(),
        };
        assert_eq!(SealScheme::of(&v1).unwrap(), SealScheme::V1);
        assert_eq!(SealScheme::of(&v2).unwrap(), SealScheme::CURRENT);
        assert_eq!(key.open(&v1, context).unwrap(), b"ann@example.com");
        assert_eq!(key.open(&v2, context).unwrap(), b"ann@example.com");
        // The prefix is bound too: relabelled, a value no longer opens.
        let relabelled = format!("v1.{}", &v2[3..]);
        assert!(key.open(&relabelled, context).is_err());
    }

    #[test]
    fn wrapped_keys_open_only_under_the_same_master_key_purpose_and_subject() {
        let (master, text) = MasterKey::generate().unwrap();
        let reparsed = MasterKey::parse(&format!("{text}\n")).unwrap();
        assert_eq!(master.id(), reparsed.id());
        let (other, _) = MasterKey::generate().unwrap();
        assert_ne!(master.id(), other.id());

        let key = DataKey::generate().unwrap();
        let wrapped = master.wrap("data-key", "c1", &key).unwrap();
        let back = reparsed.unwrap("data-key", "c1", &wrapped).unwrap();
        let sealed = key.seal(b"x", b"secret").unwrap();
        assert_eq!(back.open(&sealed, |_| b"x".to_vec()).unwrap(), b"secret");
        assert!(master.unwrap("data-key", "c2", &wrapped).is_err());
        assert!(master.unwrap("email-index", "c1", &wrapped).is_err());
        assert!(matches!(
            other.unwrap("data-key", "c1", &wrapped),
            Err(KeyError::WrongKey { .. })
        ));
    }

    #[test]
    fn master_keys_must_be_64_hex_characters_and_never_print() {
        assert_eq!(
            MasterKey::parse("abc").unwrap_err(),
            KeyError::MasterKeyFormat
        );
        assert!(MasterKey::parse(&"g".repeat(64)).is_err());
        let text = "00".repeat(32);
        let key = MasterKey::parse(&text).unwrap();
        assert!(!format!("{key:?}").contains(&text));
    }

    #[test]
    fn the_email_index_is_a_keyed_hash() {
        let a = DataKey::generate().unwrap().into_email_index().unwrap();
        let b = DataKey::generate().unwrap().into_email_index().unwrap();
        let d = a.digest("ann@example.com");
        assert_eq!(d.len(), 64);
        assert_eq!(d, a.digest("ann@example.com"));
        assert_ne!(d, a.digest("bob@example.com"));
        assert_ne!(d, b.digest("ann@example.com"));
    }
}
