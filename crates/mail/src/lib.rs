//! # access-mail
//!
//! Turns what a command did into email messages and delivers them.
//!
//! 1. [`mails_for`]: a command's events and the plain tokens it issued →
//!    the [`OutgoingMail`]s to send (which kind, to whom, with which link).
//! 2. [`Templates::render`]: an [`OutgoingMail`] → an RFC 5322
//!    [`lettre::Message`] (text and HTML alternatives) from minijinja
//!    templates, embedded or replaced from an operator's directory.
//! 3. [`Transport`]: delivery. [`MailTarget`] parses the `ACCESS_MAIL`
//!    setting: `file:DIR` ([`FileTransport`], one `.eml` file per message)
//!    or `smtp://…` ([`smtp::SmtpTransport`]).
//! 4. [`outbox`]: how the service sends: `prepare` renders a command's
//!    mails into outbox rows written with its events; `OutboxWorker`
//!    delivers them with retries.
//!
//! [`Mailer`] chains 2 and 3 directly, without the outbox (for tools and
//! tests; the service never uses it). The [`eml`] module reads the files back
//! ([`extract_link`] gives a test the link of a mail).
//!
//! No mail ever holds a password: the templates are given none. Tokens
//! appear only inside links in the bodies; `Debug` output and errors hide
//! them.

pub mod deliver;
pub mod eml;
pub mod error;
pub mod kinds;
pub mod outbox;
pub mod smtp;
pub mod templates;
pub mod transport;

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The message type and builder used by [`Templates::render`] and
/// [`Transport::send`], re-exported so callers need not depend on lettre.
pub use lettre;

pub use deliver::Transport;
pub use eml::{extract_link, extract_token, parse_eml, EmlPart, ParsedEml};
pub use error::MailError;
pub use kinds::{mails_for, MailKind, OutgoingMail, CONFIRM_EMAIL_PATH, SETUP_PASSWORD_PATH};
pub use templates::{template_file_names, MailSettings, RenderedMail, Templates, KIND_HEADER};
pub use transport::{FileTransport, MailTarget, MemoryTransport};

/// Templates, settings and a transport: renders and sends mails.
#[derive(derive_more::Debug)]
pub struct Mailer {
    templates: Templates,
    settings: MailSettings,
    #[debug(skip)]
    transport: Arc<dyn Transport>,
}

impl Mailer {
    pub fn new(
        templates: Templates,
        settings: MailSettings,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            templates,
            settings,
            transport,
        }
    }

    /// Renders every mail first (so a template error sends nothing), then
    /// sends them in order. Returns how many were sent; on a delivery error
    /// the earlier mails are already sent.
    pub async fn send_all(
        &self,
        mails: &[OutgoingMail],
        now: DateTime<Utc>,
    ) -> Result<usize, MailError> {
        let messages = mails
            .iter()
            .map(|mail| self.templates.render(mail, &self.settings, now))
            .collect::<Result<Vec<_>, _>>()?;
        for (mail, message) in mails.iter().zip(&messages) {
            self.transport.send(message).await?;
            tracing::info!(kind = mail.kind.template_name(), "mail sent");
        }
        Ok(messages.len())
    }
}
