//! The baseline of scenario 1: the bare framework. A minimal cqrs-es
//! aggregate on postgres-es (plain event store, no snapshots, no queries)
//! that appends one event of about the size of ours per command: no HTTP,
//! no authentication, no projections, no idempotency, no outbox.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::PostgresCqrs;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

use crate::report::Latencies;
use crate::Phase;

/// The postgres-es schema (its `db/init.sql`), events table only.
const SCHEMA: &str = "CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence))";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    email: String,
    registered: bool,
    access: bool,
}

pub enum AccountCommand {
    Register { email: String },
    GrantWithLink,
    ChangeEmail { email: String },
    Revoke,
}

/// About the size of our events (an email, timestamps, a token digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Registered {
        email: String,
        name: Option<String>,
        at: String,
    },
    AccessGranted {
        role: String,
        token_digest: String,
        expires_at: String,
        at: String,
    },
    EmailChanged {
        old_email: String,
        new_email: String,
        at: String,
    },
    AccessRevoked {
        reason: Option<String>,
        at: String,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Registered { .. } => "Registered",
            AccountEvent::AccessGranted { .. } => "AccessGranted",
            AccountEvent::EmailChanged { .. } => "EmailChanged",
            AccountEvent::AccessRevoked { .. } => "AccessRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug)]
pub struct AccountError(String);

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AccountError {}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

impl Aggregate for Account {
    const TYPE: &'static str = "BenchAccount";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            AccountCommand::Register { email } => {
                if self.registered {
                    return Err(AccountError("already registered".into()));
                }
                AccountEvent::Registered {
                    email,
                    name: Some("Bench Customer".into()),
                    at: now(),
                }
            }
            AccountCommand::GrantWithLink => {
                if !self.registered || self.access {
                    return Err(AccountError("cannot grant".into()));
                }
                AccountEvent::AccessGranted {
                    role: "customer_center".into(),
                    token_digest: "0".repeat(64),
                    expires_at: now(),
                    at: now(),
                }
            }
            AccountCommand::ChangeEmail { email } => AccountEvent::EmailChanged {
                old_email: self.email.clone(),
                new_email: email,
                at: now(),
            },
            AccountCommand::Revoke => {
                if !self.access {
                    return Err(AccountError("no access".into()));
                }
                AccountEvent::AccessRevoked {
                    reason: None,
                    at: now(),
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AccountEvent::Registered { email, .. } => {
                self.registered = true;
                self.email = email;
            }
            AccountEvent::AccessGranted { .. } => self.access = true,
            AccountEvent::EmailChanged { new_email, .. } => self.email = new_email,
            AccountEvent::AccessRevoked { .. } => self.access = false,
        }
    }
}

/// The framework on a fresh database with the postgres-es schema.
pub struct Framework {
    cqrs: Arc<PostgresCqrs<Account>>,
    pool: sqlx::PgPool,
}

impl Framework {
    pub async fn open(url: &str, pool_size: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .connect(url)
            .await
            .context("connect the baseline pool")?;
        sqlx::query(SCHEMA)
            .execute(&pool)
            .await
            .context("create the postgres-es events table")?;
        let cqrs = Arc::new(postgres_es::postgres_cqrs(pool.clone(), vec![], ()));
        Ok(Self { cqrs, pool })
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    /// `clients` tasks, each running customers through register, grant,
    /// change email and revoke (one event per command) for `duration`.
    pub async fn run(&self, clients: usize, duration: Duration) -> Result<Phase> {
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let cqrs = self.cqrs.clone();
                tokio::spawn(async move { client(cqrs, c, deadline).await })
            })
            .collect();
        let mut phase = Phase::default();
        for task in tasks {
            let (latencies, errors) = task.await.context("baseline client task")??;
            phase.latencies.add(&latencies);
            phase.errors += errors;
        }
        phase.elapsed = started.elapsed();
        phase.ok = phase.latencies.count();
        Ok(phase)
    }
}

async fn client(
    cqrs: Arc<PostgresCqrs<Account>>,
    client_no: usize,
    deadline: Instant,
) -> Result<(Latencies, u64)> {
    let mut latencies = Latencies::new();
    let mut errors = 0u64;
    let mut request = 0u64;
    while Instant::now() < deadline {
        let id = uuid::Uuid::new_v4().to_string();
        let commands = [
            AccountCommand::Register {
                email: format!("bench-{id}@example.com"),
            },
            AccountCommand::GrantWithLink,
            AccountCommand::ChangeEmail {
                email: format!("bench-{id}-2@example.net"),
            },
            AccountCommand::Revoke,
        ];
        for command in commands {
            if Instant::now() >= deadline {
                break;
            }
            request += 1;
            let metadata = HashMap::from([
                ("actor_kind".to_string(), "api".to_string()),
                ("actor_name".to_string(), "bench".to_string()),
                ("actor_role".to_string(), "admin".to_string()),
                (
                    "request_id".to_string(),
                    format!("bench-{client_no}-{request}"),
                ),
            ]);
            let started = Instant::now();
            match cqrs.execute_with_metadata(&id, command, metadata).await {
                Ok(()) => latencies.record(started.elapsed()),
                Err(e) => {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("baseline client {client_no}: {e}");
                    }
                }
            }
        }
    }
    Ok((latencies, errors))
}
