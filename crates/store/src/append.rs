//! The write side of [`crate::EventStore`]: a command's events and
//! everything that goes with them, in one transaction (login-email
//! reservations, the email lookup, the idempotency record, the mail, a
//! snapshot when one is due, and a forget's erasure); and reading a
//! snapshot back.

use std::sync::Arc;

use access_domain::Customer;

use crate::codec::{self, AGGREGATE_TYPE};
use crate::error::{classify, Violation};
use crate::events::position_of;
use crate::keys::{self, Keyring};
use crate::sql::{Query, Tx, Value};
use crate::{Append, Appended, Loaded, OutboxMessage, RecordedEvent, Store, StoreError};

impl Store {
    /// [`crate::EventStore::append_with_outbox`] sealing with `known`, the
    /// customer's live key read with its state (else the key is read, or
    /// made, in the transaction). Returns the key used.
    pub(crate) async fn append_keyed(
        &self,
        append: Append<'_>,
        outbox: &[OutboxMessage],
        known: Option<Arc<keys::DataKey>>,
        epoch: Option<u64>,
    ) -> Result<(Appended, Option<Arc<keys::DataKey>>), StoreError> {
        let id = append.customer_id.to_string();
        let keyring = self.keyring()?;
        let mut tx = self.db.begin().await?;
        // The state was read when the failover count was `epoch`; if the
        // database moved since, this transaction may be on a host that
        // lacks what the state was built from (asynchronous replication
        // loses the old primary's last commits), and appending after it
        // would leave a gap in the customer's history: a conflict, so
        // the command is decided again on the new host's state.
        if epoch.is_some_and(|e| e != self.switches()) {
            return Err(StoreError::Conflict {
                customer_id: id,
                expected: append.expected_version,
            });
        }
        let key = if self.options.seal_personal_data {
            Some(match known {
                Some(key) => key,
                None => Arc::new(keys::key_for_append(&mut tx, keyring, &id).await?),
            })
        } else {
            None
        };
        let sealed = match &key {
            Some(key) => keys::seal_events(key, &id, append.expected_version + 1, append.events)?,
            None => append.events.to_vec(),
        };
        let encoded = codec::encode(&sealed, append.expected_version + 1, append.metadata)?;
        let mut last_position = None;

        if !encoded.is_empty() {
            let sql = self.db.sql();
            let (recorded_at, now) = match sql.recorded_at_default {
                true => ("", None),
                false => (", recorded_at", Some(chrono::Utc::now())),
            };
            let mut insert = Query::new(format!(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata{recorded_at}) "
            ));
            insert.push_values(encoded, |e| {
                let mut row = vec![
                    Value::from(AGGREGATE_TYPE),
                    Value::from(&id),
                    Value::from(e.sequence),
                    Value::from(e.event_type),
                    Value::from(e.event_version),
                    Value::Json(Some(e.payload)),
                    Value::Json(Some(e.metadata)),
                ];
                if let Some(now) = now {
                    row.push(Value::stamp(now));
                }
                row
            });
            insert.push(&format!(
                " RETURNING global_position, {} AS tx",
                sql.event_tx
            ));
            let rows = tx.fetch(&insert).await.map_err(|e| {
                if classify(&e) == Some(Violation::EventSequence) {
                    StoreError::Conflict {
                        customer_id: id.clone(),
                        expected: append.expected_version,
                    }
                } else {
                    e.into()
                }
            })?;
            // RETURNING order is not guaranteed by SQLite: take the largest.
            for row in &rows {
                last_position = last_position.max(Some(position_of(row)?));
            }
        }

        let version = finish_append(
            &mut tx,
            &append,
            outbox,
            &id,
            self.options.snapshot_interval,
            keyring,
            key.as_deref(),
        )
        .await?;
        tx.commit().await?;
        if append.after.is_forgotten() && !append.before.is_forgotten() {
            // The forget is committed: a WAL checkpoint (SQLite) that fails
            // is only logged (the projector's, after its scrub, follows).
            if let Err(e) = self.db.after_forget().await {
                tracing::warn!(error = %e, "WAL checkpoint after a forget failed");
            }
        }
        Ok((
            Appended {
                version,
                last_position,
            },
            key,
        ))
    }
}

