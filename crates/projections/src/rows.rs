//! The projections' rows and how each event changes them. Pure functions:
//! the projector and the rebuild both use them, so live and rebuilt tables
//! cannot differ in logic.

use access_domain::events::FORGOTTEN;
use access_domain::metadata::keys;
use access_domain::{CustomerEvent, CustomerId, CustomerName, EmailAddress, EventKind, Personal};
use access_store::{Position, RecordedEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use strum::VariantNames;

/// One customer's current access state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessStateRow {
    pub customer_id: CustomerId,
    pub name: Option<String>,
    pub email: String,
    pub access_granted: bool,
    pub role: Option<String>,
    pub password_set: bool,
    pub must_change_password: bool,
    pub setup_link_expires_at: Option<DateTime<Utc>>,
    pub pending_email: Option<String>,
    pub pending_email_expires_at: Option<DateTime<Utc>>,
    pub version: u64,
    pub updated_at: DateTime<Utc>,
    /// Where the customer's last change is in the global order: the
    /// projector applies events in that order, so a row changed later
    /// always has a greater place than every row already written (the
    /// paging key of `GET /v1/customers`). Not part of the digest of a
    /// rebuild check (a place, not state).
    #[serde(skip)]
    pub last_change: Position,
}

impl AccessStateRow {
    /// The row of a customer just registered by `event`: no access yet.
    fn registered(
        event: &RecordedEvent,
        email: &Personal<EmailAddress>,
        name: Option<&Personal<CustomerName>>,
    ) -> Self {
        let at = event.event.at();
        Self {
            customer_id: event.customer_id,
            name: name.map(Personal::shown),
            email: email.shown(),
            access_granted: false,
            role: None,
            password_set: false,
            must_change_password: false,
            setup_link_expires_at: None,
            pending_email: None,
            pending_email_expires_at: None,
            version: 0,
            updated_at: at,
            last_change: event.position,
        }
    }

    /// No access: no role, password, link or pending change.
    fn clear_access(&mut self) {
        self.access_granted = false;
        self.role = None;
        self.password_set = false;
        self.must_change_password = false;
        self.setup_link_expires_at = None;
        self.pending_email = None;
        self.pending_email_expires_at = None;
    }

    /// A live setup link (not expired at `now`).
    pub fn setup_link_pending(&self, now: DateTime<Utc>) -> bool {
        self.setup_link_expires_at.is_some_and(|t| t > now)
    }

    /// True when a pending email change was never confirmed and its link
    /// expired by `now`.
    pub fn pending_email_expired(&self, now: DateTime<Utc>) -> bool {
        self.pending_email.is_some() && self.pending_email_expires_at.is_some_and(|t| t <= now)
    }

    /// The pending email change, if not expired at `now`.
    pub fn pending_email_at(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.pending_email, self.pending_email_expires_at) {
            (Some(email), Some(expires)) if expires > now => Some(email),
            _ => None,
        }
    }
}

/// Applies one event to a customer's row (`None` before registration).
/// Returns `None` only for an event that cannot start a stream (a stream
/// not beginning with `CustomerRegistered` or `CustomerImported`), which
/// the projector reports.
pub fn apply(row: Option<AccessStateRow>, event: &RecordedEvent) -> Option<AccessStateRow> {
    let at = event.event.at();
    let mut row = match (row, &event.event) {
        (None, CustomerEvent::CustomerRegistered { email, name, .. }) => {
            AccessStateRow::registered(event, email, name.as_ref())
        }
        (
            None,
            CustomerEvent::CustomerImported {
                email,
                name,
                access,
                password_hash,
                must_change_password,
                ..
            },
        ) => AccessStateRow {
            access_granted: access.is_some(),
            role: access.map(|r| r.as_str().to_string()),
            password_set: password_hash.is_some(),
            must_change_password: *must_change_password && password_hash.is_some(),
            ..AccessStateRow::registered(event, email, name.as_ref())
        },
        (None, _) => return None,
        (Some(row), _) => row,
    };
    match &event.event {
        CustomerEvent::CustomerRegistered { .. } | CustomerEvent::CustomerImported { .. } => {}
        CustomerEvent::EmailChanged { new_email, .. } => {
            row.email = new_email.shown();
            row.pending_email = None;
            row.pending_email_expires_at = None;
        }
        CustomerEvent::AccessGranted { role, .. } => {
            row.access_granted = true;
            row.role = Some(role.as_str().to_string());
        }
        CustomerEvent::PasswordSet { temporary, .. } => {
            row.password_set = true;
            row.must_change_password = *temporary;
            row.setup_link_expires_at = None;
        }
        CustomerEvent::PasswordCleared { .. } => {
            row.password_set = false;
            row.must_change_password = false;
        }
        CustomerEvent::AccessNotificationSent { setup_link, .. } => {
            if let Some(link) = setup_link {
                row.setup_link_expires_at = Some(link.expires_at);
            }
        }
        CustomerEvent::AccessRevoked { .. } => row.clear_access(),
        CustomerEvent::EmailChangeRequested {
            new_email,
            expires_at,
            ..
        } => {
            row.pending_email = Some(new_email.shown());
            row.pending_email_expires_at = Some(*expires_at);
        }
        CustomerEvent::EmailChangeConfirmed { new_email, .. } => {
            row.email = new_email.shown();
            row.pending_email = None;
            row.pending_email_expires_at = None;
        }
        CustomerEvent::PasswordSetupCompleted { .. } | CustomerEvent::PasswordChanged { .. } => {
            row.password_set = true;
            row.must_change_password = false;
            row.setup_link_expires_at = None;
        }
        // Same password, hashed anew: the state does not change.
        CustomerEvent::PasswordRehashed { .. } => {}
        // The second factor is not (yet) a column of the access state.
        CustomerEvent::TotpEnrollmentBegun { .. }
        | CustomerEvent::TotpEnrolled { .. }
        | CustomerEvent::RecoveryCodesIssued { .. }
        | CustomerEvent::TotpCodeAccepted { .. }
        | CustomerEvent::RecoveryCodeUsed { .. }
        | CustomerEvent::TotpRemoved { .. }
        | CustomerEvent::SecondFactorReset { .. } => {}
        CustomerEvent::CustomerForgotten { .. } => {
            // What a rebuild gives once the key is gone: personal fields
            // read as forgotten.
            row.name = row.name.map(|_| FORGOTTEN.to_string());
            row.email = FORGOTTEN.to_string();
            row.clear_access();
        }
    }
    row.version = event.sequence;
    row.updated_at = at;
    row.last_change = event.position;
    Some(row)
}

