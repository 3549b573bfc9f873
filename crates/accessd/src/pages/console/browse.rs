//! The console's home (search, the latest changes), a customer's page
//! (state, timeline, time travel) and the downloads of a filtered view.

use access_domain::{CustomerId, EmailAddress};
use access_projections::{db, history, AuditFilter};
use access_store::prelude::*;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use minijinja::value::{Serde, Value};
use serde::Deserialize;

use super::view::{self, Change};
use super::{attachment, ConsoleRequest};
use crate::error::ApiError;
use crate::http::audit::{export as stream_export, parse_position, Format};
use crate::pages::{message_page, see_other, PageError};
use crate::state::AppState;

/// Rows per page of a timeline or the latest changes.
const PAGE: u32 = 50;

/// The filters of a view of the audit trail, as the forms send them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ViewQuery {
    /// The home's search: a login email or a customer id.
    q: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    as_of: Option<String>,
    cursor: Option<String>,
    /// Downloads: `csv` or `jsonl`.
    format: Option<String>,
    /// Downloads: one customer.
    customer_id: Option<String>,
}

/// A view's filters, parsed; what did not parse is said above the table.
#[derive(Default)]
struct Filters {
    kind: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    as_of: Option<DateTime<Utc>>,
    after: Option<access_store::Position>,
    errors: Vec<String>,
}

impl Filters {
    fn of(query: &ViewQuery) -> Self {
        let mut f = Self::default();
        match query
            .kind
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            Some(kind) if access_projections::rows::KINDS.contains(&kind) => {
                f.kind = Some(kind.to_string());
            }
            Some(_) => f
                .errors
                .push("Choose a kind of change from the list.".to_string()),
            None => {}
        }
        for (name, raw) in [
            ("From", &query.from),
            ("Until", &query.to),
            ("As of", &query.as_of),
        ] {
            let parsed = view::parse_time(raw.as_deref());
            match (name, parsed) {
                ("From", Ok(t)) => f.from = t,
                ("Until", Ok(t)) => f.to = t,
                (_, Ok(t)) => f.as_of = t,
                (_, Err(())) => f.errors.push(view::bad_time(name)),
            }
        }
        if let (Some(from), Some(to)) = (f.from, f.to) {
            if from >= to {
                f.errors
                    .push("“From” must be before “Until”: no change can match.".to_string());
            }
        }
        if let Some(raw) = query.cursor.as_deref().filter(|c| !c.is_empty()) {
            match parse_position(raw) {
                Some(p) => f.after = Some(p),
                None => f
                    .errors
                    .push("The page link is damaged: start again from the first page.".into()),
            }
        }
        f
    }

    fn error(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| self.errors.join(" "))
    }

    /// The filter of the audit trail (a customer's, or everyone's).
    fn audit(&self, customer_id: Option<CustomerId>) -> AuditFilter {
        // A state as of an instant shows the history up to it (inclusive).
        let until = self.as_of.map(|t| t + chrono::Duration::microseconds(1));
        let to = match (self.to, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        AuditFilter {
            customer_id,
            kind: self.kind.clone(),
            actor: None,
            from: self.from,
            to,
            after: self.after,
            newest_first: false,
        }
    }

    /// The query string of this view (without the cursor), for links.
    fn query(&self, extra: &[(&str, String)]) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in extra {
            q.append_pair(name, value);
        }
        if let Some(kind) = &self.kind {
            q.append_pair("kind", kind);
        }
        for (name, value) in [("from", self.from), ("to", self.to), ("as_of", self.as_of)] {
            if let Some(t) = value {
                q.append_pair(name, &view::query_value(t));
            }
        }
        q.finish()
    }

    /// The filters in a download's file name.
    fn file_name(&self, customer_id: Option<CustomerId>, format: Format) -> String {
        let mut name = String::from("audit-trail");
        if let Some(id) = customer_id {
            name.push_str(&format!("_customer-{id}"));
        }
        if let Some(kind) = &self.kind {
            name.push_str(&format!("_kind-{kind}"));
        }
        for (label, value) in [("from", self.from), ("to", self.to), ("as-of", self.as_of)] {
            if let Some(t) = value {
                name.push_str(&format!("_{label}-{}", view::file_stamp(t)));
            }
        }
        name.push_str(match format {
            Format::Csv => ".csv",
            _ => ".jsonl",
        });
        name
    }
}

