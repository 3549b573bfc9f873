//! Rendering a mail into an RFC 5322 message (text and HTML alternatives).
//!
//! Each kind has three minijinja templates, embedded in the binary from
//! `crates/mail/templates/`: `<kind>.subject.txt`, `<kind>.txt` and
//! `<kind>.html`, where `<kind>` is
//! [`MailKind::template_name`](crate::kinds::MailKind::template_name). The
//! bodies extend `layout.txt` and `layout.html`. An operator can replace
//! any of these files with [`Templates::with_override_dir`].
//!
//! `.html` templates are auto-escaped. Undefined variables are errors (a
//! typo in an override must not silently drop a link). No template ever
//! receives a password: the mails have none to give.
//!
//! Here: the templates (embedded and overridden) and the message they
//! render into; `environment.rs` is minijinja's setup and its errors,
//! `context.rs` the variables each kind of mail is given.

use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Duration, Utc};
use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use minijinja::value::Value;
use minijinja::Environment;

use crate::error::MailError;
#[cfg(test)]
use crate::kinds::MailKind;
use crate::kinds::OutgoingMail;

mod context;
mod environment;

use context::{context_pairs, sample_mails};
pub use context::{expires_in_phrase, format_utc};
#[cfg(test)]
use environment::escape_html;
use environment::{new_environment, template_error};

/// The header naming the kind of a mail (its template name), so that a
/// reader of the `.eml` files can pick mails by kind.
pub const KIND_HEADER: &str = "X-Access-Mail-Kind";

/// Sender and product name used in every mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// The `From` mailbox, e.g. `Access <no-reply@localhost>`.
    pub from: String,
    /// The product the access is for, e.g. `Customer Center`.
    pub product_name: String,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            from: "Access <no-reply@localhost>".to_string(),
            product_name: "Customer Center".to_string(),
        }
    }
}

/// The embedded source of each named file of `templates/` (a macro:
/// `include_str!` takes only a literal path).
macro_rules! embedded {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../templates/", $file)))),*]
    };
}

/// Every template file, with its embedded source.
const EMBEDDED: &[(&str, &str)] = embedded![
    "layout.txt",
    "layout.html",
    "access_notification_with_link.subject.txt",
    "access_notification_with_link.txt",
    "access_notification_with_link.html",
    "access_notice.subject.txt",
    "access_notice.txt",
    "access_notice.html",
    "email_change_validation.subject.txt",
    "email_change_validation.txt",
    "email_change_validation.html",
    "email_change_notice.subject.txt",
    "email_change_notice.txt",
    "email_change_notice.html",
    "password_changed_notice.subject.txt",
    "password_changed_notice.txt",
    "password_changed_notice.html",
    "second_factor_reset_notice.subject.txt",
    "second_factor_reset_notice.txt",
    "second_factor_reset_notice.html",
    "second_factor_changed_notice.subject.txt",
    "second_factor_changed_notice.txt",
    "second_factor_changed_notice.html",
];

/// The names of all template files (what an override directory may hold).
pub fn template_file_names() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(name, _)| *name)
}

/// The mail templates, ready to render.
#[derive(derive_more::Debug)]
pub struct Templates {
    #[debug(skip)]
    env: Environment<'static>,
    overridden: Vec<String>,
}

