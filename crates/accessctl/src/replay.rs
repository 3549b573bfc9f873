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

use access_store::prelude::*;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;

use access_domain::events::EVENT_VERSIONS;
use access_domain::upcasting::{upcast, upcasters};
use access_domain::{Actor, CommandMetadata, Customer, CustomerEvent, CustomerId};
use access_projections::export::AuditView;
use access_projections::{db, AccessStateRow, AuditFilter, AuditRow, LIVE};
use access_store::{Append, Position, Store, StoreOptions};
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::persist::SerializedEvent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

/// One line of the export (an `EventView`); other fields are ignored.
#[derive(Deserialize)]
struct Line {
    sequence: Option<u64>,
    event_type: String,
    event_version: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    data: Value,
}

/// An event read back from a line.
struct Parsed {
    line: usize,
    sequence: Option<u64>,
    event: CustomerEvent,
    metadata: CommandMetadata,
}

/// `1.10` as `[1, 10]`.
fn version_parts(raw: &str) -> Option<Vec<u64>> {
    raw.split('.').map(|p| p.parse().ok()).collect()
}

/// Puts placeholders where the export left secrets out.
fn fill_secrets(event_type: &str, data: &mut serde_json::Map<String, Value>) {
    let placeholder = |map: &mut serde_json::Map<String, Value>, field: &str, value: &str| {
        map.entry(field.to_string())
            .or_insert_with(|| Value::from(value));
    };
    match event_type {
        "PasswordSet" | "PasswordSetupCompleted" | "PasswordChanged" | "PasswordRehashed" => {
            placeholder(data, "password_hash", PLACEHOLDER_HASH);
        }
        "EmailChangeRequested" => placeholder(data, "token_digest", PLACEHOLDER_DIGEST),
        "AccessNotificationSent" => {
            if let Some(link) = data.get_mut("setup_link").and_then(Value::as_object_mut) {
                placeholder(link, "token_digest", PLACEHOLDER_DIGEST);
            }
        }
        _ => {}
    }
}

/// Reads one non-empty line (`n` is 1-based).
fn parse_line(
    n: usize,
    text: &str,
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> anyhow::Result<Parsed> {
    let value: Value = serde_json::from_str(text).with_context(|| format!("line {n}: not JSON"))?;
    if value.get("events").is_some() && value.get("event_type").is_none() {
        bail!(
            "line {n}: this is the JSON answer of /v1/customers/{{id}}/events; \
             export with `?format=jsonl` (one event per line)"
        );
    }
    let line: Line = serde_json::from_value(value)
        .with_context(|| format!("line {n}: not an exported event"))?;
    let Some((_, current)) = EVENT_VERSIONS
        .iter()
        .find(|(name, _)| *name == line.event_type)
    else {
        let known: Vec<_> = EVENT_VERSIONS.iter().map(|(name, _)| *name).collect();
        bail!(
            "line {n}: unknown event type `{}` (known: {})",
            line.event_type,
            known.join(", ")
        );
    };
    let version = line.event_version.unwrap_or_else(|| current.to_string());
    match (version_parts(&version), version_parts(current)) {
        (Some(v), Some(c)) if v > c => bail!(
            "line {n}: {} version {version} is newer than this accessctl reads ({current}); \
             use a newer accessctl",
            line.event_type
        ),
        (Some(_), _) => {}
        (None, _) => bail!("line {n}: event_version `{version}` is not a version such as 1.0"),
    }
    let Value::Object(mut data) = line.data else {
        bail!("line {n}: `data` must be an object with the event's fields");
    };
    fill_secrets(&line.event_type, &mut data);
    let stored = SerializedEvent {
        aggregate_id: String::new(),
        sequence: usize::try_from(line.sequence.unwrap_or(0)).unwrap_or(0),
        aggregate_type: access_store::AGGREGATE_TYPE.to_string(),
        event_type: line.event_type.clone(),
        event_version: version.clone(),
        payload: json!({ line.event_type.as_str(): Value::Object(data) }),
        metadata: Value::Null,
    };
    let stored = upcast(stored, upcasters);
    let event: CustomerEvent = serde_json::from_value(stored.payload)
        .with_context(|| format!("line {n}: not a valid {} {version} event", line.event_type))?;
    let metadata = CommandMetadata::from_map(&line.metadata).unwrap_or_else(|_| {
        CommandMetadata::new(
            Actor::System {
                name: "accessctl-replay".into(),
            },
            format!("replay-line-{n}"),
        )
    });
    Ok(Parsed {
        line: n,
        sequence: line.sequence,
        event,
        metadata,
    })
}

/// Every event of the file, in order.
fn read_events(args: &ReplayArgs, shown: &str) -> anyhow::Result<Vec<Parsed>> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("opening {shown}"))?;
        Box::new(std::io::BufReader::new(file))
    };
    let upcasters = upcasters();
    let mut events = Vec::new();
    for (i, text) in reader.lines().enumerate() {
        let n = i + 1;
        let text = text.with_context(|| format!("{shown}: reading line {n}"))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        events.push(parse_line(n, text, &upcasters).with_context(|| shown.to_string())?);
    }
    if events.is_empty() {
        bail!("{shown}: no events");
    }
    Ok(events)
}

