//! `accessctl replay FILE`: loads a customer's exported events
//! (`GET /v1/customers/{id}/events?format=jsonl`) into a scratch SQLite
//! store, runs the projections over them, and prints the resulting access
//! state and audit trail. A bug report's history can so be reproduced on a
//! laptop, without the production database, and turned into a scenario.
//!
//! The export leaves out password hashes and token digests. Events that
//! need one get a placeholder that no password or token can match
//! ([`PLACEHOLDER_HASH`], [`PLACEHOLDER_DIGEST`]). Older event versions go
//! through the upcasters, as the stores do. Events are appended one command
//! at a time (consecutive events with the same metadata), the way the
//! service wrote them. The scratch store is deleted at the end.
//!
//! The parts: [`input`] reads and upcasts the file's lines, [`scratch`]
//! writes them into the scratch store a command at a time, and [`text`]
//! prints the result for people (`--format json` is serde's).

mod input;
mod scratch;
mod text;

use access_store::prelude::*;
use std::path::PathBuf;

use access_domain::CustomerId;
use access_projections::export::AuditView;
use access_projections::{db, AccessStateRow, AuditFilter, AuditRow, LIVE};
use access_store::{Position, Store, StoreOptions};
use anyhow::Context;
use chrono::Utc;
use serde::Serialize;

/// Stands in for a password hash the export left out: not a PHC string, so
/// no password verifies against it.
pub const PLACEHOLDER_HASH: &str = "replayed:no-secret";
/// Stands in for a token digest the export left out (no token hashes to
/// all zeros).
pub const PLACEHOLDER_DIGEST: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// `accessctl replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A customer's events as JSON Lines, as
    /// `GET /v1/customers/{id}/events?format=jsonl` exports them (`-`:
    /// standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub format: Output,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Readable tables.
    Text,
    /// One JSON document: `{"file", "events", "customers": [{"state", "audit"}]}`.
    Json,
}

/// What `--format json` prints.
#[derive(Serialize)]
struct Report {
    file: String,
    /// Events replayed.
    events: usize,
    customers: Vec<CustomerReport>,
}

#[derive(Serialize)]
struct CustomerReport {
    state: AccessStateRow,
    audit: Vec<AuditView>,
}

/// Runs the projections over every event of the scratch store.
async fn project(store: &Store) -> anyhow::Result<()> {
    let mut from = Position::START;
    loop {
        let events = store
            .read_feed(from, 500)
            .await
            .context("reading the scratch store")?;
        if events.is_empty() {
            return Ok(());
        }
        from = db::project_batch(store, LIVE, from, &events)
            .await
            .context("projecting the replayed events")?;
    }
}

async fn audit_of(store: &Store, id: CustomerId) -> anyhow::Result<Vec<AuditRow>> {
    let mut filter = AuditFilter {
        customer_id: Some(id),
        ..AuditFilter::default()
    };
    let mut out = Vec::new();
    loop {
        let page = db::audit_page(store, &filter, 1000)
            .await
            .context("reading the audit trail")?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        filter.after = Some(Position {
            tx: last.tx,
            global: last.position,
        });
        let full = page.len() == 1000;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Runs `accessctl replay`.
pub async fn run(args: &ReplayArgs) -> anyhow::Result<std::process::ExitCode> {
    let shown = if args.file.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        args.file.display().to_string()
    };
    let events = input::read_events(args, &shown)?;
    let count = events.len();
    let dir = tempfile::Builder::new()
        .prefix("accessctl-replay-")
        .tempdir()
        .context("creating a scratch directory")?;
    let url = format!("sqlite://{}", dir.path().join("replay.db").display());
    let store = Store::connect(&url, StoreOptions::default())
        .await
        .context("opening the scratch store")?;
    store
        .migrate()
        .await
        .context("migrating the scratch store")?;
    // The scratch store's own throwaway key.
    let (master, _) = access_store::MasterKey::generate().context("generating a scratch key")?;
    let store = store
        .unlock(master)
        .await
        .context("opening the scratch store's keys")?;
    let customers = scratch::load(&store, events)
        .await
        .with_context(|| shown.clone())?;
    project(&store).await?;

    let mut results = Vec::new();
    for id in customers {
        let state = db::access_state(&store, id)
            .await
            .context("reading the access state")?
            .with_context(|| format!("customer {id} has no access state after the replay"))?;
        let audit = audit_of(&store, id).await?;
        results.push((state, audit));
    }
    drop(store);
    match args.format {
        Output::Json => {
            let report = Report {
                file: shown,
                events: count,
                customers: results
                    .into_iter()
                    .map(|(state, audit)| CustomerReport {
                        state,
                        audit: audit.into_iter().map(AuditView::from).collect(),
                    })
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Output::Text => {
            let now = Utc::now();
            println!(
                "replayed {count} event(s) of {} customer(s) from {shown}",
                results.len()
            );
            for (state, audit) in &results {
                println!();
                print!("{}", text::state_text(state, now));
                println!();
                print!("{}", text::audit_text(audit));
            }
        }
    }
    dir.close().context("removing the scratch store")?;
    Ok(std::process::ExitCode::SUCCESS)
}
