//! The auditors' console: signing in with an API key (exchanged for a
//! console session), finding the session of a cookie, signing out, and
//! the integrity checks started from the console.
//!
//! - Only `auditor` and `admin` keys may sign in; `service` and
//!   `subscriber` keys are refused.
//! - Sign-ins are throttled by the customer logins' rate per client
//!   address (`ACCESS_LOGIN_ATTEMPTS_PER_ADDRESS` a minute). Not by the
//!   soft lock per account: a key names no account until it matches, and
//!   a lock per address would let anyone behind the same address (an
//!   office's NAT, a proxy not listed as trusted) lock every auditor out;
//!   keys are long random secrets compared in constant time, so the rate
//!   alone makes guessing hopeless.
//! - A session lasts at most [`ConsoleSettings::session_ttl`] (8 hours at
//!   most) and ends at sign-out, or when the key that opened it is removed
//!   or its secret replaced. Only digests are stored.
//! - Every session's start and end is a log line with the key's name (not
//!   an event: it belongs to no customer).

use std::net::IpAddr;
use std::time::Duration;

use access_domain::{ApiRole, TokenGenerator};
use access_projections::chain;
use access_security::OsRandomTokens;
use access_store::prelude::*;
use access_store::{ConsoleSession, IntegrityCheck, StoreError};
use chrono::{DateTime, Utc};

use crate::auth::{digest, ApiKey};
use crate::state::AppState;
use crate::throttle::ThrottleError;

/// The longest a console session may last.
pub const MAX_SESSION_HOURS: u32 = 8;

/// The console's settings.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleSettings {
    /// How long a console session lasts (at most
    /// [`MAX_SESSION_HOURS`]).
    pub session_ttl: chrono::Duration,
    /// The longest an integrity check started from the console runs.
    pub verify_limit: Duration,
}

/// A console setting out of its range (refused at start-up).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("ACCESS_AUDIT_SESSION_HOURS must be from 1 to {MAX_SESSION_HOURS} (got {0})")]
    SessionHours(u32),
    #[error("ACCESS_AUDIT_VERIFY_SECS must be from 1 to 86400 (got {0})")]
    VerifySecs(u64),
}

impl ConsoleSettings {
    pub fn new(session_hours: u32, verify_secs: u64) -> Result<Self, SettingsError> {
        if !(1..=MAX_SESSION_HOURS).contains(&session_hours) {
            return Err(SettingsError::SessionHours(session_hours));
        }
        if !(1..=86_400).contains(&verify_secs) {
            return Err(SettingsError::VerifySecs(verify_secs));
        }
        Ok(Self {
            session_ttl: chrono::Duration::hours(i64::from(session_hours)),
            verify_limit: Duration::from_secs(verify_secs),
        })
    }

    /// A check still `running` this long after its start was left by a
    /// replica that stopped: the time limit and a minute's grace (fixed in
    /// the check's row by the replica that runs it).
    fn stale_after(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.verify_limit)
            .unwrap_or_else(|_| chrono::Duration::seconds(300))
            + chrono::Duration::seconds(60)
    }
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            session_ttl: chrono::Duration::hours(i64::from(MAX_SESSION_HOURS)),
            verify_limit: Duration::from_secs(300),
        }
    }
}

/// Why a sign-in did not open a session.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Too many sign-ins from this address: wait this many seconds.
    #[error("too many sign-in attempts; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    /// No configured key has this secret.
    #[error("unknown API key")]
    UnknownKey,
    /// A known key whose role may not use the console.
    #[error("a {} key cannot sign in to the audit console", .role.as_str())]
    RoleRefused { role: ApiRole },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ThrottleError> for ConsoleError {
    fn from(err: ThrottleError) -> Self {
        match err {
            ThrottleError::TooManyAttempts { retry_after } => Self::TooManyAttempts { retry_after },
            ThrottleError::Store(e) => Self::Store(e),
        }
    }
}

/// Someone signed in to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    /// The API key's name (the person).
    pub name: String,
    pub role: ApiRole,
    /// The digest of the session's token.
    pub token_digest: String,
    pub expires_at: DateTime<Utc>,
}

/// A session just opened: the token goes into the cookie, once.
pub struct Opened {
    pub token: String,
    pub user: ConsoleUser,
}

/// Whether a role may use the console.
pub fn may_sign_in(role: ApiRole) -> bool {
    matches!(role, ApiRole::Auditor | ApiRole::Admin)
}

