//! The mail crate's names reach the API and the mails: error codes (in
//! API errors and logs), template names (file names an operator overrides
//! and the `X-Access-Mail-Kind` header). They are derived from the
//! variants' names; these tests pin every one of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use access_domain::EmailAddress;
use access_mail::{MailError, MailKind};

#[test]
fn mail_error_codes_are_stable() {
    let errors = [
        MailError::MissingToken {
            event: "AccessNotificationSent",
            purpose: "password-setup",
        },
        MailError::MissingLogin {
            event: "PasswordChanged",
        },
        MailError::InvalidPublicUrl {
            url: "x".into(),
            reason: "r",
        },
        MailError::InvalidSender {
            from: "x".into(),
            reason: "r".into(),
        },
        MailError::InvalidRecipient { reason: "r".into() },
        MailError::Template {
            name: "n".into(),
            message: "m".into(),
        },
        MailError::Build("b".into()),
        MailError::Io {
            action: "read",
            path: PathBuf::from("/x"),
            source: std::io::Error::other("e"),
        },
        MailError::InvalidTarget("t".into()),
        MailError::Delivery("d".into()),
        MailError::Rejected("r".into()),
    ];
    let codes: Vec<&str> = errors.iter().map(MailError::code).collect();
    assert_eq!(
        codes,
        [
            "mail_missing_token",
            "mail_missing_login",
            "mail_invalid_public_url",
            "mail_invalid_sender",
            "mail_invalid_recipient",
            "mail_template",
            "mail_build",
            "mail_io",
            "mail_invalid_target",
            "mail_delivery",
            "mail_rejected",
        ]
    );
}

#[test]
fn template_names_are_the_file_names_and_the_kind_header() {
    assert_eq!(
        MailKind::TEMPLATE_NAMES,
        [
            "access_notification_with_link",
            "access_notice",
            "email_change_validation",
            "email_change_notice",
            "password_changed_notice",
            "second_factor_reset_notice",
            "second_factor_changed_notice",
        ]
    );
    let login = EmailAddress::parse("ann@example.com").unwrap();
    let old_email = EmailAddress::parse("old@example.com").unwrap();
    let kinds = [
        MailKind::AccessNotificationWithLink {
            login: login.clone(),
            link: "https://x.example/setup-password?token=t".into(),
            expires_at: chrono::Utc::now(),
        },
        MailKind::AccessNotice {
            login: login.clone(),
        },
        MailKind::EmailChangeValidation {
            old_email: old_email.clone(),
            new_email: login.clone(),
            link: "https://x.example/confirm-email?token=t".into(),
            expires_at: chrono::Utc::now(),
        },
        MailKind::EmailChangeNotice {
            old_email,
            new_email: login.clone(),
        },
        MailKind::PasswordChangedNotice {
            login: login.clone(),
        },
        MailKind::SecondFactorResetNotice {
            login: login.clone(),
        },
        MailKind::SecondFactorChangedNotice {
            login,
            turned_on: true,
        },
    ];
    let names: Vec<&str> = kinds.iter().map(MailKind::template_name).collect();
    assert_eq!(names, MailKind::TEMPLATE_NAMES);
}

#[test]
fn a_rendered_mail_shows_its_subject_and_not_its_bodies() {
    let mail = access_mail::RenderedMail {
        subject: "Your access".into(),
        text: "https://x.example/setup-password?token=secret-text".into(),
        html: "<a href=\"https://x.example/setup-password?token=secret-html\">".into(),
    };
    let shown = format!("{mail:?}");
    assert!(shown.contains("Your access"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}
