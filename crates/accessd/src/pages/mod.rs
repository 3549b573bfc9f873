//! The customers' pages: server-rendered HTML behind the links in their
//! emails, the login and the account's settings. No JavaScript.
//!
//! | route | page |
//! |---|---|
//! | `GET /setup-password?token=…`, `POST /setup-password` | set a password through the access notification's link |
//! | `GET /confirm-email?token=…`, `POST /confirm-email` | complete a pending email change |
//! | `GET /login`, `POST /login` | log in |
//! | `POST /logout` | log out (the button in the header) |
//! | `GET /account` | the customer's home, with the settings |
//! | `GET /account/change-email`, `POST …` | ask for a new login email |
//! | `GET /account/change-password`, `POST …` | change the password |
//! | `GET /assets/site.css` | the stylesheet |
//!
//! The domain and HTTP logic is the API's: commands run through
//! [`crate::http::commands::execute`], logins, email and password changes
//! and link tokens through the shared functions of
//! [`crate::http::self_service`], sessions through
//! [`crate::auth::session_of_token`]. The pages only translate error codes
//! into messages next to the fields.
//!
//! # Stable element ids (for browser tests)
//!
//! Every form field and button has an `id` equal to its `name` (but the
//! header's hidden `#logout_csrf_token`, named `csrf_token`):
//!
//! | page | fields and buttons |
//! |---|---|
//! | login | `#email` (autocomplete `username`), `#password` (`current-password`), `#submit` |
//! | setup-password | `#password`, `#password_confirm` (`new-password`; `#password-hint`), hidden `#token`, `#submit` |
//! | confirm-email | hidden `#token`, `#submit`; after it, `#login-link` |
//! | account | `#login-email`, `#pending-email` (while a change waits), `#pending-email-expired` (a change whose link expired), `#change-email-link`, `#change-password-link` |
//! | change-email | `#current_password` (`current-password`), `#new_email`, `#new_email_confirm` (`email`), `#submit`, `#cancel-link`; `#login-email` |
//! | change-password | `#current_password` (`current-password`), `#new_password` (`new-password`; `#new_password-hint`), `#new_password_confirm` (`new-password`), `#submit`, `#cancel-link` (not with a temporary password) |
//! | dead link | `#login-link` (confirm-email links only) |
//! | every page with a session | `#logout` (the header's form, hidden `#logout_csrf_token`) |
//!
//! - Every form has a hidden `csrf_token` (`#csrf_token`).
//! - The green success bar (and other notices) is `#status` (`role="status"`).
//! - A field's error is `#<field>-error` (e.g. `#current_password-error`),
//!   referenced by the field's `aria-describedby`, with `aria-invalid="true"`
//!   on the field; the first invalid field has `autofocus`. A hint is
//!   `#<field>-hint`.
//! - An error that belongs to no field (too many attempts) is `#form-error`
//!   (`role="alert"`).
//! - The page heading is the only `<h1>`; `<main id="main">` is the target
//!   of the skip link.
//!
//! # Security
//!
//! - Every response (redirects and errors too) carries a strict
//!   `Content-Security-Policy` (no scripts, styles only from this origin, no
//!   inline styles, forms only to this origin, no framing),
//!   `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` (link tokens
//!   are in the URL) and `Cache-Control: no-store` (the stylesheet may be
//!   cached for an hour).
//! - Forms carry a CSRF token ([`csrf`]): a double-submit cookie compared
//!   in constant time with the form's hidden field, and POSTs from another
//!   origin refused.
//! - The session cookie `access_session` is `HttpOnly; SameSite=Lax`,
//!   `Secure` when the public URL is https; it ends like any session (revoke,
//!   password change, email change) and on logout.
//! - GETs never change state: a link's token is used only by the form's
//!   POST (mail scanners open links).

mod account;
pub(crate) mod csrf;
mod links;
mod login;
mod session;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// The product the portal is, as the mails name it.
const PRODUCT: &str = "Customer Center";

