//! Running one scenario: the `given` events into a customer, the command
//! decided with fakes (a fixed clock, a fast deterministic hasher, counting
//! tokens), and the outcome compared with `then`.

use std::fmt::Write as _;
use std::sync::Arc;

use access_domain::services::fakes::{CountingTokens, FakeHasher, FixedClock};
use access_domain::{Customer, CustomerError, CustomerEvent, CustomerServices, LinkLifetimes};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;

use crate::command::build_command;
use crate::compare::{compact, diff_events, subset_diff, substitute};
use crate::format::{Expectation, Scenario};

/// The clock of a scenario without `now:`.
const DEFAULT_NOW: &str = "2026-11-27T12:00:00Z";

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
fn customer_from_given(given: &[Value]) -> Result<Customer, String> {
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

/// Why a scenario failed.
pub(crate) enum Failure {
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

pub(crate) async fn run(scenario: &Scenario) -> Result<(), Failure> {
    let now = parse_now(scenario.now.as_deref())?;
    let expectation = scenario.then.expectation()?;
    let given = scenario.given.as_deref().unwrap_or_default();
    let mut customer = customer_from_given(given)?;
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
