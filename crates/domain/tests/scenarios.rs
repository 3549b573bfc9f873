#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replay scenarios: the rules of the Customer aggregate, written as YAML
//! files under `tests/scenarios/` (see `tests/scenarios/README.md`).
//!
//! Each file gives stored events (`given`), one command (`when`) and either
//! the expected events or the expected error (`then`). This test runs every
//! file, reports every failing one with a diff-like explanation, then fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use access_domain::services::fakes::{CountingTokens, FakeHasher, FixedClock};
use access_domain::{
    Credential, Customer, CustomerCommand, CustomerError, CustomerEvent, CustomerId, CustomerName,
    CustomerServices, EmailAddress, LinkLifetimes, Password, Role, Secret, TokenDigest, ValueError,
};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::Deserialize;
use serde_json::Value;

/// Where the scenario files live (the repository's `tests/scenarios/`).
const SCENARIO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/scenarios");

/// The clock of a scenario without `now:`.
const DEFAULT_NOW: &str = "2026-11-27T12:00:00Z";

/// The id `RegisterCustomer` gets when the scenario gives none.
const DEFAULT_CUSTOMER_ID: &str = "6f1f4d1e-8f6b-4c39-9a59-0c3b7c1e2a10";

/// The command names a scenario's `when.command` may use.
const COMMANDS: &[&str] = &[
    "RegisterCustomer",
    "ChangeEmail",
    "GrantAccess",
    "SetPassword",
    "SendAccessNotification",
    "RevokeAccess",
    "RequestEmailChange",
    "ConfirmEmailChange",
    "CompletePasswordSetup",
    "ChangePassword",
];

// ---------------------------------------------------------------------------
// The file format
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    now: Option<String>,
    #[serde(default)]
    given: Option<Vec<Value>>,
    when: BTreeMap<String, Value>,
    then: Then,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Then {
    #[serde(default)]
    events: Option<Vec<Value>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    state: Option<Value>,
}

/// What `then:` asks for, once checked.
enum Expectation<'a> {
    Events {
        events: &'a [Value],
        state: Option<&'a Value>,
    },
    Error {
        code: &'a str,
        message: Option<&'a str>,
    },
}

