//! What the console's pages show, in words: the rows of a timeline, a
//! customer's state, times; and the parsing of the filter forms' values.

use access_projections::rows::{AccessStateRow, AuditRow};
use access_store::Position;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;

/// How times are shown (always UTC, to the second).
pub(super) fn shown(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An instant someone chose, shown exactly (its fraction of a second too).
pub(super) fn shown_exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string()
}

/// A time as a `datetime-local` input's value (UTC; milliseconds when
/// there are any, the most such an input holds).
pub(super) fn input_value(at: DateTime<Utc>) -> String {
    if at.timestamp_subsec_millis() == 0 {
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    }
}

/// A time in a link's query (RFC 3339, to the microsecond when needed).
pub(super) fn query_value(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A time in a download's file name.
pub(super) fn file_stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.fZ").to_string()
}

/// Parses a time from a filter form: RFC 3339, or a browser's
/// `datetime-local` value (`2026-12-07T10:30` or with seconds) or a date,
/// both read as UTC. An empty value is no time.
pub(super) fn parse_time(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ()> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    // Years the stores' timestamps hold (four digits).
    parse_any(raw)
        .filter(|t| (1..=9998).contains(&chrono::Datelike::year(t)))
        .map(Some)
        .ok_or(())
}

fn parse_any(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The message of a time that did not parse.
pub(super) fn bad_time(field: &str) -> String {
    format!(
        "“{field}” is not a time (years 1 to 9998): use the date picker, or write e.g. \
         2026-01-31T12:00:00 (UTC) or 2026-01-31T12:00:00Z (in a link, the + of an offset \
         must be written %2B)."
    )
}

/// The kinds of change in words, in the order of the audit kinds.
pub(super) fn kind_label(kind: &str) -> &'static str {
    match kind {
        "customer_registered" => "Customer registered",
        "email_changed" => "Login email changed by an administrator",
        "access_granted" => "Access granted",
        "password_set" => "Password set by an administrator",
        "password_cleared" => "Password cleared",
        "access_notification_sent" => "Access notification sent",
        "access_revoked" => "Access revoked",
        "email_change_requested" => "Email change requested by the customer",
        "email_change_confirmed" => "Email change confirmed through the validation link",
        "password_setup_completed" => "Password set through the setup link",
        "password_changed" => "Password changed by the customer",
        "password_rehashed" => "Password hash upgraded (same password)",
        "customer_forgotten" => "Personal data erased",
        "customer_imported" => "Imported from an older system",
        "totp_enrollment_begun" => "Authenticator app enrollment begun",
        "totp_enrolled" => "Second factor (authenticator app) enrolled",
        "recovery_codes_issued" => "Recovery codes issued",
        "totp_code_accepted" => "Authenticator code accepted",
        "recovery_code_used" => "Recovery code used",
        "totp_removed" => "Second factor removed by the customer",
        "second_factor_reset" => "Second factor reset by an administrator",
        _ => "Other change",
    }
}

/// How a password came to be, in words (never a hash).
fn password_label(source: &str) -> &'static str {
    match source {
        "manual" => "set manually by an administrator",
        "setup_link" => "set by the customer through the setup link",
        "customer" => "changed by the customer (self-service)",
        "imported" => "imported with the old system's hash",
        _ => "set",
    }
}

/// One kind for the filter's `<select>`.
#[derive(Serialize)]
pub(super) struct KindOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub(super) fn kind_options(selected: Option<&str>) -> Vec<KindOption> {
    access_projections::rows::KINDS
        .iter()
        .map(|kind| KindOption {
            value: kind,
            label: kind_label(kind),
            selected: selected == Some(*kind),
        })
        .collect()
}

/// One change on a timeline.
#[derive(Serialize)]
pub(super) struct Change {
    pub at: String,
    pub kind: String,
    pub label: &'static str,
    pub customer_id: String,
    pub actor: String,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub old_email: Option<String>,
    pub new_email: Option<String>,
    pub password: Option<&'static str>,
    /// For access notifications: whether a setup link went with it.
    pub link: Option<&'static str>,
}

