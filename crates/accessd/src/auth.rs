//! Who is calling, and what they may do.
//!
//! - API callers present `Authorization: Bearer <secret>`. Secrets are kept
//!   only as SHA-256 digests and compared in constant time against every
//!   known key.
//! - Permissions are types: a handler that takes `Caller<SendCommands>` can
//!   only run for a `service` or `admin` key; the extractor refuses anyone
//!   else before the handler starts (401 `unauthenticated` for a missing or
//!   unknown key, 403 `forbidden` for a known key without the role).
//! - The extractor needs only the keys ([`ApiKeys`], taken from the
//!   router's state through `FromRef`), not the whole state.
//! - Customers' sessions are [`crate::usecase::session`]; their Bearer
//!   tokens on `/v1/self/*` are read by the extractors in
//!   [`crate::http::extract`].

use std::marker::PhantomData;

use std::sync::Arc;

use access_domain::{Actor, ApiRole};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// One API key: its name (the actor in events), role and secret digest.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub role: ApiRole,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Why an API key specification was refused. Never contains the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeySpecError {
    #[error("API key entry {index}: expected `name:role:secret`")]
    Shape { index: usize },
    #[error(
        "API key entry {index}: name `{name}` must be 1-64 characters of a-z, 0-9, `-`, `_`, `.`"
    )]
    Name { index: usize, name: String },
    #[error("API key `{name}`: unknown role `{role}` (service, auditor, admin or subscriber)")]
    Role { name: String, role: String },
    #[error("API key `{name}`: the secret must be at least 16 characters")]
    ShortSecret { name: String },
    #[error("API key `{name}` is defined twice")]
    Duplicate { name: String },
}

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl ApiKey {
    pub fn new(name: impl Into<String>, role: ApiRole, secret: &str) -> Self {
        Self {
            name: name.into(),
            role,
            digest: digest(secret),
        }
    }

    /// The digest of the key's secret, lower-case hex (what `api_keys`
    /// and console sessions keep).
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// A key known only by its stored hex digest.
    pub fn from_digest(name: impl Into<String>, role: ApiRole, hex_digest: &str) -> Option<Self> {
        let bytes = hex::decode(hex_digest).ok()?;
        Some(Self {
            name: name.into(),
            role,
            digest: bytes.try_into().ok()?,
        })
    }

    /// Parses `name:role:secret` entries separated by commas or newlines;
    /// blank lines and `#` comments are skipped.
    pub fn parse_list(spec: &str) -> Result<Vec<Self>, KeySpecError> {
        let mut keys: Vec<Self> = Vec::new();
        let entries = spec
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let index = i + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(KeySpecError::Shape { index });
            };
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid_name {
                return Err(KeySpecError::Name {
                    index,
                    name: name.chars().take(64).collect(),
                });
            }
            let role = ApiRole::parse(role).ok_or_else(|| KeySpecError::Role {
                name: name.to_string(),
                role: role.chars().take(32).collect(),
            })?;
            if secret.chars().count() < 16 {
                return Err(KeySpecError::ShortSecret {
                    name: name.to_string(),
                });
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(KeySpecError::Duplicate {
                    name: name.to_string(),
                });
            }
            keys.push(Self::new(name, role, secret));
        }
        Ok(keys)
    }
}

/// The known API keys. Cheap to clone (the extractor takes a copy from
/// the state for each request).
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    keys: Arc<[ApiKey]>,
}

impl ApiKeys {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self { keys: keys.into() }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key whose secret this is. Compares against every key in
    /// constant time, so timing does not tell which (or whether one)
    /// matched.
    pub fn authenticate(&self, secret: &str) -> Option<&ApiKey> {
        let presented = digest(secret);
        let mut found = None;
        for key in self.keys.iter() {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        found
    }

    /// The key named `name` whose secret has this digest (hex), if it is
    /// still configured: a session opened by a key ends when the key is
    /// removed or its secret replaced.
    pub fn current(&self, name: &str, digest_hex: &str) -> Option<&ApiKey> {
        self.keys
            .iter()
            .find(|k| k.name == name && k.digest_hex() == digest_hex)
    }
}

/// What a role may do. Implemented by marker types used as
/// `Caller<Permission>`.
pub trait Permission: Send + Sync + 'static {
    /// The roles that may.
    const ROLES: &'static [ApiRole];
    /// Why a caller of another role is refused.
    const DESCRIPTION: &'static str;
    fn allows(role: ApiRole) -> bool {
        Self::ROLES.contains(&role)
    }
}

