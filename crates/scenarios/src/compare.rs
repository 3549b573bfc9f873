//! Comparing what the aggregate did with what a scenario expects: the
//! `hash-of:` / `digest-of:` substitutions, a recursive "expected is a
//! subset of actual" check, and the report of differing events (a
//! side-by-side table, then each difference field by field).

use std::fmt::Write as _;

use access_domain::services::fakes::FakeHasher;
use access_domain::TokenDigest;
use chrono::DateTime;
use serde_json::Value;

/// `hash-of:PLAIN` and `digest-of:TOKEN` in string values.
pub(crate) fn resolve(s: &str) -> String {
    if let Some(plain) = s.strip_prefix("hash-of:") {
        FakeHasher::hash_of(plain).as_str().to_string()
    } else if let Some(token) = s.strip_prefix("digest-of:") {
        TokenDigest::of(token).as_str().to_string()
    } else if let Some(code) = s.strip_prefix("recovery-digest-of:") {
        access_domain::values::recovery_code_digest(code)
            .as_str()
            .to_string()
    } else {
        s.to_string()
    }
}

/// Applies [`resolve`] to every string value (not keys) of a JSON value.
pub(crate) fn substitute(value: &Value) -> Value {
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
pub(crate) fn subset_diff(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
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

pub(crate) fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

/// An externally tagged event: `{EventName: {fields}}`.
fn is_event(value: &Value) -> bool {
    value.as_object().is_some_and(|map| map.len() == 1)
}

/// The variant name of an externally tagged event, for headings.
pub(crate) fn tag(value: &Value) -> String {
    match value {
        Value::Object(map) if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
        other => compact(other),
    }
}

/// Compares the actual events with the expected ones, index by index:
/// `None` when they match, else a report that opens with the two lists side
/// by side (one row per index: expected, actual, verdict) and then shows
/// every differing event field by field with both JSON values.
pub(crate) fn diff_events(expected: &[Value], actual: &[Value]) -> Option<String> {
    let mut rows = Vec::new();
    let mut details = String::new();
    let mut failed = expected.len() != actual.len();
    for i in 0..expected.len().max(actual.len()) {
        let n = i + 1;
        let want = expected.get(i);
        let have = actual.get(i);
        let verdict = match (want, have) {
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
                    "ok"
                } else {
                    failed = true;
                    let _ = writeln!(details, "    #{n} {}:", tag(want));
                    for d in &diffs {
                        let _ = writeln!(details, "         {d}");
                    }
                    let _ = writeln!(details, "       - expected: {}", compact(want));
                    let _ = writeln!(details, "       + actual:   {}", compact(have));
                    "DIFFERS"
                }
            }
            (Some(want), None) => {
                let _ = writeln!(details, "    #{n} missing:  - expected: {}", compact(want));
                "MISSING"
            }
            (None, Some(have)) => {
                let _ = writeln!(details, "    #{n} unexpected: + actual: {}", compact(have));
                "UNEXPECTED"
            }
            (None, None) => continue,
        };
        rows.push((
            n,
            want.map(tag).unwrap_or_default(),
            have.map(tag).unwrap_or_default(),
            verdict,
        ));
    }
    if !failed {
        return None;
    }
    let count = if expected.len() == actual.len() {
        String::new()
    } else {
        format!(" (expected {}, got {})", expected.len(), actual.len())
    };
    // A column is as wide as its widest cell or its title.
    let column_width = |title: &str, cells: &mut dyn Iterator<Item = usize>| {
        cells.chain([title.len()]).max().unwrap_or_default()
    };
    let width = column_width(
        "expected",
        &mut rows.iter().map(|(_, want, _, _)| want.len()),
    );
    let actual_width = column_width("actual", &mut rows.iter().map(|(_, _, have, _)| have.len()));
    let mut report = format!("  the events differ{count}:\n");
    let header = format!("    #   {:<width$}   actual", "expected");
    let _ = writeln!(report, "{header}");
    for (n, want, have, verdict) in &rows {
        let want = if want.is_empty() { "-" } else { want };
        let have = if have.is_empty() { "-" } else { have };
        let _ = writeln!(
            report,
            "    {n:<3} {want:<width$}   {have:<actual_width$}   {verdict}"
        );
    }
    report.push_str(&details);
    Some(report)
}
