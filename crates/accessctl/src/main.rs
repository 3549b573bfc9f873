//! `accessctl`: the operators' and auditors' command line.
//!
//! It may read the store directly (status, exports, rebuilds) and apply
//! migrations, but it never writes events by a side path: changes to
//! customers go through the service's API.

use anyhow::Context;
use clap::{Parser, Subcommand};

use access_store::{Store, StoreOptions};

/// The default embedded database, as `accessd` uses it.
const DEFAULT_DATABASE_URL: &str = "sqlite://access.db";

#[derive(Parser, Debug)]
#[command(
    name = "accessctl",
    version,
    about = "Operate and audit the access service"
)]
struct Cli {
    /// `sqlite://FILE` or `postgres://…` (the same database as accessd).
    #[arg(long, env = "ACCESS_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply the database migrations (accessd also does this at start-up).
    Migrate,
    /// Show whether the store is reachable and migrated, and its size.
    Status,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            // One line: the context chain, no backtrace.
            eprintln!("accessctl: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let shown_url = access_store::redact_url(&cli.database_url);
    let store = Store::connect(&cli.database_url, StoreOptions::default())
        .await
        .with_context(|| format!("connecting to {shown_url}"))?;
    match cli.command {
        Command::Migrate => {
            store
                .migrate()
                .await
                .with_context(|| format!("migrating {shown_url}"))?;
            println!("migrated {} store at {shown_url}", store.kind());
        }
        Command::Status => {
            let ready = store
                .is_ready()
                .await
                .with_context(|| format!("reading {shown_url}"))?;
            if !ready {
                println!(
                    "{} store at {shown_url}: not migrated (run `accessctl migrate`)",
                    store.kind()
                );
                return Ok(std::process::ExitCode::FAILURE);
            }
            let events = store.count_events().await.context("counting events")?;
            println!(
                "{} store at {shown_url}: migrated, {events} events",
                store.kind()
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