/// Declares permission marker types: each names the roles that may and the
/// reason a caller of another role is refused (a table, not six impls).
macro_rules! permissions {
    ($($(#[$doc:meta])* $name:ident: [$($role:ident),+] => $why:literal;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl Permission for $name {
                const ROLES: &'static [ApiRole] = &[$(ApiRole::$role),+];
                const DESCRIPTION: &'static str = $why;
            }
        )+
    };
}

permissions! {
    /// Send commands (service, admin).
    SendCommands: [Service, Admin] => "sending commands needs the service or admin role";
    /// Read access state (service, auditor, admin).
    ReadState: [Service, Auditor, Admin] => "reading needs the service, auditor or admin role";
    /// Read the change feed (subscriber, auditor, admin).
    ReadFeed: [Subscriber, Auditor, Admin] => "reading the change feed needs the subscriber, auditor or admin role";
    /// Read the history: events and audit (auditor, admin).
    ReadHistory: [Auditor, Admin] => "reading the history needs the auditor or admin role";
    /// Operate the service: mail queue and the like (admin).
    Operate: [Admin] => "this needs the admin role";
    /// Forget a customer: erase its personal data for good (admin).
    ForgetCustomers: [Admin] => "forgetting a customer needs the admin role";
    /// Reset a customer's second factor (admin).
    ResetSecondFactors: [Admin] => "resetting a customer's second factor needs the admin role";
}

/// An authenticated API caller allowed to do `P`.
pub struct Caller<P: Permission> {
    pub name: String,
    pub role: ApiRole,
    _permission: PhantomData<P>,
}

impl<P: Permission> Caller<P> {
    pub fn actor(&self) -> Actor {
        Actor::Api {
            name: self.name.clone(),
            role: self.role,
        }
    }
}

/// The Bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<P, S> FromRequestParts<S> for Caller<P>
where
    P: Permission,
    S: Send + Sync,
    ApiKeys: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = ApiKeys::from_ref(state);
        let secret = bearer(parts).ok_or_else(ApiError::unauthenticated)?;
        let key = keys
            .authenticate(secret)
            .ok_or_else(ApiError::unauthenticated)?;
        if !P::allows(key.role) {
            return Err(ApiError::forbidden(P::DESCRIPTION));
        }
        Ok(Self {
            name: key.name.clone(),
            role: key.role,
            _permission: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_parse_and_errors_never_show_the_secret() {
        let keys = ApiKey::parse_list(
            "crm:service:0123456789abcdef0123, audit:auditor:fedcba9876543210fedc\n# comment\nops:admin:aaaaaaaaaaaaaaaaaaaa",
        )
        .unwrap();
        assert_eq!(keys.len(), 3);
        let ring = ApiKeys::new(keys);
        assert_eq!(
            ring.authenticate("fedcba9876543210fedc").unwrap().name,
            "audit"
        );
        assert!(ring.authenticate("fedcba9876543210fedd").is_none());

        for (spec, expected) in [
            ("crm:service", "expected `name:role:secret`"),
            ("CRM:service:0123456789abcdef", "name `CRM`"),
            ("crm:root:0123456789abcdefXYZ", "unknown role `root`"),
            ("crm:service:short-secret-x", "at least 16"),
            (
                "a:admin:0123456789abcdefSECRET,a:admin:0123456789abcdefSECRET",
                "twice",
            ),
        ] {
            let err = ApiKey::parse_list(spec).unwrap_err().to_string();
            assert!(err.contains(expected), "{spec}: {err}");
            assert!(
                !err.contains("SECRET") && !err.contains("0123456789"),
                "{err}"
            );
        }
    }

    #[test]
    fn permissions_follow_the_roles() {
        assert!(SendCommands::allows(ApiRole::Service) && SendCommands::allows(ApiRole::Admin));
        assert!(!SendCommands::allows(ApiRole::Auditor));
        assert!(ReadHistory::allows(ApiRole::Auditor) && ReadHistory::allows(ApiRole::Admin));
        assert!(!ReadHistory::allows(ApiRole::Service));
        assert!(ReadState::allows(ApiRole::Auditor));
        assert!(!ReadState::allows(ApiRole::Subscriber));
        assert!(!ReadHistory::allows(ApiRole::Subscriber));
        assert!(!SendCommands::allows(ApiRole::Subscriber));
        assert!(ReadFeed::allows(ApiRole::Subscriber) && ReadFeed::allows(ApiRole::Auditor));
        assert!(ReadFeed::allows(ApiRole::Admin) && !ReadFeed::allows(ApiRole::Service));
    }
}
