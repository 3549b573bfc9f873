//! `accessctl audit digest` and `accessctl audit verify`: the hash chain
//! over the events (docs/audit.md, "Proving the history is intact").

use std::process::ExitCode;

use access_projections::chain;
use access_store::Store;
use anyhow::Context;

/// The longest `audit digest` waits for the newest events.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A digest taken earlier (`accessctl audit digest`, or `position` and
    /// `hash` of GET /v1/audit/digest): `TX:GLOBAL:HASH` or `GLOBAL:HASH`.
    /// Also checks that the history up to it is unchanged.
    #[arg(long, value_name = "POSITION:HASH")]
    pub digest: Option<String>,
}

async fn ready(store: &Store) -> anyhow::Result<()> {
    let ready = store.is_ready().await.context("reading the store")?;
    anyhow::ensure!(ready, "the store is not migrated (run `accessctl migrate`)");
    Ok(())
}

/// Hashes the events not hashed yet (every event committed before the
/// call), then prints the head as `TX:GLOBAL:HASH` (`0:0:000…0` for an
/// empty history).
pub async fn digest(store: &Store) -> anyhow::Result<ExitCode> {
    ready(store).await?;
    // Every event committed before the command (on PostgreSQL the newest
    // may be held back a moment by transactions still running).
    let head = chain::catch_up(store, CATCH_UP)
        .await
        .context("extending the hash chain")?;
    match head {
        Some(head) => {
            println!("{}", head.digest());
            eprintln!(
                "the digest of the history up to position {}; keep it outside the system and \
                 check later with `accessctl audit verify --digest {}`",
                head.position.global,
                head.digest()
            );
        }
        None => {
            println!("{}", chain::genesis_digest());
            eprintln!("no events yet: this is the digest of the empty history");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Recomputes the chain from the events and compares it with the stored
/// hashes (and the digest, if given). Prints `position N: KIND` for each
/// problem; exit code 0 when intact, 1 otherwise.
pub async fn verify(store: &Store, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let up_to = args
        .digest
        .as_deref()
        .map(|raw| {
            chain::parse_digest(raw).with_context(|| {
                format!("`{raw}` is not a digest: expected TX:GLOBAL:HASH (64 hex digits)")
            })
        })
        .transpose()?;
    ready(store).await?;
    let report = chain::verify_with(store, up_to, |problem| {
        println!("position {}: {}", problem.position.global, problem.kind);
        eprintln!(
            "  position {} ({}): {}",
            problem.position.global, problem.position, problem.detail
        );
    })
    .await
    .context("verifying the hash chain")?;

    let up_to = report.hashed_up_to.map_or_else(
        || "nothing hashed yet".to_string(),
        |p| format!("hashed up to {p}"),
    );
    if report.problem_count > 0 {
        println!(
            "{} problem(s) in {} events ({} stored hashes, {up_to})",
            report.problem_count, report.events, report.hashes
        );
    } else {
        println!(
            "chain intact: {} events checked against {} stored hashes ({up_to})",
            report.events, report.hashes
        );
    }
    if let Some(digest) = &report.digest {
        if digest.intact {
            println!(
                "digest matches: the history up to position {} is intact",
                digest.global
            );
        } else {
            let why = match &digest.recomputed {
                None => {
                    "no event at that position any more, or the chain cannot be recomputed up to it"
                }
                Some(_) => "the recomputed hash differs",
            };
            println!(
                "digest does not match: the history up to position {} was changed ({why})",
                digest.global
            );
        }
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
