//! `--format text`: the access state and the audit trail for people.

use access_projections::{AccessStateRow, AuditRow};
use chrono::{DateTime, SecondsFormat, Utc};

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
pub(super) fn state_text(row: &AccessStateRow, now: DateTime<Utc>) -> String {
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
pub(super) fn audit_text(rows: &[AuditRow]) -> String {
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
