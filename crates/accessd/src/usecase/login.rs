//! Logging in: an email and a password give the customer whose login it
//! is (then [`super::session::open`] opens a session). Throttled per
//! account and client address; the check is counted before the hash is
//! computed.

use access_store::prelude::*;
use std::net::IpAddr;

use access_domain::{Actor, CustomerCommand, CustomerId, EmailAddress, Secret, ServiceError};
use access_store::Loaded;

use super::command::{self, CommandRequest, Origin};
use super::error::SelfServiceError;
use crate::state::AppState;

/// Checks a login's email and password (for the API and the pages).
/// Known, unknown and malformed emails take the same path: the same
/// statements (`Store::load_login`) and one verification, against a
/// decoy hash made with the current parameters when there is no customer.
/// A wrong password is answered no sooner than
/// [`AppState::login_failure_floor`] after the check starts
/// (before the throttle): an imported hash dearer than the decoy (bcrypt cost 12 is
/// about 10 times the service's own) would otherwise take longer to refuse
/// and tell that the email is a customer's.
/// The customer whose login it is, or
/// [`SelfServiceError::InvalidCredentials`].
pub async fn check_login(
    state: &AppState,
    address: Option<IpAddr>,
    raw_email: &str,
    password: String,
    origin: &Origin,
) -> Result<(CustomerId, Loaded), SelfServiceError> {
    let started = tokio::time::Instant::now();
    let account = EmailAddress::parse(raw_email).map_or_else(
        |_| raw_email.trim().to_lowercase(),
        |e| e.normalized().to_string(),
    );
    // A login flood: with the hasher's queue full, refused before the
    // throttle's and the login's statements (the same for every email).
    if let Some(ServiceError::Overloaded {
        retry_after_secs, ..
    }) = state.hash_admission().saturated()
    {
        return Err(SelfServiceError::TooManyAttempts {
            retry_after: retry_after_secs,
        });
    }
    // One check per account at a time in this process (the same for
    // known and unknown emails): parallel wrong passwords for one email
    // would queue behind each other at the hasher, and the queue would
    // push a dear imported hash's answers past the floor below.
    let Ok(_one_at_a_time) = state
        .login_checks_in_flight()
        .hold(account.clone(), std::time::Duration::ZERO)
        .await
    else {
        return Err(SelfServiceError::TooManyAttempts { retry_after: 1 });
    };
    let reserved = state
        .throttle()
        .attempt(&account, address, state.now())
        .await?;
    let password = Secret::new(password);
    let checked = verify_login(state, &account, &password).await;
    match checked {
        Ok(Some((found, rehash))) => {
            if found.1.customer.has_second_factor() {
                // Half a login: the allowance is forgotten only once the
                // second factor's code is right too (wrong codes count
                // against it); this check is given back.
                state.throttle().undecided(&reserved, state.now()).await;
            } else {
                state.throttle().succeeded(&reserved).await;
            }
            if rehash {
                upgrade_password_hash(state, found.0, password, origin).await;
            }
            Ok(found)
        }
        Ok(None) => {
            tokio::time::sleep_until(started + state.login_failure_floor()).await;
            Err(SelfServiceError::InvalidCredentials)
        }
        Err(e) => {
            state.throttle().undecided(&reserved, state.now()).await;
            Err(e)
        }
    }
}

/// The customer with access whose login `account` is and whose password
/// `password` is (and whether its hash needs upgrading), or None.
async fn verify_login(
    state: &AppState,
    account: &str,
    password: &Secret,
) -> Result<Option<((CustomerId, Loaded), bool)>, SelfServiceError> {
    let found = state
        .store()
        .load_login(account)
        .await?
        .filter(|(_, l)| l.customer.has_access());
    let hash = found
        .as_ref()
        .and_then(|(_, l)| l.customer.password_hash().cloned())
        .unwrap_or_else(|| state.decoy_hash().clone());
    let services = state.services();
    let matches = services
        .hasher()
        .verify(password, &hash)
        .await
        .map_err(|e| match e {
            // A login flood: the hasher's queue is full. Answered like the
            // throttle (429 with Retry-After); the attempt is not counted.
            ServiceError::Overloaded {
                retry_after_secs, ..
            } => SelfServiceError::TooManyAttempts {
                retry_after: retry_after_secs,
            },
            ServiceError::Failed(e) => SelfServiceError::Internal(e),
        })?;
    Ok(found
        .filter(|(_, l)| matches && l.customer.has_password())
        .map(|found| (found, services.hasher().needs_rehash(&hash))))
}

/// After a successful login with a hash made under older parameters: the
/// password is hashed again with the current ones (`PasswordRehashed`, by
/// the system, audited). The login goes ahead if this fails (it is tried
/// again at the next login); the failure is logged without the password.
async fn upgrade_password_hash(
    state: &AppState,
    customer_id: CustomerId,
    password: Secret,
    origin: &Origin,
) {
    let request = CommandRequest::new(
        Actor::System {
            name: "login".to_string(),
        },
        customer_id,
        CustomerCommand::UpgradePasswordHash { password },
        origin.clone(),
    )
    .reason(Some(
        "password hash upgraded to the current parameters".to_string(),
    ));
    match command::execute(state, request).await {
        Ok(_) => tracing::info!(%customer_id, "password hash upgraded at login"),
        Err(err) => tracing::warn!(
            %customer_id,
            code = err.code(),
            "password hash not upgraded at login; tried again at the next one"
        ),
    }
}
