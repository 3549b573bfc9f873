//! Throttles for password checks (sessions, current-password checks): per
//! account and per client address, so neither one account nor one client
//! can guess passwords quickly. In memory, per process: behind several
//! replicas each enforces its own limit (documented in docs/api.md).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

#[derive(Clone)]
pub struct Throttle {
    accounts: Arc<DefaultKeyedRateLimiter<String>>,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Throttle {
    pub fn new(per_account_per_minute: u32, per_address_per_minute: u32) -> Self {
        Self {
            accounts: Arc::new(RateLimiter::keyed(per_minute(per_account_per_minute))),
            addresses: Arc::new(RateLimiter::keyed(per_minute(per_address_per_minute))),
        }
    }

    /// Takes one attempt for this account (a normalized email or customer
    /// id) and address; `too_many_attempts` with `Retry-After` when either
    /// is used up.
    pub fn attempt(&self, account: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        let clock = DefaultClock::default();
        if let Some(ip) = address {
            if let Err(not_until) = self.addresses.check_key(&ip) {
                let wait = not_until.wait_time_from(clock.now());
                return Err(ApiError::too_many_attempts(wait.as_secs() + 1));
            }
        }
        if let Err(not_until) = self.accounts.check_key(&account.to_string()) {
            let wait = not_until.wait_time_from(clock.now());
            return Err(ApiError::too_many_attempts(wait.as_secs() + 1));
        }
        Ok(())
    }

    /// Forgets idle keys (called now and then).
    pub fn shrink(&self) {
        self.accounts.retain_recent();
        self.addresses.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_limited_per_account_and_per_address() {
        let t = Throttle::new(3, 5);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            t.attempt("a@example.com", Some(ip)).unwrap();
        }
        let err = t.attempt("a@example.com", Some(ip)).unwrap_err();
        assert_eq!(err.code, "too_many_attempts");
        assert!(err.retry_after.unwrap() >= 1);
        // Another account from the same address still has attempts left…
        t.attempt("b@example.com", Some(ip)).unwrap();
        // …until the address's quota (5) is used up.
        assert!(t.attempt("c@example.com", Some(ip)).is_err());
        assert!(t
            .attempt("d@example.com", Some("10.0.0.1".parse().unwrap()))
            .is_ok());
    }
}
