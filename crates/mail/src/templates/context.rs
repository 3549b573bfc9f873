//! What the templates are given: the variables of each kind of mail
//! ([`context_pairs`]), the dates and durations in words, and one sample
//! mail of each kind to test-render templates with.

use chrono::{DateTime, Duration, Utc};
use minijinja::value::Value;

use super::MailSettings;
use crate::kinds::{MailKind, OutgoingMail};

/// A UTC date time for humans: `2025-03-15 09:30 UTC`.
pub fn format_utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// How long until `expires_at`, as a phrase: `in 24 hours`,
/// `in 1 hour 30 minutes`, `in 3 days`, `in less than a minute`, or
/// `already expired`. Rounded to the minute.
pub fn expires_in_phrase(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = expires_at - now;
    if left <= Duration::zero() {
        return "already expired".to_string();
    }
    let minutes = (left.num_seconds() + 30) / 60;
    if minutes == 0 {
        return "in less than a minute".to_string();
    }
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let (days, hours, mins) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    let phrase = if minutes >= 2 * 1440 {
        if hours == 0 {
            plural(days, "day")
        } else {
            format!("{} {}", plural(days, "day"), plural(hours, "hour"))
        }
    } else if minutes >= 60 {
        let hours = minutes / 60;
        if mins == 0 {
            plural(hours, "hour")
        } else {
            format!("{} {}", plural(hours, "hour"), plural(mins, "minute"))
        }
    } else {
        plural(mins, "minute")
    };
    format!("in {phrase}")
}

/// The variables of a mail's templates.
///
/// Every template: `product_name`, `to` (the recipient), `kind`, `now`
/// (UTC, formatted); the text and HTML bodies also get `subject`. Per kind:
/// - `access_notification_with_link`: `login`, `link`, `expires_at`,
///   `expires_in`
/// - `access_notice`: `login`
/// - `email_change_validation`: `old_email`, `new_email`, `link`,
///   `expires_at`, `expires_in`
/// - `email_change_notice`: `old_email`, `new_email`
/// - `password_changed_notice`: `login`
/// - `second_factor_reset_notice`: `login`
/// - `second_factor_changed_notice`: `login`, `turned_on` (a boolean)
pub(super) fn context_pairs(
    mail: &OutgoingMail,
    settings: &MailSettings,
    now: DateTime<Utc>,
) -> Vec<(&'static str, Value)> {
    let s = |v: &dyn std::fmt::Display| Value::from(v.to_string());
    let mut pairs = vec![
        ("product_name", Value::from(settings.product_name.clone())),
        ("to", s(&mail.to)),
        ("kind", Value::from(mail.kind.template_name())),
        ("now", Value::from(format_utc(now))),
    ];
    let link_pairs = |link: &str, expires_at: DateTime<Utc>| {
        [
            ("link", Value::from(link.to_string())),
            ("expires_at", Value::from(format_utc(expires_at))),
            (
                "expires_in",
                Value::from(expires_in_phrase(expires_at, now)),
            ),
        ]
    };
    match &mail.kind {
        MailKind::AccessNotificationWithLink {
            login,
            link,
            expires_at,
        } => {
            pairs.push(("login", s(login)));
            pairs.extend(link_pairs(link, *expires_at));
        }
        MailKind::AccessNotice { login }
        | MailKind::PasswordChangedNotice { login }
        | MailKind::SecondFactorResetNotice { login } => {
            pairs.push(("login", s(login)));
        }
        MailKind::SecondFactorChangedNotice { login, turned_on } => {
            pairs.push(("login", s(login)));
            pairs.push(("turned_on", Value::from(*turned_on)));
        }
        MailKind::EmailChangeValidation {
            old_email,
            new_email,
            link,
            expires_at,
        } => {
            pairs.push(("old_email", s(old_email)));
            pairs.push(("new_email", s(new_email)));
            pairs.extend(link_pairs(link, *expires_at));
        }
        MailKind::EmailChangeNotice {
            old_email,
            new_email,
        } => {
            pairs.push(("old_email", s(old_email)));
            pairs.push(("new_email", s(new_email)));
        }
    }
    pairs
}

/// One mail of each kind, with sample values (to check templates).
pub(super) fn sample_mails(now: DateTime<Utc>) -> Vec<OutgoingMail> {
    let (Ok(old), Ok(new)) = (
        access_domain::EmailAddress::parse("old.address@example.com"),
        access_domain::EmailAddress::parse("new.address@example.com"),
    ) else {
        return Vec::new();
    };
    let expires_at = now + Duration::hours(24);
    let link = |path: &str| format!("https://portal.example.com{path}?token=sample-token");
    vec![
        OutgoingMail {
            to: old.clone(),
            kind: MailKind::AccessNotificationWithLink {
                login: old.clone(),
                link: link(crate::kinds::SETUP_PASSWORD_PATH),
                expires_at,
            },
        },
        OutgoingMail {
            to: old.clone(),
            kind: MailKind::AccessNotice { login: old.clone() },
        },
        OutgoingMail {
            to: new.clone(),
            kind: MailKind::EmailChangeValidation {
                old_email: old.clone(),
                new_email: new.clone(),
                link: link(crate::kinds::CONFIRM_EMAIL_PATH),
                expires_at,
            },
        },
        OutgoingMail {
            to: old.clone(),
            kind: MailKind::EmailChangeNotice {
                old_email: old.clone(),
                new_email: new,
            },
        },
        OutgoingMail {
            to: old.clone(),
            kind: MailKind::PasswordChangedNotice { login: old },
        },
    ]
}