/// Who made a change, in words.
fn actor(row: &AuditRow) -> String {
    match row.actor_kind.as_str() {
        "api" => format!(
            "{} (API key, {})",
            row.actor_name.as_deref().unwrap_or("unnamed"),
            row.actor_role.as_deref().unwrap_or("unknown role")
        ),
        "customer" => match row.actor_customer_id.as_deref() {
            Some(id) if id == row.customer_id.to_string() => "the customer".to_string(),
            Some(id) => format!("customer {id}"),
            None => "the customer".to_string(),
        },
        "system" => format!(
            "the system ({})",
            row.actor_name.as_deref().unwrap_or("service")
        ),
        _ => "unknown".to_string(),
    }
}

impl From<&AuditRow> for Change {
    fn from(row: &AuditRow) -> Self {
        Self {
            at: shown(row.at),
            kind: row.kind.clone(),
            label: kind_label(&row.kind),
            customer_id: row.customer_id.to_string(),
            actor: actor(row),
            reason: row.reason.clone(),
            request_id: row.request_id.clone(),
            old_email: row.old_email.clone(),
            new_email: row.new_email.clone(),
            password: row.password_source.as_deref().map(password_label),
            link: row.with_setup_link.map(|with| {
                if with {
                    "with a password-setup link"
                } else {
                    "a notice only, without a link"
                }
            }),
        }
    }
}

/// The cursor of the row after which (or before which, newest first) the
/// next page starts.
pub(super) fn cursor_of(row: &AuditRow) -> String {
    Position {
        tx: row.tx,
        global: row.position,
    }
    .to_string()
}

/// A customer's access state, in words.
#[derive(Serialize)]
pub(super) struct State {
    pub customer_id: String,
    pub name: Option<String>,
    pub email: String,
    pub access: &'static str,
    pub role: Option<String>,
    pub password: &'static str,
    pub setup_link: Option<String>,
    pub pending_email: Option<String>,
    pub version: u64,
    pub updated_at: String,
}

impl State {
    /// The state of `row`, with its links judged at `at`.
    pub(super) fn of(row: &AccessStateRow, at: DateTime<Utc>) -> Self {
        let password = match (row.password_set, row.must_change_password) {
            (true, true) => "temporary: to be changed at the next login",
            (true, false) => "set",
            (false, _) => "none",
        };
        Self {
            customer_id: row.customer_id.to_string(),
            name: row.name.clone(),
            email: row.email.clone(),
            access: if row.access_granted {
                "Customer Center access"
            } else {
                "no access"
            },
            role: row.role.clone(),
            password,
            setup_link: row
                .setup_link_expires_at
                .filter(|_| row.setup_link_pending(at))
                .map(shown),
            pending_email: row.pending_email_at(at).map(str::to_string),
            version: row.version,
            updated_at: shown(row.updated_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_times_read_rfc3339_and_browser_values_as_utc() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(parse_time(None), Ok(None));
        assert_eq!(parse_time(Some("  ")), Ok(None));
        assert_eq!(
            parse_time(Some("2026-03-01T10:30")),
            Ok(Some(utc("2026-03-01T10:30:00Z")))
        );
        assert_eq!(
            parse_time(Some("2026-03-01T10:30:15")),
            Ok(Some(utc("2026-03-01T10:30:15Z")))
        );
        assert_eq!(
            parse_time(Some("2026-03-01T10:30:15+02:00")),
            Ok(Some(utc("2026-03-01T08:30:15Z")))
        );
        assert_eq!(
            parse_time(Some("2026-03-01")),
            Ok(Some(utc("2026-03-01T00:00:00Z")))
        );
        assert_eq!(parse_time(Some("yesterday")), Err(()));
        assert_eq!(parse_time(Some("2026-13-01")), Err(()));
        assert_eq!(parse_time(Some("9999-12-31T23:59:59.9999999Z")), Err(()));
    }

    #[test]
    fn every_kind_has_words() {
        for kind in access_projections::rows::KINDS {
            assert_ne!(kind_label(kind), "Other change", "{kind}");
        }
    }
}
