//! Throttles for password checks (sessions, current-password checks, link
//! use).
//!
//! - Per account: a soft lock with growing delays (like kanidm's): the
//!   first `free_failures` password checks since the last success go ahead
//!   at once; each further one makes the account wait 1 s, 2 s, 4 s, … (at
//!   most 15 minutes) before the next check. A right password resets it.
//!   Nobody can lock a customer out for long by guessing, and guessing
//!   stays slow. A check is counted *before* its hash is computed (a check
//!   in flight uses up the allowance), and the count lives in the database
//!   (`login_attempts`), so parallel guesses and several replicas share
//!   one allowance.
//! - Per client address (IPv6: per /64): a rate limit (governor), so one
//!   client cannot try many accounts quickly. This one lives in each
//!   process: behind N replicas a client gets up to N times the quota
//!   (docs/security.md).

use access_store::prelude::*;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use access_store::{AccountAttempts, Store, StoreError};
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The longest wait a soft lock imposes.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);

/// The soft lock's rule: `free_failures` checks go ahead; each further one
/// locks the account for twice as long as the one before.
#[derive(Debug, Clone, Copy)]
pub struct SoftLock {
    free_failures: u32,
}

/// What a reservation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The check may go ahead; it is already counted: the account before
    /// and after.
    Go {
        before: AccountAttempts,
        after: AccountAttempts,
    },
    /// The account is locked for this long.
    Wait(Duration),
}

/// A password check that may go ahead, counted; report its end with
/// [`Throttle::succeeded`] or [`Throttle::undecided`] (a wrong password
/// needs nothing: it stays counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    account: String,
    before: AccountAttempts,
    after: AccountAttempts,
}

impl SoftLock {
    pub fn new(free_failures: u32) -> Self {
        Self {
            free_failures: free_failures.max(1),
        }
    }

    /// One more check at `now_ms`: counted at once, and when it is past
    /// the free ones the account is locked from now on.
    pub fn reserve(&self, current: AccountAttempts, now_ms: i64) -> (AccountAttempts, Reserved) {
        if current.locked_until_ms > now_ms {
            let wait = u64::try_from(current.locked_until_ms - now_ms).unwrap_or(0);
            return (current, Reserved::Wait(Duration::from_millis(wait)));
        }
        let failures = current.failures.saturating_add(1);
        let locked_until_ms = match failures.checked_sub(self.free_failures) {
            Some(step) => now_ms.saturating_add(lock_ms(step)),
            None => current.locked_until_ms,
        };
        let after = AccountAttempts {
            failures,
            locked_until_ms,
        };
        (
            after,
            Reserved::Go {
                before: current,
                after,
            },
        )
    }

    /// A check that ended without judging the password (a database error,
    /// another refusal before the password was compared, a live link's page
    /// opened): when nothing was counted since, the account is put back
    /// exactly as it was before the check, lock included; otherwise only
    /// its count is given back (the later checks' lock stays).
    pub fn refund(&self, current: AccountAttempts, reserved: &Reservation) -> AccountAttempts {
        if current == reserved.after {
            return reserved.before;
        }
        AccountAttempts {
            failures: current.failures.saturating_sub(1),
            ..current
        }
    }
}

/// 1 s, 2 s, 4 s, … for the `step`-th check past the free ones (0-based),
/// at most [`MAX_LOCK`].
fn lock_ms(step: u32) -> i64 {
    let delay = Duration::from_secs(1u64 << step.min(20)).min(MAX_LOCK);
    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone)]
pub struct Throttle {
    lock: SoftLock,
    store: Store,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// Why a password check may not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// The account or the client address must wait this many seconds.
    #[error("too many password attempts; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    /// The account's count could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The wait in whole seconds, rounded up (at least 1).
fn wait_error(wait: Duration) -> ThrottleError {
    let secs = u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    ThrottleError::TooManyAttempts {
        retry_after: secs.max(1),
    }
}

fn millis(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis()
}

impl Throttle {
    /// `free_failures` password checks per account before delays start
    /// (kept in `store`); `per_address_per_minute` checks per client
    /// address.
    pub fn new(store: Store, free_failures: u32, per_address_per_minute: u32) -> Self {
        Self {
            lock: SoftLock::new(free_failures),
            store,
            addresses: Arc::new(RateLimiter::keyed(per_minute(per_address_per_minute))),
        }
    }

