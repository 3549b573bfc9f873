//! # accessd
//!
//! The access service over HTTP. A guided tour:
//! - [`config`]: every setting, as a flag and an environment variable.
//! - [`app`]: start-up (store, keys, hasher, mail, listener) and graceful
//!   shutdown.
//! - [`http`]: the routes; [`http::customers`] for upstream services and
//!   auditors, [`http::self_service`] for customers, [`http::health`] for
//!   operations; [`http::commands`] runs a command for a request
//!   (idempotency, `If-Match`, mail after the commit).
//! - [`auth`]: API keys and roles as types; customer sessions.
//! - [`error`]: the one HTTP error type.
//! - [`command_mail`], [`link_token`]: the emails a command calls for and the tokens in their links.
//! - [`pages`]: the customers' server-rendered pages behind those links
//!   (setup password, confirm email, login, account).
//! - [`metrics`], [`throttle`], [`openapi`].

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod command_mail;
pub mod config;
pub mod error;
pub mod http;
pub mod link_token;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod state;
pub mod throttle;

pub use app::{start, Running, StartupError};
pub use config::{Config, LogFormat};
