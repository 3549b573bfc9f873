//! `accessctl import`: customers from an older system with their password
//! hashes, on both stores. The fixture is made here from known passwords in
//! every accepted format, two of them by Python (`bcrypt`, `argon2-cffi`:
//! hashes made outside Rust); each customer then logs in the way the
//! service does (verify the stored hash, then `UpgradePasswordHash`), gets
//! `PasswordRehashed` and an argon2id hash, and logs in again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use access_domain::{
    Actor, CommandMetadata, CustomerCommand, CustomerEvent, CustomerServices, LinkLifetimes,
    PasswordHash, Secret,
};
use access_store::prelude::*;
use access_store::testing::TestDatabase;
use access_store::{Execution, Store, StoreOptions};
use argon2::password_hash::{PasswordHasher as _, SaltString};
use serde_json::json;

fn accessctl(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(args)
        .env("ACCESS_DATABASE_URL", url)
        .env("ACCESS_MASTER_KEY", access_store::testing::TEST_MASTER_KEY)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Hashes made by Python (outside Rust): bcrypt `$2b$` and argon2id from
/// argon2-cffi, of the given passwords.
fn python_hashes(bcrypt_pw: &str, argon2_pw: &str) -> (String, String) {
    let script = format!(
        "import bcrypt, argon2\n\
         print(bcrypt.hashpw({bcrypt_pw:?}.encode(), bcrypt.gensalt(rounds=4)).decode())\n\
         print(argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash({argon2_pw:?}))\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 with bcrypt and argon2-cffi is needed (pip install bcrypt argon2-cffi): {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let bcrypt = lines.next().unwrap().to_string();
    let argon2 = lines.next().unwrap().to_string();
    assert!(bcrypt.starts_with("$2b$04$"), "{bcrypt}");
    assert!(
        argon2.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
        "{argon2}"
    );
    (bcrypt, argon2)
}

/// (email, password, hash) in every accepted format.
fn logins() -> Vec<(String, String, String)> {
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let pw = |n: usize| format!("Imported-Password-{n}");
    let (py_bcrypt, py_argon2) = python_hashes(&pw(6), &pw(7));
    let hashes = vec![
        bcrypt::hash_with_salt(pw(0), 4, *b"fedcba9876543210")
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY),
        scrypt::Scrypt
            .hash_password_customized(
                pw(1).as_bytes(),
                None,
                None,
                scrypt::Params::new(4, 8, 1, 32).unwrap(),
                &salt,
            )
            .unwrap()
            .to_string(),
        pbkdf2::Pbkdf2
            .hash_password_customized(
                pw(2).as_bytes(),
                Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
                None,
                pbkdf2::Params {
                    rounds: 1000,
                    output_length: 32,
                },
                &salt,
            )
            .unwrap()
            .to_string(),
        pbkdf2::Pbkdf2
            .hash_password_customized(
                pw(3).as_bytes(),
                Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                None,
                pbkdf2::Params {
                    rounds: 1000,
                    output_length: 64,
                },
                &salt,
            )
            .unwrap()
            .to_string(),
        argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(pw(4).as_bytes(), &salt)
        .unwrap()
        .to_string(),
        argon2::Argon2::new(
            argon2::Algorithm::Argon2d,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(pw(5).as_bytes(), &salt)
        .unwrap()
        .to_string(),
        py_bcrypt,
        py_argon2,
    ];
    hashes
        .into_iter()
        .enumerate()
        .map(|(n, hash)| (format!("login{n}@example.com"), pw(n), hash))
        .collect()
}

/// Refused formats, each with what the reason names.
const REFUSED: &[(&str, &str)] = &[
    ("5f4dcc3b5aa765d61d8327deb882cf99", "MD5"),
    ("5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", "SHA-1"),
    ("abJnggxhB/yWI", "crypt (DES)"),
    ("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "unknown format"),
];

fn write_lines(path: &Path, rows: &[serde_json::Value]) {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, body).unwrap();
}

fn services() -> CustomerServices {
    CustomerServices::new(
        Arc::new(access_security::Argon2idHasher::owasp(2)),
        Arc::new(access_security::OsRandomTokens),
        Arc::new(access_security::SystemClock),
        LinkLifetimes::default(),
    )
}

/// What the service does at a login: the stored hash verifies, and when it
/// needs a rehash, `UpgradePasswordHash`. Returns the events it wrote.
async fn log_in(store: &Store, email: &str, password: &str) -> Vec<CustomerEvent> {
    let services = services();
    let (id, loaded) = store.load_login(email).await.unwrap().expect("a login");
    assert!(loaded.customer.has_access());
    let hash = loaded.customer.password_hash().unwrap().clone();
    let secret = Secret::new(password);
    assert!(
        services.hasher().verify(&secret, &hash).await.unwrap(),
        "{email} logs in"
    );
    assert!(!services
        .hasher()
        .verify(&Secret::new("not-the-password-1"), &hash)
        .await
        .unwrap());
    if !services.hasher().needs_rehash(&hash) {
        return Vec::new();
    }
    let metadata = CommandMetadata::new(
        Actor::System {
            name: "login".into(),
        },
        "test-login",
    );
    store
        .execute(
            &services,
            Execution {
                customer_id: id,
                command: CustomerCommand::UpgradePasswordHash { password: secret },
                metadata: &metadata,
                expected_version: None,
                idempotency: None,
            },
            |_| String::new(),
        )
        .await
        .unwrap()
        .events
}

async fn import_log_in_and_run_again(db: TestDatabase) {
    let url = db.url().to_string();
    let store = db.store(StoreOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logins = logins();

    // The file: every accepted format, a customer without access, the
    // refused formats, bad values and a duplicate email.
    let mut rows: Vec<_> = logins
        .iter()
        .enumerate()
        .map(|(n, (email, _, hash))| {
            json!({"email": email, "name": format!("Customer {n}"), "external_id": format!("old-{n}"),
                   "access": "customer_center", "password_hash": hash})
        })
        .collect();
    rows.push(
        json!({"email": "plain@example.com", "name": "No Access", "access": "none",
                     "customer_id": "0b4c3a6e-3d1f-4a51-9a0d-5d1f3c2b1a00"}),
    );
    let good = rows.len();
    for (n, (hash, _)) in REFUSED.iter().enumerate() {
        rows.push(
            json!({"email": format!("refused{n}@example.com"), "access": "customer_center",
                         "external_id": format!("refused-{n}"), "password_hash": hash}),
        );
    }
    rows.push(json!({"email": "not an email", "access": "none", "external_id": "bad-email"}));
    rows.push(json!({"email": "uuid@example.com", "access": "none", "customer_id": "not-a-uuid"}));
    rows.push(json!({"email": "LOGIN0@example.com", "access": "none", "external_id": "dup"}));
    rows.push(json!({"email": "x@example.com", "access": "admin", "external_id": "role"}));
    let file = dir.path().join("customers.jsonl");
    write_lines(&file, &rows);
    let file = file.to_str().unwrap();

    // A dry run writes nothing and says what would happen.
    let out = accessctl(
        &url,
        &["import", file, "--dry-run", "--source", "old-portal"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains(&format!("{good} would import")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(store.count_events().await.unwrap(), 0);

    let out = accessctl(&url, &["import", file, "--source", "old-portal"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{good} imported")) && stdout.contains("8 refused"),
        "{stdout}{stderr}"
    );
    for (n, (hash, named)) in REFUSED.iter().enumerate() {
        let start = format!(
            "line {}: password_hash: unsupported_password_hash: ",
            good + n + 1
        );
        let line = stderr.lines().find(|l| l.starts_with(&start));
        assert!(
            line.is_some_and(|l| l.contains(named) && l.contains("is not accepted")),
            "{start}\n{stderr}"
        );
        assert!(!stderr.contains(hash), "{stderr}");
    }
    for (_, _, hash) in &logins {
        assert!(!stderr.contains(hash.as_str()) && !stdout.contains(hash.as_str()));
    }
    let first_bad = good + REFUSED.len() + 1;
    for (line, expected) in [
        (first_bad, "email: invalid_email"),
        (first_bad + 1, "customer_id: invalid_customer_id"),
        (
            first_bad + 2,
            "email: duplicate_email: the same email is on line 1",
        ),
        (first_bad + 3, "access: unknown_role"),
    ] {
        let wanted = format!("line {line}: {expected}");
        assert!(stderr.contains(&wanted), "{wanted}\n{stderr}");
    }
    let events = store.count_events().await.unwrap();
    assert_eq!(events, good as u64);

    // Each customer logs in with the old password: verified with its own
    // algorithm, then rehashed to argon2id; the next login needs no rehash.
    for (email, password, _) in &logins {
        let written = log_in(&store, email, password).await;
        assert!(
            matches!(written.as_slice(), [CustomerEvent::PasswordRehashed { .. }]),
            "{email}: {written:?}"
        );
        let (_, loaded) = store.load_login(email).await.unwrap().unwrap();
        let hash: &PasswordHash = loaded.customer.password_hash().unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{email}"
        );
        assert!(log_in(&store, email, password).await.is_empty(), "{email}");
    }
    let after_logins = store.count_events().await.unwrap();
    assert_eq!(after_logins, events + logins.len() as u64);

    // Run again: nothing new is written (the rehashes do not make a conflict).
    let out = accessctl(&url, &["import", file, "--source", "old-portal"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("0 imported, 0 would import, {good} unchanged")),
        "{stdout}"
    );
    assert_eq!(store.count_events().await.unwrap(), after_logins);

    // Only the good lines (CSV this time; PHC hashes hold commas, so they
    // are quoted): exit 0, all unchanged.
    let csv = dir.path().join("good.csv");
    let mut body = String::from("email,name,external_id,access,password_hash\n");
    for (n, (email, _, hash)) in logins.iter().enumerate() {
        body.push_str(&format!(
            "{email},Customer {n},old-{n},customer_center,\"{hash}\"\n"
        ));
    }
    std::fs::write(&csv, body).unwrap();
    // From another source the same external ids are other customers: their
    // logins are taken.
    let out = accessctl(&url, &["import", csv.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains(&format!("{} refused", logins.len())),
        "{}",
        text(&out.stdout)
    );
    let out = accessctl(
        &url,
        &["import", csv.to_str().unwrap(), "--source", "old-portal"],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&format!("{} unchanged", logins.len())));

    // Other content for an imported external id: a conflict; another id
    // with a taken login email: email_in_use. Nothing written.
    let other = dir.path().join("other.jsonl");
    write_lines(
        &other,
        &[
            json!({"email": "login0@example.com", "name": "Someone Else", "external_id": "old-0",
                   "access": "customer_center", "password_hash": logins[0].2}),
            json!({"email": "Login1@Example.com", "external_id": "new-1",
                   "access": "customer_center", "password_hash": logins[1].2}),
        ],
    );
    // The dry run says the same (email_in_use against the store too).
    let out = accessctl(
        &url,
        &[
            "import",
            other.to_str().unwrap(),
            "--dry-run",
            "--source",
            "old-portal",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("line 1: external_id: conflict"), "{stderr}");
    assert!(stderr.contains("line 2: email: email_in_use"), "{stderr}");
    let out = accessctl(
        &url,
        &["import", other.to_str().unwrap(), "--source", "old-portal"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("line 1: external_id: conflict"), "{stderr}");
    assert!(stderr.contains("line 2: email: email_in_use"), "{stderr}");
    assert_eq!(store.count_events().await.unwrap(), after_logins);
}

#[tokio::test]
async fn import_log_in_and_run_again_on_sqlite() {
    import_log_in_and_run_again(TestDatabase::sqlite().unwrap()).await;
}

#[tokio::test]
async fn import_log_in_and_run_again_on_postgres() {
    import_log_in_and_run_again(TestDatabase::postgres().await.unwrap()).await;
}

#[test]
fn a_file_of_unknown_format_or_a_bad_source_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.txt");
    std::fs::write(&file, "").unwrap();
    let lite = TestDatabase::sqlite().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { lite.store(StoreOptions::default()).await.unwrap() });
    let out = accessctl(lite.url(), &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--format csv or --format jsonl"));
}

/// 1d: a customer's exported stream that starts with its import replays
/// like one that starts with its registration.
#[test]
fn replay_accepts_a_stream_that_starts_with_customer_imported() {
    let lines = [
        json!({"sequence": 1, "event_type": "CustomerImported", "event_version": "1.0",
               "metadata": {"actor_kind": "system", "actor_name": "accessctl", "request_id": "imp-1",
                            "reason": "imported from old-portal"},
               "data": {"customer_id": "0b4c3a6e-3d1f-4a51-9a0d-5d1f3c2b1a00", "source": "old-portal",
                        "external_id": "crm-1", "email": "imported@example.com", "name": "Ima Ported",
                        "access": "customer_center", "must_change_password": false,
                        "at": "2026-01-02T03:04:05Z"}}),
        json!({"sequence": 2, "event_type": "AccessRevoked",
               "data": {"reason": "left the company", "at": "2026-02-01T00:00:00Z"}}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imported.jsonl");
    write_lines(&file, &lines);
    let out = accessctl(
        "mysql://nowhere/none",
        &["replay", "--format", "json", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], 2);
    let customer = &report["customers"][0];
    assert_eq!(customer["state"]["email"], "imported@example.com");
    assert_eq!(customer["state"]["access_granted"], false);
    let kinds: Vec<_> = customer["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["customer_imported", "access_revoked"]);
}