/// The pages' Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../assets/site.css");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("account.html", include_str!("../../templates/account.html")),
    (
        "change_email.html",
        include_str!("../../templates/change_email.html"),
    ),
    (
        "change_password.html",
        include_str!("../../templates/change_password.html"),
    ),
    (
        "setup_password.html",
        include_str!("../../templates/setup_password.html"),
    ),
    (
        "confirm_email.html",
        include_str!("../../templates/confirm_email.html"),
    ),
    (
        "email_confirmed.html",
        include_str!("../../templates/email_confirmed.html"),
    ),
    (
        "link_expired.html",
        include_str!("../../templates/link_expired.html"),
    ),
    ("message.html", include_str!("../../templates/message.html")),
];

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Printing an unknown variable is an error; testing one is allowed.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    for (name, source) in TEMPLATES {
        // Every template is rendered by the tests; a broken one fails there.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = %name, error = %e, "page template does not parse");
        }
    }
    env
});

/// The pages' routes (merged into [`crate::http::router`], outside the
/// OpenAPI document).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::show).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/account", get(account::home))
        .route(
            "/account/change-email",
            get(account::change_email_form).post(account::change_email),
        )
        .route(
            "/account/change-password",
            get(account::change_password_form).post(account::change_password),
        )
        .route(
            "/setup-password",
            get(links::setup_password_form).post(links::setup_password),
        )
        .route(
            "/confirm-email",
            get(links::confirm_email_form).post(links::confirm_email),
        )
        .route("/assets/site.css", get(stylesheet))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// A notice at the top of a page (`#status`): the green bar of a success,
/// or a neutral information.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    /// `success` or `info`.
    tone: &'static str,
    title: String,
    detail: Option<String>,
}

impl Status {
    pub(crate) fn success(title: impl Into<String>, detail: Option<String>) -> Self {
        Self {
            tone: "success",
            title: title.into(),
            detail,
        }
    }

    pub(crate) fn info(title: impl Into<String>) -> Self {
        Self {
            tone: "info",
            title: title.into(),
            detail: None,
        }
    }
}

/// One input of a form.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Field {
    /// The `id` and `name`.
    id: &'static str,
    label: &'static str,
    /// The input type: `email` or `password`.
    kind: &'static str,
    autocomplete: &'static str,
    hint: Option<&'static str>,
    /// Shown again after an error (never for passwords).
    value: String,
    error: Option<String>,
    autofocus: bool,
    described_by: Option<String>,
}

impl Field {
    pub(crate) fn email(id: &'static str, label: &'static str, autocomplete: &'static str) -> Self {
        Self::new(id, label, "email", autocomplete)
    }

    pub(crate) fn password(
        id: &'static str,
        label: &'static str,
        autocomplete: &'static str,
    ) -> Self {
        Self::new(id, label, "password", autocomplete)
    }

    fn new(
        id: &'static str,
        label: &'static str,
        kind: &'static str,
        autocomplete: &'static str,
    ) -> Self {
        Self {
            id,
            label,
            kind,
            autocomplete,
            hint: None,
            value: String::new(),
            error: None,
            autofocus: false,
            described_by: None,
        }
    }

    pub(crate) fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// The value to show again (ignored for passwords).
    pub(crate) fn value(mut self, value: &str) -> Self {
        if self.kind != "password" {
            self.value = value.trim().to_string();
        }
        self
    }
}

/// A form's fields and errors, in the order shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Form {
    fields: Vec<Field>,
    form_error: Option<String>,
}

impl Form {
    pub(crate) fn new(fields: Vec<Field>) -> Self {
        Self {
            fields,
            form_error: None,
        }
    }

    /// Puts an error next to a field (the first one set wins).
    pub(crate) fn error(&mut self, id: &str, message: impl Into<String>) {
        if let Some(field) = self.fields.iter_mut().find(|f| f.id == id) {
            if field.error.is_none() {
                field.error = Some(message.into());
            }
        }
    }

    /// An error of the whole form (`#form-error`).
    pub(crate) fn form_error(&mut self, message: impl Into<String>) {
        self.form_error = Some(message.into());
    }

