//! The pages' session: the token of a customer session (the same sessions
//! as the API's Bearer tokens) in the `access_session` cookie, checked by
//! [`crate::auth::session_of_token`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::PageError;
use crate::auth::{session_of_token, CustomerSession};
use crate::state::AppState;

/// The session cookie.
pub const COOKIE: &str = "access_session";

#[derive(Debug, Clone, Copy)]
pub(crate) enum SameSite {
    Lax,
    Strict,
}

/// The value of a request's cookie, if it has it (the first one of that
/// name).
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

fn secure(state: &AppState) -> &'static str {
    if state.mailer().public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// `Set-Cookie` for a cookie of the pages: `HttpOnly`, `Path=/`, `Secure`
/// when the public URL is https; it lasts as long as the browser session
/// (the server decides when a session ends).
pub(crate) fn set_cookie(state: &AppState, name: &str, value: &str, same_site: SameSite) -> String {
    let same_site = match same_site {
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
    };
    format!(
        "{name}={value}; HttpOnly; SameSite={same_site}; Path=/{}",
        secure(state)
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_session_cookie(state: &AppState) -> String {
    format!(
        "{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}",
        secure(state)
    )
}

/// `Set-Cookie` of a new session.
pub(crate) fn session_cookie(state: &AppState, token: &str) -> String {
    set_cookie(state, COOKIE, token, SameSite::Lax)
}

/// A customer logged in on the pages (possibly with a temporary password).
/// Without a valid session: a redirect to the login (an ended session's
/// cookie is cleared).
pub(crate) struct PageSession(pub CustomerSession);

impl PageSession {
    /// The customer's login email.
    pub(crate) fn login_email(&self) -> String {
        self.0
            .loaded
            .customer
            .email()
            .map(|e| e.as_str().to_string())
            .unwrap_or_default()
    }
}

impl FromRequestParts<AppState> for PageSession {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(PageError::Redirect {
                to: "/login",
                cookies: Vec::new(),
            });
        };
        match session_of_token(state, token).await? {
            Some(session) => Ok(Self(session)),
            None => Err(PageError::Redirect {
                to: "/login?notice=session_ended",
                cookies: vec![clear_session_cookie(state)],
            }),
        }
    }
}

/// A customer logged in without a temporary password; one with a
/// temporary password is sent to change it first.
pub(crate) struct ActivePageSession(pub PageSession);

impl FromRequestParts<AppState> for ActivePageSession {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = PageSession::from_request_parts(parts, state).await?;
        if session.0.loaded.customer.must_change_password() {
            return Err(PageError::Redirect {
                to: "/account/change-password",
                cookies: Vec::new(),
            });
        }
        Ok(Self(session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_found_by_name_in_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("other=1; access_csrf=abc"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("access_session=tok"),
        );
        assert_eq!(cookie(&headers, "access_csrf"), Some("abc"));
        assert_eq!(cookie(&headers, "access_session"), Some("tok"));
        assert_eq!(cookie(&headers, "access"), None);
        assert_eq!(cookie(&HeaderMap::new(), "access_session"), None);
    }
}