/// The key a person typed: its secret, or the whole `name:role:secret`
/// entry as the key was handed out (the name and role must then be the
/// key's).
fn key_of<'k>(state: &'k AppState, presented: &str) -> Option<&'k ApiKey> {
    let presented = presented.trim();
    if let Some(key) = state.keys().authenticate(presented) {
        return Some(key);
    }
    let mut parts = presented.splitn(3, ':');
    let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    state
        .keys()
        .authenticate(secret)
        .filter(|key| key.name == name && key.role.as_str() == role)
}

/// Signs in with an API key: a console session for an auditor or admin
/// key. `previous`: the token of the browser's earlier session, if any,
/// ended by the new one.
pub async fn sign_in(
    state: &AppState,
    settings: &ConsoleSettings,
    address: Option<IpAddr>,
    presented: &str,
    previous: Option<&str>,
) -> Result<Opened, ConsoleError> {
    state.throttle().address_attempt(address)?;
    let key = key_of(state, presented).ok_or(ConsoleError::UnknownKey)?;
    if !may_sign_in(key.role) {
        tracing::info!(key = %key.name, role = %key.role.as_str(), "audit console sign-in refused: role");
        return Err(ConsoleError::RoleRefused { role: key.role });
    }
    let token = OsRandomTokens.generate();
    let now = state.now();
    let session = ConsoleSession {
        token_digest: hex::encode(digest(token.expose())),
        key_name: key.name.clone(),
        key_digest: key.digest_hex(),
        role: key.role.as_str().to_string(),
        created_at: now,
        expires_at: now + settings.session_ttl,
    };
    let previous = previous.map(|token| hex::encode(digest(token)));
    if let Some(ended) = state
        .store()
        .replace_console_session(&session, previous.as_deref())
        .await?
    {
        log_end(&ended, "signed in again");
    }
    tracing::info!(
        key = %key.name,
        role = %key.role.as_str(),
        expires_at = %session.expires_at,
        "audit console session started"
    );
    Ok(Opened {
        token: token.expose().to_string(),
        user: ConsoleUser {
            name: key.name.clone(),
            role: key.role,
            token_digest: session.token_digest,
            expires_at: session.expires_at,
        },
    })
}

/// What a console session's token gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A valid session.
    Valid(ConsoleUser),
    /// No such session, or it expired (then deleted, its end logged).
    Ended,
    /// A live session whose key this replica does not know (withdrawn or
    /// replaced, or not yet known here during a rolling change of the
    /// keys): refused here, but kept, since another replica may know the
    /// key; a withdrawn key's sessions end at their expiry.
    KeyUnknownHere,
}

/// The console session of a token, now.
pub async fn lookup(state: &AppState, token: &str) -> Result<Lookup, StoreError> {
    let token_digest = hex::encode(digest(token));
    let Some(session) = state.store().find_console_session(&token_digest).await? else {
        return Ok(Lookup::Ended);
    };
    if session.expires_at <= state.now() {
        end_digest(state, &token_digest, "expired").await?;
        return Ok(Lookup::Ended);
    }
    let Some(key) = state
        .keys()
        .current(&session.key_name, &session.key_digest)
        .filter(|key| may_sign_in(key.role))
    else {
        tracing::info!(
            key = %session.key_name,
            "audit console session refused: its key is not configured here (withdrawn or replaced)"
        );
        return Ok(Lookup::KeyUnknownHere);
    };
    Ok(Lookup::Valid(ConsoleUser {
        name: key.name.clone(),
        role: key.role,
        token_digest,
        expires_at: session.expires_at,
    }))
}

/// Ends the session of a token (sign-out).
pub async fn sign_out(state: &AppState, token: &str) -> Result<(), StoreError> {
    end_digest(state, &hex::encode(digest(token)), "signed out").await
}

async fn end_digest(state: &AppState, token_digest: &str, why: &str) -> Result<(), StoreError> {
    if let Some(ended) = state.store().delete_console_session(token_digest).await? {
        log_end(&ended, why);
    }
    Ok(())
}

fn log_end(session: &ConsoleSession, why: &str) {
    tracing::info!(
        key = %session.key_name,
        role = %session.role,
        reason = why,
        "audit console session ended"
    );
}

/// Deletes expired console sessions (the janitor), logging each end, and
/// integrity checks beyond the newest [`access_store::console::KEPT_CHECKS`];
/// a failure of either is logged and does not stop the other.
pub async fn purge_expired(state: &AppState) {
    match state
        .store()
        .purge_expired_console_sessions(state.now())
        .await
    {
        Ok(ended) => ended.iter().for_each(|s| log_end(s, "expired")),
        Err(e) => tracing::warn!(error = %e, "could not purge expired console sessions"),
    }
    if let Err(e) = state.store().purge_old_integrity_checks().await {
        tracing::warn!(error = %e, "could not purge old integrity checks");
    }
}