    /// Before a password check: takes one check from the address's quota
    /// and from the account's allowance (the check is counted now, before
    /// any hashing), or [`ThrottleError::TooManyAttempts`]. After the
    /// check, call [`Throttle::succeeded`] or [`Throttle::undecided`] (a
    /// wrong password needs nothing: it stays counted).
    pub async fn attempt(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<Reservation, ThrottleError> {
        self.address_attempt(address)?;
        let now_ms = millis(now);
        let lock = self.lock;
        let reserved = self
            .store
            .update_account_attempts(account, now_ms, |current| lock.reserve(current, now_ms))
            .await?;
        match reserved {
            Reserved::Go { before, after } => Ok(Reservation {
                account: account.to_string(),
                before,
                after,
            }),
            Reserved::Wait(wait) => Err(wait_error(wait)),
        }
    }

    /// Takes one check from the client address's quota only (no account's
    /// soft lock): for secrets that name no account until they match (the
    /// audit console's API keys).
    pub fn address_attempt(&self, address: Option<IpAddr>) -> Result<(), ThrottleError> {
        if let Some(ip) = address {
            let key = crate::client_ip::limit_key(ip);
            if let Err(not_until) = self.addresses.check_key(&key) {
                return Err(wait_error(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ));
            }
        }
        Ok(())
    }

    /// A right password: the account's count is forgotten. Failing to
    /// forget it is logged; the login goes ahead.
    pub async fn succeeded(&self, reserved: &Reservation) {
        if let Err(e) = self.store.clear_account_attempts(&reserved.account).await {
            tracing::warn!(error = %e, "could not reset an account's password checks");
        }
    }

    /// A check that ended before the password was judged: it is given
    /// back ([`SoftLock::refund`]).
    pub async fn undecided(&self, reserved: &Reservation, now: DateTime<Utc>) {
        let lock = self.lock;
        let result = self
            .store
            .update_account_attempts(&reserved.account, millis(now), |current| {
                (lock.refund(current, reserved), ())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not give back a password check");
        }
    }

    /// Forgets idle entries (called now and then).
    pub async fn shrink(&self, now: DateTime<Utc>) {
        let cutoff = millis(now) - i64::try_from(MAX_LOCK.as_millis()).unwrap_or(0);
        if let Err(e) = self.store.purge_account_attempts(cutoff).await {
            tracing::warn!(error = %e, "could not purge idle password-check counts");
        }
        self.addresses.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lock: SoftLock, state: &mut AccountAttempts, now_ms: i64) -> Reserved {
        let (next, reserved) = lock.reserve(*state, now_ms);
        *state = next;
        reserved
    }

    fn went(r: Reserved) -> bool {
        matches!(r, Reserved::Go { .. })
    }

    fn reservation(r: Reserved) -> Reservation {
        match r {
            Reserved::Go { before, after } => Reservation {
                account: "a".into(),
                before,
                after,
            },
            Reserved::Wait(_) => panic!("locked"),
        }
    }

    #[test]
    fn delays_grow_after_the_free_checks() {
        let lock = SoftLock::new(3);
        let mut s = AccountAttempts::default();
        assert!(went(run(lock, &mut s, 0)));
        assert!(went(run(lock, &mut s, 0)));
        // The third check goes ahead and, being counted before its result
        // is known, locks the account for 1 s at once.
        assert!(went(run(lock, &mut s, 0)));
        assert_eq!(
            run(lock, &mut s, 0),
            Reserved::Wait(Duration::from_millis(1000))
        );
        assert_eq!(
            run(lock, &mut s, 400),
            Reserved::Wait(Duration::from_millis(600))
        );
        // After the wait: one more check, then 2 s.
        assert!(went(run(lock, &mut s, 1000)));
        assert_eq!(
            run(lock, &mut s, 1000),
            Reserved::Wait(Duration::from_millis(2000))
        );
        assert_eq!(s.failures, 4);
    }

    #[test]
    fn in_flight_checks_use_up_the_allowance() {
        let lock = SoftLock::new(3);
        let mut s = AccountAttempts::default();
        let went = (0..30).filter(|_| went(run(lock, &mut s, 5))).count();
        assert_eq!(went, 3);
    }

    #[test]
    fn the_lock_is_capped() {
        let lock = SoftLock::new(1);
        let mut s = AccountAttempts::default();
        let mut now = 0;
        for _ in 0..100 {
            if let Reserved::Wait(w) = run(lock, &mut s, now) {
                assert!(w <= MAX_LOCK);
                now += i64::try_from(w.as_millis()).unwrap();
            }
        }
        let (_, last) = lock.reserve(s, now - 1);
        assert_eq!(last, Reserved::Wait(Duration::from_millis(1)));
        assert_eq!(lock_ms(40), i64::try_from(MAX_LOCK.as_millis()).unwrap());
    }

    #[test]
    fn an_undecided_check_is_given_back_lock_included() {
        let lock = SoftLock::new(3);
        // Three earlier wrong guesses whose lock has run out.
        let before = AccountAttempts {
            failures: 3,
            locked_until_ms: 1_000,
        };
        let (after, reserved) = lock.reserve(before, 10_000);
        assert!(
            after.locked_until_ms > 10_000,
            "the check locks the next one"
        );
        let r = reservation(reserved);
        assert_eq!(lock.refund(after, &r), before);
        // Another check was counted meanwhile: only the count is given
        // back, that check's lock stays.
        let (later, _) = lock.reserve(
            AccountAttempts {
                locked_until_ms: 0,
                ..after
            },
            10_000,
        );
        let refunded = lock.refund(later, &r);
        assert_eq!(refunded.failures, later.failures - 1);
        assert_eq!(refunded.locked_until_ms, later.locked_until_ms);
    }

    #[test]
    fn waits_are_whole_seconds_rounded_up() {
        let seconds = |ms| match wait_error(Duration::from_millis(ms)) {
            ThrottleError::TooManyAttempts { retry_after } => retry_after,
            ThrottleError::Store(e) => panic!("{e}"),
        };
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(1000), 1);
        assert_eq!(seconds(1500), 2);
    }
}
