//! [`Accounts`]: customer sessions, API keys the service created, and
//! lookup by email: small tables beside the events.

use access_domain::{CustomerId, EmailAddress};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::sql::{Query, Row};
use crate::{EventStore, Loaded, Store, StoreError};

/// A customer session as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_digest: String,
    pub customer_id: CustomerId,
    /// The customer's login epoch when the session opened.
    pub login_epoch: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Opened by a right password for a customer with a second factor: it
    /// waits for a code (then a full session replaces it) and serves
    /// nothing else.
    pub second_factor_pending: bool,
}

/// An API key the service created (only its digest is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApiKey {
    pub name: String,
    pub role: String,
    pub secret_digest: String,
    pub created_at: DateTime<Utc>,
}

fn parse_id(raw: String) -> Result<CustomerId, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Database(format!("a stored customer id `{raw}` is not a UUID")))
}

/// Sessions, API keys and lookups by email.
#[async_trait]
pub trait Accounts: Send + Sync {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    async fn find_session(&self, token_digest: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Deletes a session; true when it was there (of two callers ending
    /// one session at once, one gets true).
    async fn delete_session(&self, token_digest: &str) -> Result<bool, StoreError>;

    /// Ends every session of a customer.
    async fn delete_sessions_of(&self, customer_id: CustomerId) -> Result<(), StoreError>;

    /// Deletes sessions that expired before `now`.
    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every customer whose current login email is `email` (customers
    /// without access may share one).
    async fn customers_by_email(&self, email: &EmailAddress)
        -> Result<Vec<CustomerId>, StoreError>;

    /// The customer whose login `address` is (the holder of the address as
    /// the login of a customer with access), loaded. An unknown or
    /// malformed address runs the very same statements, for a customer
    /// that does not exist, so that both cost the same and a caller cannot
    /// tell them apart by time.
    async fn load_login(&self, address: &str) -> Result<Option<(CustomerId, Loaded)>, StoreError>;

    async fn api_keys(&self) -> Result<Vec<StoredApiKey>, StoreError>;

    /// Stores a key the service created. A name that exists is an error.
    async fn insert_api_key(&self, key: &StoredApiKey) -> Result<(), StoreError>;
}

impl Store {
    /// The customer ids `sql` selects for `key`.
    async fn ids(&self, sql: &str, key: String) -> Result<Vec<CustomerId>, StoreError> {
        let rows = self.db.read(&Query::new(sql).bind(key)).await?;
        rows.iter()
            .map(|r| parse_id(r.text("customer_id")?))
            .collect()
    }
}

fn session(digest: &str, row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        token_digest: digest.to_string(),
        customer_id: parse_id(row.text("customer_id")?)?,
        login_epoch: u64::try_from(row.int("login_epoch")?).unwrap_or_default(),
        created_at: row.datetime("created_at")?,
        expires_at: row.datetime("expires_at")?,
        second_factor_pending: row.bool("second_factor_pending")?,
    })
}

#[async_trait]
impl Accounts for Store {
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let q = Query::new(
            "INSERT INTO customer_sessions \
             (token_digest, customer_id, login_epoch, created_at, expires_at, second_factor_pending) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.token_digest)
        .bind(s.customer_id.to_string())
        .bind(crate::sql::Value::count(s.login_epoch))
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.second_factor_pending);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn find_session(&self, token_digest: &str) -> Result<Option<SessionRecord>, StoreError> {
        let q = Query::new(
            "SELECT customer_id, login_epoch, created_at, expires_at, second_factor_pending \
             FROM customer_sessions \
             WHERE token_digest = $1",
        )
        .bind(token_digest);
        let row = self.db.read_optional(&q).await?;
        row.map(|row| session(token_digest, &row)).transpose()
    }

    async fn delete_session(&self, token_digest: &str) -> Result<bool, StoreError> {
        let q =
            Query::new("DELETE FROM customer_sessions WHERE token_digest = $1").bind(token_digest);
        Ok(self.db.execute(&q).await? > 0)
    }

    async fn delete_sessions_of(&self, customer_id: CustomerId) -> Result<(), StoreError> {
        let q = Query::new("DELETE FROM customer_sessions WHERE customer_id = $1")
            .bind(customer_id.to_string());
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let q = Query::new("DELETE FROM customer_sessions WHERE expires_at < $1").bind(now);
        self.db.execute(&q).await?;
        Ok(())
    }

    async fn customers_by_email(
        &self,
        email: &EmailAddress,
    ) -> Result<Vec<CustomerId>, StoreError> {
        let key = self.keyring()?.email_key(email);
        self.ids(
            "SELECT customer_id FROM customer_emails WHERE email_key = $1 ORDER BY customer_id",
            key,
        )
        .await
    }

    async fn load_login(&self, address: &str) -> Result<Option<(CustomerId, Loaded)>, StoreError> {
        let key = self.keyring()?.email_key_text(address);
        let holder = self
            .ids(
                "SELECT customer_id FROM login_emails WHERE email_key = $1 AND kind = 'login'",
                key,
            )
            .await?
            .into_iter()
            .next();
        let loaded = self
            .load(holder.unwrap_or(CustomerId::from_uuid(Default::default())))
            .await?;
        Ok(holder.map(|id| (id, loaded)))
    }

    async fn api_keys(&self) -> Result<Vec<StoredApiKey>, StoreError> {
        let q =
            Query::new("SELECT name, role, secret_digest, created_at FROM api_keys ORDER BY name");
        let rows = self.db.read(&q).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredApiKey {
                    name: r.text("name")?,
                    role: r.text("role")?,
                    secret_digest: r.text("secret_digest")?,
                    created_at: r.datetime("created_at")?,
                })
            })
            .collect()
    }

    async fn insert_api_key(&self, key: &StoredApiKey) -> Result<(), StoreError> {
        let q = Query::new(
            "INSERT INTO api_keys (name, role, secret_digest, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.name)
        .bind(&key.role)
        .bind(&key.secret_digest)
        .bind(key.created_at);
        self.db.execute(&q).await?;
        Ok(())
    }
}
