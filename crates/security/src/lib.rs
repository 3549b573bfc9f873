//! # access-security
//!
//! Production implementations of the domain's service traits:
//! - [`Argon2idHasher`]: argon2id with OWASP's parameters (m=19456 KiB, t=2,
//!   p=1), PHC strings, on a bounded blocking pool so hashing never stalls
//!   the async workers.
//! - [`OsRandomTokens`]: 256-bit tokens from the operating system's RNG,
//!   hex-encoded.
//! - [`SystemClock`].
//! - [`keys`]: the master key, per-customer data keys and the email index
//!   key (crypto-shredding of personal data).

pub mod keys;

use std::sync::Arc;

use access_domain::{
    Clock, Password, PasswordHash, PasswordHasher, Secret, ServiceError, TokenGenerator,
};
use argon2::password_hash::{
    PasswordHash as PhcHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

/// OWASP's recommended argon2id parameters (Password Storage Cheat Sheet).
pub const OWASP_MEMORY_KIB: u32 = 19_456;
pub const OWASP_ITERATIONS: u32 = 2;
pub const OWASP_PARALLELISM: u32 = 1;

/// argon2id password hashing.
///
/// Each hash takes tens of milliseconds and ~19 MiB of memory, so work runs
/// on tokio's blocking pool behind a semaphore: at most `max_concurrent`
/// hashes at once, the rest wait their turn without holding an async worker.
#[derive(Clone)]
pub struct Argon2idHasher {
    params: Params,
    permits: Arc<Semaphore>,
}

impl Argon2idHasher {
    /// OWASP parameters, with at most `max_concurrent` hashes at a time.
    pub fn owasp(max_concurrent: usize) -> Self {
        // The constants are valid argon2 parameters; `Params::new` only
        // fails for out-of-range values.
        #[allow(clippy::expect_used)]
        let params = Params::new(OWASP_MEMORY_KIB, OWASP_ITERATIONS, OWASP_PARALLELISM, None)
            .expect("OWASP argon2 parameters are valid");
        Self::with_params(params, max_concurrent)
    }

    pub fn with_params(params: Params, max_concurrent: usize) -> Self {
        Self {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes synchronously (for benchmarks and tools).
    pub fn hash_blocking(&self, password: &str) -> Result<String, ServiceError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| ServiceError(format!("OS random generator: {e}")))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| ServiceError(format!("salt: {e}")))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ServiceError(format!("argon2id: {e}")))
    }

    /// Verifies synchronously. Any PHC hash argon2 understands is accepted,
    /// so hashes made with older parameters keep working.
    pub fn verify_blocking(&self, candidate: &str, phc: &str) -> Result<bool, ServiceError> {
        let parsed = PhcHash::new(phc)
            .map_err(|e| ServiceError(format!("stored hash is not a PHC string: {e}")))?;
        match self.argon2().verify_password(candidate.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(ServiceError(format!("argon2id: {e}"))),
        }
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Self) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError("hashing pool closed".into()))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(this))
            .await
            .map_err(|e| ServiceError(format!("hashing task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl PasswordHasher for Argon2idHasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, ServiceError> {
        let plain = password.expose().to_string();
        self.run_blocking(move |h| h.hash_blocking(&plain))
            .await
            .map(PasswordHash::new)
    }

    async fn verify(&self, candidate: &Secret, hash: &PasswordHash) -> Result<bool, ServiceError> {
        let plain = candidate.expose().to_string();
        let phc = hash.as_str().to_string();
        self.run_blocking(move |h| h.verify_blocking(&plain, &phc))
            .await
    }
}

/// Bytes of entropy in a token (256 bits; the floor is 128).
pub const TOKEN_BYTES: usize = 32;

/// Tokens from the operating system's random generator, hex-encoded.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandomTokens;

impl TokenGenerator for OsRandomTokens {
    fn generate(&self) -> Secret {
        let mut bytes = [0u8; TOKEN_BYTES];
        // Without the OS RNG no safe token can be made; this is not a
        // recoverable condition for an access service.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes)
            .expect("the operating system's random generator is unavailable");
        Secret::new(hex::encode(bytes))
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2idHasher {
        Argon2idHasher::with_params(Params::new(8, 1, 1, None).unwrap(), 2)
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let h = cheap();
        let p = Password::parse("correct-Horse-battery-9", &[]).unwrap();
        let hash = h.hash(&p).await.unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$"),
            "{}",
            hash.as_str()
        );
        assert!(!hash.as_str().contains("Horse"));
        assert!(h
            .verify(&Secret::new("correct-Horse-battery-9"), &hash)
            .await
            .unwrap());
        assert!(!h
            .verify(&Secret::new("correct-Horse-battery-8"), &hash)
            .await
            .unwrap());
        // Same password, new salt, new hash.
        assert_ne!(h.hash(&p).await.unwrap(), hash);
    }

    #[test]
    fn owasp_parameters_are_used() {
        let h = Argon2idHasher::owasp(1);
        let phc = h.hash_blocking("correct-Horse-battery-9").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[tokio::test]
    async fn a_garbage_hash_is_an_error_not_a_match() {
        let err = cheap()
            .verify(&Secret::new("x"), &PasswordHash::new("nope"))
            .await
            .unwrap_err();
        assert!(err.0.contains("PHC"), "{err}");
    }

    #[test]
    fn tokens_have_256_bits_and_differ() {
        let a = OsRandomTokens.generate();
        let b = OsRandomTokens.generate();
        assert_eq!(a.expose().len(), TOKEN_BYTES * 2);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }
}
