//! SMTP delivery with lettre: `smtp://[user:pass@]host[:port][?tls=none|starttls|tls]`
//! (`smtps://…` is implicit TLS).
//!
//! - `tls=none`: plain SMTP (a local relay or a test server);
//! - `tls=starttls` (the default for `smtp://`): STARTTLS required, port 587;
//! - `tls=tls` or `smtps://`: implicit TLS, port 465.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::deliver::Transport;
use crate::error::MailError;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

/// A parsed SMTP setting. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, derive_more::Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub user: Option<String>,
    #[debug(skip)]
    password: Option<String>,
}

fn invalid(message: impl Into<String>) -> MailError {
    MailError::InvalidTarget(message.into())
}

impl SmtpSettings {
    /// Parses the URL. Errors never repeat the URL (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, MailError> {
        let url = url::Url::parse(raw.trim())
            .map_err(|e| invalid(format!("the SMTP URL is malformed: {e}")))?;
        let implicit = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(invalid(format!(
                    "unknown scheme `{other}`; expected smtp:// or smtps://"
                )))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("the SMTP URL needs a host, e.g. smtp://mail.example.com"))?
            .to_string();
        let mut tls = if implicit {
            SmtpTls::Tls
        } else {
            SmtpTls::StartTls
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "none") if !implicit => tls = SmtpTls::None,
                ("tls", "starttls") if !implicit => tls = SmtpTls::StartTls,
                ("tls", "tls") => tls = SmtpTls::Tls,
                ("tls", other) => {
                    return Err(invalid(format!(
                        "tls=`{}` is not one of none, starttls, tls (smtps:// is always tls)",
                        other.chars().take(16).collect::<String>()
                    )))
                }
                (other, _) => {
                    return Err(invalid(format!(
                        "unknown SMTP option `{}`; the only one is tls",
                        other.chars().take(32).collect::<String>()
                    )))
                }
            }
        }
        let port = url.port().unwrap_or(match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        });
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| invalid("the SMTP user or password is not valid percent-encoding"))
        };
        let user = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let password = url.password().map(decode).transpose()?;
        if password.is_some() && user.is_none() {
            return Err(invalid("the SMTP URL has a password but no user"));
        }
        Ok(Self {
            host,
            port,
            tls,
            user,
            password,
        })
    }
}

/// `%XX` decoding (user names and passwords in URLs).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Delivers through an SMTP server.
#[derive(Clone, derive_more::Debug)]
pub struct SmtpTransport {
    #[debug(skip)]
    inner: AsyncSmtpTransport<Tokio1Executor>,
    settings: SmtpSettings,
}

impl SmtpTransport {
    pub fn new(settings: SmtpSettings) -> Result<Self, MailError> {
        let builder = match settings.tls {
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(|e| invalid(format!("SMTP STARTTLS setup: {e}")))?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| invalid(format!("SMTP TLS setup: {e}")))?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(Duration::from_secs(15)));
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            inner: builder.build(),
            settings,
        })
    }

    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }
}

fn smtp_error(e: lettre::transport::smtp::Error) -> MailError {
    // lettre's messages name the server's answer, not our credentials.
    if e.is_permanent() {
        MailError::Rejected(e.to_string())
    } else {
        MailError::Delivery(e.to_string())
    }
}

#[async_trait::async_trait]
impl Transport for SmtpTransport {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        self.inner.send(message.clone()).await.map_err(smtp_error)?;
        Ok(())
    }

    async fn send_raw(
        &self,
        _id: &str,
        from: &str,
        to: &str,
        bytes: &[u8],
    ) -> Result<(), MailError> {
        let parse = |a: &str| {
            a.parse::<Address>()
                .map_err(|e| MailError::Rejected(format!("envelope address: {e}")))
        };
        let envelope = Envelope::new(Some(parse(from)?), vec![parse(to)?])
            .map_err(|e| MailError::Rejected(format!("envelope: {e}")))?;
        self.inner
            .send_raw(&envelope, bytes)
            .await
            .map_err(smtp_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn smtp_urls_parse_with_defaults() {
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.user.as_deref()),
            ("127.0.0.1", 2525, SmtpTls::None, None)
        );
        let s = SmtpSettings::parse("smtp://mail.example.com").unwrap();
        assert_eq!((s.port, s.tls), (587, SmtpTls::StartTls));
        let s = SmtpSettings::parse("smtps://ann%40corp:p%2Fw@mail.example.com").unwrap();
        assert_eq!((s.port, s.tls), (465, SmtpTls::Tls));
        assert_eq!(s.user.as_deref(), Some("ann@corp"));
        assert_eq!(s.password.as_deref(), Some("p/w"));
        assert!(!format!("{s:?}").contains("p/w"));
    }

    #[test]
    fn bad_smtp_urls_are_clear_and_do_not_echo_secrets() {
        for (raw, expected) in [
            ("smtp://", "host"),
            ("smtp://h?tls=maybe", "not one of"),
            ("smtps://h?tls=none", "not one of"),
            ("smtp://h?port=1", "unknown SMTP option"),
            ("smtp://:secretpw@h", "password but no user"),
        ] {
            let err = SmtpSettings::parse(raw).unwrap_err().to_string();
            assert!(err.contains(expected), "{raw}: {err}");
            assert!(!err.contains("secretpw"), "{err}");
        }
    }
}
