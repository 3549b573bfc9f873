//! The aggregate cache of the command path: the state a customer's last
//! command left, with its version and data key, so the next command on the
//! same customer is decided without reading its snapshot, events and key
//! again (two to three round trips of a command's nine or so on
//! PostgreSQL; see docs/performance.md).
//!
//! It needs no messages between replicas. Every append checks the version
//! it was decided on (the unique `(aggregate_id, sequence)`), so a stale
//! entry — another replica or `accessctl` wrote to the customer since —
//! makes the append fail with a conflict; the entry is dropped and the
//! command is decided again on state read from the database
//! (`Store::execute`). A forget always appends an event, so a destroyed key
//! is never used to seal: the append conflicts first. A refusal or a
//! command that writes nothing has no append to check it, so `execute`
//! compares the cached version with the stored one (one query) and decides
//! again when it moved.
//!
//! Only the command path uses it. Reads that authorize (sessions, logins,
//! `Store::load`) always go to the database, so access revoked through
//! another replica is never served from here.
//!
//! Entries expire `ttl` after they were written: personal data of a
//! customer forgotten through another replica stays in this process's
//! memory at most that long. quick_cache bounds the entries (S3-FIFO); it
//! has no expiry of its own, so the write time is kept with each entry and
//! checked on read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_domain::CustomerId;
use access_security::keys::DataKey;

use crate::Loaded;

/// A customer as a command sees it: its state and version, and its data
/// key when it has a live one (`None`: no key yet, or sealing is off).
#[derive(Clone)]
pub(crate) struct Current {
    pub loaded: Loaded,
    pub key: Option<Arc<DataKey>>,
}

#[derive(Clone)]
struct Entry {
    current: Arc<Current>,
    written: Instant,
    /// The store's failover count when the state was read (see `put`).
    epoch: u64,
}

/// Counters of the cache, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Commands decided on a cached state.
    pub hits: u64,
    /// Commands that read the customer from the database.
    pub misses: u64,
    /// Cached states that turned out stale (the append conflicted).
    pub stale: u64,
}

pub(crate) struct AggregateCache {
    entries: quick_cache::sync::Cache<CustomerId, Entry>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

impl AggregateCache {
    /// `None` when `capacity` is 0 (no cache).
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Option<Arc<Self>> {
        (capacity > 0 && !ttl.is_zero()).then(|| {
            Arc::new(Self {
                entries: quick_cache::sync::Cache::new(capacity),
                ttl,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                stale: AtomicU64::new(0),
            })
        })
    }

    /// The cached state of `id`, unless missing, expired, or read before
    /// the failover count reached `epoch`.
    pub(crate) fn get(&self, id: &CustomerId, epoch: u64) -> Option<Arc<Current>> {
        self.entries
            .get(id)
            .filter(|e| e.written.elapsed() < self.ttl && e.epoch == epoch)
            .map(|e| e.current)
    }

    /// Counts a command decided on a cached state (`hit`) or on state
    /// read from the database.
    pub(crate) fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `current` unless the cache already holds this version or a
    /// newer one (a slower command finishing late must not put an older
    /// state back, and a command that wrote nothing must not extend the
    /// entry's life). Check and insert are not atomic: a rare race costs
    /// one conflict, caught by the append. `epoch` is the store's failover
    /// count when the command began: a state from before a failover is
    /// never used after it, even if put after the cache was cleared.
    pub(crate) fn put(&self, id: CustomerId, current: Arc<Current>, epoch: u64) {
        let held = self
            .entries
            .get(&id)
            .map(|e| (e.epoch, e.current.loaded.version));
        let newer = |(held_epoch, version): (u64, u64)| {
            held_epoch > epoch || (held_epoch == epoch && version >= current.loaded.version)
        };
        if held.is_some_and(newer) {
            return;
        }
        self.entries.insert(
            id,
            Entry {
                current,
                written: Instant::now(),
                epoch,
            },
        );
    }

    pub(crate) fn forget(&self, id: &CustomerId) {
        self.entries.remove(id);
    }

    /// Drops every entry (the database moved to another host, which may
    /// lack the newest commits of the old one if replication was not
    /// synchronous: a cached state could then be ahead of the store).
    pub(crate) fn clear(&self) {
        self.entries.clear();
    }

    /// A cached state was stale: drop it.
    pub(crate) fn stale(&self, id: &CustomerId) {
        self.stale.fetch_add(1, Ordering::Relaxed);
        self.forget(id);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(version: u64) -> Arc<Current> {
        Arc::new(Current {
            loaded: Loaded {
                version,
                ..Loaded::default()
            },
            key: None,
        })
    }

    #[test]
    fn a_state_read_before_a_failover_is_not_used_after_it() {
        let cache = AggregateCache::new(10, Duration::from_secs(60)).unwrap();
        let id = CustomerId::new_random();
        // Read before failover 1, put after the cache was cleared for it.
        cache.put(id, current(5), 0);
        assert!(cache.get(&id, 1).is_none());
        // The new primary's state replaces it although its version is lower
        // (the old primary's last commits were lost).
        cache.put(id, current(3), 1);
        assert_eq!(cache.get(&id, 1).unwrap().loaded.version, 3);
        cache.put(id, current(5), 0);
        assert_eq!(cache.get(&id, 1).unwrap().loaded.version, 3);
    }

    #[test]
    fn entries_expire_and_are_counted() {
        let cache = AggregateCache::new(10, Duration::from_millis(50)).unwrap();
        let id = CustomerId::new_random();
        assert!(cache.get(&id, 0).is_none());
        cache.put(id, current(3), 0);
        assert_eq!(cache.get(&id, 0).unwrap().loaded.version, 3);
        cache.stale(&id);
        assert!(cache.get(&id, 0).is_none());
        cache.put(id, current(4), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&id, 0).is_none(), "expired");
        cache.count(true);
        cache.count(false);
        cache.count(false);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                stale: 1
            }
        );
    }

    #[test]
    fn an_older_or_equal_version_never_replaces_a_newer_one() {
        let cache = AggregateCache::new(10, Duration::from_secs(60)).unwrap();
        let id = CustomerId::new_random();
        cache.put(id, current(7), 0);
        cache.put(id, current(6), 0);
        assert_eq!(cache.get(&id, 0).unwrap().loaded.version, 7);
        let written = cache.entries.get(&id).unwrap().written;
        cache.put(id, current(7), 0);
        assert_eq!(
            cache.entries.get(&id).unwrap().written,
            written,
            "not refreshed"
        );
        cache.put(id, current(8), 0);
        assert_eq!(cache.get(&id, 0).unwrap().loaded.version, 8);
    }

    #[test]
    fn a_zero_capacity_or_ttl_means_no_cache() {
        assert!(AggregateCache::new(0, Duration::from_secs(1)).is_none());
        assert!(AggregateCache::new(10, Duration::ZERO).is_none());
    }
}