    /// Marks every empty field as missing, with its message.
    pub(crate) fn require(&mut self, values: &[(&str, &str, &str)]) {
        for (id, value, message) in values {
            if value.trim().is_empty() {
                self.error(id, *message);
            }
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.form_error.is_some() || self.fields.iter().any(|f| f.error.is_some())
    }

    /// The fields ready to render: `aria-describedby` and the focus on the
    /// first invalid one.
    fn finish(mut self) -> (Vec<Field>, Option<String>) {
        let mut focused = false;
        for field in &mut self.fields {
            let mut described = Vec::new();
            if field.hint.is_some() {
                described.push(format!("{}-hint", field.id));
            }
            if field.error.is_some() {
                described.push(format!("{}-error", field.id));
                if !focused {
                    field.autofocus = true;
                    focused = true;
                }
            }
            field.described_by = (!described.is_empty()).then(|| described.join(" "));
        }
        (self.fields, self.form_error)
    }
}

/// What every page's template gets.
#[derive(Serialize)]
struct BaseContext {
    product: &'static str,
    title: String,
    csrf: String,
    signed_in: bool,
    status: Option<Status>,
    form_error: Option<String>,
    has_errors: bool,
    fields: Vec<Field>,
}

/// A page to render.
pub(crate) struct Page {
    template: &'static str,
    title: String,
    status_code: StatusCode,
    csrf: Option<csrf::CsrfToken>,
    signed_in: bool,
    status: Option<Status>,
    form: Form,
    extra: Value,
    cookies: Vec<String>,
}

impl Page {
    pub(crate) fn new(template: &'static str, title: impl Into<String>) -> Self {
        Self {
            template,
            title: title.into(),
            status_code: StatusCode::OK,
            csrf: None,
            signed_in: false,
            status: None,
            form: Form::default(),
            extra: Value::UNDEFINED,
            cookies: Vec::new(),
        }
    }

    pub(crate) fn code(mut self, status: StatusCode) -> Self {
        self.status_code = status;
        self
    }

    /// The CSRF token of the page's forms (its cookie is set when new).
    pub(crate) fn csrf(mut self, token: csrf::CsrfToken) -> Self {
        self.csrf = Some(token);
        self
    }

    /// Shows the logout button.
    pub(crate) fn signed_in(mut self) -> Self {
        self.signed_in = true;
        self
    }

    pub(crate) fn status(mut self, status: Option<Status>) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// The template's own variables.
    pub(crate) fn with(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }

    pub(crate) fn cookie(mut self, set_cookie: String) -> Self {
        self.cookies.push(set_cookie);
        self
    }

