//! The OpenAPI document, generated from the handlers and bodies (utoipa).
//! The same document is committed as `docs/openapi.json`; a test fails when
//! that copy is stale (`ACCESS_UPDATE_OPENAPI=1` rewrites it).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::http::{audit, customers, dto, health, history, import, mail, self_service};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <secret>` (roles service, auditor, admin)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "customer_session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A customer session token from POST /v1/self/sessions"))
                    .build(),
            ),
        );
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
        import::import_customers,
        customers::get_customer,
        customers::find_customers,
        customers::customer_events,
        audit::audit,
        audit::customer_audit,
        audit::digest,
        history::access_report,
        mail::list,
        mail::retry,
        self_service::create_session,
        self_service::delete_session,
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
        ErrorBody, ErrorDetail,
        dto::RegisterRequest, dto::ChangeEmailRequest, dto::GrantAccessRequest, dto::SetPasswordRequest,
        dto::ReasonRequest, dto::ForgetRequest, dto::CommandResponse, dto::AccessView, dto::CustomerView, dto::CustomerList,
        dto::EventView, dto::EventList, dto::SessionRequest, dto::SessionResponse, dto::SelfChangeEmailRequest,
        dto::EmailChangeAccepted, dto::ChangePasswordRequest, dto::PasswordChanged, dto::ConfirmEmailRequest,
        dto::SetupPasswordRequest, dto::Health, dto::Readiness, dto::NotReady, dto::ReadinessParts, dto::PartState, dto::ActorView, dto::AuditView, dto::AuditPage, audit::AuditDigest, history::AccessReport, history::AccessHolder, mail::MailView, mail::MailList,
    )),
    modifiers(&Security),
    tags(
        (name = "commands", description = "Upstream services change customers (roles service, admin)"),
        (name = "reads", description = "Access state and history"),
        (name = "audit", description = "The audit trail (roles auditor, admin)"),
        (name = "self-service", description = "Customers and the links in their emails"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (stable, for the committed copy).
pub fn document_json() -> Result<String, serde_json::Error> {
    let mut json = ApiDoc::openapi().to_pretty_json()?;
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
