//! What the aggregate needs from the outside world, as traits.
//!
//! The domain does no I/O: hashing, randomness and time come through these
//! traits. `access-security` implements them for production (argon2id, the
//! OS random generator, the system clock); tests use fakes.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::values::{EmailAddress, Password, PasswordHash, Secret, TokenDigest};

/// A failure of an external service (not a rule violation). Its code (as
/// `&'static str`): `internal`, or `unavailable` when at capacity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
pub enum ServiceError {
    /// The service failed; the message says how (never a secret).
    #[error("{0}")]
    #[strum(serialize = "internal")]
    Failed(String),
    /// The service is at capacity and did not take the work (a full
    /// queue, or a wait past its deadline): nothing was done, and the same
    /// request may be sent again after `retry_after_secs`.
    #[error("{what} is at capacity; retry in {retry_after_secs} s")]
    #[strum(serialize = "unavailable")]
    Overloaded {
        what: &'static str,
        retry_after_secs: u64,
    },
}

impl ServiceError {
    /// A failure described by `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// Hashes and verifies passwords. Implementations are expected to be slow
/// on purpose (argon2id) and to run off the async workers.
#[async_trait::async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, ServiceError>;
    /// `Ok(false)` for a wrong password; `Err` only when the hash cannot be
    /// checked at all.
    async fn verify(&self, candidate: &Secret, hash: &PasswordHash) -> Result<bool, ServiceError>;
    /// True when `hash` was made with another algorithm or other parameters
    /// than this hasher uses now: at the customer's next successful login
    /// the password is hashed again (`CustomerCommand::UpgradePasswordHash`).
    fn needs_rehash(&self, hash: &PasswordHash) -> bool;
    /// Hashes, with the current parameters, a password that was just
    /// verified against the stored hash. A `Secret`, not a `Password`: it
    /// met the password policy of the day it was set, perhaps not today's.
    async fn rehash(&self, verified: &Secret) -> Result<PasswordHash, ServiceError>;
    /// Whether `verify` can check an imported hash (a bulk import from an
    /// older system): `Err` with the reason (never quoting the hash) when
    /// its format is not one this hasher verifies or it is malformed.
    fn check_imported(&self, hash: &PasswordHash) -> Result<(), String>;
}

/// Produces unguessable tokens (at least 128 bits of entropy) and random
/// bytes (TOTP secrets, recovery codes).
pub trait TokenGenerator: Send + Sync {
    fn generate(&self) -> Secret;
    /// Fills `dest` from a cryptographically secure random source.
    fn fill_random(&self, dest: &mut [u8]);
}

/// The current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Lifetimes of links sent by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLifetimes {
    /// Password-setup link in the access notification (default 24 hours).
    pub setup_link: Duration,
    /// Validation link of a self-service email change (default 24 hours).
    pub email_change: Duration,
}

impl Default for LinkLifetimes {
    fn default() -> Self {
        Self {
            setup_link: Duration::hours(24),
            email_change: Duration::hours(24),
        }
    }
}

/// What a token issued by a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Set a password through the access notification's link.
    PasswordSetup,
    /// Confirm a self-service email change (sent to the new address).
    EmailChange,
}

/// A token a command issued, with its plain text. The event keeps only the
/// digest; the caller takes these after a successful commit to build the
/// links in the emails, then drops them.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub purpose: TokenPurpose,
    pub recipient: EmailAddress,
    pub token: Secret,
    pub digest: TokenDigest,
    pub expires_at: DateTime<Utc>,
}

/// The services handed to the aggregate: hashing, tokens, time, link
/// lifetimes. Cheap to clone (shared adapters); holds no state of its own,
/// so one serves every command (the tokens a command issues come back in
/// its [`crate::Decision`]).
#[derive(Clone)]
pub struct CustomerServices {
    hasher: Arc<dyn PasswordHasher>,
    tokens: Arc<dyn TokenGenerator>,
    clock: Arc<dyn Clock>,
    lifetimes: LinkLifetimes,
}

impl CustomerServices {
    pub fn new(
        hasher: Arc<dyn PasswordHasher>,
        tokens: Arc<dyn TokenGenerator>,
        clock: Arc<dyn Clock>,
        lifetimes: LinkLifetimes,
    ) -> Self {
        Self {
            hasher,
            tokens,
            clock,
            lifetimes,
        }
    }

