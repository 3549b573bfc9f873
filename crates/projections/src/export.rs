//! The audit trail as files: JSON Lines and CSV, the same for the HTTP
//! export and `accessctl audit export`.

use crate::rows::AuditRow;

/// File formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, as `AuditView`.
    JsonLines,
    /// A header line, then one row per change (columns `CSV_HEADER`).
    Csv,
}

/// Why rows could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode audit rows: {0}")]
pub struct ExportError(String);

pub use access_api_types::{ActorView, AuditView};

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        Self {
            position: format!("{}:{}", r.tx, r.position),
            customer_id: r.customer_id.as_uuid(),
            sequence: r.sequence,
            at: r.at,
            kind: r.kind,
            actor: ActorView {
                kind: r.actor_kind,
                name: r.actor_name,
                role: r.actor_role,
                customer_id: r.actor_customer_id,
            },
            request_id: r.request_id,
            reason: r.reason,
            old_email: r.old_email,
            new_email: r.new_email,
            password_source: r.password_source,
            with_setup_link: r.with_setup_link,
        }
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 16] = [
    "position",
    "customer_id",
    "sequence",
    "at",
    "kind",
    "actor_kind",
    "actor_name",
    "actor_role",
    "actor_customer_id",
    "request_id",
    "reason",
    "old_email",
    "new_email",
    "password_source",
    "with_setup_link",
    "tx",
];

/// A text cell a spreadsheet would run as a formula (it starts with `=`,
/// `+`, `-`, `@`, a tab or a carriage return) gets a leading apostrophe,
/// which spreadsheets show as text (OWASP's advice against CSV
/// injection): a customer's own email such as `=cmd|'/C calc'!A0@x.example`
/// is valid, and auditors open these files in spreadsheets. JSON lines
/// keep every value as it is.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// One audit row as CSV cells (free text made [`spreadsheet_safe`]).
pub fn csv_record(r: &AuditRow) -> [String; 16] {
    let opt = |v: &Option<String>| spreadsheet_safe(v.as_deref().unwrap_or_default()).into_owned();
    [
        r.position.to_string(),
        r.customer_id.to_string(),
        r.sequence.to_string(),
        r.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        r.kind.clone(),
        r.actor_kind.clone(),
        opt(&r.actor_name),
        opt(&r.actor_role),
        opt(&r.actor_customer_id),
        opt(&r.request_id),
        opt(&r.reason),
        opt(&r.old_email),
        opt(&r.new_email),
        opt(&r.password_source),
        r.with_setup_link.map(|b| b.to_string()).unwrap_or_default(),
        r.tx.to_string(),
    ]
}

/// Encodes rows; `header` adds the CSV header line first.
pub fn encode(
    rows: &[AuditRow],
    format: ExportFormat,
    header: bool,
) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    match format {
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            if header {
                writer
                    .write_record(CSV_HEADER)
                    .map_err(|e| ExportError(e.to_string()))?;
            }
            for r in rows {
                writer
                    .write_record(csv_record(r))
                    .map_err(|e| ExportError(e.to_string()))?;
            }
            writer.flush().map_err(|e| ExportError(e.to_string()))?;
        }
        ExportFormat::JsonLines => {
            for r in rows {
                serde_json::to_writer(&mut out, &AuditView::from(r.clone()))
                    .map_err(|e| ExportError(e.to_string()))?;
                out.push(b'\n');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_are_shown_as_text() {
        for formula in [
            "=cmd|'/C calc'!A0@x.example",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(spreadsheet_safe(formula), format!("'{formula}"));
        }
        for plain in ["ann@example.com", "contract ended", "", "1a2b"] {
            assert_eq!(spreadsheet_safe(plain), plain);
        }
    }
}
