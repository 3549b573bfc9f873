//! The OpenAPI document, generated from the handlers and bodies (utoipa).
//! The same document is committed as `docs/openapi.json`; a test fails when
//! that copy is stale (`ACCESS_UPDATE_OPENAPI=1` rewrites it).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::contract::Security as RouteSecurity;

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::http::{audit, customers, dto, feed, health, history, import, mail, self_service};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let schemes = [
            ("api_key", "An API key: `Authorization: Bearer <secret>` (roles service, auditor, admin, subscriber)"),
            ("customer_session", "A customer session token from POST /v1/self/sessions"),
        ];
        for (name, description) in schemes {
            let bearer = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(bearer));
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "access", description = "Customer portal logins as events: the Customer Center access rules.", license(name = "Apache-2.0")),
    servers((url = "/", description = "This service (paths are relative to where the document is served)")),
    paths(
        customers::register,
        customers::change_email,
        customers::grant_access,
        customers::set_password,
        customers::send_access_notification,
        customers::revoke_access,
        customers::forget_customer,
        customers::reset_second_factor,
        import::import_customers,
        customers::get_customer,
        customers::find_customers,
        customers::customer_events,
        audit::audit,
        audit::customer_audit,
        audit::digest,
        feed::feed,
        history::access_report,
        mail::list,
        mail::retry,
        self_service::create_session,
        self_service::delete_session,
        self_service::verify_session,
        self_service::begin_totp,
        self_service::confirm_totp,
        self_service::regenerate_recovery_codes,
        self_service::remove_totp,
        self_service::me,
        self_service::change_email,
        self_service::change_password,
        self_service::confirm_email,
        self_service::setup_password,
        health::healthz,
        health::readyz,
        health::metrics,
        openapi,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, dto::GrantedRole, customers::EventsFormat, audit::AuditFormat, mail::MailStatus,
        dto::RegisterRequest, dto::ChangeEmailRequest, dto::GrantAccessRequest, dto::SetPasswordRequest,
        dto::ReasonRequest, dto::ForgetRequest, dto::CommandResponse, dto::AccessView, dto::CustomerView, dto::CustomerList,
        dto::EventView, dto::EventList, dto::SessionRequest, dto::SessionResponse, dto::SelfChangeEmailRequest,
        dto::EmailChangeAccepted, dto::ChangePasswordRequest, dto::PasswordChanged, dto::ConfirmEmailRequest,
        dto::SetupPasswordRequest, dto::Health, dto::Readiness, dto::NotReady, dto::ReadinessParts, dto::PartState, dto::ActorView, dto::AuditView, dto::AuditPage, audit::AuditDigest, history::AccessReport, history::AccessHolder, mail::MailView, mail::MailList,
        feed::FeedPage, crate::feed::FeedItem,
        dto::SecondFactorCodeRequest, dto::RemoveTotpRequest, dto::TotpEnrollment, dto::RecoveryCodes,
    )),
    modifiers(&Security),
    tags(
        (name = "commands", description = "Upstream services change customers (roles service, admin)"),
        (name = "reads", description = "Access state and history"),
        (name = "audit", description = "The audit trail (roles auditor, admin)"),
        (name = "feed", description = "The change feed for downstream systems (roles subscriber, auditor, admin)"),
        (name = "self-service", description = "Customers and the links in their emails"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The error responses every operation may share, by status: name in
/// `components.responses`, what it means, and its extra header.
const ERRORS: &[(u16, &str, &str, Option<&str>)] = &[
    (400, "BadRequest", "`malformed_request`: the JSON, a field, a parameter or a header (`If-Match`, `Idempotency-Key`) cannot be read, or a field is unknown or missing", None),
    (401, "Unauthorized", "`unauthenticated` (no or an unknown Bearer token), `invalid_credentials`", Some("WWW-Authenticate")),
    (403, "Forbidden", "`forbidden` (the key's role may not do this), `must_change_password`, `wrong_password`", None),
    (404, "NotFound", "`customer_not_found`, `not_found`", None),
    (408, "RequestTimeout", "`request_timeout`: the request took longer than the server allows", None),
    (409, "Conflict", "`concurrent_modification`, `email_in_use`, `customer_exists`, `idempotency_key_in_use` (with `Retry-After`)", Some("Retry-After")),
    (410, "Gone", "`customer_forgotten`: the customer was forgotten (right to erasure)", None),
    (412, "PreconditionFailed", "`version_mismatch`: `If-Match` names another version than the customer's", None),
    (413, "PayloadTooLarge", "`payload_too_large`: the body is larger than 64 KiB", None),
    (415, "UnsupportedMediaType", "`unsupported_media_type`: a body that is not `application/json`", None),
    (422, "Unprocessable", "A rule or a value refused the request: `login_has_no_password`, `invalid_email`, `weak_password`, `password_mismatch`, `no_access`, `invalid_token`, `idempotency_key_reused`, … (docs/api.md)", None),
    (429, "TooManyRequests", "`too_many_attempts`: too many password attempts; retry after `Retry-After` seconds", Some("Retry-After")),
    (500, "Internal", "`internal`: a bug; `X-Request-Id` finds it in the log", None),
    (503, "Unavailable", "`unavailable`: the database or the read model is not available; retry after `Retry-After` seconds", Some("Retry-After")),
];

fn header(name: &str) -> Value {
    match name {
        "X-Request-Id" => {
            json!({"description": "The request's id (the client's `X-Request-Id` when it is 1 to 128 characters of `A-Z a-z 0-9 . _ : -`, else a new UUID); it is in the log lines and the events' metadata", "schema": {"type": "string", "maxLength": 128}})
        }
        "Retry-After" => {
            json!({"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}})
        }
        "WWW-Authenticate" => {
            json!({"description": "`Bearer realm=\"access\"`", "schema": {"type": "string"}})
        }
        "ETag" => {
            json!({"description": "The customer's version after the request, quoted (`\"3\"`): send it back in `If-Match`", "schema": {"type": "string", "pattern": "^\"[0-9]+\"$"}})
        }
        "Idempotent-Replayed" => {
            json!({"description": "`true` when this is the stored answer of an earlier request with the same `Idempotency-Key` (nothing was done again)", "schema": {"type": "string", "enum": ["true"]}})
        }
        "Location" => {
            json!({"description": "Where the created resource is", "schema": {"type": "string"}})
        }
        _ => json!({"schema": {"type": "string"}}),
    }
}

fn command_parameters() -> Vec<Value> {
    vec![
        json!({"name": "If-Match", "in": "header", "required": false,
               "description": "Apply only if the customer is at this version (its `ETag`, e.g. `\"3\"`); else 412 `version_mismatch`",
               "schema": {"type": "string", "pattern": "^(W/)?\"?[0-9]{1,19}\"?$"}}),
        json!({"name": "Idempotency-Key", "in": "header", "required": false,
               "description": "Retry-safe key (1 to 255 visible ASCII characters): a retry with the same key and body gets the stored answer (`Idempotent-Replayed: true`); with another body, 422 `idempotency_key_reused`",
               "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}}),
    ]
}

/// The operations on a registered customer, reached from register's 201
/// through its `customer_id` (OpenAPI links: clients and schemathesis's
/// stateful phase follow them).
fn links_from_register(document: &Value) -> Value {
    let mut links = Map::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            if !path.starts_with("/v1/customers/{id}") {
                continue;
            }
            for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
                if let Some(id) = operation["operationId"].as_str() {
                    links.insert(
                        id.to_string(),
                        json!({"operationId": id, "parameters": {"id": "$response.body#/customer_id"}}),
                    );
                }
            }
        }
    }
    Value::Object(links)
}

/// Adds to each operation what its route can answer (from its extractors,
/// [`crate::http::contract`]): the error responses, the security (API key
/// roles or a customer session, none for the others), the command headers,
/// and on every response `X-Request-Id`.
fn complete(document: &mut Value) {
    let mut responses = Map::new();
    for (_, name, description, extra) in ERRORS {
        let mut headers = Map::new();
        headers.insert("X-Request-Id".into(), header("X-Request-Id"));
        headers.insert("traceparent".into(), header("traceparent"));
        if let Some(extra) = extra {
            headers.insert((*extra).into(), header(extra));
        }
        responses.insert(
            (*name).into(),
            json!({"description": description, "headers": headers,
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}),
        );
    }
    document["components"]["responses"] = Value::Object(responses);
    // A password comes with its confirmation, and a confirmation with a
    // password (else 400): JSON Schema's `dependentRequired` says so.
    for schema in ["ChangeEmailRequest", "GrantAccessRequest"] {
        document["components"]["schemas"][schema]["dependentRequired"] =
            json!({"password": ["password_confirm"], "password_confirm": ["password"]});
    }
    let links = links_from_register(document);

    let mut routes = crate::http::routes();
    routes.push(crate::http::contract::RouteInfo {
        method: "GET",
        path: "/openapi.json",
        statuses: crate::http::contract::EVERY_ROUTE.iter().copied().collect(),
        security: None,
        command: false,
    });
    for route in routes {
        let operation = &mut document["paths"][route.path][route.method.to_ascii_lowercase()];
        if !operation.is_object() {
            // Left for the test that walks the routes and the document.
            continue;
        }
        match &route.security {
            Some(RouteSecurity::ApiKey(roles)) => {
                operation["security"] = json!([{"api_key": roles}]);
                let description = operation["description"].as_str().unwrap_or_default();
                operation["description"] = json!(format!(
                    "{}{}Roles: {}.",
                    description,
                    if description.is_empty() { "" } else { "\n\n" },
                    roles.join(", ")
                ));
            }
            Some(RouteSecurity::CustomerSession) => {
                operation["security"] = json!([{"customer_session": []}]);
            }
            None => operation["security"] = json!([]),
        }
        // Request headers every operation reads. No pattern: a value that
        // does not fit is replaced or ignored, never refused.
        let mut parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        parameters.extend([
            json!({"name": "X-Request-Id", "in": "header", "required": false,
                   "description": "The caller's request id: kept (in the answer, the log and the events' metadata) when it is 1 to 128 characters of `A-Z a-z 0-9 . _ : -`, else replaced by a new UUID",
                   "schema": {"type": "string"}}),
            json!({"name": "traceparent", "in": "header", "required": false,
                   "description": "W3C trace context: its trace id is logged with the request and kept as the correlation id of the events the request causes; a malformed one is ignored",
                   "schema": {"type": "string"}}),
        ]);
        operation["parameters"] = Value::Array(parameters);
        if route.path == "/v1/customers/{id}/audit" {
            // The customer is the path's (the query's `customer_id` is refused).
            if let Some(parameters) = operation["parameters"].as_array_mut() {
                parameters.retain(|p| p["name"] != "customer_id");
            }
        }
        if route.command {
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut kept: Vec<Value> = parameters
                .into_iter()
                .filter(|p| !matches!(p["name"].as_str(), Some("If-Match" | "Idempotency-Key")))
                .collect();
            kept.extend(command_parameters());
            operation["parameters"] = Value::Array(kept);
        }
        let Some(answers) = operation["responses"].as_object_mut() else {
            continue;
        };
        for (status, name, _, extra) in ERRORS {
            if !route.statuses.contains(status) {
                continue;
            }
            match answers.get_mut(&status.to_string()) {
                None => {
                    answers.insert(
                        status.to_string(),
                        json!({"$ref": format!("#/components/responses/{name}")}),
                    );
                }
                Some(inline) => {
                    if let Some(extra) = extra {
                        inline["headers"][*extra] = header(extra);
                    }
                }
            }
        }
        for (status, answer) in answers.iter_mut() {
            if answer.get("$ref").is_some() {
                continue;
            }
            answer["headers"]["X-Request-Id"] = header("X-Request-Id");
            answer["headers"]["traceparent"] = header("traceparent");
            let success = status.starts_with('2');
            if success && route.command {
                answer["headers"]["ETag"] = header("ETag");
                answer["headers"]["Idempotent-Replayed"] = header("Idempotent-Replayed");
            }
            if success && ETAG_READS.contains(&route.path) {
                answer["headers"]["ETag"] = header("ETag");
            }
            if status == "201" {
                answer["headers"]["Location"] = header("Location");
            }
            if status == "201" && route.path == "/v1/customers" {
                answer["links"] = links.clone();
            }
        }
    }
}

/// Reads and link commands whose success carries the customer's version
/// as `ETag` (the commands' do too).
const ETAG_READS: &[&str] = &[
    "/v1/customers/{id}",
    "/v1/self",
    "/v1/self/confirm-email",
    "/v1/self/setup-password",
];

/// The document served at `/openapi.json`: utoipa's, completed from the
/// route table ([`complete`]).
pub fn document() -> Result<Value, serde_json::Error> {
    let mut document = serde_json::to_value(ApiDoc::openapi())?;
    complete(&mut document);
    Ok(document)
}

/// The document as pretty JSON (stable, for the committed copy).
pub fn document_json() -> Result<String, serde_json::Error> {
    let mut json = serde_json::to_string_pretty(&document()?)?;
    json.push('\n');
    Ok(json)
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    match document_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::http::contract::{RouteInfo, EVERY_ROUTE};

    fn routes() -> Vec<RouteInfo> {
        let mut routes = crate::http::routes();
        routes.push(RouteInfo {
            method: "GET",
            path: "/openapi.json",
            statuses: EVERY_ROUTE.iter().copied().collect(),
            security: None,
            command: false,
        });
        routes
    }

    /// Every route of the router is an operation of the document, every
    /// operation a route, and every status a route's extractors can
    /// answer is listed, with the security the extractors demand.
    #[test]
    fn the_document_lists_every_route_and_every_status_its_extractors_answer() {
        let document = document().unwrap();
        let routes = routes();
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                operations.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let routed: BTreeSet<(String, String)> = routes
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let undocumented: Vec<_> = routed.difference(&operations).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the document: {undocumented:?}"
        );
        let unrouted: Vec<_> = operations.difference(&routed).collect();
        assert!(
            unrouted.is_empty(),
            "operations no route serves: {unrouted:?}"
        );

        for route in &routes {
            let operation = &document["paths"][route.path][route.method.to_ascii_lowercase()];
            let listed: BTreeSet<u16> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|s| s.parse().ok())
                .collect();
            let missing: Vec<_> = route.statuses.difference(&listed).collect();
            assert!(
                missing.is_empty(),
                "{} {} can answer {missing:?}, which its operation does not list",
                route.method,
                route.path
            );
            assert!(
                listed.iter().any(|s| (200..300).contains(s)),
                "{} {}",
                route.method,
                route.path
            );
            let security = &operation["security"];
            match &route.security {
                Some(RouteSecurity::ApiKey(roles)) => {
                    assert_eq!(security, &json!([{"api_key": roles}]), "{}", route.path);
                    assert!(listed.contains(&401), "{}", route.path);
                }
                Some(RouteSecurity::CustomerSession) => {
                    assert_eq!(
                        security,
                        &json!([{"customer_session": []}]),
                        "{}",
                        route.path
                    );
                    assert!(route.path.starts_with("/v1/self"), "{}", route.path);
                }
                None => assert_eq!(security, &json!([]), "{}", route.path),
            }
            // Every error answer is the error body.
            for (status, answer) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || (status.starts_with('5') && route.path != "/readyz") {
                    let body = answer["$ref"].as_str().map_or_else(
                        || answer["content"]["application/json"]["schema"]["$ref"].clone(),
                        |name| {
                            let name = name.trim_start_matches("#/components/responses/");
                            document["components"]["responses"][name]["content"]["application/json"]
                                ["schema"]["$ref"]
                                .clone()
                        },
                    );
                    assert_eq!(
                        body, "#/components/schemas/ErrorBody",
                        "{} {} {status}",
                        route.method, route.path
                    );
                }
            }
        }
    }

    /// The statuses come from the extractors' types: an admin-only
    /// command answers 401 and 403, its JSON body 400/413/415, its
    /// command context 404/409/410/412/422, the store 503.
    #[test]
    fn statuses_and_security_are_derived_from_the_extractors() {
        let routes = routes();
        let find = |method: &str, path: &str| {
            routes
                .iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap()
                .clone()
        };
        let forget = find("POST", "/v1/customers/{id}/forget");
        for status in [400, 401, 403, 404, 408, 409, 410, 412, 413, 415, 422, 503] {
            assert!(forget.statuses.contains(&status), "{status}: {forget:?}");
        }
        assert_eq!(forget.security, Some(RouteSecurity::ApiKey(vec!["admin"])));
        assert!(forget.command);
        let find_customers = find("GET", "/v1/customers");
        assert!(
            find_customers.statuses.contains(&403),
            "a subscriber may not read customers"
        );
        let feed = find("GET", "/v1/feed");
        assert_eq!(
            feed.security,
            Some(RouteSecurity::ApiKey(vec![
                "auditor",
                "admin",
                "subscriber"
            ]))
        );
        assert!(!find_customers.command);
        assert_eq!(
            find_customers.security,
            Some(RouteSecurity::ApiKey(vec!["service", "auditor", "admin"]))
        );
        assert_eq!(
            find("GET", "/v1/self").security,
            Some(RouteSecurity::CustomerSession)
        );
        let login = find("POST", "/v1/self/sessions");
        assert_eq!(login.security, None);
        assert!(login.statuses.contains(&415) && !login.statuses.contains(&401));
        assert_eq!(
            find("GET", "/healthz").statuses,
            EVERY_ROUTE.iter().copied().collect()
        );
    }
}