/// A customer being rebuilt in the scratch store.
struct Stream {
    customer: Customer,
    version: u64,
}

/// Consecutive events of one command (same customer, same metadata).
struct Group {
    customer_id: CustomerId,
    metadata: CommandMetadata,
    first_line: usize,
    last_line: usize,
    events: Vec<CustomerEvent>,
}

async fn append(
    store: &Store,
    streams: &mut HashMap<CustomerId, Stream>,
    group: Group,
) -> anyhow::Result<()> {
    let stream = streams
        .get_mut(&group.customer_id)
        .context("internal: a group without its stream")?;
    let before = stream.customer.clone();
    let mut after = before.clone();
    for event in &group.events {
        cqrs_es::Aggregate::apply(&mut after, event.clone());
    }
    let lines = if group.first_line == group.last_line {
        format!("line {}", group.first_line)
    } else {
        format!("lines {}-{}", group.first_line, group.last_line)
    };
    store
        .append(Append {
            customer_id: group.customer_id,
            expected_version: stream.version,
            events: &group.events,
            metadata: &group.metadata,
            before: &before,
            after: &after,
            idempotency: None,
        })
        .await
        .with_context(|| format!("{lines}: writing to the scratch store"))?;
    stream.version += group.events.len() as u64;
    stream.customer = after;
    Ok(())
}

/// Appends the events, a command at a time; returns the customers in the
/// order of their registration.
async fn load(store: &Store, events: Vec<Parsed>) -> anyhow::Result<Vec<CustomerId>> {
    let mut order = Vec::new();
    let mut streams: HashMap<CustomerId, Stream> = HashMap::new();
    let mut current: Option<CustomerId> = None;
    let mut group: Option<Group> = None;
    for parsed in events {
        let n = parsed.line;
        let id = match &parsed.event {
            CustomerEvent::CustomerRegistered { customer_id, .. } => {
                if streams.contains_key(customer_id) {
                    bail!("line {n}: customer {customer_id} is registered a second time");
                }
                streams.insert(
                    *customer_id,
                    Stream {
                        customer: Customer::default(),
                        version: 0,
                    },
                );
                order.push(*customer_id);
                current = Some(*customer_id);
                *customer_id
            }
            other => current.with_context(|| {
                format!(
                    "line {n}: {} before any CustomerRegistered: the file must hold the \
                     customer's whole stream, from its registration (sequence 1)",
                    other.type_name()
                )
            })?,
        };
        let pending = group
            .as_ref()
            .filter(|g| g.customer_id == id)
            .map_or(0, |g| g.events.len() as u64);
        let expected = streams.get(&id).map_or(0, |s| s.version) + pending + 1;
        if let Some(sequence) = parsed.sequence {
            if sequence != expected {
                bail!(
                    "line {n}: sequence {sequence} where {expected} was expected \
                     (a line missing, repeated or out of order?)"
                );
            }
        }
        let same_command = group
            .as_ref()
            .is_some_and(|g| g.customer_id == id && g.metadata == parsed.metadata);
        if !same_command {
            if let Some(done) = group.take() {
                append(store, &mut streams, done).await?;
            }
        }
        let g = group.get_or_insert_with(|| Group {
            customer_id: id,
            metadata: parsed.metadata.clone(),
            first_line: n,
            last_line: n,
            events: Vec::new(),
        });
        g.last_line = n;
        g.events.push(parsed.event);
    }
    if let Some(done) = group.take() {
        append(store, &mut streams, done).await?;
    }
    Ok(order)
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
    let events = read_events(args, &shown)?;
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
    let customers = load(&store, events).await.with_context(|| shown.clone())?;
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
                print!("{}", state_text(state, now));
                println!();
                print!("{}", audit_text(audit));
            }
        }
    }
    dir.close().context("removing the scratch store")?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t > now {
        format!("until {}", time(t))
    } else {
        format!("expired {}", time(t))
    }
}

