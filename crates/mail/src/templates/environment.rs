//! The minijinja environment the templates render in: undefined variables
//! are errors, `.html` templates are auto-escaped (five characters only),
//! and template errors never show a link's token.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::error::MailError;
use crate::kinds::redact_link;

pub(super) fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // HTML escaping of `& < > " '` only: minijinja's default also escapes
    // `/`, which is valid but turns links in the HTML source into
    // `https:&#x2f;&#x2f;…`, hard to copy by hand.
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() {
            if let Some(s) = value.as_str() {
                return out
                    .write_str(&escape_html(s))
                    .map_err(minijinja::Error::from);
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub(super) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// A template error, without the link (which holds a token) in its text.
pub(super) fn template_error(name: &str, e: &minijinja::Error, link: Option<&str>) -> MailError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = e.line() {
        let file = e.name().unwrap_or(name);
        message.push_str(&format!(" (in {file} line {line})"));
    }
    if let Some(link) = link {
        message = message.replace(link, &redact_link(link));
        if let Some((_, query)) = link.split_once('?') {
            message = message.replace(query, "[REDACTED]");
        }
    }
    MailError::Template {
        name: name.to_string(),
        message,
    }
}
