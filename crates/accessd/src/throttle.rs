//! Throttles for password checks (sessions, current-password checks, link
//! use).
//!
//! - Per account: a soft lock with growing delays (like kanidm's): the
//!   first `free_failures` wrong passwords cost nothing; each further one
//!   makes the account wait 1 s, 2 s, 4 s, … (at most 15 minutes) before the
//!   next check. A right password resets it. Nobody can lock a customer out
//!   for long by guessing, and guessing stays slow.
//! - Per client address: a rate limit (governor), so one client cannot try
//!   many accounts quickly.
//!
//! Both live in memory, per process: behind N replicas an attacker gets up
//! to N times the allowance (documented in docs/api.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The longest wait a soft lock imposes.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy)]
struct SoftLock {
    failures: u32,
    until: Instant,
}

#[derive(Clone)]
pub struct Throttle {
    free_failures: u32,
    accounts: Arc<Mutex<HashMap<String, SoftLock>>>,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

fn wait_error(wait: Duration) -> ApiError {
    ApiError::too_many_attempts(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

impl Throttle {
    /// `free_failures` wrong passwords per account before delays start;
    /// `per_address_per_minute` checks per client address.
    pub fn new(free_failures: u32, per_address_per_minute: u32) -> Self {
        Self {
            free_failures: free_failures.max(1),
            accounts: Arc::new(Mutex::new(HashMap::new())),
            addresses: Arc::new(RateLimiter::keyed(per_minute(per_address_per_minute))),
        }
    }

    /// Before a password check: `too_many_attempts` with `Retry-After`
    /// while the account is soft-locked or the address used its quota.
    pub fn attempt(&self, account: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if let Some(until) = self.locked_until(account) {
            let now = Instant::now();
            if until > now {
                return Err(wait_error(until - now));
            }
        }
        if let Some(ip) = address {
            if let Err(not_until) = self.addresses.check_key(&ip) {
                return Err(wait_error(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ));
            }
        }
        Ok(())
    }

    /// A wrong password for `account`: the next check may have to wait.
    pub fn failed(&self, account: &str) {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let entry = accounts.entry(account.to_string()).or_insert(SoftLock {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.free_failures {
            let step = (entry.failures - self.free_failures).min(20);
            let delay = Duration::from_secs(1u64 << step).min(MAX_LOCK);
            entry.until = now + delay;
        }
    }

    /// A right password: the account's failures are forgotten.
    pub fn succeeded(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(account);
    }

    fn locked_until(&self, account: &str) -> Option<Instant> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .map(|l| l.until)
    }

    /// Forgets idle entries (called now and then).
    pub fn shrink(&self) {
        let now = Instant::now();
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, l| l.until + MAX_LOCK > now);
        self.addresses.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_the_free_failures_and_reset_on_success() {
        let t = Throttle::new(3, 1000);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..2 {
            t.attempt("a@example.com", Some(ip)).unwrap();
            t.failed("a@example.com");
        }
        t.attempt("a@example.com", Some(ip)).unwrap();
        t.failed("a@example.com"); // third failure: 1 s
        let err = t.attempt("a@example.com", Some(ip)).unwrap_err();
        assert_eq!(err.code, "too_many_attempts");
        assert_eq!(err.retry_after, Some(1));
        t.failed("a@example.com"); // fourth: 2 s
        assert_eq!(
            t.attempt("a@example.com", Some(ip))
                .unwrap_err()
                .retry_after,
            Some(2)
        );
        // Other accounts are not affected; a success resets.
        t.attempt("b@example.com", Some(ip)).unwrap();
        t.succeeded("a@example.com");
        t.attempt("a@example.com", Some(ip)).unwrap();
    }

    #[test]
    fn the_lock_is_capped() {
        let t = Throttle::new(1, 1000);
        for _ in 0..100 {
            t.failed("x");
        }
        let err = t.attempt("x", None).unwrap_err();
        assert_eq!(err.retry_after, Some(MAX_LOCK.as_secs()));
    }

    #[test]
    fn an_address_has_a_quota_across_accounts() {
        let t = Throttle::new(3, 5);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for n in 0..5 {
            t.attempt(&format!("u{n}"), Some(ip)).unwrap();
        }
        assert!(t.attempt("u9", Some(ip)).is_err());
        assert!(t.attempt("u9", Some("10.9.9.9".parse().unwrap())).is_ok());
    }
}
