//! Hostile and malformed input over HTTP: oversized and endless bodies,
//! deep JSON, wrong content types, unknown fields, invalid UTF-8, huge
//! headers, garbage request lines and slow clients. Each gets its precise
//! 4xx (our JSON error shape where the service answers) and the server
//! stays healthy: after every attack a normal command still works.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn host(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Sends raw bytes on a fresh connection and reads the answer until the
/// server closes the connection or `wait` passes; returns the status code
/// (0 when none) and the whole raw answer.
async fn raw(app: &TestApp, request: &[u8], wait: Duration) -> (u16, String) {
    let mut stream = TcpStream::connect(host(app)).await.unwrap();
    // The server may close early (e.g. after 431) while we still write.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn json_of(raw_answer: &str) -> Value {
    let body = raw_answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The server still answers and still accepts a command.
async fn assert_healthy(app: &TestApp) {
    app.call(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
    let email = format!("healthy-{}@example.com", uuid::Uuid::new_v4().simple());
    app.register(&email).await;
}

async fn post_bytes(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut request = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(SERVICE)
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

async fn oversized_and_endless_bodies(db: Db) {
    let app = TestApp::spawn(db).await;
    // Declared too large: refused without reading it.
    let big = format!(
        "{{\"email\":\"big@example.com\",\"name\":\"{}\"}}",
        "x".repeat(65 * 1024)
    );
    post_bytes(
        &app,
        "/v1/customers",
        Some("application/json"),
        big.into_bytes(),
    )
    .await
    .expect_error(413, "payload_too_large");
    // 10 MiB of chunked body with no length: cut off at 64 KiB, not buffered.
    let (status, answer) = {
        let mut request = format!(
            "POST /v1/customers HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {SERVICE}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            host(&app)
        )
        .into_bytes();
        let chunk = "a".repeat(8192);
        for _ in 0..(10 * 1024 / 8) {
            request.extend_from_slice(format!("2000\r\n{chunk}\r\n").as_bytes());
        }
        request.extend_from_slice(b"0\r\n\r\n");
        raw(&app, &request, Duration::from_secs(10)).await
    };
    assert_eq!(status, 413, "{}", &answer[..answer.len().min(400)]);
    assert_eq!(json_of(&answer)["error"]["code"], "payload_too_large");
    // The limit applies to the pages' forms too.
    let form = app
        .client
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &app.base)
        .header("cookie", format!("access_csrf={}", "a".repeat(32)))
        .body(format!("email={}", "x".repeat(70 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 413, "page form");
    assert_healthy(&app).await;
    app.stop().await;
}

async fn deep_json_and_malformed_json(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("deep@example.com").await;
    // Nesting far beyond serde_json's recursion limit (128), at the top
    // and inside a field; neither may overflow the stack.
    for body in [
        "[".repeat(60_000),
        format!("{{\"email\":{}", "[".repeat(60_000)),
        format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!(
            "{{\"email\":\"a@example.com\",\"name\":{}\"x\"{}}}",
            "{\"a\":".repeat(3_000),
            "}".repeat(3_000)
        ),
    ] {
        let answer = post_bytes(
            &app,
            "/v1/customers",
            Some("application/json"),
            body.into_bytes(),
        )
        .await;
        answer.expect_error(400, "malformed_request");
    }
    for body in [
        "{",
        "null",
        "[]",
        "\"just a string\"",
        "{\"email\": \"a@example.com\",}",
        "{\"email\": \"a@example.com\"} trailing",
        "{\"email\": \"a@example.com\", \"email\": \"b@example.com\"}",
        "{\"email\": 1e999999}",
        "\u{feff}{\"email\": \"bom@example.com\"}",
    ] {
        let answer = post_bytes(
            &app,
            "/v1/customers",
            Some("application/json"),
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(
            (answer.status.as_u16(), answer.code()),
            (400, "malformed_request"),
            "{body:?}: {}",
            answer.body
        );
    }
    // Unknown fields are rejected (never ignored), the field is named.
    let typo = app
        .command(&id, "grant-access", json!({"send_notificaton": true}))
        .await
        .expect_error(400, "malformed_request");
    assert!(
        typo.message().contains("send_notificaton"),
        "{}",
        typo.message()
    );
    // Null bytes and control characters inside strings are values, judged
    // by the value types (422), never a crash.
    app.post(
        "/v1/customers",
        SERVICE,
        json!({"email": "nul\u{0}@example.com"}),
    )
    .await
    .expect_error(422, "invalid_email");
    assert_healthy(&app).await;
    app.stop().await;
}

async fn wrong_content_types(db: Db) {
    let app = TestApp::spawn(db).await;
    let body = br#"{"email":"ct@example.com"}"#.to_vec();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("application/jsonx"),
        Some("json"),
    ] {
        let answer = post_bytes(&app, "/v1/customers", content_type, body.clone()).await;
        assert_eq!(
            (answer.status.as_u16(), answer.code()),
            (415, "unsupported_media_type"),
            "{content_type:?}: {}",
            answer.body
        );
    }
    // JSON with parameters, any case, and +json types are JSON.
    for (i, content_type) in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("{{\"email\":\"ct{i}@example.com\"}}");
        post_bytes(&app, "/v1/customers", Some(content_type), body.into_bytes())
            .await
            .expect(201);
    }
    // A method the route does not have: 405 with our error shape.
    app.call(Method::PUT, "/v1/customers", Some(SERVICE), None)
        .await
        .expect_error(405, "method_not_allowed");
    assert_healthy(&app).await;
    app.stop().await;
}

async fn invalid_utf8_anywhere(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("utf8@example.com").await;
    // In a JSON string, and as a whole body.
    for body in [
        b"{\"email\":\"\xff\xfe@example.com\"}".to_vec(),
        b"\xc3\x28\xa0\xa1".to_vec(),
        b"{\"email\":\"a@example.com\",\"name\":\"\xed\xa0\x80\"}".to_vec(),
    ] {
        post_bytes(&app, "/v1/customers", Some("application/json"), body)
            .await
            .expect_error(400, "malformed_request");
    }
    // In the path (percent-encoded bytes that are no UTF-8): 400. In the
    // query, bytes that are no UTF-8 decode lossily (U+FFFD) and the value
    // is then judged like any other: an invalid email is 422, an unknown
    // format 400; always our error shape.
    for (path, status, code) in [
        ("/v1/customers/%FF%FE".to_string(), 400, "malformed_request"),
        (
            format!("/v1/customers/{id}/events?format=%FF"),
            400,
            "malformed_request",
        ),
        (
            "/v1/customers?email=%C3%28".to_string(),
            422,
            "invalid_email",
        ),
    ] {
        let answer = app.call(Method::GET, &path, Some(AUDITOR), None).await;
        assert_eq!(
            (answer.status.as_u16(), answer.code()),
            (status, code),
            "{path}: {}",
            answer.body
        );
    }
    // In a header: the bearer token is not valid text, so no one is known.
    let mut bad_header = format!(
        "GET /v1/customers/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer ",
        host(&app)
    )
    .into_bytes();
    bad_header.extend_from_slice(b"\xff\xfe\r\nConnection: close\r\n\r\n");
    let (status, answer) = raw(&app, &bad_header, Duration::from_secs(5)).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(json_of(&answer)["error"]["code"], "unauthenticated");
    let mut latin1 = format!(
        "GET /v1/customers/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer ",
        host(&app)
    )
    .into_bytes();
    latin1.extend_from_slice(b"\xe9t\xe9\r\nIdempotency-Key: \xff\r\nConnection: close\r\n\r\n");
    let (status, _) = raw(&app, &latin1, Duration::from_secs(5)).await;
    assert_eq!(status, 401);
    assert_healthy(&app).await;
    app.stop().await;
}

async fn huge_headers_and_garbage_requests(db: Db) {
    let app = TestApp::spawn(db).await;
    // One header larger than the 64 KiB head limit: 431, connection closed.
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
        host(&app),
        "a".repeat(100 * 1024)
    );
    let (status, answer) = raw(&app, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status, 431, "{}", &answer[..answer.len().min(300)]);
    // More headers than allowed (hyper: 100).
    let mut many = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", host(&app));
    for i in 0..500 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, _) = raw(&app, many.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status, 431);
    // A large but allowed header (32 KiB) is served normally.
    let cookie = "c".repeat(32 * 1024);
    let ok = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-big", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Garbage and truncated request lines, a bad Content-Length, both
    // Content-Length and Transfer-Encoding (request smuggling).
    for garbage in [
        "GARBAGE\r\n\r\n".to_string(),
        "GET / HTTP/9.9\r\n\r\n".to_string(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_string(),
        "POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef".to_string(),
        "POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
        "\0\0\0\0\r\n\r\n".to_string(),
    ] {
        let (status, answer) = raw(&app, garbage.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            (400..500).contains(&status) || status == 0 && answer.is_empty(),
            "{garbage:?} → {status} {answer}"
        );
    }
    assert_healthy(&app).await;
    app.stop().await;
}

async fn slow_clients_are_cut_off_and_others_served(db: Db) {
    let app = TestApp::spawn_with(db, |c| {
        c.header_timeout_secs = 1;
        c.request_timeout_secs = 2;
    })
    .await;
    // 50 slowloris connections: headers one byte every 200 ms, never done.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let address = host(&app);
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut stream = TcpStream::connect(&address).await.unwrap();
            let head = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nX-Slow: ");
            stream.write_all(head.as_bytes()).await.unwrap();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => break,
                    Err(_) => {}
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "slow connection still open after 10 s"
                );
            }
            started.elapsed()
        }));
    }
    // A slow body: headers complete, body dribbles in.
    let address = host(&app);
    let slow_body = tokio::spawn(async move {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /v1/customers HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {SERVICE}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = stream.write_all(b" ").await;
            match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    answer.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&answer).contains('}') {
                        break;
                    }
                }
                Err(_) => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "slow body never cut off"
            );
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).to_string(),
        )
    });
    // Meanwhile everyone else is served promptly.
    for i in 0..20 {
        let started = Instant::now();
        app.register(&format!("meanwhile{i}@example.com")).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a normal request took {:?} during the slow-client attack",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in slow {
        let open_for = task.await.unwrap();
        assert!(
            open_for < Duration::from_secs(4),
            "slow header held {open_for:?}"
        );
    }
    let (open_for, answer) = slow_body.await.unwrap();
    assert!(
        open_for < Duration::from_secs(5),
        "slow body held {open_for:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(json_of(&answer)["error"]["code"], "request_timeout");
    // An idle kept-alive connection is closed too.
    let mut idle = TcpStream::connect(host(&app)).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection kept open"
    );
    assert_healthy(&app).await;
    app.stop().await;
}

