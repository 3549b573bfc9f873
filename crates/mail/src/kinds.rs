//! Which mails a command's events call for.

use std::fmt;

use access_domain::{
    CustomerEvent, EmailAddress, IssuedToken, Personal, TokenDigest, TokenPurpose,
};
use chrono::{DateTime, Utc};

use crate::error::MailError;

/// Path of the password-setup page, under the public URL.
pub const SETUP_PASSWORD_PATH: &str = "/setup-password";
/// Path of the email-change confirmation page, under the public URL.
pub const CONFIRM_EMAIL_PATH: &str = "/confirm-email";

/// What to send, derived from a command's events and the plain tokens it
/// issued.
///
/// `Debug` hides the token in links: a mail can be logged safely.
/// Its template name is the variant's name in snake_case.
#[derive(Clone, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum MailKind {
    /// Access notification with a password-setup link (names the login
    /// email; never a password).
    AccessNotificationWithLink {
        login: EmailAddress,
        link: String,
        expires_at: DateTime<Utc>,
    },
    /// Access notice after an administrator set a password manually: no
    /// password, no link; tells the customer to ask their contact for the
    /// temporary password and that they must change it at first login.
    AccessNotice { login: EmailAddress },
    /// Email-change validation, sent to the NEW address, with the
    /// confirmation link.
    EmailChangeValidation {
        old_email: EmailAddress,
        new_email: EmailAddress,
        link: String,
        expires_at: DateTime<Utc>,
    },
    /// Notice to the OLD address that a change to the new address was
    /// requested (no link).
    EmailChangeNotice {
        old_email: EmailAddress,
        new_email: EmailAddress,
    },
    /// Notice that the password was changed.
    PasswordChangedNotice { login: EmailAddress },
    /// Notice that an administrator reset the second factor (the
    /// authenticator app and the recovery codes no longer count).
    SecondFactorResetNotice { login: EmailAddress },
    /// Notice that the customer turned the second factor on or off.
    SecondFactorChangedNotice {
        login: EmailAddress,
        turned_on: bool,
    },
}

impl MailKind {
    /// Every kind's template base name, in declaration order.
    pub const TEMPLATE_NAMES: &'static [&'static str] = <Self as strum::VariantNames>::VARIANTS;

    /// The base name of this kind's templates (`<name>.subject.txt`,
    /// `<name>.txt`, `<name>.html`), also sent as the `X-Access-Mail-Kind`
    /// header.
    pub fn template_name(&self) -> &'static str {
        self.into()
    }

    /// The link the mail carries, if any.
    pub fn link(&self) -> Option<&str> {
        match self {
            Self::AccessNotificationWithLink { link, .. }
            | Self::EmailChangeValidation { link, .. } => Some(link),
            Self::AccessNotice { .. }
            | Self::EmailChangeNotice { .. }
            | Self::PasswordChangedNotice { .. }
            | Self::SecondFactorResetNotice { .. }
            | Self::SecondFactorChangedNotice { .. } => None,
        }
    }

    /// When the link expires, if the mail carries one.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::AccessNotificationWithLink { expires_at, .. }
            | Self::EmailChangeValidation { expires_at, .. } => Some(*expires_at),
            Self::AccessNotice { .. }
            | Self::EmailChangeNotice { .. }
            | Self::PasswordChangedNotice { .. }
            | Self::SecondFactorResetNotice { .. }
            | Self::SecondFactorChangedNotice { .. } => None,
        }
    }
}

/// A link with its query string hidden.
pub(crate) fn redact_link(link: &str) -> String {
    match link.split_once('?') {
        Some((base, _)) => format!("{base}?[REDACTED]"),
        None => link.to_string(),
    }
}

