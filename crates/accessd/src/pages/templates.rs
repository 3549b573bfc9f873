//! The pages' templates (minijinja, compiled in) and the [`Page`] that
//! renders one with the context every page shares; plain responses
//! (a message, a redirect).

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::csrf;
use super::forms::{Field, Form, Status};

/// The product the portal is, as the mails name it.
const PRODUCT: &str = "Customer Center";

/// `(name, source)` of the templates in `templates/`, compiled in.
macro_rules! templates {
    ($($name:literal),+ $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $name)))),+]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "base.html",
    "heading.html",
    "macros.html",
    "login.html",
    "login_second_factor.html",
    "second_factor.html",
    "second_factor_form.html",
    "recovery_codes.html",
    "account.html",
    "change_email.html",
    "change_password.html",
    "setup_password.html",
    "confirm_email.html",
    "email_confirmed.html",
    "link_expired.html",
    "message.html",
    "audit_base.html",
    "audit_macros.html",
    "audit_login.html",
    "audit_home.html",
    "audit_customer.html",
    "audit_report.html",
    "audit_integrity.html",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(ENVIRONMENT.get_template(name).is_ok(), "{name}");
        }
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
