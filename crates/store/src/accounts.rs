//! Customer sessions, API keys the service created, and lookup by email:
//! small tables beside the events, the same on both databases.

use access_domain::{CustomerId, EmailAddress};
use chrono::{DateTime, Utc};
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::{Store, StoreError};

/// A customer session as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_digest: String,
    pub customer_id: CustomerId,
    /// The customer's login epoch when the session opened.
    pub login_epoch: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
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

async fn insert_session<'e, DB, E>(executor: E, s: &SessionRecord) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "INSERT INTO customer_sessions (token_digest, customer_id, login_epoch, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(s.token_digest.clone())
    .bind(s.customer_id.to_string())
    .bind(i64::try_from(s.login_epoch).unwrap_or(i64::MAX))
    .bind(s.created_at)
    .bind(s.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

async fn find_session<'e, DB, E>(
    executor: E,
    digest: &str,
) -> Result<Option<SessionRecord>, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> DateTime<Utc>: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let row = sqlx::query::<DB>(
        "SELECT customer_id, login_epoch, created_at, expires_at FROM customer_sessions WHERE token_digest = $1",
    )
    .bind(digest.to_string())
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(SessionRecord {
        token_digest: digest.to_string(),
        customer_id: parse_id(row.try_get("customer_id")?)?,
        login_epoch: u64::try_from(row.try_get::<i64, _>("login_epoch")?).unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    }))
}

async fn run<'e, DB, E>(executor: E, sql: &str, args: &[String]) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql);
    for a in args {
        query = query.bind(a.clone());
    }
    query.execute(executor).await?;
    Ok(())
}

async fn strings<'e, DB, E>(executor: E, sql: &str, arg: &str) -> Result<Vec<String>, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    Ok(sqlx::query_scalar::<DB, String>(sql)
        .bind(arg.to_string())
        .fetch_all(executor)
        .await?)
}

async fn api_keys<'e, DB, E>(executor: E) -> Result<Vec<StoredApiKey>, StoreError>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> DateTime<Utc>: Decode<'r, DB> + Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    let rows = sqlx::query::<DB>(
        "SELECT name, role, secret_digest, created_at FROM api_keys ORDER BY name",
    )
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredApiKey {
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                secret_digest: r.try_get("secret_digest")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

const DELETE_SESSION: &str = "DELETE FROM customer_sessions WHERE token_digest = $1";
const DELETE_CUSTOMER_SESSIONS: &str = "DELETE FROM customer_sessions WHERE customer_id = $1";
const LOGIN_HOLDER: &str =
    "SELECT customer_id FROM login_emails WHERE email_key = $1 AND kind = 'login'";
const CUSTOMERS_BY_EMAIL: &str =
    "SELECT customer_id FROM customer_emails WHERE email_key = $1 ORDER BY customer_id";

impl Store {
    pub async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        on_pool!(self, write, |p| insert_session(p, session).await)
    }

    pub async fn find_session(
        &self,
        token_digest: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        on_pool!(self, read, |p| find_session(p, token_digest).await)
    }

    pub async fn delete_session(&self, token_digest: &str) -> Result<(), StoreError> {
        on_pool!(self, write, |p| run(
            p,
            DELETE_SESSION,
            &[token_digest.to_string()]
        )
        .await)
    }

    /// Ends every session of a customer.
    pub async fn delete_sessions_of(&self, customer_id: CustomerId) -> Result<(), StoreError> {
        on_pool!(self, write, |p| run(
            p,
            DELETE_CUSTOMER_SESSIONS,
            &[customer_id.to_string()]
        )
        .await)
    }

    /// Deletes sessions that expired before `now`.
    pub async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM customer_sessions WHERE expires_at < $1"
        )
        .bind(now)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Every customer whose current login email is `email` (customers
    /// without access may share one).
    pub async fn customers_by_email(
        &self,
        email: &EmailAddress,
    ) -> Result<Vec<CustomerId>, StoreError> {
        let key = self.keyring()?.email_key(email);
        let ids = on_pool!(self, read, |p| strings(p, CUSTOMERS_BY_EMAIL, &key).await)?;
        ids.into_iter().map(parse_id).collect()
    }

    /// The customer whose login `address` is (the holder of the address as
    /// the login of a customer with access), loaded. An unknown or
    /// malformed address runs the very same statements, for a customer
    /// that does not exist, so that both cost the same and a caller cannot
    /// tell them apart by time.
    pub async fn load_login(
        &self,
        address: &str,
    ) -> Result<Option<(CustomerId, crate::Loaded)>, StoreError> {
        let key = self.keyring()?.email_key_text(address);
        let holder = on_pool!(self, read, |p| strings(p, LOGIN_HOLDER, &key).await)?;
        let holder = holder.into_iter().next().map(parse_id).transpose()?;
        let loaded = self
            .load(holder.unwrap_or(CustomerId::from_uuid(Default::default())))
            .await?;
        Ok(holder.map(|id| (id, loaded)))
    }

    pub async fn api_keys(&self) -> Result<Vec<StoredApiKey>, StoreError> {
        on_pool!(self, read, |p| api_keys(p).await)
    }

    /// Stores a key the service created. A name that exists is an error.
    pub async fn insert_api_key(&self, key: &StoredApiKey) -> Result<(), StoreError> {
        on_pool!(self, write, |p| sqlx::query(
            "INSERT INTO api_keys (name, role, secret_digest, created_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(&key.name)
        .bind(&key.role)
        .bind(&key.secret_digest)
        .bind(key.created_at)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