/// How a password came to be set.
pub fn password_source(event: &CustomerEvent) -> Option<&'static str> {
    match event {
        CustomerEvent::PasswordSet { .. } => Some("manual"),
        CustomerEvent::PasswordSetupCompleted { .. } => Some("setup_link"),
        CustomerEvent::PasswordChanged { .. } => Some("customer"),
        CustomerEvent::CustomerImported {
            password_hash: Some(_),
            ..
        } => Some("imported"),
        _ => None,
    }
}

/// One row of the audit trail: a login change. Never a hash or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// Place in the global order.
    pub tx: u64,
    pub position: i64,
    pub customer_id: CustomerId,
    pub sequence: u64,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// `api`, `customer` or `system`.
    pub actor_kind: String,
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    pub actor_customer_id: Option<String>,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub old_email: Option<String>,
    pub new_email: Option<String>,
    /// `manual`, `setup_link`, `customer` or `imported`, where a password
    /// was set.
    pub password_source: Option<String>,
    /// For access notifications: whether a setup link was sent.
    pub with_setup_link: Option<bool>,
}

/// The audit kind of an event: its [`EventKind`] in snake_case.
pub fn kind_of(event: &CustomerEvent) -> &'static str {
    event.kind().into()
}

/// Every audit kind, in the order the events are declared.
pub const KINDS: &[&str] = <EventKind as VariantNames>::VARIANTS;

/// The audit row of an event.
pub fn audit_row(event: &RecordedEvent) -> AuditRow {
    let meta = |key: &str| event.metadata.get(key).cloned();
    let (old_email, new_email) = match &event.event {
        CustomerEvent::CustomerRegistered { email, .. }
        | CustomerEvent::CustomerImported { email, .. } => (None, Some(email.shown())),
        CustomerEvent::EmailChanged {
            old_email,
            new_email,
            ..
        }
        | CustomerEvent::EmailChangeRequested {
            old_email,
            new_email,
            ..
        }
        | CustomerEvent::EmailChangeConfirmed {
            old_email,
            new_email,
            ..
        } => (Some(old_email.shown()), Some(new_email.shown())),
        CustomerEvent::AccessNotificationSent { recipient, .. } => (None, Some(recipient.shown())),
        _ => (None, None),
    };
    let reason = match &event.event {
        CustomerEvent::AccessRevoked {
            reason: Some(r), ..
        }
        | CustomerEvent::SecondFactorReset {
            reason: Some(r), ..
        } => Some(r.clone()),
        _ => meta(keys::REASON),
    };
    AuditRow {
        tx: event.position.tx,
        position: event.position.global,
        customer_id: event.customer_id,
        sequence: event.sequence,
        at: event.event.at(),
        kind: kind_of(&event.event).to_string(),
        actor_kind: meta(keys::ACTOR_KIND).unwrap_or_else(|| "unknown".into()),
        actor_name: meta(keys::ACTOR_NAME),
        actor_role: meta(keys::ACTOR_ROLE),
        actor_customer_id: meta(keys::ACTOR_CUSTOMER),
        request_id: meta(keys::REQUEST_ID),
        reason,
        old_email,
        new_email,
        password_source: password_source(&event.event).map(str::to_string),
        with_setup_link: match &event.event {
            CustomerEvent::AccessNotificationSent { setup_link, .. } => Some(setup_link.is_some()),
            _ => None,
        },
    }
}
