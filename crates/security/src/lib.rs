//! # access-security
//!
//! Production implementations of the domain's service traits:
//! - [`Argon2idHasher`]: argon2id with OWASP's parameters (m=19456 KiB, t=2,
//!   p=1), PHC strings, on a bounded blocking pool so hashing never stalls
//!   the async workers.
//! - [`OsRandomTokens`]: 256-bit tokens from the operating system's RNG,
//!   hex-encoded.
//! - [`SystemClock`].
//! - [`foreign`]: password hashes imported from other systems (argon2,
//!   bcrypt, scrypt, PBKDF2), verified at login, then rehashed to argon2id.
//! - [`keys`]: the master key, per-customer data keys and the email index
//!   key (crypto-shredding of personal data).

pub mod admission;
pub mod foreign;
pub mod keys;

pub use admission::{Admission, AdmissionLimits};

use std::sync::{Arc, Mutex};

use access_domain::{
    Clock, Password, PasswordHash, PasswordHasher, Secret, ServiceError, TokenGenerator,
};
use argon2::password_hash::{Output, ParamsString, PasswordHash as PhcHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use chrono::{DateTime, Utc};

/// argon2's cost parameters (memory in KiB, iterations, lanes).
pub use argon2::Params as Argon2Params;

/// OWASP's recommended argon2id parameters (Password Storage Cheat Sheet).
pub const OWASP_MEMORY_KIB: u32 = 19_456;
pub const OWASP_ITERATIONS: u32 = 2;
pub const OWASP_PARALLELISM: u32 = 1;

/// argon2id password hashing.
///
/// Each hash takes tens of milliseconds and ~19 MiB of memory, so work runs
/// on tokio's blocking pool behind an [`Admission`]: at most
/// `max_concurrent` hashes at once, the rest wait their turn without holding
/// an async worker, in a queue bounded by [`Argon2idHasher::with_admission`]
/// (unbounded unless set).
#[derive(Clone)]
pub struct Argon2idHasher {
    params: Params,
    admission: Admission,
    /// argon2's working memory (19 MiB with OWASP's parameters), kept and
    /// reused: at most one buffer per permit. Freed and allocated anew for
    /// every hash, glibc keeps the blocks resident in its arenas (500 MiB
    /// peak RSS measured in docs/performance.md).
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// Buffers kept in `memory` at most (the number of permits).
    keep: usize,
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
            admission: Admission::new(max_concurrent, AdmissionLimits::UNBOUNDED),
            memory: Arc::new(Mutex::new(Vec::new())),
            keep: max_concurrent.max(1),
        }
    }

    /// The same hasher with its waiting requests bounded by `limits`:
    /// beyond them a hash or a verification is refused at once with
    /// [`ServiceError::Overloaded`].
    pub fn with_admission(mut self, limits: AdmissionLimits) -> Self {
        self.admission = Admission::new(self.keep, limits);
        self
    }

    /// The admission in front of the hashes (its queue length for metrics).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Runs argon2 with `blocks` of working memory from the pool (or new).
    fn with_memory<T>(
        &self,
        blocks: usize,
        work: impl FnOnce(&mut [Block]) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let mut memory = self
            .memory
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        let result = work(&mut memory[..blocks]);
        if let Ok(mut pool) = self.memory.lock() {
            if pool.len() < self.keep {
                pool.push(memory);
            }
        }
        result
    }

    /// Hashes synchronously (for benchmarks and tools).
    pub fn hash_blocking(&self, password: &str) -> Result<String, ServiceError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| ServiceError::Failed(format!("OS random generator: {e}")))?;
        let salt_string = SaltString::encode_b64(&salt)
            .map_err(|e| ServiceError::Failed(format!("salt: {e}")))?;
        let argon = self.argon2();
        let mut out = vec![
            0u8;
            self.params
                .output_len()
                .unwrap_or(Params::DEFAULT_OUTPUT_LEN)
        ];
        self.with_memory(self.params.block_count(), |blocks| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
                .map_err(|e| ServiceError::Failed(format!("argon2id: {e}")))
        })?;
        let phc = PhcHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)
                .map_err(|e| ServiceError::Failed(format!("argon2id parameters: {e}")))?,
            salt: Some(salt_string.as_salt()),
            hash: Some(
                Output::new(&out).map_err(|e| ServiceError::Failed(format!("argon2id: {e}")))?,
            ),
        };
        Ok(phc.to_string())
    }

    /// Verifies synchronously. Any argon2 PHC hash is accepted (argon2i, d
    /// or id, any version and parameters), so hashes made with older
    /// parameters keep working.
    /// Imported hashes of the other accepted formats (bcrypt, scrypt,
    /// PBKDF2: [`foreign`]) verify with their own algorithm.
    pub fn verify_blocking(&self, candidate: &str, phc: &str) -> Result<bool, ServiceError> {
        if let Ok(format) = foreign::recognise(phc) {
            if format != foreign::HashFormat::Argon2 {
                return foreign::verify_foreign(format, candidate, phc)
                    .map_err(ServiceError::Failed);
            }
        }
        let parsed = PhcHash::new(phc)
            .map_err(|e| ServiceError::Failed(format!("stored hash is not a PHC string: {e}")))?;
        let bad = |e: &dyn std::fmt::Display| ServiceError::Failed(format!("argon2 hash: {e}"));
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| bad(&e))?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| bad(&e))?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(|e| bad(&e))?;
        let expected = parsed.hash.ok_or_else(|| bad(&"no hash"))?;
        let salt = parsed.salt.ok_or_else(|| bad(&"no salt"))?;
        let mut salt_buf = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_buf).map_err(|e| bad(&e))?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        self.with_memory(params.block_count(), |blocks| {
            argon
                .hash_password_into_with_memory(candidate.as_bytes(), salt, &mut out, blocks)
                .map_err(|e| ServiceError::Failed(format!("argon2: {e}")))
        })?;
        // `Output` compares in constant time.
        let actual = Output::new(&out).map_err(|e| bad(&e))?;
        Ok(actual == expected)
    }

    /// True unless `phc` is an argon2id hash (version 0x13) made with
    /// exactly this hasher's parameters. A string that is not a PHC hash
    /// at all is left to `verify` to refuse.
    pub fn needs_rehash_phc(&self, phc: &str) -> bool {
        if phc.starts_with("$2") {
            // bcrypt (imported): always upgraded.
            return true;
        }
        let Ok(parsed) = PhcHash::new(phc) else {
            return false;
        };
        let same_algorithm = Algorithm::try_from(parsed.algorithm) == Ok(Algorithm::Argon2id);
        let same_version = parsed.version == Some(Version::V0x13.into());
        let same_params = Params::try_from(&parsed).is_ok_and(|p| {
            p.m_cost() == self.params.m_cost()
                && p.t_cost() == self.params.t_cost()
                && p.p_cost() == self.params.p_cost()
        });
        let same_length = parsed.hash.map(|h| h.len())
            == Some(
                self.params
                    .output_len()
                    .unwrap_or(Params::DEFAULT_OUTPUT_LEN),
            );
        !(same_algorithm && same_version && same_params && same_length)
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Self) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let permit = self.admission.enter().await?;
        let this = self.clone();
        // The permit goes with the work: a request that gives up (its
        // client left) does not free it while argon2 still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(this)
        })
        .await
        .map_err(|e| ServiceError::Failed(format!("hashing task failed: {e}")))?
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

    fn needs_rehash(&self, hash: &PasswordHash) -> bool {
        self.needs_rehash_phc(hash.as_str())
    }

    async fn rehash(&self, verified: &Secret) -> Result<PasswordHash, ServiceError> {
        let plain = verified.expose().to_string();
        self.run_blocking(move |h| h.hash_blocking(&plain))
            .await
            .map(PasswordHash::new)
    }

    fn check_imported(&self, hash: &PasswordHash) -> Result<(), String> {
        foreign::recognise(hash.as_str()).map(|_| ())
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

    fn fill_random(&self, dest: &mut [u8]) {
        // As above: no safe secret without the OS RNG.
        #[allow(clippy::expect_used)]
        getrandom::fill(dest).expect("the operating system's random generator is unavailable");
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
    fn hashes_agree_with_the_argon2_crates_own_phc_functions() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let h = cheap();
        // Ours verifies with the crate's verifier ...
        let ours = h.hash_blocking("pw-one").unwrap();
        let parsed = PhcHash::new(&ours).unwrap();
        assert!(h.argon2().verify_password(b"pw-one", &parsed).is_ok());
        assert!(h.argon2().verify_password(b"pw-two", &parsed).is_err());
        // ... and a hash made by the crate (as stored before) verifies with ours,
        // also with other parameters and algorithm than the hasher's.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = h
            .argon2()
            .hash_password(b"pw-one", &salt)
            .unwrap()
            .to_string();
        assert!(h.verify_blocking("pw-one", &theirs).unwrap());
        assert!(!h.verify_blocking("pw-two", &theirs).unwrap());
        let other = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(16, 2, 1, Some(24)).unwrap(),
        );
        let older = other.hash_password(b"pw-one", &salt).unwrap().to_string();
        assert!(h.verify_blocking("pw-one", &older).unwrap());
        assert!(!h.verify_blocking("pw-two", &older).unwrap());
        // Buffers are reused, never more than the permits.
        assert!(h.memory.lock().unwrap().len() <= 2);
    }

    #[test]
    fn owasp_parameters_are_used() {
        let h = Argon2idHasher::owasp(1);
        let phc = h.hash_blocking("correct-Horse-battery-9").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[tokio::test]
    async fn only_hashes_made_with_other_parameters_need_a_rehash() {
        let h = cheap();
        let current = h.hash_blocking("pw-one").unwrap();
        assert!(!h.needs_rehash_phc(&current));
        // Another memory cost, iteration count, parallelism, output length,
        // algorithm or version each call for a rehash.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        use argon2::password_hash::PasswordHasher as _;
        use argon2::Algorithm::{Argon2i, Argon2id};
        use argon2::Version::{V0x10, V0x13};
        for (algorithm, version, params) in [
            (Argon2id, V0x13, Params::new(16, 1, 1, None)),
            (Argon2id, V0x13, Params::new(8, 2, 1, None)),
            (Argon2id, V0x13, Params::new(16, 1, 2, None)),
            (Argon2id, V0x13, Params::new(8, 1, 1, Some(16))),
            (Argon2i, V0x13, Params::new(8, 1, 1, None)),
            (Argon2id, V0x10, Params::new(8, 1, 1, None)),
        ] {
            let other = Argon2::new(algorithm, version, params.unwrap())
                .hash_password(b"pw-one", &salt)
                .unwrap()
                .to_string();
            assert!(h.needs_rehash_phc(&other), "{other}");
            // It still verifies, and its rehash is current and verifies.
            assert!(h.verify_blocking("pw-one", &other).unwrap());
            let upgraded = h.rehash(&Secret::new("pw-one")).await.unwrap();
            assert!(!h.needs_rehash(&upgraded), "{}", upgraded.as_str());
            assert!(h.verify(&Secret::new("pw-one"), &upgraded).await.unwrap());
        }
        // The OWASP hasher wants the cheap hash upgraded, and the reverse.
        let owasp = Argon2idHasher::owasp(1);
        assert!(owasp.needs_rehash_phc(&current));
        assert!(h.needs_rehash_phc(&owasp.hash_blocking("pw-one").unwrap()));
        // Garbage is left to verify to refuse.
        assert!(!h.needs_rehash_phc("nope"));
    }

    #[tokio::test]
    async fn a_garbage_hash_is_an_error_not_a_match() {
        let err = cheap()
            .verify(&Secret::new("x"), &PasswordHash::new("nope"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("PHC"), "{err}");
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
