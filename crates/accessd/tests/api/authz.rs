//! The authorization matrix: every endpoint (API and pages) called as
//! anonymous, as each API-key role, as a session of the customer in the
//! path and as a session of another customer, checked against the table
//! in docs/security.md (read from the file, so the two cannot drift).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const CALLERS: [&str; 7] = [
    "anonymous",
    "service",
    "auditor",
    "admin",
    "own session",
    "other session",
    "subscriber",
];

/// The table of docs/security.md: endpoint → expected cell per caller.
fn documented_table() -> BTreeMap<String, Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc.find("<!-- authorization-table:start -->").unwrap();
    let end = doc.find("<!-- authorization-table:end -->").unwrap();
    let mut lines = doc[start..end].lines().skip(1);
    let header: Vec<String> = cells(lines.next().unwrap());
    assert_eq!(header[0], "endpoint");
    assert_eq!(&header[1..], CALLERS, "columns of the table");
    let mut table = BTreeMap::new();
    for line in lines.filter(|l| l.starts_with('|') && !l.starts_with("|---")) {
        let row = cells(line);
        let endpoint = row[0].trim_matches('`').to_string();
        for cell in &row[1..] {
            assert!(
                matches!(cell.as_str(), "yes" | "no" | "self"),
                "{endpoint}: cell `{cell}`"
            );
        }
        assert_eq!(row.len(), 8, "{endpoint}");
        assert!(
            table.insert(endpoint.clone(), row[1..].to_vec()).is_none(),
            "{endpoint} twice"
        );
    }
    table
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// The API's operations, from the committed OpenAPI document.
fn api_operations() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

/// The pages (not in the OpenAPI document; listed in src/pages/mod.rs).
const PAGES: [&str; 33] = [
    "GET /audit",
    "GET /audit/login",
    "POST /audit/login",
    "POST /audit/logout",
    "GET /audit/customers/{id}",
    "GET /audit/export",
    "GET /audit/report",
    "GET /audit/report.csv",
    "GET /audit/report.jsonl",
    "GET /audit/integrity",
    "POST /audit/integrity/verify",
    "GET /login",
    "POST /login",
    "GET /login/second-factor",
    "POST /login/second-factor",
    "POST /logout",
    "GET /account",
    "GET /account/change-email",
    "POST /account/change-email",
    "GET /account/change-password",
    "POST /account/change-password",
    "GET /account/second-factor",
    "POST /account/second-factor/begin",
    "POST /account/second-factor/confirm",
    "GET /account/second-factor/recovery-codes",
    "POST /account/second-factor/recovery-codes",
    "GET /account/second-factor/remove",
    "POST /account/second-factor/remove",
    "GET /setup-password",
    "POST /setup-password",
    "GET /confirm-email",
    "POST /confirm-email",
    "GET /assets/site.css",
];

/// Two customers with access and a permanent password, each with an API
/// session and a page session.
struct Pair {
    a: String,
    a_email: String,
    b: String,
    a_session: String,
    b_session: String,
}

async fn pair(app: &TestApp, n: usize) -> Pair {
    let a_email = format!("a{n}@example.com");
    let b_email = format!("b{n}@example.com");
    let a = app.customer_with_password(&a_email).await;
    let b = app.customer_with_password(&b_email).await;
    Pair {
        a_session: app.session(&a_email, PW).await,
        b_session: app.session(&b_email, PW).await,
        a,
        a_email,
        b,
    }
}

const CSRF: &str = "0123456789abcdef0123456789abcdef";

