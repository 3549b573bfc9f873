//! One writer per customer inside a process: commands on the same customer
//! from one process wait their turn instead of racing each other into
//! optimistic-lock conflicts (which, after the retries, end in 409). Two
//! processes (replicas) still meet at the append's version check, as before.
//!
//! A map from customer id to an async mutex, written here because no
//! maintained crate offers a keyed async lock with cleanup that fits: the
//! map holds weak references, so a customer nobody is writing to costs one
//! dead entry until the next sweep, and the sweep runs when the map has
//! doubled since the last one (amortised O(1) per lock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use access_domain::CustomerId;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub(crate) struct CustomerWriters {
    inner: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    locks: HashMap<CustomerId, Weak<AsyncMutex<()>>>,
    /// Size after the last sweep.
    swept_at: usize,
}

/// The turn of one command on its customer; the next waits until it drops.
#[derive(Debug)]
pub(crate) struct Turn(#[allow(dead_code)] OwnedMutexGuard<()>);

impl CustomerWriters {
    /// Waits for this process's turn on `id`, at most `wait`; `None` when
    /// the wait ran out (the caller answers as for a conflict).
    pub(crate) async fn turn(&self, id: CustomerId, wait: Duration) -> Option<Turn> {
        let lock = self.lock_of(id);
        tokio::time::timeout(wait, lock.lock_owned())
            .await
            .ok()
            .map(Turn)
    }

    fn lock_of(&self, id: CustomerId) -> Arc<AsyncMutex<()>> {
        let mut map = match self.inner.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(lock) = map.locks.get(&id).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(AsyncMutex::new(()));
        map.locks.insert(id, Arc::downgrade(&lock));
        if map.locks.len() > 64 && map.locks.len() > 2 * map.swept_at {
            map.locks.retain(|_, lock| lock.strong_count() > 0);
            map.swept_at = map.locks.len();
        }
        lock
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|m| m.locks.len()).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_command_on_the_same_customer_waits_for_the_first() {
        let writers = CustomerWriters::default();
        let id = CustomerId::new_random();
        let first = writers.turn(id, Duration::from_millis(10)).await.unwrap();
        assert!(writers.turn(id, Duration::from_millis(20)).await.is_none());
        // Another customer does not wait.
        assert!(writers
            .turn(CustomerId::new_random(), Duration::from_millis(10))
            .await
            .is_some());
        drop(first);
        assert!(writers.turn(id, Duration::from_millis(10)).await.is_some());
    }

    #[tokio::test]
    async fn customers_nobody_writes_to_are_swept() {
        let writers = CustomerWriters::default();
        let held = writers
            .turn(CustomerId::new_random(), Duration::from_millis(10))
            .await
            .unwrap();
        for _ in 0..10_000 {
            drop(
                writers
                    .turn(CustomerId::new_random(), Duration::from_millis(10))
                    .await,
            );
        }
        assert!(writers.len() <= 2 * 64 + 2, "{}", writers.len());
        drop(held);
    }
}