/// What starting an integrity check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new check runs in the background.
    Started(String),
    /// Another check is running (on any replica): no second one.
    AlreadyRunning,
}

/// Starts a verification of the hash chain in the background (at most
/// [`ConsoleSettings::verify_limit`]); its result is stored for the
/// integrity page. A check left `running` by a replica that stopped is
/// shown as abandoned once its time limit has passed.
pub async fn start_integrity_check(
    state: &AppState,
    settings: &ConsoleSettings,
    user: &ConsoleUser,
) -> Result<Started, StoreError> {
    let now = state.now();
    let check = IntegrityCheck {
        id: uuid::Uuid::new_v4().to_string(),
        started_by: user.name.clone(),
        started_at: now,
        deadline: now + settings.stale_after(),
        finished_at: None,
        outcome: "running".to_string(),
        summary: "The verification is running.".to_string(),
    };
    if !state.store().start_integrity_check(&check).await? {
        return Ok(Started::AlreadyRunning);
    }
    tracing::info!(key = %user.name, check = %check.id, "integrity check started from the audit console");
    let id = check.id.clone();
    let state = state.clone();
    let bound = settings.verify_limit;
    tokio::spawn(async move {
        let (outcome, summary) =
            match tokio::time::timeout(bound, chain::verify(state.store(), None)).await {
                Ok(Ok(report)) => describe(&report),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "integrity check failed");
                    (
                        "failed",
                        "The verification could not be completed (the database failed); \
                         see the service's log and try again."
                            .to_string(),
                    )
                }
                Err(_) => (
                    "timed_out",
                    format!(
                        "The verification did not finish within {} s. A history this long is \
                         verified with `accessctl audit verify`.",
                        bound.as_secs()
                    ),
                ),
            };
        tracing::info!(check = %id, outcome, "integrity check finished");
        if let Err(e) = state
            .store()
            .finish_integrity_check(&id, state.now(), outcome, &summary)
            .await
        {
            tracing::error!(error = %e, check = %id, "could not record an integrity check's result");
        }
    });
    Ok(Started::Started(check.id))
}

/// A report's outcome and its sentence.
fn describe(report: &chain::VerifyReport) -> (&'static str, String) {
    let covered = match report.hashed_up_to {
        Some(position) => format!("up to global position {}", position.global),
        None => "(no event is hashed yet)".to_string(),
    };
    if report.is_intact() {
        (
            "intact",
            format!(
                "Intact: {} events and {} stored hashes checked, {covered}; every event \
                 produces its stored hash and the chain is unbroken.",
                report.events, report.hashes
            ),
        )
    } else {
        let first = report
            .problems
            .first()
            .map(|p| {
                format!(
                    " The first, at global position {}: {} ({}).",
                    p.position.global, p.kind, p.detail
                )
            })
            .unwrap_or_default();
        (
            "problems",
            format!(
                "{} problem(s) found in {} events and {} stored hashes, {covered}.{first} \
                 Run `accessctl audit verify` for the full list.",
                report.problem_count, report.events, report.hashes
            ),
        )
    }
}

/// The last integrity checks, newest first; a check still `running` past
/// its deadline (its replica stopped) is shown as abandoned (and recorded
/// so by the next start).
pub async fn latest_checks(
    state: &AppState,
    limit: u32,
) -> Result<Vec<IntegrityCheck>, StoreError> {
    let now = state.now();
    let mut checks = state.store().latest_integrity_checks(limit).await?;
    for check in &mut checks {
        if check.outcome == "running" && check.deadline < now {
            check.outcome = "abandoned".to_string();
            check.summary = access_store::ABANDONED.to_string();
        }
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn console_settings_out_of_range_are_refused_by_name() {
        assert!(ConsoleSettings::new(8, 300).is_ok());
        assert_eq!(
            ConsoleSettings::new(24, 300).unwrap_err(),
            SettingsError::SessionHours(24)
        );
        assert_eq!(
            ConsoleSettings::new(0, 300).unwrap_err(),
            SettingsError::SessionHours(0)
        );
        let err = ConsoleSettings::new(8, 0).unwrap_err();
        assert!(
            err.to_string().contains("ACCESS_AUDIT_VERIFY_SECS"),
            "{err}"
        );
    }

    #[test]
    fn only_auditor_and_admin_keys_may_sign_in() {
        assert!(may_sign_in(ApiRole::Auditor) && may_sign_in(ApiRole::Admin));
        assert!(!may_sign_in(ApiRole::Service) && !may_sign_in(ApiRole::Subscriber));
    }
}