/// The access state, one field a line.
fn state_text(row: &AccessStateRow, now: DateTime<Utc>) -> String {
    let access = match (&row.access_granted, &row.role) {
        (true, Some(role)) => format!("granted ({role})"),
        (true, None) => "granted".to_string(),
        (false, _) => "none".to_string(),
    };
    let password = match (row.password_set, row.must_change_password) {
        (true, true) => "set, temporary (must change at next login)",
        (true, false) => "set",
        (false, _) => "none",
    };
    let setup_link = row
        .setup_link_expires_at
        .map_or_else(|| "none".to_string(), |t| until(t, now));
    let pending = match (&row.pending_email, row.pending_email_expires_at) {
        (Some(email), Some(t)) => format!("{email} ({})", until(t, now)),
        (Some(email), None) => email.clone(),
        (None, _) => "none".to_string(),
    };
    let fields = [
        ("email", row.email.clone()),
        ("name", row.name.clone().unwrap_or_else(|| "-".into())),
        ("access", access),
        ("password", password.to_string()),
        ("setup link", setup_link),
        ("pending email", pending),
        ("version", row.version.to_string()),
        ("updated at", time(row.updated_at)),
    ];
    let mut out = format!("customer {}\n", row.customer_id);
    for (name, value) in fields {
        out.push_str(&format!("  {name:<14} {value}\n"));
    }
    out
}

fn actor(row: &AuditRow) -> String {
    match row.actor_kind.as_str() {
        "api" => format!(
            "{} ({})",
            row.actor_name.as_deref().unwrap_or("?"),
            row.actor_role.as_deref().unwrap_or("?")
        ),
        "customer" => "the customer".to_string(),
        "system" => format!("system {}", row.actor_name.as_deref().unwrap_or("?")),
        other => other.to_string(),
    }
}

fn details(row: &AuditRow) -> String {
    let mut parts = Vec::new();
    match (&row.old_email, &row.new_email) {
        (Some(old), Some(new)) => parts.push(format!("{old} -> {new}")),
        (None, Some(new)) => parts.push(new.clone()),
        _ => {}
    }
    if let Some(source) = &row.password_source {
        parts.push(format!("password: {source}"));
    }
    match row.with_setup_link {
        Some(true) => parts.push("with setup link".into()),
        Some(false) => parts.push("notice, no link".into()),
        None => {}
    }
    if let Some(reason) = &row.reason {
        parts.push(format!("reason: {reason}"));
    }
    parts.join("; ")
}

/// The audit trail as a table.
fn audit_text(rows: &[AuditRow]) -> String {
    let header = ["SEQ", "AT", "KIND", "ACTOR", "DETAILS"].map(String::from);
    let table: Vec<[String; 5]> = std::iter::once(header)
        .chain(rows.iter().map(|r| {
            [
                r.sequence.to_string(),
                time(r.at),
                r.kind.clone(),
                actor(r),
                details(r),
            ]
        }))
        .collect();
    let mut widths = [0usize; 5];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("audit trail ({} changes)\n", rows.len());
    for row in &table {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(&format!(" {cell}"));
            } else {
                line.push_str(&format!(" {cell:<w$} ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(version_parts("1.10") > version_parts("1.9"));
        assert_eq!(version_parts("x"), None);
    }

    #[test]
    fn placeholders_fill_only_missing_secrets() {
        let mut data = serde_json::Map::new();
        fill_secrets("PasswordChanged", &mut data);
        assert_eq!(data["password_hash"], PLACEHOLDER_HASH);
        let mut data =
            json!({"setup_link": {"expires_at": "2026-01-01T00:00:00Z"}, "token_digest": "kept"})
                .as_object()
                .cloned()
                .unwrap();
        fill_secrets("AccessNotificationSent", &mut data);
        assert_eq!(data["setup_link"]["token_digest"], PLACEHOLDER_DIGEST);
        fill_secrets("EmailChangeRequested", &mut data);
        assert_eq!(data["token_digest"], "kept");
    }
}
