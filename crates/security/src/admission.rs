//! Bounded admission to the password hasher.
//!
//! argon2id is slow on purpose and runs at most `permits` at a time. Without
//! a bound, a flood of logins (credential stuffing) queues without end and
//! every request that hashes waits seconds. [`Admission`] lets a request
//! wait for a permit only while fewer than `queue` others are waiting, and
//! only up to `wait`; beyond either it is refused at once with
//! [`ServiceError::Overloaded`], which the service answers with 503 or 429
//! and `Retry-After`. Requests that do not hash never come here.
//!
//! Written here rather than with tower's `ConcurrencyLimit`/`LoadShed`:
//! those bound a whole HTTP service, while the bound belongs to one step
//! inside some requests (a login, a password change), behind the other
//! steps of their command.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use access_domain::ServiceError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the admission refuses beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Requests that may wait for a permit at once (the ones hashing do
    /// not count).
    pub queue: usize,
    /// The longest a request waits for a permit.
    pub wait: Duration,
}

impl AdmissionLimits {
    /// No bound: every request waits its turn (tools and tests).
    pub const UNBOUNDED: Self = Self {
        queue: usize::MAX,
        wait: Duration::MAX,
    };
}

/// Permits to hash, with a bounded queue in front of them.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    limits: AdmissionLimits,
}

/// One of the requests waiting: counted while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(permits: usize, limits: AdmissionLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            limits,
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// True when a request arriving now would be refused for a full queue
    /// (it may be admitted a moment later): a caller can refuse before
    /// doing the work that leads to the hash.
    pub fn saturated(&self) -> Option<ServiceError> {
        (self.permits.available_permits() == 0 && self.waiting() >= self.limits.queue)
            .then(|| self.overloaded())
    }

    /// Requests waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A permit: at once if one is free; else after waiting in the queue,
    /// if it has room, at most the deadline. Otherwise
    /// [`ServiceError::Overloaded`], without waiting.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.limits.queue {
            return Err(self.overloaded());
        }
        let acquire = self.permits.clone().acquire_owned();
        let acquired = if self.limits.wait == Duration::MAX {
            acquire.await
        } else {
            match tokio::time::timeout(self.limits.wait, acquire).await {
                Ok(acquired) => acquired,
                Err(_) => return Err(self.overloaded()),
            }
        };
        acquired.map_err(|_| ServiceError::failed("hashing pool closed"))
    }

    fn overloaded(&self) -> ServiceError {
        ServiceError::Overloaded {
            what: "the password hasher",
            // The queue empties within about one deadline.
            retry_after_secs: self.limits.wait.as_secs().clamp(1, 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(queue: usize, wait_ms: u64) -> AdmissionLimits {
        AdmissionLimits {
            queue,
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_free_permit_admits() {
        let admission = Admission::new(1, limits(1, 10_000));
        let held = admission.enter().await.unwrap();
        assert_eq!(admission.saturated(), None, "the queue is empty");
        // One may wait …
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.enter().await.map(|_| ()) })
        };
        while admission.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(admission.saturated().is_some(), "the queue is full");
        // … the next is refused without waiting.
        let started = std::time::Instant::now();
        let refused = admission.enter().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(
            matches!(refused, ServiceError::Overloaded { .. }),
            "{refused:?}"
        );
        assert_eq!(admission.waiting(), 1, "the refused one is not counted");
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(admission.waiting(), 0);
        let _again = admission.enter().await.unwrap();
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_is_refused_with_a_retry_after() {
        let admission = Admission::new(1, limits(8, 150));
        let _held = admission.enter().await.unwrap();
        let refused = admission.enter().await.unwrap_err();
        assert_eq!(
            refused,
            ServiceError::Overloaded {
                what: "the password hasher",
                retry_after_secs: 1
            }
        );
        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn unbounded_admission_waits_its_turn() {
        let admission = Admission::new(1, AdmissionLimits::UNBOUNDED);
        let held = admission.enter().await.unwrap();
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.enter().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap().unwrap();
    }
}
