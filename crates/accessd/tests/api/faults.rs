//! Faults with real processes: the database server stopped and restarted
//! under load, `accessd` killed with SIGKILL under load, two replicas on
//! one database under contended load. (SMTP down then back: smtp.rs,
//! `an_smtp_outage_means_retries_and_a_later_delivery`, on both stores.)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pgcluster::Cluster;
use crate::procs::{spawn_accessd, Accessd};

const SERVICE_KEY: &str = "faults-service-key-0123456789";
const AUDITOR_KEY: &str = "faults-auditor-key-0123456789";

fn keys() -> (&'static str, String) {
    (
        "ACCESS_API_KEYS",
        format!("crm:service:{SERVICE_KEY},audit:auditor:{AUDITOR_KEY}"),
    )
}

/// One answer seen by the load generator.
#[derive(Debug, Clone)]
struct Seen {
    /// When the request was sent, since the start of the load.
    at: Duration,
    took: Duration,
    /// 0: no HTTP answer (connection refused or reset, client timeout).
    status: u16,
    code: String,
    retry_after: bool,
    request_id: String,
    /// `register`, `read`, or the command's action.
    what: String,
    customer: Option<String>,
    email: Option<String>,
    /// The version a command's answer named.
    version: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn send(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
    started: Instant,
    what: &str,
) -> (Seen, Value) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let at = started.elapsed();
    let sent = Instant::now();
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(key)
        .header("x-request-id", &request_id);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let (status, code, retry_after, body) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (status, code, retry_after, body)
        }
        Err(_) => (0, String::new(), false, Value::Null),
    };
    (
        Seen {
            at,
            took: sent.elapsed(),
            status,
            code,
            retry_after,
            request_id,
            what: what.to_string(),
            customer: None,
            email: None,
            version: body["version"].as_u64(),
        },
        body,
    )
}

/// Load: `workers` tasks, each registering customers, granting access
/// with a setup link (a mail) and reading them back, until `stop`.
fn start_load(
    base: Arc<Mutex<String>>,
    workers: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    started: Instant,
    tag: &'static str,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (base, stop, seen) = (base.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if n > 0 && !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    n += 1;
                    let url = base.lock().unwrap().clone();
                    let email = format!("{tag}-{w}-{n}@example.com");
                    let (mut s, body) = send(
                        &client,
                        &url,
                        reqwest::Method::POST,
                        "/v1/customers",
                        SERVICE_KEY,
                        Some(json!({"email": email})),
                        started,
                        "register",
                    )
                    .await;
                    let id = body["customer_id"].as_str().map(str::to_string);
                    s.customer = id.clone();
                    s.email = Some(email.clone());
                    let ok = s.status == 201;
                    seen.lock().unwrap().push(s);
                    let Some(id) = id.filter(|_| ok) else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let (mut s, _) = send(
                        &client,
                        &url,
                        reqwest::Method::POST,
                        &format!("/v1/customers/{id}/grant-access"),
                        SERVICE_KEY,
                        Some(json!({"send_notification": true})),
                        started,
                        "grant-access",
                    )
                    .await;
                    s.customer = Some(id.clone());
                    s.email = Some(email);
                    seen.lock().unwrap().push(s);
                    let (mut s, _) = send(
                        &client,
                        &url,
                        reqwest::Method::GET,
                        &format!("/v1/customers/{id}"),
                        SERVICE_KEY,
                        None,
                        started,
                        "read",
                    )
                    .await;
                    s.customer = Some(id);
                    seen.lock().unwrap().push(s);
                }
            })
        })
        .collect()
}

/// Events of a customer: (event type, request id) in order.
async fn events_of(base: &str, id: &str) -> Vec<(String, String, u64)> {
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let response = client
            .get(format!("{base}/v1/customers/{id}/events"))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            // Never stored (a registration lost in an asynchronous failover).
            return Vec::new();
        }
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            return body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["event_type"].as_str().unwrap_or_default().to_string(),
                        e["metadata"]["request_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        e["sequence"].as_u64().unwrap_or_default(),
                    )
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("events of {id} unreadable");
}

