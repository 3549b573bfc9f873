//! # access-domain
//!
//! The heart of the access service: the [`Customer`](aggregate::Customer)
//! aggregate and the rules of the Customer Center notice.
//!
//! A guided tour:
//! - [`values`]: value types that can only be built valid (`EmailAddress`,
//!   `Password`, `CustomerId`, …).
//! - [`commands`]: what callers ask for; [`events`]: what happened.
//! - [`aggregate`]: the rules, one `decide` function, and `apply`.
//! - [`error`]: one error per broken rule, each with a stable code.
//! - [`services`]: the traits for hashing, tokens and time (no I/O here),
//!   and fakes for tests.
//! - [`metadata`]: the actor, request id and reason on every event.
//! - [`upcasting`]: older event versions into the current shape.

pub mod aggregate;
pub mod commands;
pub mod error;
pub mod events;
pub mod metadata;
pub mod services;
pub mod upcasting;
pub mod values;

pub use aggregate::{
    Customer, Decision, ImportRecord, LinkStatus, PendingEmailChange, ReservationKind, SecondFactor,
};
pub use commands::{Credential, CustomerCommand, ImportCustomer};
pub use error::CustomerError;
pub use events::{CustomerEvent, EventKind, PasswordClearedReason, Personal, SetupLink};
pub use metadata::{Actor, ApiRole, CommandMetadata};
pub use services::{
    Clock, CustomerServices, IssuedToken, LinkLifetimes, PasswordHasher, ServiceError,
    TokenGenerator, TokenPurpose,
};
pub use values::{
    CustomerId, CustomerName, EmailAddress, ExternalId, ImportSource, Password, PasswordHash, Role,
    Secret, TokenDigest, TotpSecret, ValueError,
};

/// The message of the notice, for a given login email.
pub fn login_has_no_password_message(email: &EmailAddress) -> String {
    CustomerError::LoginHasNoPassword {
        email: email.clone(),
    }
    .to_string()
}
