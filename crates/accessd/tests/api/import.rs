//! `POST /v1/customers/import`: JSON lines in and out (admin), then the
//! imported customers log in with their old passwords (a bcrypt hash made
//! by Python, outside Rust, and an scrypt one), which are rehashed to
//! argon2id; sending the same body again writes nothing.

use argon2::password_hash::{PasswordHasher as _, SaltString};
use serde_json::{json, Value};

use crate::helpers::*;

fn python_bcrypt(password: &str) -> String {
    let script = format!(
        "import bcrypt\nprint(bcrypt.hashpw({password:?}.encode(), bcrypt.gensalt(rounds=4)).decode())\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 with bcrypt is needed (pip install bcrypt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn post_lines(app: &TestApp, key: &str, body: String) -> (u16, String) {
    let response = app
        .client
        .post(format!(
            "{}/v1/customers/import?source=old-portal",
            app.base
        ))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn results(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn import_over_http_then_log_in(db: Db) {
    let app = TestApp::spawn(db).await;
    let bcrypt = python_bcrypt(PW);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let scrypt = scrypt::Scrypt
        .hash_password_customized(
            PW2.as_bytes(),
            None,
            None,
            scrypt::Params::new(4, 8, 1, 32).unwrap(),
            &salt,
        )
        .unwrap()
        .to_string();
    let rows = [
        json!({"email": "ann@example.com", "name": "Ann", "external_id": "1",
               "access": "customer_center", "password_hash": bcrypt}),
        json!({"email": "bob@example.com", "external_id": "2",
               "access": "customer_center", "password_hash": scrypt}),
        json!({"email": "md5@example.com", "external_id": "3",
               "access": "customer_center", "password_hash": "5f4dcc3b5aa765d61d8327deb882cf99"}),
        json!({"email": "carol@example.com", "external_id": "4",
               "access": "customer_center", "send_notification": true}),
    ];
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();

    // Only the admin role.
    let (status, _) = post_lines(&app, SERVICE, body.clone()).await;
    assert_eq!(status, 403);

    let (status, text) = post_lines(&app, ADMIN, body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer = results(&text);
    assert_eq!(answer.len(), 4, "{text}");
    assert_eq!(answer[0]["status"], "imported", "{text}");
    assert_eq!(answer[1]["status"], "imported", "{text}");
    assert_eq!(answer[2]["status"], "refused", "{text}");
    assert_eq!(answer[2]["line"], 3);
    assert_eq!(answer[2]["error"]["field"], "password_hash");
    assert_eq!(answer[2]["error"]["code"], "unsupported_password_hash");
    assert!(!text.contains("5f4dcc3b5aa765d61d8327deb882cf99"), "{text}");
    assert_eq!(answer[3]["status"], "imported", "{text}");
    // The setup link went out through the outbox.
    app.wait_for_mails_to("carol@example.com", 1).await;

    // Log in with the old passwords: rehashed to argon2id, then again.
    for (email, password, id) in [
        (
            "ann@example.com",
            PW,
            answer[0]["customer_id"].as_str().unwrap(),
        ),
        (
            "bob@example.com",
            PW2,
            answer[1]["customer_id"].as_str().unwrap(),
        ),
    ] {
        app.session(email, password).await;
        let events = app
            .get(&format!("/v1/customers/{id}/events"), AUDITOR)
            .await
            .expect(200)
            .body["events"]
            .as_array()
            .unwrap()
            .clone();
        let types: Vec<_> = events.iter().map(|e| e["event_type"].clone()).collect();
        assert_eq!(
            types,
            vec!["CustomerImported", "PasswordRehashed"],
            "{email}"
        );
        app.session(email, password).await;
        app.login(email, PW3).await.expect(401);
    }

    // The same body again: nothing new.
    let (status, text) = post_lines(&app, ADMIN, body).await;
    assert_eq!(status, 200);
    let again = results(&text);
    for n in [0, 1, 3] {
        assert_eq!(again[n]["status"], "unchanged", "{text}");
    }
    assert_eq!(again[2]["status"], "refused");

    // Too many rows: refused as a whole, nothing written.
    let many: String = (0..10_001)
        .map(|n| {
            format!(
                "{}\n",
                json!({"email": format!("m{n}@example.com"), "access": "none"})
            )
        })
        .collect();
    let (status, text) = post_lines(&app, ADMIN, many).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("too_many_rows"), "{text}");
}

/// Issue 17, item 4: the largest request (10,000 rows, each with access
/// and a bcrypt hash) is answered well within 30 s, one result per line;
/// the imported customers log in (their email reservations were written
/// with them) and the projection sees them.
async fn ten_thousand_rows_are_answered_well_within_thirty_seconds(db: Db) {
    // An unoptimized build on a loaded machine is many times slower than
    // the release build the promise is about: it gets more time, and the
    // 30 s bound is checked on release builds (`cargo nextest run
    // --release -p accessd --test api ten_thousand`).
    let app = TestApp::spawn_with(db, |config| {
        if cfg!(debug_assertions) {
            config.request_timeout_secs = 600;
        }
    })
    .await;
    let bcrypt = python_bcrypt(PW);
    let body: String = (0..10_000)
        .map(|n| {
            format!(
                "{}\n",
                json!({"email": format!("many{n}@example.com"), "name": format!("Many {n}"),
                       "external_id": format!("many-{n}"), "access": "customer_center",
                       "password_hash": bcrypt})
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let (status, text) = post_lines(&app, ADMIN, body).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{}", &text[..text.len().min(500)]);
    let answer = results(&text);
    assert_eq!(answer.len(), 10_000);
    assert!(answer.iter().all(|a| a["status"] == "imported"));
    assert!(
        cfg!(debug_assertions) || took < std::time::Duration::from_secs(30),
        "10,000 rows took {took:?}"
    );
    println!("POST /v1/customers/import of 10,000 rows: {took:?}");
    app.session("many9999@example.com", PW).await;
    let id = answer[4321]["customer_id"].as_str().unwrap();
    for _ in 0..100 {
        if app
            .get(&format!("/v1/customers/{id}"), AUDITOR)
            .await
            .status
            == 200
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("customer {id} never reached the read model");
}

/// Issue 17, review: a wrong password for a customer whose imported hash
/// is the dearest the import accepts (bcrypt cost 12, about 10 times the
/// service's own argon2id) is answered no later than one for an unknown
/// email (checked against a decoy with the service's parameters). Without
/// the failure floor the first took about 350 ms and the second 35 ms:
/// the answer's timing told which emails were imported.
async fn a_wrong_password_does_not_tell_an_imported_email_from_an_unknown_one(db: Db) {
    let app = TestApp::spawn(db).await;
    let floor = app.state.login_failure_floor();
    let dear = bcrypt::hash(PW, access_security::foreign::MAX_BCRYPT_COST).unwrap();
    let row = json!({"email": "dear@example.com", "external_id": "dear",
                     "access": "customer_center", "password_hash": dear});
    let (status, text) = post_lines(&app, ADMIN, format!("{row}\n")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(results(&text)[0]["status"], "imported", "{text}");

    // The fastest of three each: a busy machine only ever adds time.
    let mut fastest = Vec::new();
    for email in ["dear@example.com", "nobody@example.com"] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let sent = std::time::Instant::now();
            app.login(email, PW3).await.expect(401);
            times.push(sent.elapsed());
        }
        fastest.push(times.into_iter().min().unwrap());
    }
    let (imported, unknown) = (fastest[0], fastest[1]);
    assert!(
        imported >= floor && unknown >= floor,
        "a wrong password is answered no sooner than the floor ({floor:?}): imported {imported:?}, unknown {unknown:?}"
    );
    assert!(
        imported.saturating_sub(unknown) < std::time::Duration::from_millis(100),
        "a wrong password for an imported bcrypt-12 customer took {imported:?}, \
         for an unknown email {unknown:?} (floor {floor:?}): the timing tells them apart"
    );
    // Parallel wrong passwords for one email do not queue behind each
    // other at the hasher (which would push the dear hash's answers past
    // the floor): one is checked, the others are refused at once, alike
    // for both emails.
    for email in ["dear@example.com", "nobody@example.com"] {
        let answers = futures::future::join_all((0..3).map(|_| app.login(email, PW3))).await;
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [401, 429, 429], "{email}");
    }
    // The right password still logs in (and rehashes).
    app.session("dear@example.com", PW).await;
}

crate::on_both_stores!(
    import_over_http_then_log_in,
    a_wrong_password_does_not_tell_an_imported_email_from_an_unknown_one,
    ten_thousand_rows_are_answered_well_within_thirty_seconds
);
