//! Command metadata: who asked, under which request, and why. It goes onto
//! every event the command emits (cqrs-es keeps it as a string map).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::values::CustomerId;

/// The role of an API caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    /// Upstream services: send commands, read access state.
    Service,
    /// Read only: access state, audit, events.
    Auditor,
    /// Both.
    Admin,
    /// Downstream systems: the change feed only.
    Subscriber,
}

impl ApiRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
            Self::Subscriber => "subscriber",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "service" => Some(Self::Service),
            "auditor" => Some(Self::Auditor),
            "admin" => Some(Self::Admin),
            "subscriber" => Some(Self::Subscriber),
            _ => None,
        }
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// An API caller, by the name of its key.
    Api { name: String, role: ApiRole },
    /// The customer, through self-service or a link from an email.
    Customer { customer_id: CustomerId },
    /// The service itself, or an operator's tool.
    System { name: String },
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api { name, role } => write!(f, "{name} ({})", role.as_str()),
            Self::Customer { customer_id } => write!(f, "customer {customer_id}"),
            Self::System { name } => write!(f, "system {name}"),
        }
    }
}

/// Metadata of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadata {
    pub actor: Actor,
    pub request_id: String,
    pub reason: Option<String>,
    /// The W3C trace id of the request that caused the events, when the
    /// caller sent one (`traceparent`): follows a command across services.
    pub correlation_id: Option<String>,
}

/// Keys used in the event metadata map.
pub mod keys {
    pub const ACTOR_KIND: &str = "actor_kind";
    pub const ACTOR_NAME: &str = "actor_name";
    pub const ACTOR_ROLE: &str = "actor_role";
    pub const ACTOR_CUSTOMER: &str = "actor_customer_id";
    pub const REQUEST_ID: &str = "request_id";
    pub const REASON: &str = "reason";
    pub const CORRELATION_ID: &str = "correlation_id";
}

/// Why a stored metadata map could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event metadata: {0}")]
pub struct MetadataError(String);

impl CommandMetadata {
    pub fn new(actor: Actor, request_id: impl Into<String>) -> Self {
        Self {
            actor,
            request_id: request_id.into(),
            reason: None,
            correlation_id: None,
        }
    }

    pub fn with_correlation(mut self, correlation_id: Option<String>) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason.filter(|r| !r.trim().is_empty());
        self
    }

    /// The string map stored with every event of the command.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        match &self.actor {
            Actor::Api { name, role } => {
                map.insert(keys::ACTOR_KIND.into(), "api".into());
                map.insert(keys::ACTOR_NAME.into(), name.clone());
                map.insert(keys::ACTOR_ROLE.into(), role.as_str().into());
            }
            Actor::Customer { customer_id } => {
                map.insert(keys::ACTOR_KIND.into(), "customer".into());
                map.insert(keys::ACTOR_CUSTOMER.into(), customer_id.to_string());
            }
            Actor::System { name } => {
                map.insert(keys::ACTOR_KIND.into(), "system".into());
                map.insert(keys::ACTOR_NAME.into(), name.clone());
            }
        }
        map.insert(keys::REQUEST_ID.into(), self.request_id.clone());
        if let Some(reason) = &self.reason {
            map.insert(keys::REASON.into(), reason.clone());
        }
        if let Some(correlation) = &self.correlation_id {
            map.insert(keys::CORRELATION_ID.into(), correlation.clone());
        }
        map
    }

    /// Reads the map back (for projections and the audit trail).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let get = |key: &str| {
            map.get(key)
                .cloned()
                .ok_or_else(|| MetadataError(format!("missing `{key}`")))
        };
        let actor = match get(keys::ACTOR_KIND)?.as_str() {
            "api" => {
                let role = get(keys::ACTOR_ROLE)?;
                Actor::Api {
                    name: get(keys::ACTOR_NAME)?,
                    role: ApiRole::parse(&role)
                        .ok_or_else(|| MetadataError(format!("unknown role `{role}`")))?,
                }
            }
            "customer" => {
                let id = get(keys::ACTOR_CUSTOMER)?;
                Actor::Customer {
                    customer_id: id
                        .parse()
                        .map_err(|_| MetadataError(format!("bad customer id `{id}`")))?,
                }
            }
            "system" => Actor::System {
                name: get(keys::ACTOR_NAME)?,
            },
            other => return Err(MetadataError(format!("unknown actor kind `{other}`"))),
        };
        Ok(Self {
            actor,
            request_id: get(keys::REQUEST_ID)?,
            reason: map.get(keys::REASON).cloned(),
            correlation_id: map.get(keys::CORRELATION_ID).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_string_map() {
        for actor in [
            Actor::Api {
                name: "crm".into(),
                role: ApiRole::Service,
            },
            Actor::Customer {
                customer_id: CustomerId::new_random(),
            },
            Actor::System {
                name: "accessctl".into(),
            },
        ] {
            let meta =
                CommandMetadata::new(actor, "req-1").with_reason(Some("asked by phone".into()));
            let back = CommandMetadata::from_map(&meta.to_map()).unwrap();
            assert_eq!(back, meta);
            let traced = meta.with_correlation(Some("4bf92f3577b34da6a3ce929d0e0e4736".into()));
            let map = traced.to_map();
            assert_eq!(
                map.get(keys::CORRELATION_ID).map(String::as_str),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            assert_eq!(CommandMetadata::from_map(&map).unwrap(), traced);
        }
    }

    #[test]
    fn blank_reason_is_dropped_and_bad_maps_are_errors() {
        let meta = CommandMetadata::new(Actor::System { name: "t".into() }, "r")
            .with_reason(Some("  ".into()));
        assert_eq!(meta.reason, None);
        let err = CommandMetadata::from_map(&HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("actor_kind"), "{err}");
    }
}