impl Templates {
    /// The templates built into the binary.
    pub fn embedded() -> Self {
        let mut env = new_environment();
        for (name, source) in EMBEDDED {
            // The embedded templates are checked by the tests; should one
            // ever fail to parse, rendering it reports the error.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = %name, error = %e, "embedded mail template does not parse");
            }
        }
        Self {
            env,
            overridden: Vec::new(),
        }
    }

    /// The embedded templates, each replaced by the file of the same name in
    /// `dir` when there is one (see [`template_file_names`]). The directory
    /// must exist. Every kind is test-rendered, so a broken override fails
    /// here (at startup) rather than when a mail is due; the text and HTML
    /// of a mail with a link must show `{{ link }}`.
    pub fn with_override_dir(dir: &Path) -> Result<Self, MailError> {
        let io = |action, source| MailError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        };
        let entries =
            std::fs::read_dir(dir).map_err(|e| io("read the mail template directory", e))?;
        let known: Vec<&str> = template_file_names().collect();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            let looks_like_template = name.ends_with(".txt") || name.ends_with(".html");
            if looks_like_template && !known.contains(&name.as_ref()) {
                tracing::warn!(
                    file = %name,
                    dir = %dir.display(),
                    "ignoring a file in the mail template directory that is not a known template name"
                );
            }
        }

        let mut env = new_environment();
        let mut overridden = Vec::new();
        for (name, embedded) in EMBEDDED {
            let path = dir.join(name);
            let source = if path.is_file() {
                let source = std::fs::read_to_string(&path).map_err(|e| MailError::Io {
                    action: "read the mail template",
                    path: path.clone(),
                    source: e,
                })?;
                overridden.push((*name).to_string());
                source
            } else {
                (*embedded).to_string()
            };
            env.add_template_owned(*name, source)
                .map_err(|e| template_error(name, &e, None))?;
        }
        tracing::info!(dir = %dir.display(), overridden = ?overridden, "mail templates loaded");
        let templates = Self { env, overridden };
        templates.check()?;
        Ok(templates)
    }

    /// The template files replaced by the override directory.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// Renders every kind with sample values.
    fn check(&self) -> Result<(), MailError> {
        let settings = MailSettings::default();
        let now = DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000);
        for mail in sample_mails(now) {
            let rendered = self.render_parts(&mail, &settings, now)?;
            if let Some(link) = mail.kind.link() {
                for (part, body) in [("txt", &rendered.text), ("html", &rendered.html)] {
                    if !body.contains(link) {
                        return Err(MailError::Template {
                            name: format!("{}.{part}", mail.kind.template_name()),
                            message: "the template must show the link (`{{ link }}`)".into(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Renders the subject, text and HTML of a mail, without building the
    /// message.
    pub fn render_parts(
        &self,
        mail: &OutgoingMail,
        settings: &MailSettings,
        now: DateTime<Utc>,
    ) -> Result<RenderedMail, MailError> {
        let name = mail.kind.template_name();
        let mut pairs = context_pairs(mail, settings, now);
        let subject_name = format!("{name}.subject.txt");
        let subject = self.render_one(&subject_name, &pairs, mail)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(MailError::Template {
                name: subject_name,
                message: "the subject is empty".into(),
            });
        }
        pairs.push(("subject", Value::from(subject.clone())));
        let text = self.render_one(&format!("{name}.txt"), &pairs, mail)?;
        let html = self.render_one(&format!("{name}.html"), &pairs, mail)?;
        Ok(RenderedMail {
            subject,
            text,
            html,
        })
    }

    fn render_one(
        &self,
        template: &str,
        pairs: &[(&'static str, Value)],
        mail: &OutgoingMail,
    ) -> Result<String, MailError> {
        let ctx = Value::from_pairs(pairs.iter().cloned());
        self.env
            .get_template(template)
            .and_then(|t| t.render(ctx))
            .map_err(|e| template_error(template, &e, mail.kind.link()))
    }

    /// Renders a mail as an RFC 5322 message: `From` = `settings.from`,
    /// `To` = `mail.to`, the kind's subject, `Date` = `now`, a fresh
    /// `Message-ID`, an `X-Access-Mail-Kind` header, and a
    /// `multipart/alternative` body with a `text/plain` and a `text/html`
    /// part, both UTF-8, unencoded (`7bit`, or `8bit` for non-ASCII text)
    /// so that links stay intact on one line; `base64` only if a line
    /// exceeds the 998-octet limit of RFC 5322.
    pub fn render(
        &self,
        mail: &OutgoingMail,
        settings: &MailSettings,
        now: DateTime<Utc>,
    ) -> Result<Message, MailError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(
                |e: lettre::address::AddressError| MailError::InvalidSender {
                    from: settings.from.clone(),
                    reason: e.to_string(),
                },
            )?;
        let to_address: Address =
            mail.to
                .as_str()
                .parse()
                .map_err(
                    |e: lettre::address::AddressError| MailError::InvalidRecipient {
                        reason: e.to_string(),
                    },
                )?;
        let rendered = self.render_parts(mail, settings, now)?;
        let message_id = format!(
            "<{}@{}>",
            uuid::Uuid::new_v4().simple(),
            from.email.domain()
        );
        // Given explicitly: lettre would otherwise re-parse the `To` header,
        // which it cannot do for some valid addresses (quoted local parts).
        let envelope =
            Envelope::new(Some(from.email.clone()), vec![to_address.clone()]).map_err(|e| {
                MailError::InvalidRecipient {
                    reason: e.to_string(),
                }
            })?;
        Message::builder()
            .envelope(envelope)
            .from(from)
            .to(Mailbox::new(None, to_address))
            .subject(rendered.subject)
            .date(SystemTime::from(now))
            .message_id(Some(message_id))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(KIND_HEADER),
                mail.kind.template_name().to_string(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_string(),
            ))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(body(rendered.text)?),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(body(rendered.html)?),
                    ),
            )
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

/// The rendered parts of a mail. `Debug` shows the subject only: the
/// bodies hold links with tokens.
#[derive(Clone, PartialEq, Eq, derive_more::Debug)]
pub struct RenderedMail {
    pub subject: String,
    #[debug(skip)]
    pub text: String,
    #[debug(skip)]
    pub html: String,
}

/// The longest line RFC 5322 allows, without its CRLF.
const MAX_LINE_OCTETS: usize = 998;

/// The body as is (`7bit` if ASCII, else `8bit`), CRLF line ends, when
/// every line fits in 998 octets; else `base64`.
///
/// lettre's own choice would switch to quoted-printable for any line of
/// 76 characters or more, which wraps links with `=` soft breaks: a link
/// could then not be copied from the raw file.
fn body(content: String) -> Result<Body, MailError> {
    let crlf = content
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n");
    let fits = crlf.split("\r\n").all(|line| line.len() <= MAX_LINE_OCTETS) && !crlf.contains('\0');
    if fits {
        let encoding = if crlf.is_ascii() {
            ContentTransferEncoding::SevenBit
        } else {
            ContentTransferEncoding::EightBit
        };
        return Ok(Body::dangerous_pre_encoded(crlf.into_bytes(), encoding));
    }
    Body::new_with_encoding(content, ContentTransferEncoding::Base64)
        .map_err(|_| MailError::Build("the body could not be encoded".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn expiry_phrases() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let phrase = |d: Duration| expires_in_phrase(now + d, now);
        assert_eq!(phrase(Duration::hours(24)), "in 24 hours");
        assert_eq!(
            phrase(Duration::hours(24) - Duration::seconds(29)),
            "in 24 hours"
        );
        assert_eq!(phrase(Duration::hours(1)), "in 1 hour");
        assert_eq!(phrase(Duration::minutes(61)), "in 1 hour 1 minute");
        assert_eq!(phrase(Duration::minutes(45)), "in 45 minutes");
        assert_eq!(phrase(Duration::seconds(20)), "in less than a minute");
        assert_eq!(phrase(Duration::hours(47)), "in 47 hours");
        assert_eq!(phrase(Duration::days(2)), "in 2 days");
        assert_eq!(phrase(Duration::hours(50)), "in 2 days 2 hours");
        assert_eq!(
            phrase(Duration::days(7) + Duration::minutes(5)),
            "in 7 days"
        );
        assert_eq!(phrase(Duration::zero()), "already expired");
        assert_eq!(phrase(-Duration::hours(1)), "already expired");
        assert_eq!(
            format_utc(now + Duration::hours(24)),
            "2025-01-02 00:00 UTC"
        );
    }

    #[test]
    fn html_escaping_covers_the_five_characters() {
        assert_eq!(
            escape_html(r#"<a href="x">&'/"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;/"
        );
    }

    #[test]
    fn bodies_keep_lines_or_fall_back_to_base64() {
        let b = body("a\nb\r\nc".into()).unwrap();
        assert_eq!(b.encoding(), ContentTransferEncoding::SevenBit);
        assert_eq!(b.as_ref(), b"a\r\nb\r\nc");
        let b = body("caf\u{e9}".into()).unwrap();
        assert_eq!(b.encoding(), ContentTransferEncoding::EightBit);
        let b = body("x".repeat(999)).unwrap();
        assert_eq!(b.encoding(), ContentTransferEncoding::Base64);
        let b = body("x".repeat(998)).unwrap();
        assert_eq!(b.encoding(), ContentTransferEncoding::SevenBit);
    }

    #[test]
    fn every_template_file_is_known_and_every_kind_has_three() {
        let names: Vec<&str> = template_file_names().collect();
        for kind in MailKind::TEMPLATE_NAMES {
            for suffix in ["subject.txt", "txt", "html"] {
                assert!(
                    names.contains(&format!("{kind}.{suffix}").as_str()),
                    "{kind}.{suffix}"
                );
            }
        }
        assert_eq!(names.len(), MailKind::TEMPLATE_NAMES.len() * 3 + 2);
    }
}
