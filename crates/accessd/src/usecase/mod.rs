//! The application layer: what the service does for a request, whoever
//! asked (a JSON endpoint under [`crate::http`] or a page under
//! [`crate::pages`]). The adapters parse their input, call a use case and
//! translate its typed result into JSON or HTML; the use cases know
//! nothing of requests, forms or templates.
//!
//! - [`command`]: run a command ([`command::execute`]) with its
//!   [`command::Origin`] (idempotency key, `If-Match`), the outbox and the
//!   metrics; a replay answers the stored [`reply::Reply`], made by the
//!   same function as the live one ([`reply::ReplyShape::reply`]).
//! - [`login`]: check an email and a password (throttled, the same path
//!   for known and unknown emails, the hash upgraded when it is old).
//! - [`session`]: open, find and end customer sessions.
//! - [`account`]: the customer's own commands (email change, password
//!   change).
//! - [`second_factor`]: the TOTP second factor: the code at login,
//!   enrolling an app, recovery codes, removal.
//! - [`links`]: use a link from an email (set a password, confirm an
//!   email) or check that it is live.
//! - [`console`]: the auditors' console: sign-in with an API key,
//!   console sessions, integrity checks in the background.
//! - [`error`]: [`CommandError`] and [`SelfServiceError`]; a page matches
//!   on their variants, `http/refusals.rs` turns them into the API's codes
//!   and statuses.
//!
//! A new endpoint or page: its use case goes here (in the file of its
//! group, or a new one), its parsing and answer in the adapter.

pub mod account;
pub mod command;
pub mod console;
pub mod error;
pub mod links;
pub mod login;
pub mod reply;
pub mod second_factor;
pub mod session;

pub use error::{CommandError, SelfServiceError};
