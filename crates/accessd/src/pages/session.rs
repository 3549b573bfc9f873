//! The pages' session: the token of a customer session (the same sessions
//! as the API's Bearer tokens) in the `access_session` cookie, checked by
//! [`crate::usecase::session::of_token`]. Cookies are read and written with the
//! `cookie` crate (re-exported by axum-extra), not by hand.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum_extra::extract::cookie::Cookie;

use super::PageError;
use crate::http::extract::SessionOf;
use crate::state::AppState;
use crate::usecase::session::{of_token, CustomerSession};

/// The session cookie.
pub const COOKIE: &str = "access_session";

pub(crate) use axum_extra::extract::cookie::SameSite;

/// The value of a request's cookie, if it has a non-empty one (surrounding
/// double quotes removed). Of several with that name, the first: browsers
/// send the most specific (longest path, oldest) first, and a cookie
/// tossed in later from a sibling domain must not override ours.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_string())
        .filter(|v| !v.is_empty())
}

/// A cookie of the pages: `HttpOnly`, `Path=/`, `Secure` when the public
/// URL is https; it lasts as long as the browser session (the server
/// decides when a session ends).
fn page_cookie(state: &AppState, name: &str, value: &str, same_site: SameSite) -> Cookie<'static> {
    Cookie::build((name.to_string(), value.to_string()))
        .http_only(true)
        .same_site(same_site)
        .path("/")
        .secure(state.mail().public_url().starts_with("https://"))
        .build()
}

/// `Set-Cookie` for a cookie of the pages (see [`page_cookie`]).
pub(crate) fn set_cookie(state: &AppState, name: &str, value: &str, same_site: SameSite) -> String {
    page_cookie(state, name, value, same_site).to_string()
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_session_cookie(state: &AppState) -> String {
    let mut cookie = page_cookie(state, COOKIE, "", SameSite::Lax);
    cookie.make_removal();
    cookie.to_string()
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
        self.0.login_email()
    }
}

/// Where a page without a session sends the browser: its login page, and
/// the same with the "session ended" notice when the cookie's session has
/// ended (that cookie is then cleared by `clear`).
pub(crate) struct SignIn {
    pub login: &'static str,
    pub ended: &'static str,
    pub clear: String,
}

/// The session of the cookie `name`, found by `lookup`; without a cookie
/// or with an ended session, a redirect to the sign-in.
pub(crate) async fn from_cookie<T, E, F>(
    parts: &Parts,
    name: &str,
    sign_in: SignIn,
    lookup: impl FnOnce(String) -> F,
) -> Result<T, PageError>
where
    F: std::future::Future<Output = Result<Option<T>, E>>,
    PageError: From<E>,
{
    let Some(token) = cookie(&parts.headers, name) else {
        return Err(PageError::Redirect {
            to: sign_in.login,
            cookies: Vec::new(),
        });
    };
    lookup(token).await?.ok_or(PageError::Redirect {
        to: sign_in.ended,
        cookies: vec![sign_in.clear],
    })
}

impl FromRequestParts<AppState> for PageSession {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sign_in = SignIn {
            login: "/login",
            ended: "/login?notice=session_ended",
            clear: clear_session_cookie(state),
        };
        let session: CustomerSession = from_cookie(parts, COOKIE, sign_in, |token| async move {
            of_token(state, &token).await
        })
        .await?;
        if session.second_factor_pending {
            // The password was right; the code is still to come.
            return Err(PageError::Redirect {
                to: SECOND_STEP,
                cookies: Vec::new(),
            });
        }
        Ok(Self(session))
    }
}

/// The login's second step: the code of the second factor.
pub(crate) const SECOND_STEP: &str = "/login/second-factor";

/// A session the password opened that waits for the second factor's code
/// (the second step's page); any other session or none: the login.
pub(crate) struct WaitingSession(pub CustomerSession);

impl FromRequestParts<AppState> for WaitingSession {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sign_in = SignIn {
            login: "/login",
            ended: "/login?notice=session_ended",
            clear: clear_session_cookie(state),
        };
        let session: CustomerSession = from_cookie(parts, COOKIE, sign_in, |token| async move {
            of_token(state, &token).await
        })
        .await?;
        if !session.second_factor_pending {
            return Err(PageError::Redirect {
                to: "/account",
                cookies: Vec::new(),
            });
        }
        Ok(Self(session))
    }
}

/// A customer with a temporary password is sent to change it first.
impl SessionOf for PageSession {
    fn session(&self) -> &CustomerSession {
        &self.0
    }
    fn must_change_password() -> PageError {
        PageError::Redirect {
            to: "/account/change-password",
            cookies: Vec::new(),
        }
    }
    fn second_factor_enrollment_required() -> PageError {
        PageError::Redirect {
            to: "/account/second-factor",
            cookies: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn cookies_are_found_by_name_in_every_cookie_header() {
        let map = headers(&[
            ("cookie", "other=1; access_csrf=abc"),
            ("cookie", "access_session=tok"),
        ]);
        assert_eq!(cookie(&map, "access_csrf").as_deref(), Some("abc"));
        assert_eq!(cookie(&map, "access_session").as_deref(), Some("tok"));
        assert_eq!(cookie(&map, "access"), None);
        assert_eq!(cookie(&HeaderMap::new(), "access_session"), None);
        let quoted = headers(&[("cookie", "access_session=\"tok\"; empty=")]);
        assert_eq!(cookie(&quoted, "access_session").as_deref(), Some("tok"));
        assert_eq!(cookie(&quoted, "empty"), None);
    }

    #[test]
    fn of_two_cookies_with_one_name_the_first_counts() {
        let map = headers(&[("cookie", "access_csrf=ours; access_csrf=tossed")]);
        assert_eq!(cookie(&map, "access_csrf").as_deref(), Some("ours"));
    }
}
