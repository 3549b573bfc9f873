//! `accessctl`: the operators' and auditors' command line.
//!
//! It may read the store directly (status, exports, rebuilds) and apply
//! migrations. It never writes events by a side path: the one command that
//! changes a customer (`forget`) runs through the domain aggregate and the
//! store's append, exactly as the service does; everything else goes
//! through the service's API.

mod ops;
mod rebuild;

use access_store::prelude::*;
use anyhow::Context;
use clap::{Parser, Subcommand};

use access_store::{MasterKey, Store, StoreOptions};

mod chain;
mod export;
mod import;
mod replay;
mod scenarios;

/// The default embedded database, as `accessd` uses it.
const DEFAULT_DATABASE_URL: &str = "sqlite://access.db";

#[derive(Parser)]
#[command(
    name = "accessctl",
    version,
    about = "Operate and audit the access service"
)]
struct Cli {
    /// `sqlite://FILE` or `postgres://…` (the same database as accessd;
    /// several PostgreSQL hosts `postgres://h1,h2/db`: the writable one).
    /// Its value is never shown in help (it may hold a password).
    #[arg(long, env = "ACCESS_DATABASE_URL", hide_env_values = true, default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    /// The master key (as accessd's ACCESS_MASTER_KEY); the embedded
    /// default reads `<database file>.key`.
    #[arg(long, env = "ACCESS_MASTER_KEY", hide_env_values = true, global = true)]
    master_key: Option<String>,

    /// A file holding the master key.
    #[arg(long, env = "ACCESS_MASTER_KEY_FILE", global = true)]
    master_key_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply the database migrations (accessd also does this at start-up).
    Migrate,
    /// Show whether the store is reachable and migrated, and its size.
    Status,
    /// Replay every event into fresh projection tables and swap them in
    /// (readers never see a half-built table); with --check, rebuild aside
    /// and compare with the live projections (exit 1 when they differ).
    Rebuild {
        #[arg(long)]
        check: bool,
    },
    /// The audit trail (read from the projections).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The mail queue: list messages, send a failed one again.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Load a customer's exported events into a scratch store and show the
    /// resulting access state and audit trail (needs no database).
    Replay(replay::ReplayArgs),
    /// Scenario files (given events, a command, then events or an error):
    /// check them against the rules of this build (needs no database).
    Scenarios {
        #[command(subcommand)]
        command: scenarios::ScenariosCommand,
    },
    /// Erase a customer's personal data (right to erasure): revokes access,
    /// destroys the customer's data key and records CustomerForgotten.
    /// Irreversible.
    Forget {
        /// The customer id.
        customer: String,
        /// Why (kept in the event's metadata; do not put personal data in it).
        #[arg(long)]
        reason: String,
    },
    /// Bring customers in from an older system, with their password hashes
    /// (argon2, bcrypt, scrypt, PBKDF2; rehashed to argon2id at the next
    /// login). Re-running a file writes nothing new. Exit 0 only when every
    /// line was imported or was already there (docs/import.md).
    Import(import::ImportArgs),
    /// The master key: generate one, or rotate to a new one.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Print a new random master key (64 hex characters) to standard output.
    Generate,
    /// Re-wrap every customer's data key under a new master key (events are
    /// untouched). Stop every accessd first, then start them with the new key.
    RotateMaster {
        /// A file holding the new master key.
        #[arg(long)]
        new_key_file: std::path::PathBuf,
    },
    /// One-time migration of a store written before encryption: seal the
    /// personal data of old events under per-customer keys, rewrite the
    /// email lookups as keyed hashes, and start the hash chain over
    /// (prints the old and the new head). Stop every accessd first.
    SealLegacy,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Write the audit trail to a CSV or JSON Lines file, with a progress bar.
    Export(export::ExportArgs),
    /// Hash the events not hashed yet and print the head of the hash chain,
    /// `TX:GLOBAL:HASH`: a digest of the history to keep outside the system.
    Digest,
    /// Recompute the hash chain from the events; print `position N: KIND`
    /// (altered, inserted, removed, broken) per problem; exit 1 unless intact.
    Verify(chain::VerifyArgs),
    /// Every customer who had portal access at an instant, with the login
    /// email then in force (replays the events).
    WhoHadAccess {
        /// RFC 3339 time or a date (midnight UTC).
        #[arg(long)]
        at: String,
    },
}

#[derive(Subcommand, Debug)]
enum MailCommand {
    /// Messages, newest first.
    List {
        /// Only failed messages (same as --status failed).
        #[arg(long)]
        failed: bool,
        /// pending, sent or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Queue a failed message again.
    Retry { id: String },
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
    if let Command::Replay(args) = &cli.command {
        return replay::run(args).await;
    }
    if let Command::Scenarios { command } = &cli.command {
        return scenarios::run(command).await;
    }
    if let Command::Keys {
        command: KeysCommand::Generate,
    } = &cli.command
    {
        let (_, text) = MasterKey::generate().context("generating a master key")?;
        println!("{text}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let shown_url = access_store::redact_url(&cli.database_url);
    let store = Store::connect(&cli.database_url, StoreOptions::default())
        .await
        .with_context(|| format!("connecting to {shown_url}"))?;
    let store = if matches!(cli.command, Command::Migrate | Command::Status) {
        store
    } else {
        if !store
            .is_ready()
            .await
            .with_context(|| format!("reading {shown_url}"))?
        {
            anyhow::bail!(
                "{} store at {shown_url}: not migrated (run `accessctl migrate`)",
                store.kind()
            );
        }
        let (master, _) = access_store::keys::master_key_for(
            &cli.database_url,
            cli.master_key.as_deref(),
            cli.master_key_file.as_deref(),
        )?;
        store
            .unlock(master)
            .await
            .with_context(|| format!("opening the key store of {shown_url}"))?
    };
    match cli.command {
        Command::Migrate => {
            store
                .migrate()
                .await
                .with_context(|| format!("migrating {shown_url}"))?;
            println!("migrated {} store at {shown_url}", store.kind());
        }
        Command::Rebuild { check } => return rebuild::run(&store, check).await,
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
        Command::Audit {
            command: AuditCommand::Export(args),
        } => export::run(&store, &shown_url, args).await?,
        Command::Audit {
            command: AuditCommand::Digest,
        } => return chain::digest(&store).await,
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => return chain::verify(&store, &args).await,
        // Handled above: it needs no database.
        Command::Audit {
            command: AuditCommand::WhoHadAccess { at },
        } => return ops::who_had_access(&store, &at).await,
        Command::Mail {
            command:
                MailCommand::List {
                    failed,
                    status,
                    limit,
                },
        } => {
            let status = if failed {
                Some("failed".to_string())
            } else {
                status
            };
            return ops::mail_list(&store, status.as_deref(), limit).await;
        }
        Command::Mail {
            command: MailCommand::Retry { id },
        } => return ops::mail_retry(&store, &id).await,
        Command::Import(args) => return import::run(&store, &args).await,
        Command::Forget { customer, reason } => {
            return ops::forget(&store, &customer, &reason).await
        }
        Command::Keys {
            command: KeysCommand::RotateMaster { new_key_file },
        } => return ops::rotate_master(&store, &new_key_file).await,
        Command::Keys {
            command: KeysCommand::SealLegacy,
        } => return ops::seal_legacy(&store).await,
        Command::Replay(_)
        | Command::Scenarios { .. }
        | Command::Keys {
            command: KeysCommand::Generate,
        } => {}
    }
    Ok(std::process::ExitCode::SUCCESS)
}
