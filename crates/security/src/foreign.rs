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

/// How many times the service's own argon2id verification (OWASP's
/// parameters, [`crate::OWASP_MEMORY_KIB`], [`crate::OWASP_ITERATIONS`])
/// one verify of an imported hash may cost, about. A hash is checked at
/// every login attempt, so a hostile import file with absurd work factors
/// would be a denial of service; the bounds below keep each algorithm
/// within about this factor (measured on the development machine, figures
/// in docs/import.md; `cost_of_one_verify_at_each_bound` measures again),
/// with one exception kept on purpose: bcrypt cost 12 measured 10.5×.
/// The factor admits the common defaults of the systems customers come
/// from (bcrypt cost 12 as in Laravel and Rails, argon2-cffi's
/// `m=65536,t=3,p=4`, OWASP's PBKDF2 rounds): refusing them would make a
/// migration ask everyone to reset a password. The extra work is paid
/// once per customer (the first successful login rehashes to argon2id) and
/// through the hasher's bounded admission like every hash.
pub const MAX_COST_FACTOR: u64 = 8;
/// How many times the service's own argon2id hash a wrong password's
/// answer waits at least (when not configured): the slowest accepted
/// verify above (bcrypt cost 12, 10.5×) with half again as headroom for a
/// busy machine. Without this floor a wrong password for a customer whose
/// imported hash is dearer than the service's own would take longer than
/// one for an unknown email (which is checked against a decoy made with
/// the service's parameters), and so tell which emails were imported.
pub const FAILED_LOGIN_FLOOR_FACTOR: u32 = 16;
/// argon2 (any variant): work is memory × passes (the crate computes the
/// lanes one after the other), at most the factor times the service's own;
/// memory at most 64 MiB; at most 16 lanes.
pub const MAX_ARGON2_WORK_KIB: u64 =
    MAX_COST_FACTOR * crate::OWASP_MEMORY_KIB as u64 * crate::OWASP_ITERATIONS as u64;
