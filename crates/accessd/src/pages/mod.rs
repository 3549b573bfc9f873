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
//! | `GET /login/second-factor`, `POST …` | the login's second step: the code ([`second_factor`] sets it up) |
//! | `GET /account/second-factor`, `POST …/begin`, `POST …/confirm` | set up an authenticator app (TOTP) |
//! | `GET`/`POST /account/second-factor/recovery-codes`, `…/remove` | new recovery codes; turn it off |
//! | `GET /assets/site.css` | the stylesheet |
//! | `/audit/…` | the auditors' console ([`console`]) |
//!
//! The logic is the API's: logins, sessions, email and password changes
//! and links run through the use cases of [`crate::usecase`] (the same
//! ones the JSON endpoints of [`crate::http::self_service`] call). The
//! pages only parse forms and turn the use cases' typed errors
//! ([`crate::usecase::SelfServiceError`]) into messages next to the
//! fields.
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
//! | account | `#login-email`, `#pending-email` (while a change waits), `#pending-email-expired` (a change whose link expired), `#change-email-link`, `#change-password-link`, `#second-factor-link` |
//! | login, second step | `#second-factor-intro`, `#code` (`one-time-code`), `#submit` |
//! | second factor | off: `#second-factor-off`, `#second-factor-required`, `#submit`; setting up: `#totp-qr` (an inline SVG), `#totp-secret`, `#code`, `#submit`; on: `#second-factor-on`, `#recovery-codes-left`, `#new-recovery-codes-link`, `#remove-second-factor-link`; `#account-link` |
//! | recovery codes (shown once) | `#recovery-codes` (one `li` each), `#account-link` |
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
//!
//! # Where things are
//!
//! Here the routes; `templates`: the templates and the [`Page`] that
//! renders one; `forms`: fields, their errors and the notices; `errors`:
//! [`PageError`] and the error pages; one file per group of pages
//! (`login`, `account`, `links`), and `session` and [`csrf`].

mod account;
mod console;
pub(crate) mod csrf;
mod errors;
mod forms;
mod links;
mod login;
mod second_factor;
mod session;
mod templates;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub(crate) use errors::{refused, throttled_form, too_many_attempts, with_retry_after, PageError};
pub(crate) use forms::{notice, Field, Form, Status};
pub(crate) use templates::{message_page, see_other, Page};

/// The pages' Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../assets/site.css");

/// The pages' routes (merged into [`crate::http::router`], outside the
/// OpenAPI document).
pub fn router() -> Router<AppState> {
    // Each page: its path, and the form it shows (GET) and takes (POST).
    let pages: [(&str, axum::routing::MethodRouter<AppState>); 14] = [
        ("/login", get(login::show).post(login::submit)),
        (
            session::SECOND_STEP,
            get(login::second_step).post(login::second_step_submit),
        ),
        ("/logout", post(login::logout)),
        ("/account", get(account::home)),
        (
            "/account/change-email",
            get(account::change_email_form).post(account::change_email),
        ),
        (
            "/account/change-password",
            get(account::change_password_form).post(account::change_password),
        ),
        (
            "/setup-password",
            get(links::setup_password_form).post(links::setup_password),
        ),
        (
            "/confirm-email",
            get(links::confirm_email_form).post(links::confirm_email),
        ),
        ("/account/second-factor", get(second_factor::home)),
        ("/account/second-factor/begin", post(second_factor::begin)),
        (
            "/account/second-factor/confirm",
            post(second_factor::confirm),
        ),
        (
            "/account/second-factor/recovery-codes",
            get(second_factor::recovery_codes_form).post(second_factor::recovery_codes),
        ),
        (
            "/account/second-factor/remove",
            get(second_factor::remove_form_page).post(second_factor::remove),
        ),
        ("/assets/site.css", get(stylesheet)),
    ];
    pages
        .into_iter()
        .chain(console::routes())
        .fold(Router::new(), |router, (path, page)| {
            router.route(path, page)
        })
        .layer(axum::middleware::map_response(page_security_headers))
}

/// The pages' security headers (over the API's defaults), and
/// `Cache-Control: no-store` unless a page says otherwise.
async fn page_security_headers(mut response: Response) -> Response {
    let strict = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    crate::http::set_headers(&mut response, strict, true);
    crate::http::set_headers(&mut response, [(header::CACHE_CONTROL, "no-store")], false);
    response
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
