//! What sealing personal data costs: commands through `Store::execute`
//! (load, decide, append) with sealing on and off, in the same run, on
//! fresh databases, plus a full read of the feed (opening every event).
//!
//! ```text
//! cargo run --release -p access-store --features testing --example encryption_cost -- \
//!     [--store postgres|sqlite|both] [--customers N] [--writers W] [--rounds R]
//! ```
//!
//! Each round runs the same workload once with sealing off and once with it
//! on (alternating which goes first), each on its own fresh database; the
//! table shows the best round of each and the ratio. Fake hasher, tokens
//! and clock: no password hashing is measured. Every customer: register
//! (name + email), grant access with a setup link, change email with a
//! setup link = 3 commands, 6 events, 6 personal fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_store::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_domain::services::fakes::services_at;
use access_domain::{
    Actor, ApiRole, CommandMetadata, Credential, CustomerCommand, CustomerId, CustomerName,
    EmailAddress, Role,
};
use access_store::testing::TestDatabase;
use access_store::{Execution, Position, Store, StoreOptions};
use chrono::Utc;

struct Args {
    stores: Vec<bool>,
    customers: usize,
    writers: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        stores: vec![true, false],
        customers: 2000,
        writers: 8,
        rounds: 3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--store" => {
                a.stores = match value.as_str() {
                    "postgres" => vec![true],
                    "sqlite" => vec![false],
                    _ => vec![true, false],
                }
            }
            "--customers" => a.customers = value.parse().expect("--customers N"),
            "--writers" => a.writers = value.parse().expect("--writers W"),
            "--rounds" => a.rounds = value.parse().expect("--rounds R"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn meta() -> CommandMetadata {
    CommandMetadata::new(
        Actor::Api {
            name: "bench".into(),
            role: ApiRole::Service,
        },
        "bench",
    )
}

async fn one_customer(store: &Store, n: usize) {
    let id = CustomerId::new_random();
    let email = |s: String| EmailAddress::parse(&s).unwrap();
    let commands = [
        CustomerCommand::RegisterCustomer {
            customer_id: id,
            email: email(format!("bench{n}@example.com")),
            name: Some(CustomerName::parse(&format!("Bench Customer {n}")).unwrap()),
        },
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: Credential::SetupLink,
        },
        CustomerCommand::ChangeEmail {
            email: email(format!("moved{n}@example.com")),
            credential: Credential::SetupLink,
        },
    ];
    let metadata = meta();
    for command in commands {
        store
            .execute(
                &services_at(Utc::now()),
                Execution {
                    customer_id: id,
                    command,
                    metadata: &metadata,
                    expected_version: None,
                    idempotency: None,
                },
                |_| String::new(),
            )
            .await
            .unwrap();
    }
}

struct Run {
    commands_per_s: f64,
    read_events_per_s: f64,
}

async fn run(postgres: bool, seal: bool, a: &Args) -> Run {
    let db = if postgres {
        TestDatabase::postgres().await.unwrap()
    } else {
        TestDatabase::sqlite().unwrap()
    };
    let store = db
        .store(StoreOptions {
            max_connections: (a.writers as u32).max(2),
            seal_personal_data: seal,
            ..StoreOptions::default()
        })
        .await
        .unwrap();
    let store = Arc::new(store);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.writers {
        let store = store.clone();
        let (customers, writers) = (a.customers, a.writers);
        tasks.push(tokio::spawn(async move {
            let mut n = w;
            while n < customers {
                one_customer(&store, n).await;
                n += writers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let commands = (a.customers * 3) as f64;

    // Full read of the feed (every event opened when sealed).
    let head = store.head().await.unwrap();
    let started = Instant::now();
    let mut at = Position::START;
    let mut events = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while at < head {
        let batch = store.read_feed(at, 5000).await.unwrap();
        match batch.last() {
            Some(last) => at = last.position,
            None => {
                assert!(Instant::now() < deadline, "the feed stays held back");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        events += batch.len() as u64;
    }
    let read = started.elapsed();
    Run {
        commands_per_s: commands / elapsed.as_secs_f64(),
        read_events_per_s: events as f64 / read.as_secs_f64(),
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    println!(
        "encryption cost: {} customers x 3 commands, {} writers, best of {} rounds",
        a.customers, a.writers, a.rounds
    );
    println!(
        "| store | commands/s plain | commands/s sealed | ratio | feed read ev/s plain | sealed | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &postgres in &a.stores {
        let (mut plain, mut sealed): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for seal in order {
                let r = run(postgres, seal, &a).await;
                if seal {
                    sealed.push(r)
                } else {
                    plain.push(r)
                }
            }
        }
        let best = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).fold(0.0, f64::max);
        let (pc, sc) = (
            best(&plain, |r| r.commands_per_s),
            best(&sealed, |r| r.commands_per_s),
        );
        let (pr, sr) = (
            best(&plain, |r| r.read_events_per_s),
            best(&sealed, |r| r.read_events_per_s),
        );
        println!(
            "| {} | {pc:.0} | {sc:.0} | {:.2} | {pr:.0} | {sr:.0} | {:.2} |",
            if postgres { "PostgreSQL" } else { "SQLite" },
            sc / pc,
            sr / pr
        );
    }
}
