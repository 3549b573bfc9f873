//! CSRF protection of the pages' forms.
//!
//! - A double-submit token: 128 random bits in the `access_csrf` cookie
//!   (`HttpOnly; SameSite=Strict`), repeated in every form's hidden
//!   `csrf_token` field; a POST's field must equal its cookie (compared in
//!   constant time). Another site can make the browser send the cookie (not
//!   with `SameSite=Strict`, and older browsers aside) but cannot read it to
//!   fill the field.
//! - A POST whose `Origin` names another origin than the public URL's is
//!   refused, as is one that the browser marks as cross-site
//!   (`Sec-Fetch-Site`). `Origin: null` counts as no `Origin`: browsers send
//!   it for same-origin forms on pages with `Referrer-Policy: no-referrer`,
//!   which ours have; the token still decides.
//!
//! A failed check is a 403 page: "the form expired, reload the page".

use access_domain::TokenGenerator;
use access_security::OsRandomTokens;
use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::session::{cookie, set_cookie, SameSite};
use super::PageError;
use crate::state::AppState;

/// The cookie of the double-submit token.
pub const COOKIE: &str = "access_csrf";

/// Hex characters of a token (128 bits).
const TOKEN_HEX_LEN: usize = 32;

/// The CSRF token of a page's forms.
#[derive(Debug, Clone)]
pub(crate) struct CsrfToken {
    pub value: String,
    /// The `Set-Cookie` value when the token is new.
    pub set_cookie: Option<String>,
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_HEX_LEN && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new token: 128 bits from the operating system's RNG.
fn new_token() -> String {
    OsRandomTokens
        .generate()
        .expose()
        .chars()
        .take(TOKEN_HEX_LEN)
        .collect()
}

impl CsrfToken {
    /// The browser's token, or a new one to set.
    pub(crate) fn of(state: &AppState, headers: &HeaderMap) -> Self {
        match cookie(headers, COOKIE).filter(|t| well_formed(t)) {
            Some(value) => Self {
                value,
                set_cookie: None,
            },
            None => {
                let value = new_token();
                Self {
                    set_cookie: Some(set_cookie(state, COOKIE, &value, SameSite::Strict)),
                    value,
                }
            }
        }
    }
}

impl FromRequestParts<AppState> for CsrfToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(state, &parts.headers))
    }
}

/// `scheme://host[:port]` of a URL, lower-cased, without a default port.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let authority = match scheme.as_str() {
        "https" => authority.strip_suffix(":443").unwrap_or(&authority),
        "http" => authority.strip_suffix(":80").unwrap_or(&authority),
        _ => &authority,
    };
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Whether a POST may come from this page's origin, by its headers.
pub(crate) fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok("null")) => true,
        Some(Ok(origin)) => {
            origin_of(origin).is_some() && origin_of(origin) == origin_of(public_url)
        }
        Some(Err(_)) => false,
    }
}

/// A form's fields and the CSRF token every form carries.
#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    value: T,
}

/// A POSTed form (`application/x-www-form-urlencoded`) that passed the
/// CSRF checks, with the token to put in the form shown again.
pub(crate) struct PageForm<T> {
    pub value: T,
    pub csrf: CsrfToken,
}

impl<T> FromRequest<AppState> for PageForm<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !same_origin(req.headers(), state.mail().public_url()) {
            tracing::info!("form refused: cross-origin POST");
            return Err(PageError::Csrf);
        }
        let Some(expected) = cookie(req.headers(), COOKIE).filter(|t| well_formed(t)) else {
            tracing::info!("form refused: no CSRF cookie");
            return Err(PageError::Csrf);
        };
        let Form(form) = Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(|rejection| PageError::BadForm(rejection.status()))?;
        let WithCsrf { csrf_token, value } = form;
        let presented = csrf_token.as_bytes();
        if !bool::from(presented.ct_eq(expected.as_bytes())) {
            tracing::info!("form refused: CSRF token differs from its cookie");
            return Err(PageError::Csrf);
        }
        Ok(Self {
            value,
            csrf: CsrfToken {
                value: expected,
                set_cookie: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;
    use axum::http::HeaderValue;

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        let public = "https://portal.example.com/base";
        assert!(same_origin(&headers(&[]), public));
        assert!(same_origin(
            &headers(&[("origin", "https://portal.example.com")]),
            public
        ));
        assert!(same_origin(
            &headers(&[("origin", "https://PORTAL.example.com:443")]),
            public
        ));
        assert!(same_origin(&headers(&[("origin", "null")]), public));
        for other in [
            "https://evil.example",
            "http://portal.example.com",
            "https://portal.example.com:8443",
            "https://portal.example.com.evil.example",
            "garbage",
        ] {
            let map = {
                let mut m = HeaderMap::new();
                m.insert(
                    "origin",
                    HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static("x")),
                );
                m
            };
            assert!(!same_origin(&map, public), "{other}");
        }
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            public
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "same-site")]),
            public
        ));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin"), ("origin", "null")]),
            public
        ));
    }

    #[test]
    fn tokens_are_128_bits_of_hex() {
        let a = new_token();
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, new_token());
        assert!(!well_formed("short"));
        assert!(!well_formed(&"z".repeat(TOKEN_HEX_LEN)));
    }
}
