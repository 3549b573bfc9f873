//! Mail after a command: the links carry `<customer id>.<token>`, the
//! messages come from `access-mail`'s templates, and go to the configured
//! transport.
//!
//! Delivery happens right after the commit, in the request. A crash between
//! the commit and the delivery loses that mail: the transactional outbox of
//! the mail issue replaces this.

use access_domain::{CustomerEvent, IssuedToken};
use access_store::Executed;

use crate::links;
use crate::state::AppState;

pub struct Mailer {
    inner: access_mail::Mailer,
    public_url: String,
}

impl Mailer {
    pub fn new(inner: access_mail::Mailer, public_url: String) -> Self {
        Self { inner, public_url }
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Sends the mails a command's events call for. Failures are logged and
    /// counted, never turned into a failed command (its events are stored).
    pub async fn deliver(&self, state: &AppState, executed: &Executed) {
        let issued: Vec<IssuedToken> = executed
            .issued_tokens
            .iter()
            .map(|t| IssuedToken {
                token: links::join(executed.customer_id, &t.token),
                ..t.clone()
            })
            .collect();
        let needs_login = executed
            .events
            .iter()
            .any(|e| matches!(e, CustomerEvent::PasswordChanged { .. }));
        let login = if needs_login {
            match state.store().load(executed.customer_id).await {
                Ok(loaded) => loaded.customer.email().cloned(),
                Err(e) => {
                    tracing::error!(customer_id = %executed.customer_id, error = %e, "mail: cannot load the customer");
                    None
                }
            }
        } else {
            None
        };
        let mails = match access_mail::mails_for(
            &executed.events,
            &issued,
            &self.public_url,
            login.as_ref(),
        ) {
            Ok(mails) => mails,
            Err(e) => {
                state.metrics().mail("failed");
                tracing::error!(customer_id = %executed.customer_id, error = %e, "mail: cannot build the messages");
                return;
            }
        };
        if mails.is_empty() {
            return;
        }
        match self.inner.send_all(&mails, state.now()).await {
            Ok(n) => {
                for _ in 0..n {
                    state.metrics().mail("sent");
                }
            }
            Err(e) => {
                state.metrics().mail("failed");
                tracing::error!(customer_id = %executed.customer_id, error = %e, "mail: delivery failed");
            }
        }
    }
}
