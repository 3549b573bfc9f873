//! Customer sessions: opened by a login or a password change, found by
//! their token (a Bearer token on `/v1/self/*`, or the pages' cookie),
//! ended by a logout. Only the SHA-256 digest of a token is stored. A
//! session ends when the customer's login changes (email, password,
//! access): see `Customer::login_epoch`.

use access_domain::{Actor, Customer, CustomerId, TokenGenerator};
use access_security::OsRandomTokens;
use access_store::prelude::*;
use access_store::{Loaded, SessionRecord, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::digest;
use crate::state::AppState;

/// A new customer session.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token for `/v1/self/*`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub must_change_password: bool,
}

/// A customer with a valid session (possibly with a temporary password).
pub struct CustomerSession {
    pub customer_id: CustomerId,
    pub token_digest: String,
    pub loaded: Loaded,
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

/// Opens a session for a customer; the token is returned once.
pub async fn open(
    state: &AppState,
    customer: &Customer,
    id: CustomerId,
) -> Result<SessionResponse, StoreError> {
    let token = OsRandomTokens.generate();
    let now = state.now();
    let expires_at = now + state.session_ttl();
    state
        .store()
        .create_session(&SessionRecord {
            token_digest: hex::encode(digest(token.expose())),
            customer_id: id,
            login_epoch: customer.login_epoch(),
            created_at: now,
            expires_at,
        })
        .await?;
    Ok(SessionResponse {
        token: token.expose().to_string(),
        expires_at,
        must_change_password: customer.must_change_password(),
    })
}

/// The customer session of a token, when it is valid now: not expired,
/// and opened under the customer's current login. An expired or ended
/// session is deleted and gives `None`.
pub async fn of_token(
    state: &AppState,
    token: &str,
) -> Result<Option<CustomerSession>, StoreError> {
    let token_digest = hex::encode(digest(token));
    let Some(session) = state.store().find_session(&token_digest).await? else {
        return Ok(None);
    };
    if session.expires_at <= state.now() {
        state.store().delete_session(&token_digest).await?;
        return Ok(None);
    }
    let loaded = state.store().load(session.customer_id).await?;
    let current =
        loaded.customer.has_access() && loaded.customer.login_epoch() == session.login_epoch;
    if !current {
        // The login changed since the session opened: it has ended.
        state.store().delete_session(&token_digest).await?;
        return Ok(None);
    }
    Ok(Some(CustomerSession {
        customer_id: session.customer_id,
        token_digest,
        loaded,
    }))
}

/// Ends the session of a token (log out).
pub async fn end(state: &AppState, token: &str) -> Result<(), StoreError> {
    end_digest(state, &hex::encode(digest(token))).await
}

/// Ends the session with this token digest.
pub async fn end_digest(state: &AppState, token_digest: &str) -> Result<(), StoreError> {
    state.store().delete_session(token_digest).await
}
