//! The audit trail as files: JSON Lines and CSV, the same for the HTTP
//! export and `accessctl audit export`.

use access_domain::CustomerId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

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

/// Who made a change.
#[derive(Serialize, ToSchema, Debug)]
pub struct ActorView {
    /// `api`, `customer` or `system`.
    pub kind: String,
    /// The API key's name (for `api` and `system`).
    pub name: Option<String>,
    pub role: Option<String>,
    /// For changes made by the customer.
    pub customer_id: Option<String>,
}

/// One row of the audit trail.
#[derive(Serialize, ToSchema, Debug)]
pub struct AuditView {
    /// Place in the global order (`tx:position`), also the cursor.
    pub position: String,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub sequence: u64,
    pub at: DateTime<Utc>,
    /// `customer_registered`, `email_changed`, `access_granted`, `password_set`, `password_cleared`,
    /// `access_notification_sent`, `access_revoked`, `email_change_requested`, `email_change_confirmed`,
    /// `password_setup_completed`, `password_changed`, `password_rehashed`, `customer_forgotten`, `customer_imported`.
    pub kind: String,
    pub actor: ActorView,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub old_email: Option<String>,
    pub new_email: Option<String>,
    /// `manual`, `setup_link` or `customer`, where a password was set.
    pub password_source: Option<String>,
    /// For access notifications: whether a setup link was sent.
    pub with_setup_link: Option<bool>,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        Self {
            position: format!("{}:{}", r.tx, r.position),
            customer_id: r.customer_id,
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

pub fn csv_record(r: &AuditRow) -> [String; 16] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
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