/// Every acknowledged command has its events exactly once, and versions
/// are gapless. Returns (acknowledged, lost, duplicated, unacknowledged
/// but stored).
async fn check_commands(base: &str, seen: &[Seen]) -> (usize, usize, usize, usize, usize) {
    let mut by_customer: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.what != "read") {
        if let Some(id) = &s.customer {
            by_customer.entry(id.clone()).or_default().push(s);
        }
    }
    let (mut acknowledged, mut lost, mut duplicated, mut in_doubt_stored, mut in_doubt) =
        (0, 0, 0, 0, 0);
    for (id, commands) in &by_customer {
        let events = events_of(base, id).await;
        for (i, (_, _, sequence)) in events.iter().enumerate() {
            assert_eq!(
                *sequence,
                i as u64 + 1,
                "versions of {id} have a gap: {events:?}"
            );
        }
        for command in commands {
            let mine: Vec<_> = events
                .iter()
                .filter(|e| e.1 == command.request_id)
                .collect();
            let mut types: Vec<&String> = mine.iter().map(|e| &e.0).collect();
            let all = types.len();
            types.sort();
            types.dedup();
            if (200..300).contains(&command.status) {
                acknowledged += 1;
                // A change to the address the customer already has is
                // answered 200 with no events (the contract): its answer
                // names an existing version caused by another request.
                let no_change = command.what == "change-email"
                    && command.version.is_some_and(|v| {
                        events.iter().any(|e| e.2 == v && e.1 != command.request_id)
                    });
                if mine.is_empty() && !no_change {
                    lost += 1;
                }
                if types.len() != all {
                    duplicated += 1;
                }
            } else {
                in_doubt += 1;
                if !mine.is_empty() {
                    in_doubt_stored += 1;
                }
            }
        }
    }
    (acknowledged, lost, duplicated, in_doubt, in_doubt_stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_under_load_answers_503_then_recovers() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut accessd = spawn_accessd(
        dir.path(),
        "outage",
        &[
            ("ACCESS_DATABASE_URL", cluster.url()),
            keys(),
            (
                "ACCESS_MAIL",
                format!("file:{}", dir.path().join("mail").display()),
            ),
            ("ACCESS_REQUEST_TIMEOUT_SECS", "10".into()),
            ("ACCESS_READ_WAIT_MS", "1000".into()),
            ("ACCESS_LOG", "warn".into()),
        ],
    )
    .await;
    let base = Arc::new(Mutex::new(accessd.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let load = start_load(
        base,
        6,
        stop.clone(),
        seen.clone(),
        started,
        "outage",
        Duration::ZERO,
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_at = started.elapsed();
    let cluster = Arc::new(cluster);
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.stop_server())
            .await
            .unwrap();
    }
    // /readyz says so while the database is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = reqwest::get(format!("{}/readyz", accessd.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readyz during the outage");
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.start_server())
            .await
            .unwrap();
    }
    let up_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();

    // Never a 500, never no answer, never longer than the request timeout;
    // every failure is 503 `unavailable` with Retry-After.
    let mut problems = Vec::new();
    for s in &seen {
        let fine = (200..300).contains(&s.status)
            || (s.status == 503 && s.code == "unavailable" && s.retry_after);
        if !fine {
            problems.push(format!("{s:?}"));
        }
        if s.took > Duration::from_secs(11) {
            problems.push(format!("took {:?}: {s:?}", s.took));
        }
    }
    let unavailable = seen.iter().filter(|s| s.status == 503).count();
    let during = seen
        .iter()
        .filter(|s| s.at > down_at && s.at < up_at && s.status == 503)
        .count();
    // Recovery: the first success sent after the restart, and nothing but
    // successes from a second after it.
    let recovered = seen
        .iter()
        .filter(|s| s.at >= up_at && (200..300).contains(&s.status))
        .map(|s| s.at)
        .min()
        .expect("no success after the database came back");
    let late_failures = seen
        .iter()
        .filter(|s| s.at > recovered + Duration::from_secs(1) && !(200..300).contains(&s.status))
        .count();
    let (acknowledged, lost, duplicated, in_doubt, in_doubt_stored) =
        check_commands(&accessd.base, &seen).await;
    println!(
        "database restart under load: {} requests, {} commands acknowledged, lost {lost}, duplicated {duplicated}; \
         {unavailable} answered 503 (with Retry-After), {} other failures; outage {:.1}s; \
         recovered {:.2}s after the database was back; {in_doubt} commands not acknowledged ({in_doubt_stored} of them stored); \
         slowest request {:.2}s",
        seen.len(),
        acknowledged,
        problems.len(),
        (up_at - down_at).as_secs_f64(),
        (recovered - up_at).as_secs_f64(),
        seen.iter().map(|s| s.took).max().unwrap_or_default().as_secs_f64(),
    );
    assert!(
        problems.is_empty(),
        "{} bad answers:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(during > 0, "no 503 while the database was down");
    assert!(
        recovered - up_at < Duration::from_secs(5),
        "recovered only {:?} after the database was back",
        recovered - up_at
    );
    assert_eq!(late_failures, 0, "failures after recovery");
    assert_eq!((lost, duplicated), (0, 0));
    assert!(acknowledged > 20, "too little load: {acknowledged}");
    assert!(accessd.terminate().success());
}