impl Then {
    fn expectation(&self) -> Result<Expectation<'_>, String> {
        match (&self.events, &self.error) {
            (Some(_), Some(_)) => Err("`then:` has both `events:` and `error:`; a command either \
                 emits events or is refused, so keep only one"
                .into()),
            (None, None) => Err(
                "`then:` needs either `events:` (write `events: []` for \"no \
                 events\") or `error:`"
                    .into(),
            ),
            (Some(events), None) => {
                if self.message.is_some() {
                    return Err("`then.message:` only goes with `then.error:`".into());
                }
                Ok(Expectation::Events {
                    events,
                    state: self.state.as_ref(),
                })
            }
            (None, Some(code)) => {
                if self.state.is_some() {
                    return Err("`then.state:` only goes with `then.events:`".into());
                }
                Ok(Expectation::Error {
                    code,
                    message: self.message.as_deref(),
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Substitutions and comparison
// ---------------------------------------------------------------------------

/// `hash-of:PLAIN` and `digest-of:TOKEN` in string values.
fn resolve(s: &str) -> String {
    if let Some(plain) = s.strip_prefix("hash-of:") {
        FakeHasher::hash_of(plain).as_str().to_string()
    } else if let Some(token) = s.strip_prefix("digest-of:") {
        TokenDigest::of(token).as_str().to_string()
    } else {
        s.to_string()
    }
}

/// Applies [`resolve`] to every string value (not keys) of a JSON value.
fn substitute(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(resolve(s)),
        Value::Array(items) => Value::Array(items.iter().map(substitute).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn same_instant(a: &str, b: &str) -> bool {
    match (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn show_path(path: &str) -> String {
    if path.is_empty() {
        "(the whole value)".to_string()
    } else {
        format!("`{path}`")
    }
}

/// Checks that `expected` (as written in the scenario, before substitution)
/// is a recursive subset of `actual`: every field of an expected object must
/// exist in the actual object with a matching value; arrays must have the
/// same length and match item by item; other values must be equal
/// (timestamps are compared as instants). Pushes one line per difference.
fn subset_diff(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_value) in want {
                match have.get(key) {
                    Some(have_value) => subset_diff(want_value, have_value, &join(key), out),
                    None => {
                        let fields: Vec<&str> = have.keys().map(String::as_str).collect();
                        out.push(format!(
                            "{}: expected {}, but there is no such field (the fields are: {})",
                            show_path(&join(key)),
                            compact(want_value),
                            if fields.is_empty() {
                                "none".to_string()
                            } else {
                                fields.join(", ")
                            }
                        ));
                    }
                }
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() == have.len() {
                for (i, (w, h)) in want.iter().zip(have).enumerate() {
                    subset_diff(w, h, &format!("{path}[{i}]"), out);
                }
            } else {
                out.push(format!(
                    "{}: expected {} items, got {}: {}",
                    show_path(path),
                    want.len(),
                    have.len(),
                    compact(actual)
                ));
            }
        }
        (Value::String(want), Value::String(have)) => {
            let resolved = resolve(want);
            if resolved != *have && !same_instant(&resolved, have) {
                let shown = if resolved == *want {
                    format!("{want:?}")
                } else {
                    format!("{want:?} (= {resolved:?})")
                };
                out.push(format!(
                    "{}: expected {shown}, got {have:?}",
                    show_path(path)
                ));
            }
        }
        (want, have) => {
            if want != have {
                out.push(format!(
                    "{}: expected {}, got {}",
                    show_path(path),
                    compact(want),
                    compact(have)
                ));
            }
        }
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

/// An externally tagged event: `{EventName: {fields}}`.
fn is_event(value: &Value) -> bool {
    value.as_object().is_some_and(|map| map.len() == 1)
}

/// The variant name of an externally tagged event, for headings.
fn tag(value: &Value) -> String {
    match value {
        Value::Object(map) if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
        other => compact(other),
    }
}

// ---------------------------------------------------------------------------
// The `when:` block: raw fields into a command
// ---------------------------------------------------------------------------

/// The fields of `when:`, taken one by one; any field left over at the end
/// is reported (it would otherwise be silently ignored).
struct Fields {
    command: String,
    map: BTreeMap<String, Value>,
    taken: BTreeSet<&'static str>,
}

impl Fields {
    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.taken.insert(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn text(&mut self, key: &'static str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "`when.{key}` must be text, but it is {}; put it in quotes: {key}: \"{}\"",
                compact(&other),
                match &other {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                }
            )),
        }
    }

    fn required(&mut self, key: &'static str) -> Result<String, String> {
        self.text(key)?
            .ok_or_else(|| format!("`when.{key}` is missing: {} needs it", self.command))
    }

    fn flag(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(format!(
                "`when.{key}` must be true or false, but it is {}",
                compact(&other)
            )),
        }
    }

    /// The credential of ChangeEmail / GrantAccess, as the HTTP layer builds
    /// it: a manual password when `password` is present, a setup link when
    /// `send_notification: true` (or `setup_link: true`) without a password,
    /// otherwise none.
    fn credential(&mut self) -> Result<RawCredential, String> {
        let password = self.text("password")?;
        let confirm = self.text("password_confirm")?;
        let notify = self.flag("send_notification")?;
        let setup_link = self.flag("setup_link")?;
        match (password, confirm) {
            (Some(password), Some(password_confirm)) => {
                if setup_link == Some(true) {
                    return Err("`when.setup_link: true` cannot go with `when.password`: a \
                         manual password and a setup link are two different choices"
                        .into());
                }
                Ok(RawCredential::Manual {
                    password,
                    password_confirm,
                    send_notification: notify.unwrap_or(false),
                })
            }
            (Some(_), None) => Err("`when.password` needs `when.password_confirm` (the \
                 notice's Confirm Password field)"
                .into()),
            (None, Some(_)) => {
                Err("`when.password_confirm` is given without `when.password`".into())
            }
            (None, None) => match (notify, setup_link) {
                (Some(true), Some(false)) => Err("`when.send_notification: true` without a \
                     password sends a setup link, which contradicts `when.setup_link: false`"
                    .into()),
                (Some(true), _) | (_, Some(true)) => Ok(RawCredential::SetupLink),
                _ => Ok(RawCredential::None),
            },
        }
    }

    fn finish(self) -> Result<(), String> {
        if self.map.is_empty() {
            return Ok(());
        }
        let unused: Vec<&str> = self.map.keys().map(String::as_str).collect();
        let known: Vec<&str> = self.taken.iter().copied().collect();
        Err(format!(
            "{} does not use the field(s) {} (it takes: {})",
            self.command,
            unused
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "no fields".to_string()
            } else {
                known.join(", ")
            }
        ))
    }
}

enum RawCredential {
    None,
    Manual {
        password: String,
        password_confirm: String,
        send_notification: bool,
    },
    SetupLink,
}

impl RawCredential {
    fn parse(self) -> Result<Credential, ValueError> {
        Ok(match self {
            Self::None => Credential::None,
            Self::SetupLink => Credential::SetupLink,
            Self::Manual {
                password,
                password_confirm,
                send_notification,
            } => Credential::ManualPassword {
                password: Password::parse(&password, &[])?,
                password_confirm: Secret::new(password_confirm),
                send_notification,
            },
        })
    }
}

/// Runs the value-type parsers; their errors are the command's outcome.
fn parse(
    build: impl FnOnce() -> Result<CustomerCommand, ValueError>,
) -> Result<CustomerCommand, CustomerError> {
    build().map_err(CustomerError::from)
}

/// Builds the command from `when:`. The outer error is a problem with the
/// scenario file; the inner one a value the domain refuses (weak password,
/// invalid email …), which is the scenario's outcome.
fn build_command(
    when: &BTreeMap<String, Value>,
) -> Result<Result<CustomerCommand, CustomerError>, String> {
    let mut map = when.clone();
    let command = match map.remove("command") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(format!(
                "`when.command` must be a command name, not {}",
                compact(&other)
            ))
        }
        None => {
            return Err(format!(
                "`when.command` is missing; it is one of: {}",
                COMMANDS.join(", ")
            ))
        }
    };
    let mut f = Fields {
        command: command.clone(),
        map,
        taken: BTreeSet::new(),
    };
    let built = match command.as_str() {
        "RegisterCustomer" => {
            let customer_id = f.text("customer_id")?;
            let email = f.required("email")?;
            let name = f.text("name")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::RegisterCustomer {
                    customer_id: customer_id
                        .as_deref()
                        .unwrap_or(DEFAULT_CUSTOMER_ID)
                        .parse::<CustomerId>()?,
                    email: EmailAddress::parse(&email)?,
                    name: name.as_deref().map(CustomerName::parse).transpose()?,
                })
            })
        }
        "ChangeEmail" => {
            let email = f.required("email")?;
            let credential = f.credential()?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::ChangeEmail {
                    email: EmailAddress::parse(&email)?,
                    credential: credential.parse()?,
                })
            })
        }
        "GrantAccess" => {
            let role = f.text("role")?;
            let credential = f.credential()?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::GrantAccess {
                    role: role
                        .as_deref()
                        .map(str::parse::<Role>)
                        .transpose()?
                        .unwrap_or_default(),
                    credential: credential.parse()?,
                })
            })
        }
        "SetPassword" => {
            let password = f.required("password")?;
            let password_confirm = f.required("password_confirm")?;
            let send_notification = f.flag("send_notification")?.unwrap_or(false);
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::SetPassword {
                    password: Password::parse(&password, &[])?,
                    password_confirm: Secret::new(password_confirm),
                    send_notification,
                })
            })
        }
        "SendAccessNotification" => {
            f.finish()?;
            Ok(CustomerCommand::SendAccessNotification)
        }
        "RevokeAccess" => {
            let reason = f.text("reason")?;
            f.finish()?;
            Ok(CustomerCommand::RevokeAccess { reason })
        }
        "RequestEmailChange" => {
            let current_password = f.required("current_password")?;
            let new_email = f.required("new_email")?;
            let new_email_confirm = f.required("new_email_confirm")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::RequestEmailChange {
                    current_password: Secret::new(current_password),
                    new_email: EmailAddress::parse(&new_email)?,
                    new_email_confirm: EmailAddress::parse(&new_email_confirm)?,
                })
            })
        }
        "ConfirmEmailChange" => {
            let token = f.required("token")?;
            f.finish()?;
            Ok(CustomerCommand::ConfirmEmailChange {
                token: Secret::new(token),
            })
        }
        "CompletePasswordSetup" => {
            let token = f.required("token")?;
            let password = f.required("password")?;
            let password_confirm = f.required("password_confirm")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::CompletePasswordSetup {
                    token: Secret::new(token),
                    password: Password::parse(&password, &[])?,
                    password_confirm: Secret::new(password_confirm),
                })
            })
        }
        "ChangePassword" => {
            let current_password = f.required("current_password")?;
            let new_password = f.required("new_password")?;
            let new_password_confirm = f.required("new_password_confirm")?;
            f.finish()?;
            parse(|| {
                Ok(CustomerCommand::ChangePassword {
                    current_password: Secret::new(current_password),
                    new_password: Password::parse(&new_password, &[])?,
                    new_password_confirm: Secret::new(new_password_confirm),
                })
            })
        }
        other => {
            return Err(format!(
                "unknown command `{other}`; it is one of: {}",
                COMMANDS.join(", ")
            ))
        }
    };
    Ok(built)
}