/// Everything an append writes after the events, in the same transaction:
/// reservations, the email lookup, an import's external-id index row, the
/// idempotency record, the mail (sealed with `key` when
/// given) and a snapshot when one is due (sealed with `key` when given).
/// Returns the customer's new version.
async fn finish_append(
    tx: &mut Tx,
    append: &Append<'_>,
    outbox: &[OutboxMessage],
    customer_id: &str,
    snapshot_interval: u64,
    keyring: &Keyring,
    key: Option<&keys::DataKey>,
) -> Result<u64, StoreError> {
    write_reservations(
        tx,
        keyring,
        customer_id,
        append.before,
        append.after,
        // The command's time (its events' `at`), so a fake clock rules.
        append.after.updated_at().unwrap_or_else(chrono::Utc::now),
    )
    .await?;
    let email = append.after.email().map(|e| e.normalized());
    if let Some(new) = append.after.email() {
        if email != append.before.email().map(|e| e.normalized()) {
            let upsert = Query::new(
                "INSERT INTO customer_emails (customer_id, email_key) VALUES ($1, $2) \
                 ON CONFLICT (customer_id) DO UPDATE SET email_key = excluded.email_key",
            )
            .bind(customer_id)
            .bind(keyring.email_key(new));
            tx.execute(&upsert).await?;
        }
    }
    write_external_ids(tx, keyring, customer_id, append.events).await?;
    if let Some(record) = append.idempotency {
        crate::idempotency::insert(tx, record, Some(customer_id)).await?;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for mail in outbox {
        let message = match key {
            Some(key) => keys::seal_mail(key, customer_id, &mail.id, &mail.message)?,
            None => mail.message.clone(),
        };
        let insert = Query::new(
            "INSERT INTO mail_outbox (id, customer_id, kind, sender, recipient, message, status, \
             attempts, next_attempt_ms, claimed_until_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, $7)",
        )
        .bind(&mail.id)
        .bind(customer_id)
        .bind(&mail.kind)
        .bind(&mail.sender)
        .bind(&mail.recipient)
        .bind(message)
        .bind(now_ms);
        tx.execute(&insert).await?;
    }
    let version = append.expected_version + append.events.len() as u64;
    if snapshot_due(snapshot_interval, append.expected_version, version) {
        let state = serde_json::to_value(append.after)
            .map_err(|e| StoreError::Database(format!("snapshot does not serialize: {e}")))?;
        let stored = match key {
            Some(key) => keys::seal_snapshot(key, customer_id, version, &state)?,
            None => state,
        };
        let upsert = Query::new(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
             SET last_sequence = excluded.last_sequence, \
                 current_snapshot = snapshots.current_snapshot + 1, \
                 payload = excluded.payload",
        )
        .bind(AGGREGATE_TYPE)
        .bind(customer_id)
        .bind(Value::count(version))
        .bind(Value::Json(Some(stored)));
        tx.execute(&upsert).await?;
    }
    if append.after.is_forgotten() && !append.before.is_forgotten() {
        keys::erase_customer(tx, customer_id).await?;
    }
    Ok(version)
}

/// Brings the customer's login-email reservations from `before` to
/// `after`: drop its rows, insert the new set. An address another customer
/// holds makes the insert do nothing, which is `EmailInUse` (and the
/// caller's transaction rolls back). Another customer's pending change
/// whose link expired no longer holds its address: the claim releases it
/// first, in the same transaction. `now` decides which pending changes
/// have expired: a command's own time (so a test's fake clock rules), or
/// today for a re-index.
pub(crate) async fn write_reservations(
    tx: &mut Tx,
    keyring: &Keyring,
    customer_id: &str,
    before: &Customer,
    after: &Customer,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let wanted = reservations(after, now);
    if reservations(before, now) == wanted {
        return Ok(());
    }
    tx.execute(&Query::new("DELETE FROM login_emails WHERE customer_id = $1").bind(customer_id))
        .await?;
    for (email, kind, expires_ms) in &wanted {
        let email_key = keyring.email_key(email);
        let release = Query::new(
            "DELETE FROM login_emails WHERE email_key = $1 AND kind = 'pending_change' \
             AND expires_ms IS NOT NULL AND expires_ms <= $2 RETURNING customer_id",
        )
        .bind(&email_key)
        .bind(now.timestamp_millis());
        if tx.fetch_optional(&release).await?.is_some() {
            tracing::info!(
                customer_id,
                "claimed an address held by another customer's expired pending email change"
            );
        }
        let insert = Query::new(
            "INSERT INTO login_emails (email_key, customer_id, kind, expires_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (email_key) DO NOTHING RETURNING email_key",
        )
        .bind(email_key)
        .bind(customer_id)
        .bind(*kind)
        .bind(*expires_ms);
        if tx.fetch_optional(&insert).await?.is_none() {
            return Err(StoreError::EmailInUse {
                email: email.normalized().to_string(),
            });
        }
    }
    Ok(())
}

/// The blind-index rows of the external ids an import's events name
/// (`import_external_ids`), in the append's transaction: a customer is
/// never imported without the row a re-run finds it by. An external id
/// another customer of the same source holds is
/// [`StoreError::ExternalIdTaken`] (the transaction rolls back).
async fn write_external_ids(
    tx: &mut Tx,
    keyring: &Keyring,
    customer_id: &str,
    events: &[access_domain::CustomerEvent],
) -> Result<(), StoreError> {
    for event in events {
        let access_domain::CustomerEvent::CustomerImported {
            source,
            external_id: Some(external),
            ..
        } = event
        else {
            continue;
        };
        let Some(external) = external.known() else {
            continue;
        };
        let key = crate::import::external_key(keyring, source, external);
        let insert = Query::new(
            "INSERT INTO import_external_ids (external_key, customer_id) VALUES ($1, $2) \
             ON CONFLICT (external_key) DO NOTHING RETURNING external_key",
        )
        .bind(&key)
        .bind(customer_id);
        if tx.fetch_optional(&insert).await?.is_some() {
            continue;
        }
        let holder =
            Query::new("SELECT customer_id FROM import_external_ids WHERE external_key = $1")
                .bind(&key);
        let held_by = match tx.fetch_optional(&holder).await? {
            Some(row) => Some(row.text("customer_id")?),
            None => None,
        };
        if held_by.as_deref() != Some(customer_id) {
            return Err(StoreError::ExternalIdTaken);
        }
    }
    Ok(())
}

/// Rewrites a customer's email lookup and reservation rows from its state
/// under the current email index key (for the one-time migration of
/// stores written before keyed hashes).
pub(crate) async fn reindex_customer(
    tx: &mut Tx,
    keyring: &Keyring,
    customer_id: &str,
    customer: &Customer,
) -> Result<(), StoreError> {
    for statement in [
        "DELETE FROM login_emails WHERE customer_id = $1",
        "DELETE FROM customer_emails WHERE customer_id = $1",
    ] {
        tx.execute(&Query::new(statement).bind(customer_id)).await?;
    }
    write_reservations(
        tx,
        keyring,
        customer_id,
        &Customer::default(),
        customer,
        // Today, not the customer's last change: a pending change that has
        // expired since holds nothing (its address may be another's now).
        chrono::Utc::now(),
    )
    .await?;
    if let Some(email) = customer.email() {
        let insert =
            Query::new("INSERT INTO customer_emails (customer_id, email_key) VALUES ($1, $2)")
                .bind(customer_id)
                .bind(keyring.email_key(email));
        tx.execute(&insert).await?;
    }
    Ok(())
}

/// A customer from its snapshot (state at `last_sequence`) and the events
/// after it.
pub(crate) fn from_snapshot(
    customer: Customer,
    last_sequence: i64,
    newer: Vec<RecordedEvent>,
) -> Loaded {
    let mut loaded = Loaded {
        customer,
        version: u64::try_from(last_sequence).unwrap_or_default(),
    };
    for e in newer {
        cqrs_es::Aggregate::apply(&mut loaded.customer, e.event);
        loaded.version += 1;
    }
    loaded
}

/// A customer from its stored snapshot at `last_sequence`: `None` when it
/// cannot be used (the key is destroyed, or it no longer deserializes: the
/// caller then replays every event). A sealed snapshot that does not open
/// (altered, or put back from an older state) is
/// [`StoreError::CorruptSnapshot`]: never used, never silently replaced.
pub(crate) fn open_snapshot(
    keyring: &Keyring,
    customer_id: &str,
    last_sequence: i64,
    key: &crate::keys::KeyState,
    payload: serde_json::Value,
) -> Result<Option<Customer>, StoreError> {
    let last_sequence = u64::try_from(last_sequence).unwrap_or_default();
    let mut opener = crate::keys::Opener::new(keyring);
    let state = match opener.open_snapshot(customer_id, last_sequence, key, payload) {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(None),
        Err(detail) => {
            return Err(StoreError::CorruptSnapshot {
                customer_id: customer_id.to_string(),
                last_sequence,
                detail,
            })
        }
    };
    match serde_json::from_value(state) {
        Ok(customer) => Ok(Some(customer)),
        Err(e) => {
            snapshot_unreadable(customer_id, &e);
            Ok(None)
        }
    }
}

/// Logs an unreadable snapshot (the caller then replays every event).
pub(crate) fn snapshot_unreadable(customer_id: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(customer_id, error = %error, "snapshot unreadable, replaying all events");
}

/// The reservations a customer should hold at `now`: (address, kind,
/// when it expires in milliseconds since the epoch: a pending change's
/// link expiry, none for a login).
fn reservations(
    customer: &Customer,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(access_domain::EmailAddress, &'static str, Option<i64>)> {
    customer
        .reserved_emails(now)
        .into_iter()
        .map(|(email, kind)| {
            let expires = match kind {
                access_domain::ReservationKind::Login => None,
                access_domain::ReservationKind::PendingChange => customer
                    .pending_email_change()
                    .map(|p| p.expires_at.timestamp_millis()),
            };
            (email, kind.as_str(), expires)
        })
        .collect()
}

/// True when this append crosses a multiple of the snapshot interval.
pub(crate) fn snapshot_due(interval: u64, before: u64, after: u64) -> bool {
    interval > 0 && after / interval > before / interval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_fall_due_at_each_multiple_of_the_interval() {
        assert!(!snapshot_due(0, 0, 1000));
        assert!(!snapshot_due(100, 0, 99));
        assert!(snapshot_due(100, 99, 100));
        assert!(snapshot_due(100, 98, 103));
        assert!(!snapshot_due(100, 100, 199));
    }
}
