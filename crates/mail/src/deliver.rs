//! The one thing every transport does: deliver a message. Its own module
//! so that the transports (`transport.rs`: files, memory, and the choice
//! among them; `smtp.rs`) depend on it and not on each other.

use lettre::Message;

use crate::error::MailError;

/// Delivers rendered messages.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, message: &Message) -> Result<(), MailError>;

    /// Delivers an already formatted message (from the outbox): `id` names
    /// it (the file name, or nothing for SMTP), `from`/`to` are the
    /// envelope.
    async fn send_raw(&self, id: &str, from: &str, to: &str, bytes: &[u8])
        -> Result<(), MailError>;
}