// ---------------------------------------------------------------------------
// Running one scenario
// ---------------------------------------------------------------------------

fn services_at(now: DateTime<Utc>) -> CustomerServices {
    CustomerServices::new(
        Arc::new(FakeHasher),
        Arc::new(CountingTokens::default()),
        Arc::new(FixedClock(now)),
        LinkLifetimes::default(),
    )
}

fn parse_now(raw: Option<&str>) -> Result<DateTime<Utc>, String> {
    let raw = raw.unwrap_or(DEFAULT_NOW);
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`now: {raw}` is not a timestamp like {DEFAULT_NOW}: {e}"))
}

/// Rebuilds the customer from the `given` events.
fn replay(given: &[Value]) -> Result<Customer, String> {
    let mut customer = Customer::default();
    for (i, written) in given.iter().enumerate() {
        let n = i + 1;
        let value = substitute(written);
        let event: CustomerEvent = serde_json::from_value(value).map_err(|e| {
            format!(
                "given event #{n} is not a valid stored event: {e}\n    written: {}",
                compact(written)
            )
        })?;
        // Fields the event does not have would be silently dropped: refuse.
        let stored = serde_json::to_value(&event).map_err(|e| e.to_string())?;
        let mut diffs = Vec::new();
        subset_diff(written, &stored, "", &mut diffs);
        if !diffs.is_empty() {
            return Err(format!(
                "given event #{n} does not read back as written:\n      {}\n    stored as: {}",
                diffs.join("\n      "),
                compact(&stored)
            ));
        }
        customer.apply(event);
    }
    Ok(customer)
}