fn mail_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Setup-link mails per recipient.
fn setup_mails_by_recipient(dir: &std::path::Path) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for raw in mail_files(dir) {
        if access_mail::extract_token(&raw, "/setup-password").is_none() {
            continue;
        }
        if let Some(to) = access_mail::parse_eml(&raw).header("To") {
            let to = to
                .trim_matches(|c| c == '<' || c == '>' || c == ' ')
                .to_lowercase();
            *by.entry(to).or_insert(0) += 1;
        }
    }
    by
}

/// After the load: the projections and the audit trail include every
/// event (version of the read model == events; one audit row per event),
/// and every acknowledged grant's setup mail arrives. Returns (mails
/// expected, lost, sent more than once).
async fn check_catch_up(
    base: &str,
    seen: &[Seen],
    mail_dir: &std::path::Path,
) -> (usize, usize, usize) {
    let client = reqwest::Client::new();
    let customers: std::collections::BTreeSet<&String> = seen
        .iter()
        .filter(|s| s.what == "register" && (200..300).contains(&s.status))
        .filter_map(|s| s.customer.as_ref())
        .collect();
    for id in &customers {
        let events = events_of(base, id).await;
        let view: Value = client
            .get(format!("{base}/v1/customers/{id}"))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            view["version"].as_u64(),
            Some(events.len() as u64),
            "projection of {id}: {view}"
        );
        let audit: Value = client
            .get(format!("{base}/v1/customers/{id}/audit?limit=1000"))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            audit["items"].as_array().map(Vec::len),
            Some(events.len()),
            "audit rows of {id}: {audit}"
        );
    }
    let expected: Vec<String> = seen
        .iter()
        .filter(|s| s.what == "grant-access" && s.status == 200)
        .filter_map(|s| s.email.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mails = setup_mails_by_recipient(mail_dir);
        let lost = expected.iter().filter(|e| !mails.contains_key(*e)).count();
        if lost == 0 || Instant::now() > deadline {
            let twice = mails.values().filter(|n| **n > 1).count();
            return (expected.len(), lost, twice);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_duplicates_nothing() {
    let database = access_store::testing::TestDatabase::postgres()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let env = vec![
        ("ACCESS_DATABASE_URL", database.url().to_string()),
        keys(),
        ("ACCESS_MAIL", format!("file:{}", mail_dir.display())),
        ("ACCESS_MAIL_LEASE_SECS", "2".into()),
        ("ACCESS_MAIL_RETRY_MS", "200".into()),
        ("ACCESS_LOG", "warn".into()),
    ];
    let mut first = spawn_accessd(dir.path(), "crash-1", &env).await;
    let base = Arc::new(Mutex::new(first.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let load = start_load(
        base.clone(),
        6,
        stop.clone(),
        seen.clone(),
        started,
        "crash",
        Duration::ZERO,
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.kill();
    let killed_at = started.elapsed();
    let second: Accessd = spawn_accessd(dir.path(), "crash-2", &env).await;
    *base.lock().unwrap() = second.base.clone();
    let restarted_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let (acknowledged, lost, duplicated, in_doubt, in_doubt_stored) =
        check_commands(&second.base, &seen).await;
    let (mails, mails_lost, mails_twice) = check_catch_up(&second.base, &seen, &mail_dir).await;
    let before = seen
        .iter()
        .filter(|s| s.at < killed_at && (200..300).contains(&s.status))
        .count();
    // Requests the kill cut off (no answer): registrations looked up by
    // their email, to report how many were stored anyway.
    let unanswered: Vec<&Seen> = seen.iter().filter(|s| s.status == 0).collect();
    let mut unanswered_stored = 0;
    for s in unanswered.iter().filter(|s| s.what == "register") {
        let email = s.email.clone().unwrap_or_default();
        let found: Value = reqwest::Client::new()
            .get(format!("{}/v1/customers?email={email}", second.base))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if found["customers"].as_array().is_some_and(|c| !c.is_empty()) {
            unanswered_stored += 1;
        }
    }
    println!(
        "SIGKILL under load: {} requests ({before} answered 2xx before the kill at {:.1}s, restart took {:.2}s); \
         commands acknowledged {acknowledged}, lost {lost}, duplicated {duplicated}; \
         {} requests without an answer ({} registrations, {unanswered_stored} of them stored; \
         {in_doubt} commands on known customers, {in_doubt_stored} of them stored); \
         setup mails for acknowledged grants {mails}, lost {mails_lost}, sent twice {mails_twice}",
        seen.len(),
        killed_at.as_secs_f64(),
        (restarted_at - killed_at).as_secs_f64(),
        unanswered.len(),
        unanswered.iter().filter(|s| s.what == "register").count(),
    );
    assert!(before > 10, "the kill came before any load");
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(mails_lost, 0, "setup mails of acknowledged commands lost");
    assert!(acknowledged > 20);
    let mut second = second;
    assert!(second.terminate().success());
    assert!(!first.logs().contains("panicked"), "{}", first.logs());
}

/// Two replicas on one database, the same customers changed through both
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_under_contended_load() {
    let database = access_store::testing::TestDatabase::postgres()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let env = vec![
        ("ACCESS_DATABASE_URL", database.url().to_string()),
        keys(),
        ("ACCESS_MAIL", format!("file:{}", mail_dir.display())),
        ("ACCESS_MAIL_RETRY_MS", "200".into()),
        ("ACCESS_LOG", "warn".into()),
    ];
    let mut a = spawn_accessd(dir.path(), "replica-a", &env).await;
    let mut b = spawn_accessd(dir.path(), "replica-b", &env).await;
    let bases = [a.base.clone(), b.base.clone()];
    let client = reqwest::Client::new();
    let started = Instant::now();
    // 6 customers; 8 workers per replica send commands to all of them.
    let mut customers = Vec::new();
    for i in 0..6 {
        let (s, body) = send(
            &client,
            &bases[i % 2],
            reqwest::Method::POST,
            "/v1/customers",
            SERVICE_KEY,
            Some(json!({"email": format!("shared{i}@example.com")})),
            started,
            "register",
        )
        .await;
        assert_eq!(s.status, 201);
        let mut s = s;
        s.customer = body["customer_id"].as_str().map(str::to_string);
        customers.push(s);
    }
    let ids: Vec<String> = customers
        .iter()
        .filter_map(|s| s.customer.clone())
        .collect();
    let seen = Arc::new(Mutex::new(customers.clone()));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (base, ids, seen) = (bases[w % 2].clone(), ids.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..12 {
                let id = &ids[(w + n) % ids.len()];
                // Contended email changes among a small set of addresses:
                // the unique-login rule decides who gets which.
                let (action, body) = match n % 4 {
                    0 => ("grant-access", json!({"send_notification": true})),
                    // With a temporary password, so customers with access
                    // take the address as their login (or meet 409
                    // `email_in_use`).
                    1 => (
                        "change-email",
                        json!({
                            "email": format!("pool{}@example.com", (w * n) % 5),
                            "password": "Temporary-Quokka-Harbor-51",
                            "password_confirm": "Temporary-Quokka-Harbor-51",
                        }),
                    ),
                    2 => ("send-access-notification", json!({})),
                    _ => ("revoke-access", json!({})),
                };
                let (mut s, _) = send(
                    &client,
                    &base,
                    reqwest::Method::POST,
                    &format!("/v1/customers/{id}/{action}"),
                    SERVICE_KEY,
                    Some(body),
                    started,
                    action,
                )
                .await;
                s.customer = Some(id.clone());
                seen.lock().unwrap().push(s);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let statuses: BTreeMap<String, usize> = seen.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(format!("{} {}", s.status, s.code)).or_insert(0) += 1;
        m
    });
    let errors_logged = || {
        ["replica-a", "replica-b"]
            .iter()
            .map(|r| std::fs::read_to_string(dir.path().join(format!("{r}.stderr"))))
            .filter_map(Result::ok)
            .flat_map(|log| {
                log.lines()
                    .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert!(
        seen.iter().all(|s| s.status != 0 && s.status < 500),
        "server errors: {statuses:?}; logged: {:#?}",
        errors_logged()
    );
    let (acknowledged, lost, duplicated, _, _) = check_commands(&bases[0], &seen).await;
    // Unique login emails: no two customers with access share a login.
    let mut logins: HashMap<String, String> = HashMap::new();
    for id in &ids {
        let view: Value = client
            .get(format!("{}/v1/customers/{id}", bases[1]))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Both replicas' read models agree (each event projected once).
        let other: Value = client
            .get(format!("{}/v1/customers/{id}", bases[0]))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view, other);
        let events = events_of(&bases[0], id).await;
        assert_eq!(view["version"].as_u64(), Some(events.len() as u64));
        if view["access"]["granted"] == true {
            let email = view["email"].as_str().unwrap().to_lowercase();
            if let Some(holder) = logins.insert(email.clone(), id.clone()) {
                panic!("{email} is the login of {holder} and {id}");
            }
        }
    }
    // One audit row per event in all (each event projected once, though two
    // projectors ran).
    let mut total_events = 0;
    let mut total_audit = 0;
    for id in &ids {
        total_events += events_of(&bases[0], id).await.len();
        let audit: Value = client
            .get(format!("{}/v1/customers/{id}/audit?limit=1000", bases[1]))
            .bearer_auth(AUDITOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        total_audit += audit["items"].as_array().map(Vec::len).unwrap_or_default();
    }
    assert_eq!(total_events, total_audit, "audit rows vs events");
    // Each setup mail sent once: the events say how many links were issued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut issued = 0;
    for id in &ids {
        issued += events_of(&bases[0], id)
            .await
            .iter()
            .filter(|e| e.0 == "AccessNotificationSent")
            .count();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent;
    loop {
        sent = mail_files(&mail_dir)
            .iter()
            .filter(|raw| access_mail::extract_token(raw, "/setup-password").is_some())
            .count();
        if sent >= issued || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "two replicas: {} commands ({statuses:?}); acknowledged {acknowledged}, lost {lost}, duplicated {duplicated}; \
         {total_events} events, {total_audit} audit rows; setup links issued {issued}, setup mails sent {sent}",
        seen.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(sent, issued, "setup mails sent vs links issued");
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// Runs one statement on the server at `url` (a single host).
async fn on_server(url: &str, sql: &str) -> Vec<String> {
    let store = access_store::Store::connect(url, access_store::StoreOptions::default())
        .await
        .unwrap();
    access_store::testing::query_texts(&store, sql).await
}

/// Makes `primary` wait for `standby1` at every commit (synchronous
/// replication), and waits until that standby streams synchronously.
async fn make_synchronous(primary: &Cluster) {
    on_server(
        &primary.url(),
        "ALTER SYSTEM SET synchronous_standby_names = 'standby1'",
    )
    .await;
    on_server(&primary.url(), "SELECT pg_reload_conf()::text").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = on_server(
            &primary.url(),
            "SELECT sync_state::text FROM pg_stat_replication WHERE application_name = 'standby1'",
        )
        .await;
        if states.iter().any(|s| s == "sync") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "standby1 never became synchronous: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Promotes `standby` after its primary crashed; until a new standby
/// attaches it commits alone (else every commit would wait forever for a
/// synchronous standby that is gone).
async fn promote_alone(standby: &Arc<Cluster>) {
    let promoted = standby.clone();
    tokio::task::spawn_blocking(move || promoted.promote())
        .await
        .unwrap();
    on_server(
        &standby.url(),
        "ALTER SYSTEM SET synchronous_standby_names = ''",
    )
    .await;
    on_server(&standby.url(), "SELECT pg_reload_conf()::text").await;
}

/// The first acknowledged command sent after `at`.
fn first_success_after(seen: &Arc<Mutex<Vec<Seen>>>, at: Duration) -> Option<Duration> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.at >= at && (200..300).contains(&s.status) && s.what != "read")
        .map(|s| s.at + s.took)
        .min()
}

async fn wait_for_success_after(seen: &Arc<Mutex<Vec<Seen>>>, at: Duration) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(first) = first_success_after(seen, at) {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "no command acknowledged after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 20: a primary with a synchronous standby, accessd given both hosts
/// in libpq's syntax. Under load the primary crashes and the standby is
/// promoted; later the old primary comes back as a standby (on its old
/// port) and the service fails over again, back the other way. Every
/// acknowledged command is stored once, the projections, the audit trail
/// and the hash chain are complete, and the time from each crash to the
/// first acknowledged command on the new primary is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_synchronous_standby_loses_no_acknowledged_command() {
    let first = Arc::new(
        tokio::task::spawn_blocking(Cluster::start_primary)
            .await
            .unwrap(),
    );
    let second = {
        let primary = first.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Cluster::standby_of(&primary))
                .await
                .unwrap(),
        )
    };
    make_synchronous(&first).await;
    let (port_a, port_b) = (first.port, second.port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{port_a},127.0.0.1:{port_b}/postgres?target_session_attrs=read-write"
    );

    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let mut accessd = spawn_accessd(
        dir.path(),
        "failover",
        &[
            ("ACCESS_DATABASE_URL", url.clone()),
            keys(),
            ("ACCESS_MAIL", format!("file:{}", mail_dir.display())),
            ("ACCESS_REQUEST_TIMEOUT_SECS", "10".into()),
            ("ACCESS_READ_WAIT_MS", "1000".into()),
            ("ACCESS_LOG", "warn".into()),
        ],
    )
    .await;
    let base = Arc::new(Mutex::new(accessd.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    // Paced (a pause between a worker's rounds), so that checking every
    // command afterwards stays short.
    let load = start_load(
        base,
        4,
        stop.clone(),
        seen.clone(),
        started,
        "failover",
        Duration::from_millis(250),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Round 1: the first primary crashes, the standby takes over.
    let crash_1 = started.elapsed();
    {
        let primary = first.clone();
        tokio::task::spawn_blocking(move || primary.crash())
            .await
            .unwrap();
    }
    promote_alone(&second).await;
    let back_1 = wait_for_success_after(&seen, crash_1).await;

    // A replica started now, with the first host of its list down, starts
    // on the new primary and takes commands.
    let mut late = spawn_accessd(
        dir.path(),
        "failover-late",
        &[
            ("ACCESS_DATABASE_URL", url.clone()),
            keys(),
            ("ACCESS_MAIL", format!("file:{}", mail_dir.display())),
            ("ACCESS_LOG", "warn".into()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{}/v1/customers", late.base))
        .bearer_auth(SERVICE_KEY)
        .json(&json!({"email": "late-replica@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201, "{}", late.logs());
    assert!(late.terminate().success());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The old primary comes back as a standby of the new one, on its old
    // port (the service's host list does not change).
    drop(first);
    let third = {
        let primary = second.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Cluster::standby_on(&primary, port_a))
                .await
                .unwrap(),
        )
    };
    make_synchronous(&second).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Round 2: back the other way.
    let crash_2 = started.elapsed();
    {
        let primary = second.clone();
        tokio::task::spawn_blocking(move || primary.crash())
            .await
            .unwrap();
    }
    promote_alone(&third).await;
    let back_2 = wait_for_success_after(&seen, crash_2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();

    let mut problems = Vec::new();
    for s in &seen {
        let fine = (200..300).contains(&s.status)
            || (s.status == 503 && s.code == "unavailable" && s.retry_after);
        if !fine {
            problems.push(format!("{s:?}"));
        }
    }
    let (acknowledged, lost, duplicated, in_doubt, in_doubt_stored) =
        check_commands(&accessd.base, &seen).await;
    let (mails, mails_lost, mails_twice) = check_catch_up(&accessd.base, &seen, &mail_dir).await;

    // The hash chain over the history on the last primary is intact.
    let store = access_store::Store::connect(&third.url(), access_store::StoreOptions::default())
        .await
        .unwrap()
        .unlock(access_store::testing::test_master_key())
        .await
        .unwrap();
    let chain = access_projections::chain::verify(&store, None)
        .await
        .unwrap();
    println!(
        "failover under load: {} requests, {acknowledged} commands acknowledged, lost {lost}, duplicated {duplicated}; \
         {} answered 503 (with Retry-After), {} other failures; first acknowledged command {:.2}s after the first \
         crash and {:.2}s after the second; {in_doubt} commands not acknowledged ({in_doubt_stored} of them stored); \
         {mails} setup mails expected, {mails_lost} lost, {mails_twice} sent twice; chain: {} events, intact {}",
        seen.len(),
        seen.iter().filter(|s| s.status == 503).count(),
        problems.len(),
        (back_1 - crash_1).as_secs_f64(),
        (back_2 - crash_2).as_secs_f64(),
        chain.events,
        chain.is_intact(),
    );
    assert!(
        problems.is_empty(),
        "{} bad answers:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "acknowledged commands lost or doubled"
    );
    assert_eq!(mails_lost, 0, "setup mails of acknowledged grants lost");
    assert!(chain.is_intact(), "hash chain: {chain:?}");
    assert!(acknowledged > 20, "too little load: {acknowledged}");
    assert!(accessd.terminate().success());
}

/// Issue 20, the counter-example that shows why the standby must be
/// synchronous: with asynchronous replication a commit is acknowledged
/// before the standby has it, so what the standby had not received when the
/// primary died is gone after the failover although the service said 201.
/// The standby is made to fall behind on purpose (its WAL receiver is cut
/// for two seconds, as behind a congested link); commands acknowledged
/// before the cut and after the promotion are all kept, those acknowledged
/// in between are lost, and the test prints how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_an_asynchronous_standby_loses_what_it_had_not_received() {
    let first = Arc::new(
        tokio::task::spawn_blocking(Cluster::start_primary)
            .await
            .unwrap(),
    );
    let second = {
        let primary = first.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || Cluster::standby_of(&primary))
                .await
                .unwrap(),
        )
    };
    // No synchronous_standby_names: the primary commits alone.
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        first.port, second.port
    );
    let dir = tempfile::tempdir().unwrap();
    let mut accessd = spawn_accessd(
        dir.path(),
        "async-failover",
        &[
            ("ACCESS_DATABASE_URL", url),
            keys(),
            (
                "ACCESS_MAIL",
                format!("file:{}", dir.path().join("mail").display()),
            ),
            ("ACCESS_REQUEST_TIMEOUT_SECS", "10".into()),
            ("ACCESS_READ_WAIT_MS", "1000".into()),
            ("ACCESS_LOG", "warn".into()),
        ],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let load = start_load(
        Arc::new(Mutex::new(accessd.base.clone())),
        4,
        stop.clone(),
        seen.clone(),
        started,
        "async",
        Duration::from_millis(250),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Everything committed up to `received` has reached the standby; then
    // its WAL receiver is cut (an empty primary_conninfo, reloaded).
    let received = started.elapsed();
    let lsn = first.psql("SELECT pg_current_wal_lsn()");
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.psql(&format!("SELECT pg_last_wal_receive_lsn() >= '{lsn}'")) != "t" {
        assert!(Instant::now() < deadline, "the standby never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.psql("ALTER SYSTEM SET primary_conninfo = ''");
    second.psql("SELECT pg_reload_conf()");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lag_bytes = first.psql(&format!("SELECT pg_current_wal_lsn() - '{lsn}'"));

    let crash = started.elapsed();
    {
        let primary = first.clone();
        tokio::task::spawn_blocking(move || primary.crash())
            .await
            .unwrap();
    }
    promote_alone(&second).await;
    let back = wait_for_success_after(&seen, crash).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let acknowledged_before = |s: &&Seen| s.at + s.took < received;
    let before: Vec<Seen> = seen.iter().filter(acknowledged_before).cloned().collect();
    let after: Vec<Seen> = seen.iter().filter(|s| s.at >= back).cloned().collect();
    let (ack_before, lost_before, dup_before, _, _) = check_commands(&accessd.base, &before).await;
    let (ack_after, lost_after, dup_after, _, _) = check_commands(&accessd.base, &after).await;
    // The rest: acknowledged after the standby's last known position and
    // sent before the promotion was followed.
    let window: Vec<Seen> = seen
        .iter()
        .filter(|s| s.at + s.took >= received && s.at < back)
        .cloned()
        .collect();
    let (ack_window, lost_window, _, _, _) = check_commands(&accessd.base, &window).await;
    let (acknowledged, lost, duplicated, _, _) = check_commands(&accessd.base, &seen).await;
    println!(
        "asynchronous standby cut off for 2 s ({lag_bytes} bytes of WAL behind) when the primary crashed: \
         {acknowledged} commands acknowledged, {lost} of them lost after the failover, {duplicated} doubled; \
         before the cut {ack_before} acknowledged, {lost_before} lost; while the standby was cut off \
         {ack_window} acknowledged, {lost_window} lost; after the promotion {ack_after} acknowledged, \
         {lost_after} lost; first acknowledged command {:.2}s after the crash",
        (back - crash).as_secs_f64()
    );
    assert_eq!(
        lost_window, lost,
        "every lost command was acknowledged while the standby was cut off"
    );
    assert_eq!((lost_before, dup_before), (0, 0), "before the cut");
    assert_eq!((lost_after, dup_after), (0, 0), "after the promotion");
    assert_eq!(duplicated, 0);
    assert!(ack_before > 0 && ack_after > 0, "too little load");
    assert!(
        lost > 0,
        "commands acknowledged while the asynchronous standby was cut off survived the failover: \
         the counter-example does not show what it should"
    );
    assert!(accessd.terminate().success());
}

/// Found with pg_auto_failover: while it promotes a standby it fences it
/// with `default_transaction_read_only = on` until the old primary is known
/// to be down (about 30 s after a machine is lost), so that libpq's
/// `target_session_attrs=read-write` does not pick it. The service must
/// apply the same test as libpq: a host that is out of recovery but
/// read-only is not the primary, and a fenced host is not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_host_is_not_taken_for_the_primary() {
    let fenced = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let writable = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    fenced.psql("ALTER SYSTEM SET default_transaction_read_only = on");
    fenced.psql("SELECT pg_reload_conf()");
    let dir = tempfile::tempdir().unwrap();
    let mut accessd = spawn_accessd(
        dir.path(),
        "fenced",
        &[
            (
                "ACCESS_DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
                    fenced.port, writable.port
                ),
            ),
            keys(),
            (
                "ACCESS_MAIL",
                format!("file:{}", dir.path().join("mail").display()),
            ),
            ("ACCESS_LOG", "warn".into()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{}/v1/customers", accessd.base))
        .bearer_auth(SERVICE_KEY)
        .json(&json!({"email": "fenced@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201, "{}", accessd.logs());
    let stored = writable.psql("SELECT count(*) FROM events");
    assert_eq!(stored, "1", "the event is on the writable host");
    assert!(accessd.terminate().success());
}
