//! An in-memory store behind the store's interfaces ([`EventStore`],
//! [`Accounts`]), for tests of logic above the store that need no
//! database (the service's use cases). It keeps the rules a caller can
//! observe: the version check of an append (`Conflict`), one holder per
//! login email (`EmailInUse`), the global order of events. It is a fake:
//! no sealing, no snapshots, no durability, one lock for everything.

use std::collections::HashMap;
use std::sync::Mutex;

use access_domain::{CustomerId, EmailAddress};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    Accounts, Append, Appended, EventStore, Loaded, OutboxMessage, Position, RecordedEvent,
    SessionRecord, StoreError, StoredApiKey,
};

#[derive(Default)]
struct State {
    events: Vec<RecordedEvent>,
    sessions: HashMap<String, SessionRecord>,
    api_keys: Vec<StoredApiKey>,
    outbox: Vec<OutboxMessage>,
}

/// See the module header.
#[derive(Default)]
pub struct InMemoryStore {
    state: Mutex<State>,
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mail recorded with appends so far.
    pub fn outbox(&self) -> Vec<OutboxMessage> {
        self.lock().outbox.clone()
    }

    fn stream(state: &State, customer_id: CustomerId) -> Vec<RecordedEvent> {
        state
            .events
            .iter()
            .filter(|e| e.customer_id == customer_id)
            .cloned()
            .collect()
    }

    fn holder(state: &State, email: &EmailAddress) -> Option<CustomerId> {
        let mut ids: Vec<CustomerId> = state.events.iter().map(|e| e.customer_id).collect();
        ids.dedup();
        ids.into_iter().find(|id| {
            let loaded = Loaded::from_events(Self::stream(state, *id).into_iter().map(|e| e.event));
            loaded
                .customer
                .reserved_emails(Utc::now())
                .iter()
                .any(|(reserved, _)| reserved.normalized() == email.normalized())
        })
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    async fn load(&self, customer_id: CustomerId) -> Result<Loaded, StoreError> {
        let state = self.lock();
        Ok(Loaded::from_events(
            Self::stream(&state, customer_id)
                .into_iter()
                .map(|e| e.event),
        ))
    }

    async fn events_of(&self, customer_id: CustomerId) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(Self::stream(&self.lock(), customer_id))
    }

    async fn append_with_outbox(
        &self,
        append: Append<'_>,
        outbox: &[OutboxMessage],
    ) -> Result<Appended, StoreError> {
        let mut state = self.lock();
        let version = Self::stream(&state, append.customer_id).len() as u64;
        if version != append.expected_version {
            return Err(StoreError::Conflict {
                customer_id: append.customer_id.to_string(),
                expected: append.expected_version,
            });
        }
        // The command's own time decides which pending changes expired.
        let now = append.after.updated_at().unwrap_or_else(Utc::now);
        for (email, _) in append.after.reserved_emails(now) {
            if let Some(other) = Self::holder(&state, &email) {
                if other != append.customer_id {
                    return Err(StoreError::EmailInUse {
                        email: email.normalized().to_string(),
                    });
                }
            }
        }
        let mut last_position = None;
        for (i, event) in append.events.iter().enumerate() {
            let global = state.events.len() as i64 + 1;
            let position = Position { tx: 0, global };
            state.events.push(RecordedEvent {
                position,
                customer_id: append.customer_id,
                sequence: version + i as u64 + 1,
                event: event.clone(),
                metadata: append.metadata.to_map(),
                recorded_at: Utc::now(),
            });
            last_position = Some(position);
        }
        state.outbox.extend(outbox.iter().cloned());
        Ok(Appended {
            version: version + append.events.len() as u64,
            last_position,
        })
    }

    async fn read_feed(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.scan(after.global, limit).await
    }

    async fn scan(&self, after: i64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.position.global > after)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(self
            .lock()
            .events
            .last()
            .map_or(Position::START, |e| e.position))
    }

    async fn version_of(&self, customer_id: CustomerId) -> Result<u64, StoreError> {
        Ok(Self::stream(&self.lock(), customer_id).len() as u64)
    }

    async fn email_holder(&self, email: &EmailAddress) -> Result<Option<CustomerId>, StoreError> {
        Ok(Self::holder(&self.lock(), email))
    }

    async fn count_events(&self) -> Result<u64, StoreError> {
        Ok(self.lock().events.len() as u64)
    }
}

#[async_trait]
impl Accounts for InMemoryStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.lock()
            .sessions
            .insert(session.token_digest.clone(), session.clone());
        Ok(())
    }

    async fn find_session(&self, token_digest: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(token_digest).cloned())
    }

    async fn delete_session(&self, token_digest: &str) -> Result<bool, StoreError> {
        Ok(self.lock().sessions.remove(token_digest).is_some())
    }

    async fn delete_sessions_of(&self, customer_id: CustomerId) -> Result<(), StoreError> {
        self.lock()
            .sessions
            .retain(|_, s| s.customer_id != customer_id);
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.lock().sessions.retain(|_, s| s.expires_at > now);
        Ok(())
    }

    async fn customers_by_email(
        &self,
        email: &EmailAddress,
    ) -> Result<Vec<CustomerId>, StoreError> {
        let state = self.lock();
        let mut ids: Vec<CustomerId> = state.events.iter().map(|e| e.customer_id).collect();
        ids.sort_by_key(|id| id.to_string());
        ids.dedup();
        Ok(ids
            .into_iter()
            .filter(|id| {
                Loaded::from_events(Self::stream(&state, *id).into_iter().map(|e| e.event))
                    .customer
                    .email()
                    .is_some_and(|e| e.normalized() == email.normalized())
            })
            .collect())
    }

    async fn load_login(&self, address: &str) -> Result<Option<(CustomerId, Loaded)>, StoreError> {
        let Ok(email) = EmailAddress::parse(address) else {
            return Ok(None);
        };
        for id in self.customers_by_email(&email).await? {
            let loaded = self.load(id).await?;
            if loaded.customer.has_access() {
                return Ok(Some((id, loaded)));
            }
        }
        Ok(None)
    }

    async fn api_keys(&self) -> Result<Vec<StoredApiKey>, StoreError> {
        Ok(self.lock().api_keys.clone())
    }

    async fn insert_api_key(&self, key: &StoredApiKey) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.api_keys.iter().any(|k| k.name == key.name) {
            return Err(StoreError::Database(format!(
                "an API key named {} exists",
                key.name
            )));
        }
        state.api_keys.push(key.clone());
        Ok(())
    }
}
