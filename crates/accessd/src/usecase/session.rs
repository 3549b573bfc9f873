//! Customer sessions: opened by a login or a password change, found by
//! their token (a Bearer token on `/v1/self/*`, or the pages' cookie),
//! ended by a logout. Only the SHA-256 digest of a token is stored. A
//! session ends when the customer's login changes (email, password,
//! access): see `Customer::login_epoch`.

use access_domain::{Actor, Customer, CustomerId, TokenGenerator};
use access_security::OsRandomTokens;
use access_store::prelude::*;
use access_store::{Loaded, SessionRecord, StoreError};
use chrono::{DateTime, Duration, Utc};

use crate::auth::digest;
use crate::state::AppState;

pub use access_api_types::SessionResponse;

/// A customer with a valid session (possibly with a temporary password).
pub struct CustomerSession {
    pub customer_id: CustomerId,
    pub token_digest: String,
    pub loaded: Loaded,
    /// Opened by a right password, waiting for the second factor: it
    /// serves only the code's check and logging out.
    pub second_factor_pending: bool,
}

impl CustomerSession {
    pub fn actor(&self) -> Actor {
        Actor::Customer {
            customer_id: self.customer_id,
        }
    }

    /// The customer's login email (empty when it has none).
    pub fn login_email(&self) -> String {
        self.loaded
            .customer
            .email()
            .map(|e| e.as_str().to_string())
            .unwrap_or_default()
    }
}

/// How long a session opened by a right password waits for the second
/// factor's code.
pub const SECOND_FACTOR_WAIT_MINUTES: i64 = 5;

/// Opens a full session for a customer (after a password change, or
/// once the second factor's code was accepted); the token is returned
/// once.
pub async fn open(
    state: &AppState,
    customer: &Customer,
    id: CustomerId,
) -> Result<SessionResponse, StoreError> {
    open_in(
        state.store(),
        state.now(),
        state.session_ttl(),
        customer,
        id,
        false,
    )
    .await
}

/// Opens the session of a login with a right password: a full one, or,
/// for a customer with a second factor, one that waits
/// [`SECOND_FACTOR_WAIT_MINUTES`] for its code and serves nothing else.
pub async fn open_after_password(
    state: &AppState,
    customer: &Customer,
    id: CustomerId,
) -> Result<SessionResponse, StoreError> {
    if customer.has_second_factor() {
        let wait = Duration::minutes(SECOND_FACTOR_WAIT_MINUTES).min(state.session_ttl());
        open_in(state.store(), state.now(), wait, customer, id, true).await
    } else {
        open(state, customer, id).await
    }
}

/// [`open`] in `accounts` at `now`, for `ttl`; waiting for the second
/// factor when `second_factor_pending`.
pub async fn open_in(
    accounts: &(impl Accounts + ?Sized),
    now: DateTime<Utc>,
    ttl: Duration,
    customer: &Customer,
    id: CustomerId,
    second_factor_pending: bool,
) -> Result<SessionResponse, StoreError> {
    let token = OsRandomTokens.generate();
    let expires_at = now + ttl;
    accounts
        .create_session(&SessionRecord {
            token_digest: hex::encode(digest(token.expose())),
            customer_id: id,
            login_epoch: customer.login_epoch(),
            created_at: now,
            expires_at,
            second_factor_pending,
        })
        .await?;
    Ok(SessionResponse {
        token: token.expose().to_string(),
        expires_at,
        must_change_password: customer.must_change_password(),
        second_factor_required: second_factor_pending,
    })
}

/// The customer session of a token, when it is valid now: not expired,
/// and opened under the customer's current login. An expired or ended
/// session is deleted and gives `None`.
pub async fn of_token(
    state: &AppState,
    token: &str,
) -> Result<Option<CustomerSession>, StoreError> {
    of_token_in(state.store(), state.now(), token).await
}

/// [`of_token`] in `store` at `now`.
pub async fn of_token_in(
    store: &(impl Accounts + EventStore + ?Sized),
    now: DateTime<Utc>,
    token: &str,
) -> Result<Option<CustomerSession>, StoreError> {
    let token_digest = hex::encode(digest(token));
    let Some(session) = store.find_session(&token_digest).await? else {
        return Ok(None);
    };
    if session.expires_at <= now {
        store.delete_session(&token_digest).await?;
        return Ok(None);
    }
    let loaded = store.load(session.customer_id).await?;
    let current =
        loaded.customer.has_access() && loaded.customer.login_epoch() == session.login_epoch;
    if !current {
        // The login changed since the session opened: it has ended.
        store.delete_session(&token_digest).await?;
        return Ok(None);
    }
    Ok(Some(CustomerSession {
        customer_id: session.customer_id,
        token_digest,
        loaded,
        second_factor_pending: session.second_factor_pending,
    }))
}