async fn security_headers_on_every_response(db: Db) {
    let app = TestApp::spawn(db).await;
    let id = app.register("headers@example.com").await;
    let paths = [
        (Method::GET, format!("/v1/customers/{id}"), Some(SERVICE)),
        (Method::GET, "/v1/customers/nope".to_string(), Some(SERVICE)),
        (Method::GET, "/v1/customers".to_string(), None),
        (Method::GET, "/nowhere".to_string(), None),
        (Method::GET, "/healthz".to_string(), None),
        (Method::GET, "/metrics".to_string(), None),
        (Method::GET, "/openapi.json".to_string(), None),
        (Method::GET, "/login".to_string(), None),
        (Method::POST, "/v1/self/sessions".to_string(), None),
    ];
    for (method, path, key) in paths {
        let answer = app.call(method.clone(), &path, key, None).await;
        for (name, expected) in [
            ("x-content-type-options", Some("nosniff")),
            ("x-frame-options", Some("DENY")),
            ("referrer-policy", Some("no-referrer")),
            ("cache-control", Some("no-store")),
            ("content-security-policy", None),
        ] {
            let value = answer.headers.get(name).and_then(|v| v.to_str().ok());
            assert!(value.is_some(), "{method} {path}: no {name}");
            if let Some(expected) = expected {
                assert_eq!(value, Some(expected), "{method} {path}: {name}");
            }
        }
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
    }
    app.stop().await;
}

crate::on_both_stores!(
    oversized_and_endless_bodies,
    deep_json_and_malformed_json,
    wrong_content_types,
    invalid_utf8_anywhere,
    huge_headers_and_garbage_requests,
    slow_clients_are_cut_off_and_others_served,
    security_headers_on_every_response,
);