impl fmt::Debug for MailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AccessNotificationWithLink {
                login,
                link,
                expires_at,
            } => f
                .debug_struct("AccessNotificationWithLink")
                .field("login", login)
                .field("link", &redact_link(link))
                .field("expires_at", expires_at)
                .finish(),
            Self::AccessNotice { login } => f
                .debug_struct("AccessNotice")
                .field("login", login)
                .finish(),
            Self::EmailChangeValidation {
                old_email,
                new_email,
                link,
                expires_at,
            } => f
                .debug_struct("EmailChangeValidation")
                .field("old_email", old_email)
                .field("new_email", new_email)
                .field("link", &redact_link(link))
                .field("expires_at", expires_at)
                .finish(),
            Self::EmailChangeNotice {
                old_email,
                new_email,
            } => f
                .debug_struct("EmailChangeNotice")
                .field("old_email", old_email)
                .field("new_email", new_email)
                .finish(),
            Self::PasswordChangedNotice { login } => f
                .debug_struct("PasswordChangedNotice")
                .field("login", login)
                .finish(),
            Self::SecondFactorResetNotice { login } => f
                .debug_struct("SecondFactorResetNotice")
                .field("login", login)
                .finish(),
            Self::SecondFactorChangedNotice { login, turned_on } => f
                .debug_struct("SecondFactorChangedNotice")
                .field("login", login)
                .field("turned_on", turned_on)
                .finish(),
        }
    }
}

/// One mail to send: a recipient and what to tell them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub to: EmailAddress,
    pub kind: MailKind,
}

/// Maps a command's events and the tokens it issued to the mails to send,
/// in event order.
///
/// - `AccessNotificationSent` with a setup link: an
///   [`AccessNotificationWithLink`](MailKind::AccessNotificationWithLink) to
///   the recipient, with `{public_url}/setup-password?token=<token>`;
///   without one: an [`AccessNotice`](MailKind::AccessNotice).
/// - `EmailChangeRequested`: an
///   [`EmailChangeValidation`](MailKind::EmailChangeValidation) to the new
///   address with `{public_url}/confirm-email?token=<token>`, then an
///   [`EmailChangeNotice`](MailKind::EmailChangeNotice) to the old one.
/// - `PasswordChanged`: a
///   [`PasswordChangedNotice`](MailKind::PasswordChangedNotice) to
///   `current_login` ([`MailError::MissingLogin`] if `None`).
/// - `TotpEnrolled`, `TotpRemoved`: a
///   [`SecondFactorChangedNotice`](MailKind::SecondFactorChangedNotice) to
///   `current_login`.
/// - `SecondFactorReset`: a
///   [`SecondFactorResetNotice`](MailKind::SecondFactorResetNotice) to
///   its recipient (the login email when it happened).
/// - Any other event: no mail.
///
/// A link event is matched to its token by digest (and purpose); with no
/// match the result is [`MailError::MissingToken`], never a mail without
/// its link. `public_url` must be an absolute `http(s)://` URL; one
/// trailing slash is ignored.
pub fn mails_for(
    events: &[CustomerEvent],
    issued: &[IssuedToken],
    public_url: &str,
    current_login: Option<&EmailAddress>,
) -> Result<Vec<OutgoingMail>, MailError> {
    let mut mails = Vec::new();
    for event in events {
        match event {
            CustomerEvent::AccessNotificationSent {
                recipient,
                setup_link: Some(setup),
                ..
            } => {
                let token = find_token(
                    issued,
                    &setup.token_digest,
                    TokenPurpose::PasswordSetup,
                    event,
                )?;
                let link = build_link(public_url, SETUP_PASSWORD_PATH, token)?;
                mails.push(OutgoingMail {
                    to: known(recipient, event)?.clone(),
                    kind: MailKind::AccessNotificationWithLink {
                        login: known(recipient, event)?.clone(),
                        link,
                        expires_at: setup.expires_at,
                    },
                });
            }
            CustomerEvent::AccessNotificationSent {
                recipient,
                setup_link: None,
                ..
            } => mails.push(OutgoingMail {
                to: known(recipient, event)?.clone(),
                kind: MailKind::AccessNotice {
                    login: known(recipient, event)?.clone(),
                },
            }),
            CustomerEvent::EmailChangeRequested {
                old_email,
                new_email,
                token_digest,
                expires_at,
                ..
            } => {
                let token = find_token(issued, token_digest, TokenPurpose::EmailChange, event)?;
                let link = build_link(public_url, CONFIRM_EMAIL_PATH, token)?;
                mails.push(OutgoingMail {
                    to: known(new_email, event)?.clone(),
                    kind: MailKind::EmailChangeValidation {
                        old_email: known(old_email, event)?.clone(),
                        new_email: known(new_email, event)?.clone(),
                        link,
                        expires_at: *expires_at,
                    },
                });
                mails.push(OutgoingMail {
                    to: known(old_email, event)?.clone(),
                    kind: MailKind::EmailChangeNotice {
                        old_email: known(old_email, event)?.clone(),
                        new_email: known(new_email, event)?.clone(),
                    },
                });
            }
            CustomerEvent::PasswordChanged { .. } => {
                let login = current_login.ok_or(MailError::MissingLogin {
                    event: event.type_name(),
                })?;
                mails.push(OutgoingMail {
                    to: login.clone(),
                    kind: MailKind::PasswordChangedNotice {
                        login: login.clone(),
                    },
                });
            }
            CustomerEvent::TotpEnrolled { .. } | CustomerEvent::TotpRemoved { .. } => {
                let login = current_login.ok_or(MailError::MissingLogin {
                    event: event.type_name(),
                })?;
                mails.push(OutgoingMail {
                    to: login.clone(),
                    kind: MailKind::SecondFactorChangedNotice {
                        login: login.clone(),
                        turned_on: matches!(event, CustomerEvent::TotpEnrolled { .. }),
                    },
                });
            }
            CustomerEvent::SecondFactorReset { recipient, .. } => {
                let login = known(recipient, event)?;
                mails.push(OutgoingMail {
                    to: login.clone(),
                    kind: MailKind::SecondFactorResetNotice {
                        login: login.clone(),
                    },
                });
            }
            CustomerEvent::CustomerRegistered { .. }
            | CustomerEvent::EmailChanged { .. }
            | CustomerEvent::AccessGranted { .. }
            | CustomerEvent::PasswordSet { .. }
            | CustomerEvent::PasswordCleared { .. }
            | CustomerEvent::AccessRevoked { .. }
            | CustomerEvent::EmailChangeConfirmed { .. }
            | CustomerEvent::PasswordSetupCompleted { .. }
            | CustomerEvent::PasswordRehashed { .. }
            | CustomerEvent::CustomerImported { .. }
            | CustomerEvent::TotpEnrollmentBegun { .. }
            | CustomerEvent::RecoveryCodesIssued { .. }
            | CustomerEvent::TotpCodeAccepted { .. }
            | CustomerEvent::RecoveryCodeUsed { .. }
            | CustomerEvent::CustomerForgotten { .. } => {}
        }
    }
    Ok(mails)
}

