//! Password hashes made by other systems (bulk import): which formats are
//! accepted, how each is recognised, and their verification with the
//! maintained crate of each algorithm (`argon2`, `bcrypt`, `scrypt`,
//! `pbkdf2`). At the next successful login the password is hashed again
//! with argon2id (`needs_rehash` is true for every one of them but a
//! current argon2id hash).
//!
//! Reasons never quote the hash: it is offline-crackable.

use argon2::password_hash::{PasswordHash as PhcHash, PasswordVerifier};

/// An accepted format of an imported hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFormat {
    /// `$argon2id$…`, `$argon2i$…`, `$argon2d$…` (PHC).
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$` (bcrypt's modular crypt format).
    Bcrypt,
    /// `$scrypt$ln=…,r=…,p=…$salt$hash` (PHC).
    Scrypt,
    /// `$pbkdf2-sha256$i=…,l=…$salt$hash`, `$pbkdf2-sha512$…` (PHC).
    Pbkdf2,
}

impl HashFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Argon2 => "argon2",
            Self::Bcrypt => "bcrypt",
            Self::Scrypt => "scrypt",
            Self::Pbkdf2 => "pbkdf2",
        }
    }
}

/// Work factors above these are refused at import: a hash is checked at
/// every login attempt, so an absurd cost would be a denial of service.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 262_144;
pub const MAX_ARGON2_ITERATIONS: u32 = 20;
pub const MAX_BCRYPT_COST: u32 = 16;
/// scrypt's memory is 128·r·2^ln bytes: at most 256 MiB.
pub const MAX_SCRYPT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_PBKDF2_ROUNDS: u32 = 5_000_000;

const BCRYPT_PREFIXES: &[&str] = &["$2a$", "$2b$", "$2y$"];

/// The format of `hash`, or why it is refused (without quoting it).
pub fn recognise(hash: &str) -> Result<HashFormat, String> {
    if BCRYPT_PREFIXES.iter().any(|p| hash.starts_with(p)) {
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|_| "a malformed bcrypt hash (expected $2b$NN$ and 53 characters)")?;
        let cost = parts.get_cost();
        if !(4..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(format!(
                "bcrypt cost {cost} is outside 4..={MAX_BCRYPT_COST}"
            ));
        }
        return Ok(HashFormat::Bcrypt);
    }
    let modular_crypt = ["$1$", "$5$", "$6$", "$2x$"];
    if hash.starts_with('$') && !modular_crypt.iter().any(|p| hash.starts_with(p)) {
        if let Ok(parsed) = PhcHash::new(hash) {
            return recognise_phc(&parsed);
        }
    }
    Err(refusal(hash))
}

fn recognise_phc(parsed: &PhcHash<'_>) -> Result<HashFormat, String> {
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("a PHC string without salt or hash".to_string());
    }
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => {
            let params = argon2::Params::try_from(parsed)
                .map_err(|e| format!("argon2 parameters are not valid: {e}"))?;
            if params.m_cost() > MAX_ARGON2_MEMORY_KIB || params.t_cost() > MAX_ARGON2_ITERATIONS {
                return Err(format!(
                    "argon2 cost above m={MAX_ARGON2_MEMORY_KIB},t={MAX_ARGON2_ITERATIONS}"
                ));
            }
            Ok(HashFormat::Argon2)
        }
        "scrypt" => {
            let params = scrypt::Params::try_from(parsed)
                .map_err(|e| format!("scrypt parameters are not valid: {e}"))?;
            let memory = 128u64
                .saturating_mul(u64::from(params.r()))
                .saturating_mul(1u64 << params.log_n().min(63));
            if memory > MAX_SCRYPT_MEMORY_BYTES || params.p() > 16 {
                return Err("scrypt cost above 256 MiB of memory or p=16".to_string());
            }
            Ok(HashFormat::Scrypt)
        }
        "pbkdf2-sha256" | "pbkdf2-sha512" => {
            let params = pbkdf2::Params::try_from(parsed)
                .map_err(|e| format!("PBKDF2 parameters are not valid: {e}"))?;
            if params.rounds > MAX_PBKDF2_ROUNDS {
                return Err(format!("PBKDF2 rounds above {MAX_PBKDF2_ROUNDS}"));
            }
            Ok(HashFormat::Pbkdf2)
        }
        "pbkdf2" => Err("PBKDF2-SHA1 is not accepted (use PBKDF2-SHA256 or -SHA512)".to_string()),
        other if other.len() <= 32 => Err(format!("the PHC algorithm `{other}` is not accepted")),
        _ => Err("an unknown PHC algorithm".to_string()),
    }
}

/// Why a string in no accepted format is refused, naming what it looks
/// like when that is clear.
fn refusal(hash: &str) -> String {
    let hex = !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit());
    let crypt_alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    let what = if hex && hash.len() == 32 {
        "an unsalted MD5 digest"
    } else if hex && hash.len() == 40 {
        "an unsalted SHA-1 digest"
    } else if hex && hash.len() == 64 {
        "an unsalted SHA-256 digest"
    } else if hash.len() == 13 && hash.chars().all(crypt_alphabet) {
        "a traditional crypt (DES) hash"
    } else if hash.starts_with("$1$") {
        "an MD5-crypt hash"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-crypt hash"
    } else if hash.starts_with("$2x$") {
        "a bcrypt hash of the buggy `$2x$` variant"
    } else {
        "an unknown format"
    };
    format!("{what} is not accepted; accepted: argon2 (PHC), bcrypt ($2a$/$2b$/$2y$), scrypt (PHC), PBKDF2-SHA256/512 (PHC)")
}

/// Verifies `candidate` against an imported hash of any accepted format.
/// `Ok(false)` for a wrong password; `Err` when the hash cannot be checked.
pub(crate) fn verify_foreign(
    format: HashFormat,
    candidate: &str,
    hash: &str,
) -> Result<bool, String> {
    match format {
        // argon2 hashes go through the hasher's own verification (its
        // pooled working memory).
        HashFormat::Argon2 => Err("argon2 is verified by the hasher".to_string()),
        HashFormat::Bcrypt => {
            bcrypt::verify(candidate, hash).map_err(|_| "bcrypt hash cannot be checked".to_string())
        }
        HashFormat::Scrypt | HashFormat::Pbkdf2 => {
            let parsed = PhcHash::new(hash).map_err(|_| "not a PHC string".to_string())?;
            let result = match format {
                HashFormat::Scrypt => scrypt::Scrypt.verify_password(candidate.as_bytes(), &parsed),
                _ => pbkdf2::Pbkdf2.verify_password(candidate.as_bytes(), &parsed),
            };
            match result {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(format!("{} hash cannot be checked: {e}", format.as_str())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Argon2idHasher;
    use argon2::password_hash::{PasswordHasher as _, SaltString};

    const PW: &str = "correct-Horse-battery-9";

    fn cheap() -> Argon2idHasher {
        Argon2idHasher::with_params(argon2::Params::new(8, 1, 1, None).unwrap(), 2)
    }

    /// One hash per accepted format, of `PW`, made by each crate.
    fn fixtures() -> Vec<(HashFormat, String)> {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let scrypt_params = scrypt::Params::new(4, 8, 1, 32).unwrap();
        let pbkdf2_params = pbkdf2::Params {
            rounds: 1000,
            output_length: 32,
        };
        vec![
            (
                HashFormat::Bcrypt,
                bcrypt::hash_with_salt(PW, 4, *b"0123456789abcdef")
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoB),
            ),
            (
                HashFormat::Bcrypt,
                bcrypt::hash_with_salt(PW, 4, *b"0123456789abcdef")
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoY),
            ),
            (
                HashFormat::Scrypt,
                scrypt::Scrypt
                    .hash_password_customized(PW.as_bytes(), None, None, scrypt_params, &salt)
                    .unwrap()
                    .to_string(),
            ),
            (
                HashFormat::Pbkdf2,
                pbkdf2::Pbkdf2
                    .hash_password_customized(
                        PW.as_bytes(),
                        Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
                        None,
                        pbkdf2_params,
                        &salt,
                    )
                    .unwrap()
                    .to_string(),
            ),
            (
                HashFormat::Pbkdf2,
                pbkdf2::Pbkdf2
                    .hash_password_customized(
                        PW.as_bytes(),
                        Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                        None,
                        pbkdf2_params,
                        &salt,
                    )
                    .unwrap()
                    .to_string(),
            ),
            (
                HashFormat::Argon2,
                argon2::Argon2::new(
                    argon2::Algorithm::Argon2i,
                    argon2::Version::V0x13,
                    argon2::Params::new(16, 2, 1, None).unwrap(),
                )
                .hash_password(PW.as_bytes(), &salt)
                .unwrap()
                .to_string(),
            ),
        ]
    }

    #[test]
    fn every_accepted_format_is_recognised_verified_and_due_for_a_rehash() {
        let h = cheap();
        for (format, hash) in fixtures() {
            assert_eq!(recognise(&hash), Ok(format), "{hash}");
            assert!(h.verify_blocking(PW, &hash).unwrap(), "{hash}");
            assert!(
                !h.verify_blocking("wrong-Horse-battery-9", &hash).unwrap(),
                "{hash}"
            );
            assert!(h.needs_rehash_phc(&hash), "{hash}");
        }
    }

    #[test]
    fn unsalted_digests_crypt_des_and_unknown_formats_are_refused_without_quoting_them() {
        for (hash, named) in [
            ("5f4dcc3b5aa765d61d8327deb882cf99", "MD5"),
            ("5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", "SHA-1"),
            ("abJnggxhB/yWI", "crypt (DES)"),
            ("$1$saltsalt$2vnaRpHa6Jxjz5n83ok8Z0", "MD5-crypt"),
            ("$6$saltsalt$abcdefghijklmnop", "SHA-crypt"),
            (
                "$pbkdf2$i=1000,l=32$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "SHA1",
            ),
            ("$2b$04$tooshort", "malformed bcrypt"),
            (
                "$2b$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
                "cost",
            ),
            ("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "unknown"),
            ("", "unknown"),
        ] {
            let reason = recognise(hash).unwrap_err();
            assert!(
                reason.to_lowercase().contains(&named.to_lowercase()),
                "{hash}: {reason}"
            );
            if hash.len() > 8 {
                assert!(!reason.contains(hash), "{reason}");
            }
        }
    }

    #[test]
    fn absurd_work_factors_are_refused_at_import() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        // Parameters only: the hash itself is never computed at this cost.
        let big = format!(
            "$argon2id$v=19$m={},t=2,p=1${}$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg",
            MAX_ARGON2_MEMORY_KIB * 4,
            salt.as_str()
        );
        assert!(recognise(&big).unwrap_err().contains("argon2 cost"));
        let scrypt_big = format!(
            "$scrypt$ln=24,r=8,p=1${}$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg",
            salt.as_str()
        );
        assert!(recognise(&scrypt_big).unwrap_err().contains("scrypt cost"));
    }
}
