//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): a request
//! that arrives with `traceparent` keeps its trace id. It is logged with the
//! request id (the `request` span's `trace_id` field), stored as the
//! `correlation_id` of every event the request causes (through the
//! `RequestId` extractor: API-key commands, the customer's own commands,
//! links and pages, a login's hash upgrade), and the answer carries a `traceparent` of the same trace with this service's own
//! span id, so a command can be followed from the upstream service through
//! this one. A request without a valid `traceparent` starts a new trace (in
//! the answer and the logs; its events get no correlation id).
//!
//! Parsed by hand: the header is one fixed-width line, and the crates that
//! parse it (opentelemetry's propagators) would bring a whole telemetry SDK.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// Whether the caller sent it (else this service started the trace).
    pub from_caller: bool,
}

impl TraceContext {
    /// Reads a `traceparent` value: `version-traceid-parentid-flags`
    /// (version `00`, or a later one read as far as `00` goes).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        let is_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !is_hex(version, 2) || version == "ff" || !is_hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add some.
        if version == "00" && (parts.next().is_some() || value.len() != 55) {
            return None;
        }
        if !is_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return None;
        }
        if !is_hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: trace_id.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
            from_caller: true,
        })
    }

    /// A new trace (not sampled).
    pub fn start() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            flags: 0,
            from_caller: false,
        }
    }

    /// The `traceparent` of this service's span in the trace.
    pub fn header(&self) -> String {
        let span = uuid::Uuid::new_v4().simple().to_string();
        format!("00-{}-{}-{:02x}", self.trace_id, &span[..16], self.flags)
    }

    /// The events' correlation id: the caller's trace id, if it sent one.
    pub fn correlation_id(&self) -> Option<String> {
        self.from_caller.then(|| self.trace_id.clone())
    }
}

/// Middleware: puts the request's [`TraceContext`] in its extensions and
/// answers with a `traceparent`.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let context = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::start);
    let header = HeaderValue::from_str(&context.header()).ok();
    request.extensions_mut().insert(context);
    let mut response = next.run(request).await;
    if let Some(header) = header {
        response.headers_mut().insert(TRACEPARENT, header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_is_read() {
        let context = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(context.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.flags, 1);
        assert_eq!(
            context.correlation_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let answer = context.header();
        assert!(
            answer.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{answer}"
        );
        assert!(answer.ends_with("-01") && answer.len() == 55, "{answer}");
        assert!(
            !answer.contains("00f067aa0ba902b7"),
            "a span id of our own: {answer}"
        );
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-x'; DROP TABLE events;--",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        )
        .is_some());
    }

    #[test]
    fn a_new_trace_has_no_correlation_id() {
        let started = TraceContext::start();
        assert_eq!(started.trace_id.len(), 32);
        assert_eq!(started.correlation_id(), None);
        assert!(TraceContext::parse(&started.header()).is_some());
    }
}
