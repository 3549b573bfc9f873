//! Mail for commands: rendered into the outbox in the command's own
//! transaction (see `access_mail::outbox`), delivered by the outbox worker.
//! The links carry `<customer id>.<token>`.

use std::sync::Arc;

use access_domain::IssuedToken;
use access_mail::outbox::{prepare, OutboxWorker};
use access_mail::{MailSettings, Templates};
use access_store::{OutboxInput, OutboxMessage};
use chrono::Utc;

use crate::link_token;

pub struct CommandMail {
    templates: Templates,
    settings: MailSettings,
    public_url: String,
    worker: Option<OutboxWorker>,
}

impl CommandMail {
    pub fn new(
        templates: Templates,
        settings: MailSettings,
        public_url: String,
        worker: Option<OutboxWorker>,
    ) -> Self {
        Self {
            templates,
            settings,
            public_url,
            worker,
        }
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The outbox rows for a decided command.
    pub fn prepare(&self, input: &OutboxInput<'_>) -> Result<Vec<OutboxMessage>, String> {
        let customer_id = input.customer_id;
        let link_token = move |t: &IssuedToken| IssuedToken {
            token: link_token::join(customer_id, &t.token),
            ..t.clone()
        };
        prepare(
            input,
            &self.templates,
            &self.settings,
            &self.public_url,
            Utc::now(),
            &link_token,
        )
        .map_err(|e| e.to_string())
    }

    /// The outbox worker, when this process delivers mail.
    pub fn worker(&self) -> Option<&OutboxWorker> {
        self.worker.as_ref()
    }

    /// New mail was recorded: deliver it now.
    pub fn nudge(&self) {
        if let Some(worker) = &self.worker {
            worker.nudge();
        }
    }
}

/// Metrics for the worker's outcomes.
pub fn outcome_counter(
    metrics: crate::metrics::Metrics,
) -> Arc<dyn Fn(access_mail::outbox::Outcome) + Send + Sync> {
    Arc::new(move |outcome| {
        metrics.mail(match outcome {
            access_mail::outbox::Outcome::Sent => "sent",
            access_mail::outbox::Outcome::Retry => "retry",
            access_mail::outbox::Outcome::Failed => "failed",
        })
    })
}
