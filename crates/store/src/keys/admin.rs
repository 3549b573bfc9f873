//! [`KeyAdmin`]: the operator's work on keys (`accessctl keys …`).

use async_trait::async_trait;

use super::{key_store, legacy, LegacySealed, MasterKey};
use crate::{Store, StoreError};

/// Rotating the master key and sealing data written before encryption.
#[async_trait]
pub trait KeyAdmin: Send + Sync {
    /// Re-wraps every customer key and the email index key under `new`
    /// (one transaction; events untouched). Afterwards only `new` unlocks
    /// the store: restart every process with it. Returns the number of
    /// customer keys re-wrapped.
    async fn rotate_master_key(&self, new: &MasterKey) -> Result<u64, StoreError>;

    /// One-time migration for events written before encryption, or sealed
    /// under an older scheme (`v1`, bound to the customer only): seals the
    /// personal fields of every such event under its customer's key (made
    /// now if missing) with the current scheme (bound to customer, sequence
    /// and field; see [`crate::keys`]), one transaction per customer, and
    /// drops the customer's snapshot (the next one is sealed anew). Events
    /// keep their type, version and every other field; their stored form
    /// changes, so the hash chain must be recomputed afterwards
    /// (`accessctl keys seal-legacy` does that). Also rewrites every
    /// customer's email lookup and reservation rows as keyed hashes. Safe
    /// to run again: events sealed under the current scheme are left
    /// alone.
    async fn seal_legacy_events(&self) -> Result<LegacySealed, StoreError>;
}

#[async_trait]
impl KeyAdmin for Store {
    async fn rotate_master_key(&self, new: &MasterKey) -> Result<u64, StoreError> {
        let keyring = self.keyring()?;
        let mut tx = self.sql().begin().await?;
        let n = key_store::rotate_master(&mut tx, keyring, new).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn seal_legacy_events(&self) -> Result<LegacySealed, StoreError> {
        legacy::seal_legacy_events(self).await
    }
}
