//! `accessctl audit who-had-access` and `accessctl mail …`.

use access_store::prelude::*;
use std::process::ExitCode;

use access_store::Store;
use anyhow::{bail, Context};
use chrono::{DateTime, TimeZone, Utc};

/// Parses an RFC 3339 time or a plain date (midnight UTC).
pub fn parse_instant(raw: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    bail!("`{raw}` is not an RFC 3339 time (2026-01-31T12:00:00Z) or a date (2026-01-31)")
}

/// Every customer who had portal access at `at`, with the email then in force.
pub async fn who_had_access(store: &Store, at: &str) -> anyhow::Result<ExitCode> {
    let at = parse_instant(at)?;
    let rows = access_projections::history::who_had_access(store, at)
        .await
        .context("replaying the events")?;
    println!(
        "{} customer(s) had portal access at {}",
        rows.len(),
        at.to_rfc3339()
    );
    for r in rows {
        println!(
            "{}  {}  {}  {}",
            r.customer_id,
            r.email,
            r.role.as_deref().unwrap_or("-"),
            r.name.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The mail queue, newest first.
pub async fn mail_list(
    store: &Store,
    status: Option<&str>,
    limit: u32,
) -> anyhow::Result<ExitCode> {
    if let Some(s) = status {
        if !["pending", "sent", "failed"].contains(&s) {
            bail!("--status is one of pending, sent, failed");
        }
    }
    let entries = store
        .outbox_list(status, limit)
        .await
        .context("reading the mail queue")?;
    if entries.is_empty() {
        println!("no messages");
    }
    for e in entries {
        let created = Utc
            .timestamp_millis_opt(e.created_ms)
            .single()
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        println!(
            "{}  {:<8} attempts {:<2} {}  {}  {}{}",
            e.id,
            e.status,
            e.attempts,
            created,
            e.kind,
            e.recipient,
            e.last_error
                .map(|err| format!("  last error: {err}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Queues a failed message again (accessd's worker sends it).
pub async fn mail_retry(store: &Store, id: &str) -> anyhow::Result<ExitCode> {
    if store
        .outbox_requeue(id, Utc::now().timestamp_millis())
        .await
        .context("updating the mail queue")?
    {
        println!("message {id} queued again; accessd sends it shortly");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("no failed message with id {id}")
    }
}

/// `accessctl forget CUSTOMER --reason …`: the domain's ForgetCustomer,
/// through the same append as the service.
pub async fn forget(store: &Store, customer: &str, reason: &str) -> anyhow::Result<ExitCode> {
    use access_domain::{
        Actor, CommandMetadata, CustomerCommand, CustomerId, CustomerServices, LinkLifetimes,
    };
    use access_store::Execution;
    use std::sync::Arc;

    let customer_id: CustomerId = customer
        .parse()
        .map_err(|_| anyhow::anyhow!("`{customer}` is not a customer id (a UUID)"))?;
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("--reason must say why the customer is forgotten");
    }
    let metadata = CommandMetadata::new(
        Actor::System {
            name: "accessctl".into(),
        },
        format!("accessctl-forget-{customer_id}"),
    )
    .with_reason(Some(reason.to_string()));
    // Forgetting hashes nothing and issues no token; the real adapters are
    // used anyway so that nothing here is a stand-in.
    let services = CustomerServices::new(
        Arc::new(access_security::Argon2idHasher::owasp(1)),
        Arc::new(access_security::OsRandomTokens),
        Arc::new(access_security::SystemClock),
        LinkLifetimes::default(),
    );
    let executed = store
        .execute(
            &services,
            Execution {
                customer_id,
                command: CustomerCommand::ForgetCustomer,
                metadata: &metadata,
                expected_version: None,
                idempotency: None,
            },
            |_| String::new(),
        )
        .await
        .with_context(|| format!("forgetting customer {customer_id}"))?;
    println!(
        "customer {customer_id} forgotten at version {}: its data key is destroyed, \
         its personal data now reads as [forgotten]",
        executed.version
    );
    Ok(ExitCode::SUCCESS)
}

/// `accessctl keys rotate-master --new-key-file F`.
pub async fn rotate_master(
    store: &Store,
    new_key_file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let (new, _) = access_store::keys::master_key_for("", None, Some(new_key_file))?;
    let old_id = store.keyring()?.master_key_id().to_string();
    if new.id() == old_id {
        bail!("the new master key is the current one (id {old_id})");
    }
    let n = store
        .rotate_master_key(&new)
        .await
        .context("re-wrapping the keys")?;
    println!(
        "re-wrapped {n} customer key(s) and the email index key: master key {old_id} -> {}; \
         start every accessd with the new key",
        new.id()
    );
    Ok(ExitCode::SUCCESS)
}

/// `accessctl keys seal-legacy`.
pub async fn seal_legacy(store: &Store) -> anyhow::Result<ExitCode> {
    use access_projections::chain;
    let old_head = chain::head(store).await.context("reading the chain head")?;
    let done = store
        .seal_legacy_events()
        .await
        .context("sealing the personal data of old events")?;
    if done.events == 0 {
        println!(
            "no event holds personal data in the clear or sealed under an older scheme; lookups re-indexed; nothing else changed"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "sealed the personal data of {} event(s) of {} customer(s) under the current scheme",
        done.events, done.customers
    );
    chain::restart(store)
        .await
        .context("restarting the hash chain")?;
    let new_head = chain::extend(store).await.context("hashing the events")?;
    if let Some(old) = old_head {
        println!("hash chain head before: {}", old.digest());
    }
    if let Some(new) = new_head {
        println!("hash chain head now:    {}  (record it: digests taken before this migration no longer verify)", new.digest());
    }
    Ok(ExitCode::SUCCESS)
}
