//! Why a page could not be shown, and the pages for errors: the API's
//! errors said in words, the wait after too many attempts.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::templates::{message_page, see_other, Page};
use crate::error::ApiError;

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
    /// The address's query could not be read (what was wrong).
    BadQuery(String),
    /// A refusal said in words.
    Message {
        status: StatusCode,
        title: &'static str,
        text: &'static str,
    },
    /// Anything else: the API's error, as a page.
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

impl From<crate::usecase::SelfServiceError> for PageError {
    fn from(err: crate::usecase::SelfServiceError) -> Self {
        Self::Api(err.into())
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
            Self::Message {
                status,
                title,
                text,
            } => message_page(status, title, &[text]).render(),
            Self::BadQuery(why) => message_page(
                StatusCode::BAD_REQUEST,
                "This address is not valid",
                &[
                    &why,
                    "Use the links and forms on the pages rather than editing the address.",
                ],
            )
            .render(),
            Self::Api(err) => {
                // 429 and 503 keep their `Retry-After` on the page too.
                let retry_after = err.retry_after;
                with_retry_after(error_page(err).render(), retry_after)
            }
        }
    }
}

/// The status and the wait (`Retry-After`) of a refusal shown on its
/// form: the API's, from the one translation of the use cases' errors.
pub(crate) fn refused(err: crate::usecase::SelfServiceError) -> (StatusCode, Option<u64>) {
    let api = ApiError::from(err);
    (api.status, api.retry_after)
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

/// A form shown again after too many attempts: 429, the wait said on the
/// form (`#form-error`) and in `Retry-After`.
pub(crate) fn throttled_form(
    mut form: super::Form,
    retry_after: u64,
    page: impl FnOnce(super::Form) -> Page,
) -> Response {
    form.form_error(too_many_attempts(Some(retry_after)));
    with_retry_after(
        page(form).code(StatusCode::TOO_MANY_REQUESTS).render(),
        Some(retry_after),
    )
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
#[cfg(test)]
mod tests {
    use super::*;

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
}
