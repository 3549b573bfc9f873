//! The shared state of the service: store, services, keys, mail, metrics,
//! throttles.

use std::sync::Arc;

use access_domain::{CustomerServices, PasswordHash};
use access_store::Store;
use chrono::{DateTime, Duration, Utc};

use crate::auth::KeyRing;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::throttle::Throttle;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    /// Template for per-command services (`CustomerServices::fresh`).
    pub services: CustomerServices,
    pub keys: KeyRing,
    pub mailer: Mailer,
    pub metrics: Metrics,
    pub throttle: Throttle,
    pub session_ttl: Duration,
    /// A real hash of a random password, verified against when a login
    /// names an unknown email, so both cases take as long.
    pub decoy_hash: PasswordHash,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Fresh services for one command.
    pub fn services(&self) -> CustomerServices {
        self.0.services.fresh()
    }

    pub fn keys(&self) -> &KeyRing {
        &self.0.keys
    }

    pub fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn throttle(&self) -> &Throttle {
        &self.0.throttle
    }

    pub fn session_ttl(&self) -> Duration {
        self.0.session_ttl
    }

    pub fn decoy_hash(&self) -> &PasswordHash {
        &self.0.decoy_hash
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.services.now()
    }
}