fn describe_error(e: &CustomerError) -> String {
    format!("`{}`: {e}", e.code())
}

/// Compares the actual events with the expected ones, index by index.
fn diff_events(expected: &[Value], actual: &[Value]) -> Option<String> {
    let mut report = String::new();
    let mut failed = expected.len() != actual.len();
    for i in 0..expected.len().max(actual.len()) {
        let n = i + 1;
        match (expected.get(i), actual.get(i)) {
            (Some(want), Some(have)) => {
                let mut diffs = Vec::new();
                if is_event(want) && is_event(have) && tag(want) != tag(have) {
                    diffs.push(format!(
                        "expected a `{}` event, got a `{}` event",
                        tag(want),
                        tag(have)
                    ));
                } else {
                    subset_diff(want, have, "", &mut diffs);
                }
                if diffs.is_empty() {
                    let _ = writeln!(report, "    #{n} ok        {}", tag(have));
                } else {
                    failed = true;
                    let _ = writeln!(report, "    #{n} DIFFERS   {}", tag(want));
                    for d in &diffs {
                        let _ = writeln!(report, "         {d}");
                    }
                    let _ = writeln!(report, "       - expected: {}", compact(want));
                    let _ = writeln!(report, "       + actual:   {}", compact(have));
                }
            }
            (Some(want), None) => {
                let _ = writeln!(report, "    #{n} MISSING   - expected: {}", compact(want));
            }
            (None, Some(have)) => {
                let _ = writeln!(report, "    #{n} UNEXPECTED + actual:   {}", compact(have));
            }
            (None, None) => {}
        }
    }
    failed.then(|| {
        let kinds = |events: &[Value]| {
            if events.is_empty() {
                "(none)".to_string()
            } else {
                events.iter().map(tag).collect::<Vec<_>>().join(", ")
            }
        };
        let count = if expected.len() == actual.len() {
            String::new()
        } else {
            format!(" (expected {}, got {})", expected.len(), actual.len())
        };
        format!(
            "  the events differ{count}:\n    - expected: {}\n    + actual:   {}\n{report}",
            kinds(expected),
            kinds(actual)
        )
    })
}

/// Why a scenario failed.
enum Failure {
    /// The file cannot be run as written (a typo, a missing field …).
    Broken(String),
    /// The domain did something else than the file expects.
    Mismatch(String),
}

impl From<String> for Failure {
    fn from(problem: String) -> Self {
        Self::Broken(problem)
    }
}