/// Calls `endpoint` as `caller`; returns the status and the Location.
async fn call(
    app: &TestApp,
    client: &reqwest::Client,
    endpoint: &str,
    caller: &str,
    fixture: &Pair,
    n: usize,
) -> (StatusCode, String, String) {
    let (method, template) = endpoint.split_once(' ').unwrap();
    let method: Method = method.parse().unwrap();
    let path = template.replace("{id}", &fixture.a).replace(
        "/v1/mail/{id}",
        &format!("/v1/mail/{}", uuid::Uuid::new_v4()),
    );
    let path = match path.as_str() {
        "/v1/customers" if method == Method::GET => {
            format!("/v1/customers?email={}", fixture.a_email)
        }
        "/setup-password" | "/confirm-email" if method == Method::GET => {
            format!("{path}?token={}", "ab".repeat(32))
        }
        _ => path,
    };
    let tag = caller.replace(' ', "-");
    let unique = format!("{n}-{tag}");
    let json_body: Option<Value> = match (method.as_str(), template) {
        ("POST", "/v1/customers") => Some(json!({"email": format!("new{unique}@example.com")})),
        ("POST", "/v1/customers/{id}/change-email") => {
            Some(json!({"email": format!("moved{unique}@example.com")}))
        }
        ("POST", "/v1/customers/{id}/set-password") => {
            Some(json!({"password": PW2, "password_confirm": PW2}))
        }
        ("POST", "/v1/self/sessions") => Some(json!({"email": fixture.a_email, "password": PW})),
        ("POST", "/v1/self/change-email") => Some(json!({
            "current_password": PW,
            "new_email": format!("self{unique}@example.com"),
            "new_email_confirm": format!("self{unique}@example.com"),
        })),
        ("POST", "/v1/self/change-password") => Some(json!({
            "current_password": PW, "new_password": PW2, "new_password_confirm": PW2,
        })),
        ("POST", "/v1/self/confirm-email") => Some(json!({"token": "ab".repeat(32)})),
        ("POST", "/v1/self/setup-password") => Some(json!({
            "token": "ab".repeat(32), "password": PW3, "password_confirm": PW3,
        })),
        ("POST", p) if p.starts_with("/v1/") => Some(json!({})),
        _ => None,
    };
    let form_body: Option<Vec<(&str, String)>> = match (method.as_str(), template) {
        ("POST", "/login") => Some(vec![
            ("email", fixture.a_email.clone()),
            ("password", PW.to_string()),
        ]),
        ("POST", "/logout") => Some(vec![]),
        ("POST", "/login/second-factor") => Some(vec![("code", "000000".to_string())]),
        ("POST", "/account/second-factor/begin") => Some(vec![]),
        // An empty code: 422 for a session that may, the sign-in for others.
        ("POST", "/account/second-factor/confirm" | "/account/second-factor/recovery-codes") => {
            Some(vec![("code", String::new())])
        }
        ("POST", "/account/second-factor/remove") => Some(vec![
            ("current_password", String::new()),
            ("code", String::new()),
        ]),
        ("POST", "/account/change-email") => Some(vec![
            ("current_password", PW.to_string()),
            ("new_email", format!("page{unique}@example.com")),
            ("new_email_confirm", format!("page{unique}@example.com")),
        ]),
        ("POST", "/account/change-password") => Some(vec![
            ("current_password", PW.to_string()),
            ("new_password", PW2.to_string()),
            ("new_password_confirm", PW2.to_string()),
        ]),
        ("POST", "/setup-password") => Some(vec![
            ("token", "ab".repeat(32)),
            ("password", PW3.to_string()),
            ("password_confirm", PW3.to_string()),
        ]),
        ("POST", "/confirm-email") => Some(vec![("token", "ab".repeat(32))]),
        ("POST", "/audit/login") => Some(vec![("api_key", AUDITOR.to_string())]),
        ("POST", "/audit/logout" | "/audit/integrity/verify") => Some(vec![]),
        _ => None,
    };
    let page = !template.starts_with("/v1/");
    let mut request = client.request(method, format!("{}{path}", app.base));
    let session = match caller {
        "own session" => Some(fixture.a_session.as_str()),
        "other session" => Some(fixture.b_session.as_str()),
        _ => None,
    };
    let key = match caller {
        "service" => Some(SERVICE),
        "auditor" => Some(AUDITOR),
        "admin" => Some(ADMIN),
        "subscriber" => Some(SUBSCRIBER),
        _ => None,
    };
    let mut cookies = vec![format!("access_csrf={CSRF}")];
    if let Some(token) = key {
        request = request.bearer_auth(token);
        // The console takes no Bearer key: a key that may sign in comes
        // with its console session.
        if template.starts_with("/audit") && ["auditor", "admin"].contains(&caller) {
            cookies.push(console_session(app, client, token).await);
        }
    }
    if let Some(token) = session {
        if page {
            cookies.push(format!("access_session={token}"));
        } else {
            request = request.bearer_auth(token);
        }
    }
    request = request.header("cookie", cookies.join("; "));
    if let Some(body) = json_body {
        request = request.json(&body);
    }
    if let Some(mut fields) = form_body {
        fields.push(("csrf_token", CSRF.to_string()));
        request = request.form(&fields);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.text().await.unwrap_or_default();
    (status, location, body)
}

/// `access_console=<token>`: a console session opened with `key`.
async fn console_session(app: &TestApp, client: &reqwest::Client, key: &str) -> String {
    let answer = client
        .post(format!("{}/audit/login", app.base))
        .header("cookie", format!("access_csrf={CSRF}"))
        .form(&[("api_key", key), ("csrf_token", CSRF)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "console sign-in");
    let set = answer.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn authorization_matrix(db: Db) {
    let table = documented_table();
    // Every endpoint is in the table, and the table names no other.
    let mut known = api_operations();
    known.extend(PAGES.iter().map(|p| p.to_string()));
    let documented: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        documented, known,
        "docs/security.md's table and the service's endpoints differ"
    );

    let app = TestApp::spawn_with(db, |c| {
        c.login_attempts_per_address = 100_000;
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut calls = 0;
    let mut fixture = pair(&app, 0).await;
    let mut disturbed = false;
    for (n, (endpoint, expected)) in table.iter().enumerate() {
        // Fresh customers after a row that changes them (revoke, password
        // or email change, logout): it must not disturb the next row.
        // Sessions go first, keys after, so a wrongly allowed session call
        // is seen before a key's command could end the session.
        if disturbed {
            fixture = pair(&app, n + 1).await;
        }
        disturbed = !endpoint.starts_with("GET ") && endpoint != "POST /v1/customers";
        let order = [0usize, 4, 5, 2, 6, 1, 3];
        for i in order {
            let caller = CALLERS[i];
            let (status, location, body) = call(&app, &client, endpoint, caller, &fixture, n).await;
            calls += 1;
            let redirected_to_login = status.is_redirection()
                && (location.starts_with("/login") || location.starts_with("/audit/login"))
                && !["POST /logout", "POST /audit/logout"].contains(&endpoint.as_str());
            let denied = status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN
                || redirected_to_login;
            let allowed_expected = expected[i] != "no";
            if denied == allowed_expected {
                failures.push(format!(
                    "{endpoint} as {caller}: expected {}, got {status} {location} {}",
                    expected[i],
                    body.chars().take(200).collect::<String>()
                ));
            }
            if status.is_server_error() {
                failures.push(format!("{endpoint} as {caller}: {status}"));
            }
            if denied && !page_path(endpoint) {
                let code = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["error"]
                    ["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if !["unauthenticated", "forbidden", "must_change_password"]
                    .contains(&code.as_str())
                {
                    failures.push(format!("{endpoint} as {caller}: denied with code {code}"));
                }
            }
        }
        // Whatever the other customer's session did, the customer in the
        // path has no event caused by it.
        let events = app
            .get(&format!("/v1/customers/{}/events", fixture.a), AUDITOR)
            .await
            .expect(200);
        for event in events.body["events"].as_array().unwrap() {
            if event["metadata"]["actor_customer_id"] == fixture.b.as_str() {
                failures.push(format!(
                    "{endpoint}: the other customer's session changed customer A: {event}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(calls, table.len() * CALLERS.len());
    app.stop().await;
}

fn page_path(endpoint: &str) -> bool {
    !endpoint.contains(" /v1/")
}

crate::on_both_stores!(authorization_matrix);
