//! Idempotency keys of the requests running in this process: a second
//! request with the same key waits for the first (bounded) and then
//! answers its stored response, instead of being decided against the
//! first one's effect. Across replicas the same holds through the store:
//! the key is unique in the command's transaction, and a refusal is
//! checked against a record the other replica committed meanwhile
//! ([`crate::usecase::command::execute`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Requests with an idempotency key that are running in this process.
#[derive(Default)]
pub struct KeysInFlight {
    running: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a request waits for another one with the same key.
pub const KEY_IN_USE_WAIT: Duration = Duration::from_secs(10);

/// Another request with the key still ran after the wait.
#[derive(Debug, thiserror::Error)]
#[error("a request with this Idempotency-Key is still running")]
pub struct KeyInUse;

impl KeysInFlight {
    /// Holds `key` until the guard is dropped, or [`KeyInUse`] after
    /// `wait`.
    pub async fn hold(self: &Arc<Self>, key: String, wait: Duration) -> Result<KeyGuard, KeyInUse> {
        let lock = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        // Declared before the wait: if the request is cancelled while it
        // waits, the wait (and its share of the lock) is dropped first,
        // then this, which forgets the key when nobody else holds it.
        let entry = Entry {
            owner: self.clone(),
            key,
        };
        match tokio::time::timeout(wait, lock.lock_owned()).await {
            Ok(guard) => Ok(KeyGuard {
                guard: Some(guard),
                _entry: entry,
            }),
            Err(_) => Err(KeyInUse),
        }
    }
}

/// A key's place in the map; forgets the key on drop when no request
/// holds or waits for it any more.
struct Entry {
    owner: Arc<KeysInFlight>,
    key: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut running = self
            .owner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if running
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            running.remove(&self.key);
        }
    }
}

/// A held key: the lock first, then the entry (fields drop in order).
pub struct KeyGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    _entry: Entry,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(keys: &KeysInFlight) -> usize {
        keys.running.lock().unwrap().len()
    }

    #[tokio::test]
    async fn keys_are_forgotten_when_their_requests_end_or_give_up() {
        let keys = Arc::new(KeysInFlight::default());
        let held = keys.hold("k".into(), Duration::from_secs(1)).await.unwrap();
        // Another request with the key gives up after its wait.
        assert!(keys
            .hold("k".into(), Duration::from_millis(10))
            .await
            .is_err());
        // A third waits; the first ends, and the third's client goes away
        // before it runs again (one thread: nothing runs in between).
        let waiting = tokio::spawn({
            let keys = keys.clone();
            async move { keys.hold("k".into(), Duration::from_secs(30)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(len(&keys), 1);
        drop(held);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(len(&keys), 0, "nobody holds or waits: the key is forgotten");
        let again = keys.hold("k".into(), Duration::from_secs(1)).await.unwrap();
        drop(again);
        assert_eq!(len(&keys), 0);
    }
}