fn purpose_name(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::PasswordSetup => "password-setup",
        TokenPurpose::EmailChange => "email-change",
    }
}

/// A personal field's address; an unreadable (forgotten) one cannot be
/// mailed.
fn known<'a>(
    field: &'a Personal<EmailAddress>,
    event: &CustomerEvent,
) -> Result<&'a EmailAddress, MailError> {
    field.known().ok_or(MailError::MissingLogin {
        event: event.type_name(),
    })
}

fn find_token<'a>(
    issued: &'a [IssuedToken],
    digest: &TokenDigest,
    purpose: TokenPurpose,
    event: &CustomerEvent,
) -> Result<&'a str, MailError> {
    issued
        .iter()
        .find(|t| t.purpose == purpose && t.digest == *digest)
        .map(|t| t.token.expose())
        .ok_or(MailError::MissingToken {
            event: event.type_name(),
            purpose: purpose_name(purpose),
        })
}

/// `{public_url}{path}?token=<token>`, the token percent-encoded (tokens
/// from `access-security` are hex, so they appear unchanged).
fn build_link(public_url: &str, path: &str, token: &str) -> Result<String, MailError> {
    let base = normalize_public_url(public_url)?;
    Ok(format!("{base}{path}?token={}", percent_encode(token)))
}

/// Checks the public URL and drops one trailing slash.
pub fn normalize_public_url(public_url: &str) -> Result<&str, MailError> {
    let invalid = |reason| MailError::InvalidPublicUrl {
        url: public_url.to_string(),
        reason,
    };
    let base = public_url.strip_suffix('/').unwrap_or(public_url);
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("it has no host"));
    }
    if base.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace"));
    }
    if base.contains(['?', '#']) {
        return Err(invalid("it must not have a query or a fragment"));
    }
    Ok(base)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use access_domain::events::SetupLink;
    use access_domain::{PasswordHash, Role, Secret};
    use chrono::{Duration, TimeZone};

    use super::*;

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 14, 9, 30, 0).unwrap()
    }

    fn issued(purpose: TokenPurpose, to: &str, token: &str) -> IssuedToken {
        IssuedToken {
            purpose,
            recipient: email(to),
            token: Secret::new(token),
            digest: TokenDigest::of(token),
            expires_at: now() + Duration::hours(24),
        }
    }

    fn notification(to: &str, token: Option<&str>) -> CustomerEvent {
        CustomerEvent::AccessNotificationSent {
            recipient: Personal::Known(email(to)),
            setup_link: token.map(|t| SetupLink {
                token_digest: TokenDigest::of(t),
                expires_at: now() + Duration::hours(24),
            }),
            at: now(),
        }
    }

    /// `old@example.com` asks to move to `new@example.com`, and the
    /// command issued `token` for `purpose`.
    fn change_request(
        token: &str,
        purpose: TokenPurpose,
    ) -> (Vec<CustomerEvent>, Vec<IssuedToken>) {
        let event = CustomerEvent::EmailChangeRequested {
            old_email: Personal::Known(email("old@example.com")),
            new_email: Personal::Known(email("new@example.com")),
            token_digest: TokenDigest::of(token),
            expires_at: now() + Duration::hours(24),
            at: now(),
        };
        (vec![event], vec![issued(purpose, "new@example.com", token)])
    }

    #[test]
    fn access_notification_with_link_matches_its_token_by_digest() {
        let events = vec![
            CustomerEvent::AccessGranted {
                role: Role::CustomerCenter,
                at: now(),
            },
            notification("ann@example.com", Some("tok-b")),
        ];
        // Two tokens: only the one whose digest is in the event is used.
        let tokens = vec![
            issued(TokenPurpose::PasswordSetup, "ann@example.com", "tok-a"),
            issued(TokenPurpose::PasswordSetup, "ann@example.com", "tok-b"),
        ];
        let mails = mails_for(&events, &tokens, "https://portal.example.com/", None).unwrap();
        assert_eq!(
            mails,
            vec![OutgoingMail {
                to: email("ann@example.com"),
                kind: MailKind::AccessNotificationWithLink {
                    login: email("ann@example.com"),
                    link: "https://portal.example.com/setup-password?token=tok-b".into(),
                    expires_at: now() + Duration::hours(24),
                },
            }]
        );
    }

    #[test]
    fn access_notification_without_link_is_a_plain_notice() {
        let events = vec![
            CustomerEvent::PasswordSet {
                password_hash: PasswordHash::new("fake:abc"),
                temporary: true,
                at: now(),
            },
            notification("ann@example.com", None),
        ];
        let mails = mails_for(&events, &[], "https://portal.example.com", None).unwrap();
        assert_eq!(
            mails,
            vec![OutgoingMail {
                to: email("ann@example.com"),
                kind: MailKind::AccessNotice {
                    login: email("ann@example.com")
                },
            }]
        );
    }

    #[test]
    fn email_change_request_mails_the_new_address_with_a_link_and_the_old_one_without() {
        let (events, tokens) = change_request("tok-1", TokenPurpose::EmailChange);
        let mails = mails_for(&events, &tokens, "http://localhost:8080", None).unwrap();
        assert_eq!(mails.len(), 2);
        assert_eq!(mails[0].to, email("new@example.com"));
        assert_eq!(
            mails[0].kind,
            MailKind::EmailChangeValidation {
                old_email: email("old@example.com"),
                new_email: email("new@example.com"),
                link: "http://localhost:8080/confirm-email?token=tok-1".into(),
                expires_at: now() + Duration::hours(24),
            }
        );
        assert_eq!(mails[1].to, email("old@example.com"));
        assert_eq!(
            mails[1].kind,
            MailKind::EmailChangeNotice {
                old_email: email("old@example.com"),
                new_email: email("new@example.com"),
            }
        );
        assert_eq!(mails[1].kind.link(), None);
    }

    #[test]
    fn password_change_notifies_the_current_login() {
        let events = vec![CustomerEvent::PasswordChanged {
            password_hash: PasswordHash::new("fake:abc"),
            at: now(),
        }];
        let login = email("ann@example.com");
        let mails = mails_for(&events, &[], "https://x.example", Some(&login)).unwrap();
        assert_eq!(
            mails,
            vec![OutgoingMail {
                to: login.clone(),
                kind: MailKind::PasswordChangedNotice { login },
            }]
        );
        let err = mails_for(&events, &[], "https://x.example", None).unwrap_err();
        assert!(matches!(err, MailError::MissingLogin { .. }), "{err}");
    }

    #[test]
    fn other_events_send_no_mail() {
        let a = email("ann@example.com");
        let b = email("bob@example.com");
        let events = vec![
            CustomerEvent::CustomerRegistered {
                customer_id: access_domain::CustomerId::new_random(),
                email: Personal::Known(a.clone()),
                name: None,
                at: now(),
            },
            CustomerEvent::EmailChanged {
                old_email: Personal::Known(a.clone()),
                new_email: Personal::Known(b.clone()),
                at: now(),
            },
            CustomerEvent::AccessGranted {
                role: Role::CustomerCenter,
                at: now(),
            },
            CustomerEvent::PasswordSet {
                password_hash: PasswordHash::new("fake:abc"),
                temporary: true,
                at: now(),
            },
            CustomerEvent::PasswordCleared {
                reason: access_domain::PasswordClearedReason::EmailChangedWithSetupLink,
                at: now(),
            },
            CustomerEvent::AccessRevoked {
                reason: None,
                at: now(),
            },
            CustomerEvent::EmailChangeConfirmed {
                old_email: Personal::Known(a),
                new_email: Personal::Known(b),
                at: now(),
            },
            CustomerEvent::PasswordSetupCompleted {
                password_hash: PasswordHash::new("fake:abc"),
                at: now(),
            },
        ];
        assert!(mails_for(&events, &[], "https://x.example", None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_link_event_without_its_token_is_an_error_not_a_mail_without_link() {
        // No token at all.
        let events = vec![notification("ann@example.com", Some("tok-1"))];
        let err = mails_for(&events, &[], "https://x.example", None).unwrap_err();
        assert!(matches!(err, MailError::MissingToken { .. }), "{err}");
        assert!(err.to_string().contains("AccessNotificationSent"), "{err}");

        // A token with another digest.
        let other = vec![issued(
            TokenPurpose::PasswordSetup,
            "ann@example.com",
            "tok-2",
        )];
        let err = mails_for(&events, &other, "https://x.example", None).unwrap_err();
        assert!(matches!(err, MailError::MissingToken { .. }), "{err}");
        assert!(!err.to_string().contains("tok-"), "{err}");

        // The right digest with the wrong purpose.
        let (events, wrong) = change_request("tok-3", TokenPurpose::PasswordSetup);
        let err = mails_for(&events, &wrong, "https://x.example", None).unwrap_err();
        assert!(matches!(err, MailError::MissingToken { .. }), "{err}");
        assert!(err.to_string().contains("email-change"), "{err}");
    }

    #[test]
    fn public_url_is_checked_and_one_trailing_slash_trimmed() {
        assert_eq!(
            normalize_public_url("https://a.example/").unwrap(),
            "https://a.example"
        );
        assert_eq!(
            normalize_public_url("https://a.example/portal").unwrap(),
            "https://a.example/portal"
        );
        for bad in [
            "",
            "a.example",
            "ftp://a.example",
            "https://",
            "https://a b",
            "https://a?x=1",
        ] {
            assert!(normalize_public_url(bad).is_err(), "{bad:?} was accepted");
        }
        let events = vec![notification("ann@example.com", Some("t"))];
        let tokens = vec![issued(TokenPurpose::PasswordSetup, "ann@example.com", "t")];
        let err = mails_for(&events, &tokens, "portal", None).unwrap_err();
        assert!(matches!(err, MailError::InvalidPublicUrl { .. }), "{err}");
    }

    #[test]
    fn tokens_are_percent_encoded_and_hidden_from_debug() {
        let events = vec![notification("ann@example.com", Some("a+b/c="))];
        let tokens = vec![issued(
            TokenPurpose::PasswordSetup,
            "ann@example.com",
            "a+b/c=",
        )];
        let mails = mails_for(&events, &tokens, "https://x.example", None).unwrap();
        assert_eq!(
            mails[0].kind.link(),
            Some("https://x.example/setup-password?token=a%2Bb%2Fc%3D")
        );
        let debug = format!("{:?}", mails[0]);
        assert!(!debug.contains("a%2Bb"), "{debug}");
        assert!(debug.contains("setup-password?[REDACTED]"), "{debug}");
    }
}
