//! The shared state of the service: store, services, keys, mail, metrics,
//! throttles. It lives above the parts it holds: none of them imports it.
//! An extractor that needs one part takes it through `FromRef` (the API
//! keys: [`ApiKeys`]).

use access_store::prelude::*;
use std::sync::Arc;

use access_domain::{CustomerServices, PasswordHash};
use access_store::Store;
use axum::extract::FromRef;
use chrono::{DateTime, Duration, Utc};

use crate::auth::ApiKeys;
use crate::client_ip::TrustedProxies;
use crate::command_mail::CommandMail;
use crate::keys_in_flight::KeysInFlight;
use crate::metrics::Metrics;
use crate::throttle::Throttle;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    /// The aggregate's services (stateless: one serves every command).
    pub services: CustomerServices,
    pub keys: ApiKeys,
    pub mail: CommandMail,
    pub metrics: Metrics,
    pub throttle: Throttle,
    /// Idempotency keys of requests running in this process.
    pub keys_in_flight: Arc<KeysInFlight>,
    /// Accounts whose password is being checked in this process (one
    /// check per account at a time).
    pub login_checks_in_flight: Arc<KeysInFlight>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` name the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    pub session_ttl: Duration,
    /// A real hash of a random password, verified against when a login
    /// names an unknown email, so both cases take as long.
    pub decoy_hash: PasswordHash,
    /// The soonest a wrong password is answered, from the start of its
    /// check: a wrong password for a customer with a dear imported hash
    /// takes as long as one for an unknown email.
    pub login_failure_floor: std::time::Duration,
    /// The admission in front of the password hasher: a login is refused
    /// before any other work when its queue is already full.
    pub hash_admission: access_security::Admission,
    /// The catch-up projector, when this process runs one.
    pub projector: Option<access_projections::Projector>,
    /// Longest wait of a read for the projections.
    pub read_wait: std::time::Duration,
    /// Wakes the change feed's readers.
    pub feed: crate::feed::FeedHub,
    /// Heartbeat interval of change-feed streams.
    pub feed_heartbeat: std::time::Duration,
    /// Longest long-poll wait (within the request time limit).
    pub feed_max_wait: std::time::Duration,
    /// The NATS JetStream relay, when configured.
    pub relay: Option<crate::relay::Relay>,
    /// `ACCESS_SECOND_FACTOR`.
    pub second_factor: crate::config::SecondFactorPolicy,
    /// The issuer in the `otpauth://` URI of a TOTP enrollment.
    pub totp_issuer: String,
    /// The auditors' console's settings.
    pub console: crate::usecase::console::ConsoleSettings,
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> Self {
        state.keys().clone()
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The aggregate's services (hashing, tokens, time), for every command.
    pub fn services(&self) -> &CustomerServices {
        &self.0.services
    }

    pub fn keys(&self) -> &ApiKeys {
        &self.0.keys
    }

    pub fn mail(&self) -> &CommandMail {
        &self.0.mail
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn throttle(&self) -> &Throttle {
        &self.0.throttle
    }

    pub fn keys_in_flight(&self) -> &Arc<KeysInFlight> {
        &self.0.keys_in_flight
    }

    pub fn login_checks_in_flight(&self) -> &Arc<KeysInFlight> {
        &self.0.login_checks_in_flight
    }

    pub fn trusted_proxies(&self) -> Arc<TrustedProxies> {
        self.0.trusted_proxies.clone()
    }

    pub fn session_ttl(&self) -> Duration {
        self.0.session_ttl
    }

    pub fn decoy_hash(&self) -> &PasswordHash {
        &self.0.decoy_hash
    }

    pub fn second_factor_policy(&self) -> crate::config::SecondFactorPolicy {
        self.0.second_factor
    }

    pub fn totp_issuer(&self) -> &str {
        &self.0.totp_issuer
    }

    pub fn login_failure_floor(&self) -> std::time::Duration {
        self.0.login_failure_floor
    }

    pub fn hash_admission(&self) -> &access_security::Admission {
        &self.0.hash_admission
    }

    /// Waits until the projections include every event committed so far
    /// (read-your-writes), or answers 503 when they cannot.
    pub async fn projections_caught_up(&self) -> Result<(), crate::error::ApiError> {
        let Some(projector) = &self.0.projector else {
            // Another process projects: wait for the checkpoint there.
            return self.wait_for_external_projector().await;
        };
        projector
            .wait_caught_up(self.0.read_wait)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "read refused: projections behind");
                crate::error::ApiError {
                    message: "the read model is catching up; retry shortly".into(),
                    ..crate::error::ApiError::unavailable()
                }
            })
    }

    async fn wait_for_external_projector(&self) -> Result<(), crate::error::ApiError> {
        let head = self.store().head().await?;
        let deadline = tokio::time::Instant::now() + self.0.read_wait;
        loop {
            let at = access_projections::db::checkpoint(
                self.store(),
                access_projections::LIVE.checkpoint,
            )
            .await
            .map_err(crate::error::ApiError::from)?;
            if at >= head {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(crate::error::ApiError {
                    message: "the read model is catching up; retry shortly".into(),
                    ..crate::error::ApiError::unavailable()
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn feed(&self) -> &crate::feed::FeedHub {
        &self.0.feed
    }

    pub fn feed_heartbeat(&self) -> std::time::Duration {
        self.0.feed_heartbeat
    }

    pub fn feed_max_wait(&self) -> std::time::Duration {
        self.0.feed_max_wait
    }

    pub fn relay(&self) -> Option<&crate::relay::Relay> {
        self.0.relay.as_ref()
    }

    pub fn projector(&self) -> Option<&access_projections::Projector> {
        self.0.projector.as_ref()
    }

    pub fn console(&self) -> crate::usecase::console::ConsoleSettings {
        self.0.console
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.services.now()
    }
}
