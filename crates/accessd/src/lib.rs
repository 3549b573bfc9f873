//! # accessd
//!
//! The access service over HTTP. A guided tour:
//! - [`config`]: every setting, as a flag and an environment variable.
//! - [`app`]: start-up (store, keys, hasher, mail, listener) and graceful
//!   shutdown.
//! - [`usecase`]: the application layer: run a command (idempotency,
//!   `If-Match`, the outbox), log in, sessions, the customer's own
//!   commands, the links; typed results and errors.
//! - [`http`]: the JSON adapter: routes; [`http::customers`] for upstream
//!   services and auditors, [`http::self_service`] for customers,
//!   [`http::health`] for operations; [`http::commands`] turns a request
//!   into a command's origin and a reply into a response.
//! - [`pages`]: the HTML adapter: the customers' server-rendered pages
//!   behind the links in their emails (setup password, confirm email,
//!   login, account).
//! - [`state`]: the shared state, above the parts it holds.
//! - [`auth`]: API keys and roles as types.
//! - [`error`]: the one HTTP error type.
//! - [`command_mail`], [`link_token`]: the emails a command calls for and the tokens in their links.
//! - [`feed`]: the change feed (long polls, server-sent events) and
//!   [`relay`], its NATS JetStream relay.
//! - [`metrics`], [`throttle`], [`keys_in_flight`], [`client_ip`], [`openapi`].

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod command_mail;
pub mod config;
pub mod error;
pub mod feed;
pub mod http;
pub mod keys_in_flight;
pub mod link_token;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod relay;
pub mod state;
pub mod throttle;
pub mod trace_context;
pub mod usecase;

pub use app::{start, Running, StartupError};
pub use config::{Config, LogFormat};

/// Helpers of the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use axum::http::{HeaderMap, HeaderValue};

    /// A header map with these `(name, value)` lines, in order (a name may
    /// come more than once).
    pub(crate) fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }
}