/// Ends the session of a token (log out).
pub async fn end(state: &AppState, token: &str) -> Result<(), StoreError> {
    end_digest(state, &hex::encode(digest(token))).await
}

/// Ends the session with this token digest.
pub async fn end_digest(state: &AppState, token_digest: &str) -> Result<(), StoreError> {
    state.store().delete_session(token_digest).await.map(|_| ())
}

/// The session rules on the in-memory store: no database needed.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use access_domain::services::fakes::services_at;
    use access_domain::CommandMetadata;
    use access_domain::{Credential, CustomerCommand, EmailAddress, Password, Role, Secret};
    use access_store::testing::memory::InMemoryStore;
    use access_store::Append;

    use super::*;

    const PW: &str = "correct-Horse-battery-9";

    fn at(hour: u32) -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::hours(hour.into())
    }

    /// Decides `command` on the customer's stored state and appends it.
    async fn run(
        store: &InMemoryStore,
        id: CustomerId,
        command: CustomerCommand,
        now: DateTime<Utc>,
    ) {
        let loaded = store.load(id).await.unwrap();
        let decision = loaded
            .customer
            .decide(command, &services_at(now))
            .await
            .unwrap();
        let mut after = loaded.customer.clone();
        for event in &decision.events {
            cqrs_es::Aggregate::apply(&mut after, event.clone());
        }
        store
            .append(Append {
                customer_id: id,
                expected_version: loaded.version,
                events: &decision.events,
                metadata: &CommandMetadata::new(
                    access_domain::Actor::System {
                        name: "test".into(),
                    },
                    "req",
                ),
                before: &loaded.customer,
                after: &after,
                idempotency: None,
            })
            .await
            .unwrap();
    }

    fn set_password() -> CustomerCommand {
        CustomerCommand::SetPassword {
            password: Password::parse(PW, &[]).unwrap(),
            password_confirm: Secret::new(PW.to_string()),
            send_notification: false,
        }
    }

    /// A customer with access and a password, and a session opened at
    /// hour 1 for 8 hours.
    async fn customer_with_session(store: &InMemoryStore) -> (CustomerId, String) {
        let id = CustomerId::new_random();
        let register = CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: EmailAddress::parse("ann@example.com").unwrap(),
            name: None,
        };
        run(store, id, register, at(0)).await;
        let grant = CustomerCommand::GrantAccess {
            role: Role::default(),
            credential: Credential::ManualPassword {
                password: Password::parse(PW, &[]).unwrap(),
                password_confirm: Secret::new(PW.to_string()),
                send_notification: false,
            },
        };
        run(store, id, grant, at(0)).await;
        let customer = store.load(id).await.unwrap().customer;
        let opened = open_in(store, at(1), Duration::hours(8), &customer, id, false)
            .await
            .unwrap();
        (id, opened.token)
    }

    #[tokio::test]
    async fn a_session_is_found_by_its_token_until_it_expires() {
        let store = InMemoryStore::new();
        let (id, token) = customer_with_session(&store).await;
        let found = of_token_in(&store, at(8), &token).await.unwrap().unwrap();
        assert_eq!(found.customer_id, id);
        assert!(of_token_in(&store, at(1), "another-token")
            .await
            .unwrap()
            .is_none());

        // At its expiry it is refused, and deleted: earlier times no longer find it.
        assert!(of_token_in(&store, at(9), &token).await.unwrap().is_none());
        assert!(of_token_in(&store, at(2), &token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_session_ends_when_the_login_changes() {
        let store = InMemoryStore::new();
        let (id, token) = customer_with_session(&store).await;
        run(&store, id, set_password(), at(2)).await;
        assert!(of_token_in(&store, at(3), &token).await.unwrap().is_none());
        // A session opened after the change is valid.
        let customer = store.load(id).await.unwrap().customer;
        let fresh = open_in(&store, at(3), Duration::hours(8), &customer, id, false)
            .await
            .unwrap();
        assert!(of_token_in(&store, at(4), &fresh.token)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn a_session_ends_when_access_is_revoked() {
        let store = InMemoryStore::new();
        let (id, token) = customer_with_session(&store).await;
        run(
            &store,
            id,
            CustomerCommand::RevokeAccess { reason: None },
            at(2),
        )
        .await;
        assert!(of_token_in(&store, at(3), &token).await.unwrap().is_none());
        assert!(store
            .find_session(&hex::encode(digest(&token)))
            .await
            .unwrap()
            .is_none());
    }
}