    pub(crate) fn render(self) -> Response {
        let has_errors = self.form.has_errors();
        let (fields, form_error) = self.form.finish();
        let mut cookies = self.cookies;
        let csrf = match self.csrf {
            Some(token) => {
                if let Some(set) = token.set_cookie {
                    cookies.push(set);
                }
                token.value
            }
            None => String::new(),
        };
        let base = BaseContext {
            product: PRODUCT,
            title: self.title,
            csrf,
            signed_in: self.signed_in,
            status: self.status,
            form_error,
            has_errors,
            fields,
        };
        let context = if self.extra.is_undefined() {
            Value::from(Serde(&base))
        } else {
            minijinja::context! { ..self.extra, ..Value::from(Serde(&base)) }
        };
        let html = match ENVIRONMENT
            .get_template(self.template)
            .and_then(|t| t.render(context))
        {
            Ok(html) => html,
            Err(e) => {
                tracing::error!(template = self.template, error = %e, "page template failed");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "Something went wrong. Please try again later.",
                )
                    .into_response();
            }
        };
        let mut response = (
            self.status_code,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response();
        for cookie in cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// A page that only says something (errors, the CSRF failure).
pub(crate) fn message_page(status: StatusCode, title: &str, paragraphs: &[&str]) -> Page {
    Page::new("message.html", title)
        .code(status)
        .with(minijinja::context! { paragraphs => Value::from_iter(paragraphs.iter().map(|p| p.to_string())) })
}

/// A redirect after a form (303, so the browser GETs the target).
pub(crate) fn see_other(to: &str, cookies: Vec<String>) -> Response {
    let mut response =
        (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Why a page could not be shown.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Somewhere else first (no session: the login; a temporary password:
    /// change it), with cookies to set (an ended session's is cleared).
    Redirect {
        to: &'static str,
        cookies: Vec<String>,
    },
    /// The CSRF check failed.
    Csrf,
    /// The form could not be read.
    BadForm(StatusCode),
    /// Anything else: the API's error, as a page.
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

impl From<access_store::StoreError> for PageError {
    fn from(err: access_store::StoreError) -> Self {
        Self::Api(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::Redirect { to, cookies } => see_other(to, cookies),
            Self::Csrf => message_page(
                StatusCode::FORBIDDEN,
                "The form expired",
                &["The form expired, reload the page and try again."],
            )
            .render(),
            Self::BadForm(status) => message_page(
                status,
                "The form could not be read",
                &["Reload the page and try again."],
            )
            .render(),
            Self::Api(err) => error_page(err).render(),
        }
    }
}

/// An unexpected API error as a page (the details are in the logs).
pub(crate) fn error_page(err: ApiError) -> Page {
    match err.status {
        StatusCode::SERVICE_UNAVAILABLE => message_page(
            err.status,
            "Temporarily unavailable",
            &["The service is temporarily unavailable. Please try again in a moment."],
        ),
        StatusCode::TOO_MANY_REQUESTS => {
            let text = too_many_attempts(err.retry_after);
            message_page(err.status, "Too many attempts", &[text.as_str()])
        }
        status if status.is_server_error() => message_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            &["Something went wrong on our side. Please try again later."],
        ),
        status => {
            tracing::info!(code = err.code, "page request refused");
            message_page(
                status,
                "This did not work",
                &["The request could not be completed. Please go back and try again."],
            )
        }
    }
}

/// The message of `too_many_attempts`, with the wait.
pub(crate) fn too_many_attempts(retry_after: Option<u64>) -> String {
    let seconds = retry_after.unwrap_or(60).max(1);
    let wait = if seconds < 60 {
        format!("{seconds} second{}", if seconds == 1 { "" } else { "s" })
    } else {
        let minutes = seconds.div_ceil(60);
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    };
    format!("Too many attempts. Please wait {wait} and try again.")
}

/// Adds `Retry-After` to a throttled answer.
pub(crate) fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(seconds) = retry_after {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// The notices a redirect may ask a page to show (`?notice=…`): fixed
/// texts, never from the request.
pub(crate) fn notice(name: Option<&str>) -> Option<Status> {
    let notices: BTreeMap<&str, Status> = BTreeMap::from([
        ("signed_out", Status::success("You have logged out.", None)),
        (
            "password_set",
            Status::success(
                "Your password is set.",
                Some("You can now log in with your email address and the new password.".into()),
            ),
        ),
        (
            "password_changed",
            Status::success("Your password has been changed.", None),
        ),
        (
            "session_ended",
            Status::info("Your session has ended. Please log in again."),
        ),
    ]);
    notices.get(name?).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(ENVIRONMENT.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_first_invalid_field_gets_the_focus_and_its_error_is_described() {
        let mut form = Form::new(vec![
            Field::password("current_password", "Current password", "current-password"),
            Field::email("new_email", "New email address", "email").hint("hint"),
            Field::email("new_email_confirm", "Confirm new email", "email"),
        ]);
        form.error("new_email", "first");
        form.error("new_email_confirm", "second");
        form.error("new_email", "ignored");
        let (fields, _) = form.finish();
        assert!(!fields[0].autofocus && fields[0].described_by.is_none());
        assert!(fields[1].autofocus);
        assert_eq!(fields[1].error.as_deref(), Some("first"));
        assert_eq!(
            fields[1].described_by.as_deref(),
            Some("new_email-hint new_email-error")
        );
        assert!(!fields[2].autofocus);
    }

    #[test]
    fn waits_are_said_in_words() {
        assert_eq!(
            too_many_attempts(Some(1)),
            "Too many attempts. Please wait 1 second and try again."
        );
        assert_eq!(
            too_many_attempts(Some(61)),
            "Too many attempts. Please wait 2 minutes and try again."
        );
    }

    #[tokio::test]
    async fn rendered_values_are_escaped_and_errors_are_next_to_their_field() {
        let mut form = Form::new(vec![
            Field::email("email", "Email address", "username")
                .value("<script>alert(1)</script>@example.com"),
            Field::password("password", "Password", "current-password").value("secret-value"),
        ]);
        form.error("email", "bad \"quote\"");
        let response = Page::new("login.html", "Log in")
            .code(StatusCode::UNPROCESSABLE_ENTITY)
            .form(form)
            .render();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let html = String::from_utf8_lossy(&body);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("bad &quot;quote&quot;"), "{html}");
        assert!(!html.contains("secret-value"), "{html}");
        assert!(html.contains(r#"id="email-error""#), "{html}");
        assert!(html.contains(r#"aria-describedby="email-error""#), "{html}");
        assert!(html.contains(r#"aria-invalid="true""#), "{html}");
        assert!(html.contains("autofocus"), "{html}");
        assert!(html.contains("<title>Error: Log in"), "{html}");
    }
}