pub const MAX_ARGON2_MEMORY_KIB: u32 = 65_536;
pub const MAX_ARGON2_LANES: u32 = 16;
/// bcrypt: 2^cost rounds of its key schedule.
pub const MAX_BCRYPT_COST: u32 = 12;
/// scrypt: work is 128·r·2^ln·p bytes mixed, memory 128·r·2^ln bytes.
pub const MAX_SCRYPT_WORK_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_SCRYPT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// PBKDF2: rounds of HMAC-SHA-256, and of HMAC-SHA-512 (OWASP: 600,000
/// and 210,000).
pub const MAX_PBKDF2_SHA256_ROUNDS: u32 = 800_000;
pub const MAX_PBKDF2_SHA512_ROUNDS: u32 = 300_000;

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
                "bcrypt cost {cost} is outside the import's bounds 4..={MAX_BCRYPT_COST} \
                 (about {MAX_COST_FACTOR}× this service's own hash)"
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
            let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
            if params.m_cost() > MAX_ARGON2_MEMORY_KIB
                || work > MAX_ARGON2_WORK_KIB
                || params.p_cost() > MAX_ARGON2_LANES
            {
                return Err(format!(
                    "argon2 cost above the import's bounds (m ≤ {MAX_ARGON2_MEMORY_KIB} KiB, \
                     m·t ≤ {MAX_ARGON2_WORK_KIB}, p ≤ {MAX_ARGON2_LANES}: about \
                     {MAX_COST_FACTOR}× this service's own hash)"
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
            let work = memory.saturating_mul(u64::from(params.p()));
            if memory > MAX_SCRYPT_MEMORY_BYTES || work > MAX_SCRYPT_WORK_BYTES {
                return Err(format!(
                    "scrypt cost above the import's bounds (128·r·2^ln·p ≤ {} MiB: about \
                     {MAX_COST_FACTOR}× this service's own hash)",
                    MAX_SCRYPT_WORK_BYTES >> 20
                ));
            }
            Ok(HashFormat::Scrypt)
        }
        "pbkdf2-sha256" | "pbkdf2-sha512" => {
            let params = pbkdf2::Params::try_from(parsed)
                .map_err(|e| format!("PBKDF2 parameters are not valid: {e}"))?;
            let max = if parsed.algorithm.as_str() == "pbkdf2-sha256" {
                MAX_PBKDF2_SHA256_ROUNDS
            } else {
                MAX_PBKDF2_SHA512_ROUNDS
            };
            if params.rounds > max {
                return Err(format!(
                    "PBKDF2 cost above the import's bounds ({} rounds ≤ {max}: about \
                     {MAX_COST_FACTOR}× this service's own hash)",
                    parsed.algorithm.as_str()
                ));
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

    /// PHC strings with the given parameters and a 64-byte hash (never
    /// computed here).
    fn phc(algorithm: &str, params: &str) -> String {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        format!("${algorithm}${params}${}$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA", salt.as_str())
    }

    fn bcrypt_of_cost(cost: u32) -> String {
        format!("$2b${cost:02}$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234")
    }

    #[test]
    fn one_verify_of_an_imported_hash_costs_at_most_about_eight_times_the_services_own() {
        // Within the bounds: the common defaults of other systems.
        for accepted in [
            phc("argon2id", "v=19$m=19456,t=2,p=1"),
            phc("argon2id", "v=19$m=65536,t=3,p=4"),
            phc("argon2id", "v=19$m=38912,t=4,p=4"),
            phc("argon2i", "v=19$m=19456,t=8,p=1"),
            phc("scrypt", "ln=15,r=8,p=1"),
            phc("scrypt", "ln=16,r=8,p=1"),
            phc("scrypt", "ln=14,r=8,p=2"),
            phc("pbkdf2-sha256", "i=600000,l=64"),
            phc("pbkdf2-sha512", "i=210000,l=64"),
        ] {
            assert!(
                recognise(&accepted).is_ok(),
                "{accepted}: {:?}",
                recognise(&accepted)
            );
        }
        assert_eq!(recognise(&bcrypt_of_cost(12)), Ok(HashFormat::Bcrypt));
        // Beyond them: each would cost many times one login of the service.
        for (refused, named) in [
            (phc("argon2id", "v=19$m=262144,t=20,p=1"), "argon2 cost"),
            (phc("argon2id", "v=19$m=65536,t=5,p=1"), "argon2 cost"),
            (phc("argon2id", "v=19$m=131072,t=1,p=1"), "argon2 cost"),
            (phc("argon2id", "v=19$m=19456,t=2,p=64"), "argon2 cost"),
            (phc("scrypt", "ln=14,r=8,p=16"), "scrypt cost"),
            (phc("scrypt", "ln=17,r=8,p=1"), "scrypt cost"),
            (phc("pbkdf2-sha256", "i=5000000,l=64"), "PBKDF2 cost"),
            (phc("pbkdf2-sha512", "i=400000,l=64"), "PBKDF2 cost"),
            (bcrypt_of_cost(16), "bcrypt cost"),
            (bcrypt_of_cost(13), "bcrypt cost"),
        ] {
            let reason = recognise(&refused).unwrap_err();
            assert!(reason.contains(named), "{refused}: {reason}");
            assert!(reason.contains("8×"), "{reason}");
        }
    }

    /// The measurement behind the bounds: one verify at each bound against
    /// one verify of the service's own argon2id, each below the failed-login
    /// floor's factor. Run in release:
    /// `cargo test -p access-security --release --lib cost_of_one_verify -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand in release"]
    fn cost_of_one_verify_at_each_bound() {
        use std::time::Instant;
        let median = |f: &dyn Fn()| {
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[2]
        };
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let own = crate::Argon2idHasher::owasp(1);
        let own_hash = own.hash_blocking(PW).unwrap();
        let base = median(&|| assert!(own.verify_blocking(PW, &own_hash).unwrap()));
        println!("service argon2id m=19456,t=2,p=1: {base:.1} ms");
        let at_bound: Vec<(String, String)> = vec![
            (
                format!("argon2id m={MAX_ARGON2_MEMORY_KIB},t=4,p=1"),
                argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    argon2::Params::new(MAX_ARGON2_MEMORY_KIB, 4, 1, None).unwrap(),
                )
                .hash_password(PW.as_bytes(), &salt)
                .unwrap()
                .to_string(),
            ),
            (
                format!("bcrypt cost {MAX_BCRYPT_COST}"),
                bcrypt::hash_with_salt(PW, MAX_BCRYPT_COST, *b"0123456789abcdef")
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoB),
            ),
            (
                "scrypt ln=16,r=8,p=1".into(),
                scrypt::Scrypt
                    .hash_password_customized(
                        PW.as_bytes(),
                        None,
                        None,
                        scrypt::Params::new(16, 8, 1, 32).unwrap(),
                        &salt,
                    )
                    .unwrap()
                    .to_string(),
            ),
            (
                format!("pbkdf2-sha256 i={MAX_PBKDF2_SHA256_ROUNDS}"),
                pbkdf2::Pbkdf2
                    .hash_password_customized(
                        PW.as_bytes(),
                        Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
                        None,
                        pbkdf2::Params {
                            rounds: MAX_PBKDF2_SHA256_ROUNDS,
                            output_length: 32,
                        },
                        &salt,
                    )
                    .unwrap()
                    .to_string(),
            ),
            (
                format!("pbkdf2-sha512 i={MAX_PBKDF2_SHA512_ROUNDS}"),
                pbkdf2::Pbkdf2
                    .hash_password_customized(
                        PW.as_bytes(),
                        Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                        None,
                        pbkdf2::Params {
                            rounds: MAX_PBKDF2_SHA512_ROUNDS,
                            output_length: 64,
                        },
                        &salt,
                    )
                    .unwrap()
                    .to_string(),
            ),
        ];
        for (what, hash) in at_bound {
            assert!(recognise(&hash).is_ok(), "{what}");
            let took = median(&|| assert!(own.verify_blocking(PW, &hash).unwrap()));
            println!(
                "{what}: {took:.1} ms = {:.1}× the service's own",
                took / base
            );
            // A wrong password waits for the floor, which must hide it.
            assert!(
                took / base < f64::from(FAILED_LOGIN_FLOOR_FACTOR),
                "{what} costs more than the failed-login floor covers"
            );
        }
    }
}