    pub fn hasher(&self) -> &dyn PasswordHasher {
        self.hasher.as_ref()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn lifetimes(&self) -> LinkLifetimes {
        self.lifetimes
    }

    /// Issues a token for a link: the plain token (for the mail), its
    /// digest and expiry (for the event).
    /// `N` bytes from the random source (a TOTP secret, a recovery code).
    pub(crate) fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        self.tokens.fill_random(&mut bytes);
        bytes
    }

    pub(crate) fn issue_token(
        &self,
        purpose: TokenPurpose,
        recipient: &EmailAddress,
        now: DateTime<Utc>,
    ) -> IssuedToken {
        let token = self.tokens.generate();
        let digest = TokenDigest::of(token.expose());
        let lifetime = match purpose {
            TokenPurpose::PasswordSetup => self.lifetimes.setup_link,
            TokenPurpose::EmailChange => self.lifetimes.email_change,
        };
        IssuedToken {
            purpose,
            recipient: recipient.clone(),
            token,
            digest,
            expires_at: now + lifetime,
        }
    }
}

impl std::fmt::Debug for CustomerServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerServices")
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

/// Fakes for tests of pure logic: a fast unsalted hasher, counting tokens
/// and a fixed clock. Not for production: the fake hash has no salt and no
/// work factor.
pub mod fakes {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// `fake:<sha256 hex of the password>`: fast and deterministic (no
    /// salt), so tests and scenario files can name the expected hash.
    /// `fake-old:<…>` stands for a hash made with older parameters: it
    /// verifies, and needs a rehash.
    #[derive(Debug, Default)]
    pub struct FakeHasher;

    impl FakeHasher {
        /// The hash this fake gives `plain`.
        pub fn hash_of(plain: &str) -> PasswordHash {
            PasswordHash::new(format!("fake:{}", TokenDigest::of(plain).as_str()))
        }

        /// A hash of `plain` "made with older parameters".
        pub fn old_hash_of(plain: &str) -> PasswordHash {
            PasswordHash::new(format!("fake-old:{}", TokenDigest::of(plain).as_str()))
        }
    }

    #[async_trait::async_trait]
    impl PasswordHasher for FakeHasher {
        async fn hash(&self, password: &Password) -> Result<PasswordHash, ServiceError> {
            Ok(Self::hash_of(password.expose()))
        }

        async fn verify(
            &self,
            candidate: &Secret,
            hash: &PasswordHash,
        ) -> Result<bool, ServiceError> {
            if hash.as_str().starts_with("fake-old:") {
                return Ok(Self::old_hash_of(candidate.expose()) == *hash);
            }
            if !hash.as_str().starts_with("fake:") {
                return Err(ServiceError::failed("not a fake hash"));
            }
            Ok(Self::hash_of(candidate.expose()) == *hash)
        }

        fn needs_rehash(&self, hash: &PasswordHash) -> bool {
            hash.as_str().starts_with("fake-old:")
        }

        async fn rehash(&self, verified: &Secret) -> Result<PasswordHash, ServiceError> {
            Ok(Self::hash_of(verified.expose()))
        }

        /// Accepts its own two forms (`fake-old:` stands for a foreign
        /// hash: it verifies, then needs a rehash).
        fn check_imported(&self, hash: &PasswordHash) -> Result<(), String> {
            let s = hash.as_str();
            if s.starts_with("fake:") || s.starts_with("fake-old:") {
                Ok(())
            } else {
                Err("not a hash format the fake hasher verifies".to_string())
            }
        }
    }

    /// Tokens `token-1`, `token-2`, … in order; the n-th fill of random
    /// bytes gives bytes that are all `n` (so the first TOTP secret is
    /// `AEAQCAIB…` in base32, and tests can compute its codes).
    #[derive(Debug, Default)]
    pub struct CountingTokens(AtomicU64, AtomicU64);

    impl TokenGenerator for CountingTokens {
        fn generate(&self) -> Secret {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Secret::new(format!("token-{n}"))
        }

        fn fill_random(&self, dest: &mut [u8]) {
            let n = self.1.fetch_add(1, Ordering::SeqCst) + 1;
            dest.fill(n.to_le_bytes()[0]);
        }
    }

    /// A clock that always says the same time.
    #[derive(Debug, Clone, Copy)]
    pub struct FixedClock(pub DateTime<Utc>);

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    /// Services built from the fakes, at the given time.
    pub fn services_at(now: DateTime<Utc>) -> CustomerServices {
        CustomerServices::new(
            Arc::new(FakeHasher),
            Arc::new(CountingTokens::default()),
            Arc::new(FixedClock(now)),
            LinkLifetimes::default(),
        )
    }
}