async fn run(scenario: &Scenario) -> Result<(), Failure> {
    let now = parse_now(scenario.now.as_deref())?;
    let expectation = scenario.then.expectation()?;
    let given = scenario.given.as_deref().unwrap_or_default();
    let mut customer = replay(given)?;
    let command = build_command(&scenario.when)?;
    let command_name = scenario
        .when
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or("the command");

    let services = services_at(now);
    let outcome = match command {
        Ok(command) => customer.decide(command, &services).await.map(|d| d.events),
        Err(refused) => Err(refused),
    };

    match (expectation, outcome) {
        (Expectation::Error { code, message }, Err(err)) => {
            let mut problems = String::new();
            if err.code() != code {
                let _ = writeln!(problems, "  the error differs:");
                let _ = writeln!(problems, "    - expected: `{code}`");
                let _ = writeln!(problems, "    + actual:   {}", describe_error(&err));
            } else if let Some(message) = message {
                let actual = err.to_string();
                if actual != message {
                    let _ = writeln!(
                        problems,
                        "  the error code `{code}` is right, the message differs:"
                    );
                    let _ = writeln!(problems, "    - expected: {message}");
                    let _ = writeln!(problems, "    + actual:   {actual}");
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(Failure::Mismatch(problems))
            }
        }
        (Expectation::Error { code, .. }, Ok(events)) => {
            let mut report = format!(
                "  expected {command_name} to be refused with `{code}`, but it succeeded with {} event(s):\n",
                events.len()
            );
            for (i, e) in events.iter().enumerate() {
                let value = serde_json::to_value(e).map_err(|e| e.to_string())?;
                let _ = writeln!(report, "    #{} + {}", i + 1, compact(&value));
            }
            Err(Failure::Mismatch(report))
        }
        (Expectation::Events { events, .. }, Err(err)) => {
            let mut report = format!(
                "  expected {} event(s), but {command_name} was refused with {}\n",
                events.len(),
                describe_error(&err)
            );
            for (i, e) in events.iter().enumerate() {
                let _ = writeln!(report, "    #{} - {}", i + 1, compact(e));
            }
            Err(Failure::Mismatch(report))
        }
        (Expectation::Events { events, state }, Ok(actual)) => {
            let actual_values = actual
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            if let Some(report) = diff_events(events, &actual_values) {
                return Err(Failure::Mismatch(report));
            }
            if let Some(want) = state {
                for event in actual {
                    customer.apply(event);
                }
                let have = serde_json::to_value(&customer).map_err(|e| e.to_string())?;
                let mut diffs = Vec::new();
                subset_diff(want, &have, "", &mut diffs);
                if !diffs.is_empty() {
                    return Err(Failure::Mismatch(format!(
                        "  the events are right, but the customer's state afterwards differs:\n      {}\n    - expected: {}\n    + actual:   {}\n",
                        diffs.join("\n      "),
                        compact(want),
                        compact(&have)
                    )));
                }
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Finding and running the files
// ---------------------------------------------------------------------------

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("cannot read the scenario directory {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

async fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("  cannot read the file: {e}"))?;
    let scenario: Scenario = serde_norway::from_str(&text)
        .map_err(|e| format!("  the file is not a valid scenario: {e}"))?;
    run(&scenario).await.map_err(|failure| {
        let mut heading = format!("  scenario: {}\n", scenario.name);
        if let Some(notice) = &scenario.notice {
            let _ = writeln!(heading, "  notice:   {notice}");
        }
        match failure {
            Failure::Broken(problem) => {
                format!("{heading}  the scenario cannot run: {problem}\n")
            }
            Failure::Mismatch(report) => format!("{heading}{report}"),
        }
    })
}

#[tokio::test]
async fn scenarios() {
    let dir = Path::new(SCENARIO_DIR);
    let files = files_under(dir);
    let relative = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();

    let mut failures: Vec<(String, String)> = Vec::new();
    let mut ran = 0;
    for path in &files {
        let name = relative(path);
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") => {}
            Some("yml") => {
                ran += 1;
                failures.push((
                    name,
                    "  scenario files must end in `.yaml`, not `.yml`\n".into(),
                ));
                continue;
            }
            _ => continue,
        }
        ran += 1;
        match run_file(path).await {
            Ok(()) => println!("ok    {name}"),
            Err(report) => {
                println!("FAIL  {name}");
                failures.push((name, report));
            }
        }
    }

    assert!(
        ran > 0,
        "no scenario files (*.yaml) found under {}",
        dir.display()
    );
    if !failures.is_empty() {
        let mut report = format!("\n{} of {ran} scenario(s) failed:\n", failures.len());
        for (name, why) in &failures {
            let _ = write!(report, "\nFAIL {name}\n{why}");
        }
        panic!("{report}");
    }
    println!("{ran} scenario(s) passed");
}