/// The value of a time filter's input.
fn input(t: Option<DateTime<Utc>>) -> String {
    t.map(view::input_value).unwrap_or_default()
}

fn filter_context(f: &Filters) -> Value {
    minijinja::context! {
        kinds => Value::from(Serde(&view::kind_options(f.kind.as_deref()))),
        from => input(f.from),
        to => input(f.to),
        as_of => input(f.as_of),
        as_of_exact => f.as_of.map(view::query_value).unwrap_or_default(),
        filter_error => f.error(),
    }
}

/// A page of the audit trail, and the cursor of the next one.
async fn page_of(
    state: &AppState,
    filter: &AuditFilter,
) -> Result<(Vec<Change>, Option<String>), PageError> {
    let mut rows = db::audit_page(state.store(), filter, PAGE + 1)
        .await
        .map_err(ApiError::from)?;
    let more = rows.len() > PAGE as usize;
    rows.truncate(PAGE as usize);
    let next = more.then(|| rows.last().map(view::cursor_of)).flatten();
    Ok((rows.iter().map(Change::from).collect(), next))
}

/// What the home's search found.
enum Found {
    One(CustomerId),
    Several(Vec<CustomerId>),
    Nothing(&'static str),
}

async fn search(state: &AppState, q: &str) -> Result<Found, PageError> {
    let q = q.trim();
    if let Ok(id) = q.parse::<CustomerId>() {
        return Ok(Found::One(id));
    }
    let Ok(email) = EmailAddress::parse(q) else {
        return Ok(Found::Nothing(
            "Enter a customer's login email (the whole address) or customer id.",
        ));
    };
    let mut ids = state.store().customers_by_email(&email).await?;
    Ok(match ids.len() {
        0 => Found::Nothing("No customer has this login email."),
        1 => Found::One(ids.remove(0)),
        _ => Found::Several(ids),
    })
}

/// `GET /audit`: the search, and the latest changes of every customer.
pub(crate) async fn home(req: ConsoleRequest<ViewQuery>) -> Result<Response, PageError> {
    let (state, query) = (&req.state, &req.query);
    state.projections_caught_up().await?;
    let mut no_match = None;
    let mut several = Vec::new();
    if let Some(q) = query.q.as_deref().filter(|q| !q.trim().is_empty()) {
        match search(state, q).await? {
            Found::One(id) => return Ok(see_other(&format!("/audit/customers/{id}"), Vec::new())),
            Found::Several(ids) => {
                for id in ids {
                    if let Some(row) = db::access_state(state.store(), id)
                        .await
                        .map_err(ApiError::from)?
                    {
                        several.push(view::State::of(&row, state.now()));
                    }
                }
            }
            Found::Nothing(why) => no_match = Some(why),
        }
    }
    let mut f = Filters::of(query);
    // The latest changes are of now: an instant in the address is not
    // one of this page's filters.
    f.as_of = None;
    let mut filter = f.audit(None);
    filter.newest_first = true;
    let (changes, next) = if f.errors.is_empty() {
        page_of(state, &filter).await?
    } else {
        (Vec::new(), None)
    };
    let base = f.query(&[]);
    let extra = minijinja::context! {
        q => query.q.clone().unwrap_or_default(),
        no_match => no_match,
        several => Value::from(Serde(&several)),
        changes => Value::from(Serde(&changes)),
        next_page => next.map(|c| format!("/audit?{}", with_cursor(&base, &c))),
        download_csv => format!("/audit/export?{}", with_format(&base, "csv")),
        download_jsonl => format!("/audit/export?{}", with_format(&base, "jsonl")),
        ..filter_context(&f)
    };
    Ok(req
        .page(
            "audit_home.html",
            "Audit console",
            "home",
            extra,
            !f.errors.is_empty(),
        )
        .render())
}

fn with_cursor(base: &str, cursor: &str) -> String {
    join(base, &format!("cursor={}", urlencoded(cursor)))
}

fn with_format(base: &str, format: &str) -> String {
    join(base, &format!("format={format}"))
}

fn join(base: &str, more: &str) -> String {
    if base.is_empty() {
        more.to_string()
    } else {
        format!("{base}&{more}")
    }
}

fn urlencoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A page that says a customer is not there.
fn not_found(what: &str) -> Response {
    message_page(StatusCode::NOT_FOUND, "No such customer", &[what]).render()
}

/// `GET /audit/customers/{id}`: the state (now, or `as_of`) and the
/// timeline.
pub(crate) async fn customer(
    Path(raw_id): Path<String>,
    req: ConsoleRequest<ViewQuery>,
) -> Result<Response, PageError> {
    let (state, query) = (&req.state, &req.query);
    let Ok(id) = raw_id.parse::<CustomerId>() else {
        return Ok(not_found("This is not a customer id (a UUID)."));
    };
    let f = Filters::of(query);
    state.projections_caught_up().await?;
    let Some(current) = db::access_state(state.store(), id)
        .await
        .map_err(ApiError::from)?
    else {
        return Ok(not_found("No customer has this id."));
    };
    let now = state.now();
    let (shown_state, at) = match f.as_of {
        Some(as_of) => (
            history::state_at(state.store(), id, as_of)
                .await
                .map_err(ApiError::from)?
                .map(|row| view::State::of(&row, as_of)),
            as_of,
        ),
        None => (Some(view::State::of(&current, now)), now),
    };
    let (changes, next) = if f.errors.is_empty() {
        page_of(state, &f.audit(Some(id))).await?
    } else {
        (Vec::new(), None)
    };
    let base = f.query(&[]);
    let export_base = f.query(&[("customer_id", id.to_string())]);
    let extra = minijinja::context! {
        customer_id => id.to_string(),
        current_email => current.email.clone(),
        state => Value::from(Serde(&shown_state)),
        state_at => if f.as_of.is_some() { view::shown_exact(at) } else { view::shown(at) },
        time_travel => f.as_of.is_some(),
        changes => Value::from(Serde(&changes)),
        first_page => f.after.is_some(),
        first_page_link => format!("/audit/customers/{id}?{base}"),
        next_page => next.map(|c| format!("/audit/customers/{id}?{}", with_cursor(&base, &c))),
        download_csv => format!("/audit/export?{}", with_format(&export_base, "csv")),
        download_jsonl => format!("/audit/export?{}", with_format(&export_base, "jsonl")),
        ..filter_context(&f)
    };
    let title = format!("Customer {}", current.email);
    Ok(req
        .page(
            "audit_customer.html",
            title,
            "home",
            extra,
            !f.errors.is_empty(),
        )
        .render())
}

/// `GET /audit/export`: every row of a filtered view, streamed as CSV or
/// JSON lines (the API's export), named after its filters.
pub(crate) async fn export(req: ConsoleRequest<ViewQuery>) -> Result<Response, PageError> {
    let ConsoleRequest { state, query, .. } = req;
    let f = Filters::of(&query);
    let format = match query.format.as_deref() {
        Some("csv") | None => Format::Csv,
        Some("jsonl") => Format::JsonLines,
        Some(_) => {
            return Ok(message_page(
                StatusCode::BAD_REQUEST,
                "Unknown download format",
                &["Downloads are CSV or JSON lines: use the links on the pages."],
            )
            .render())
        }
    };
    let customer_id = match query.customer_id.as_deref().filter(|c| !c.is_empty()) {
        Some(raw) => match raw.parse::<CustomerId>() {
            Ok(id) => Some(id),
            Err(_) => {
                return Ok(message_page(
                    StatusCode::BAD_REQUEST,
                    "The download's filters are not valid",
                    &["“customer_id” is not a customer id (a UUID)."],
                )
                .render())
            }
        },
        None => None,
    };
    if let Some(error) = f.error() {
        return Ok(message_page(
            StatusCode::BAD_REQUEST,
            "The filters are not valid",
            &[&error],
        )
        .render());
    }
    state.projections_caught_up().await?;
    if let Some(id) = customer_id {
        let known = db::access_state(state.store(), id)
            .await
            .map_err(ApiError::from)?
            .is_some();
        if !known {
            return Ok(not_found("No customer has this id."));
        }
    }
    let mut filter = f.audit(customer_id);
    filter.after = None;
    let name = f.file_name(customer_id, format);
    Ok(attachment(stream_export(state, filter, format), &name))
}
