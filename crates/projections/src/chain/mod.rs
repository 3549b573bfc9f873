//! The hash chain over the events: tamper evidence for the history.
//!
//! Every event row gets a SHA-256 hash over its stored content and the hash
//! of the event before it in the global order (`event_hashes`, one row per
//! event). The newest hash (the *head*) is a digest of the whole history up
//! to it: an auditor keeps it outside the system, and [`verify`] later
//! recomputes the chain from the events table and says whether the history
//! up to that digest is unchanged, and which events were altered, inserted
//! or removed. The recipe is in docs/audit.md ("Proving the history is
//! intact") so that it can be recomputed without this code.
//!
//! The chain covers the rows *as stored* (canonical JSON of the stored
//! payload and metadata), never the decoded or upcast events: an upcaster
//! or forgetting a customer (destroying the key its personal data is sealed
//! with) does not change a hash.
//!
//! [`extend`] hashes the events not hashed yet, in batches, each batch with
//! the chain's checkpoint (`projector_checkpoints`, name `chain`) in one
//! transaction. Several processes may extend at once: the checkpoint row is
//! locked, and a batch that finds it moved writes nothing.
//!
//! Where things are:
//! - `recipe`: the hash of one stored event ([`event_hash`], over
//!   [`canonical_json`]); pure, no I/O.
//! - `read`: the raw event rows in the global order ([`read_events`]) and
//!   the stored links.
//! - `extend`: [`extend_batch`], [`extend`], [`catch_up`] and [`restart`].
//! - `verify`: [`verify`] / [`verify_with`] and their [`VerifyReport`].
//! - here: the checkpoint's name, the [`head`] and its digest form.

use access_store::{Position, Store};

use crate::db;
use crate::ProjectionError;

mod extend;
mod read;
mod recipe;
mod verify;

pub use extend::{catch_up, extend, extend_batch, restart, Extended, BATCH};
pub use read::read_events;
use read::stored_hash;
pub use recipe::{canonical_json, event_hash, StoredEvent, GENESIS, RECIPE};
pub use verify::{
    verify, verify_with, DigestCheck, Problem, ProblemKind, VerifyReport, MAX_KEPT_PROBLEMS,
};

/// The chain's checkpoint row in `projector_checkpoints`.
pub const CHECKPOINT: &str = "chain";

/// The newest hashed event and its hash: the digest of the history up to
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub position: Position,
    pub hash: String,
}

impl ChainHead {
    /// `TX:GLOBAL:HASH`, the form `accessctl audit verify --digest` takes.
    pub fn digest(&self) -> String {
        format!(
            "{}:{}:{}",
            self.position.tx, self.position.global, self.hash
        )
    }
}

/// The digest of an empty history: `0:0:000…0`.
pub fn genesis_digest() -> String {
    format!("0:0:{GENESIS}")
}

/// Parses a kept digest, `TX:GLOBAL:HASH` or `GLOBAL:HASH`, into the
/// global position and the (lower-case) hash. The global position alone
/// names the event; `TX` is accepted because `digest` prints it.
pub fn parse_digest(raw: &str) -> Option<(i64, String)> {
    let parts: Vec<&str> = raw.trim().split(':').collect();
    let (global, hash) = match parts.as_slice() {
        [tx, global, hash] => {
            tx.parse::<u64>().ok()?;
            (global, hash)
        }
        [global, hash] => (global, hash),
        _ => return None,
    };
    let global: i64 = global.parse().ok().filter(|g| *g >= 0)?;
    let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| (global, hash.to_ascii_lowercase()))
}

/// The newest hashed event and its hash, as stored (None while nothing is
/// hashed).
pub async fn head(store: &Store) -> Result<Option<ChainHead>, ProjectionError> {
    let at = db::checkpoint(store, CHECKPOINT).await?;
    if at == Position::START {
        return Ok(None);
    }
    let hash = stored_hash(store, at.global).await?.ok_or_else(|| {
        ProjectionError::Corrupt(format!(
            "the hash chain's head (position {at}) is missing from event_hashes"
        ))
    })?;
    Ok(Some(ChainHead { position: at, hash }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_with_or_without_the_transaction() {
        let hash = "AB".repeat(32);
        assert_eq!(
            parse_digest(&format!("12:345:{hash}")),
            Some((345, hash.to_ascii_lowercase()))
        );
        assert_eq!(
            parse_digest(&format!("345:{hash}")),
            Some((345, hash.to_ascii_lowercase()))
        );
        assert_eq!(parse_digest(&genesis_digest()), Some((0, GENESIS.into())));
        for bad in ["", "1:2", "x:1:ab", "1:-2:00", &format!("1:{}", &hash[1..])] {
            assert_eq!(parse_digest(bad), None, "{bad}");
        }
        let head = ChainHead {
            position: Position { tx: 9, global: 10 },
            hash: GENESIS.into(),
        };
        assert_eq!(parse_digest(&head.digest()), Some((10, GENESIS.into())));
    }
}
