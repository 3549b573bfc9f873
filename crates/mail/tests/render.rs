//! Rendering: subjects, recipients, links, expiry text, escaping, no
//! passwords, override directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_domain::services::fakes::{services_at, FakeHasher};
use access_domain::{
    CustomerCommand, CustomerEvent, CustomerId, CustomerServices, EmailAddress, Password, Role,
    Secret,
};
use access_mail::{
    extract_link, mails_for, parse_eml, MailError, MailKind, MailSettings, OutgoingMail, ParsedEml,
    Templates,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 30, 0).unwrap()
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn settings() -> MailSettings {
    MailSettings {
        from: "Access <no-reply@localhost>".into(),
        product_name: "Customer Center".into(),
    }
}

fn formatted(message: &lettre::Message) -> String {
    String::from_utf8(message.formatted()).unwrap()
}

fn render(templates: &Templates, mail: &OutgoingMail) -> (String, ParsedEml) {
    let eml = formatted(&templates.render(mail, &settings(), now()).unwrap());
    let parsed = parse_eml(&eml);
    (eml, parsed)
}

const SETUP_LINK: &str = "https://portal.example.com/setup-password?token=0123456789abcdef";
const CONFIRM_LINK: &str = "https://portal.example.com/confirm-email?token=fedcba9876543210";

fn one_of_each() -> Vec<(OutgoingMail, &'static str)> {
    let ann = email("ann@example.com");
    let new = email("ann.new@example.org");
    let expires_at = now() + Duration::hours(24);
    vec![
        (
            OutgoingMail {
                to: ann.clone(),
                kind: MailKind::AccessNotificationWithLink {
                    login: ann.clone(),
                    link: SETUP_LINK.into(),
                    expires_at,
                },
            },
            "Your access to Customer Center: choose your password",
        ),
        (
            OutgoingMail {
                to: ann.clone(),
                kind: MailKind::AccessNotice { login: ann.clone() },
            },
            "Your access to Customer Center",
        ),
        (
            OutgoingMail {
                to: new.clone(),
                kind: MailKind::EmailChangeValidation {
                    old_email: ann.clone(),
                    new_email: new.clone(),
                    link: CONFIRM_LINK.into(),
                    expires_at,
                },
            },
            "Confirm your new login email for Customer Center",
        ),
        (
            OutgoingMail {
                to: ann.clone(),
                kind: MailKind::EmailChangeNotice {
                    old_email: ann.clone(),
                    new_email: new,
                },
            },
            "A change of your Customer Center login email was requested",
        ),
        (
            OutgoingMail {
                to: ann.clone(),
                kind: MailKind::PasswordChangedNotice { login: ann },
            },
            "Your Customer Center password was changed",
        ),
    ]
}

#[test]
fn every_kind_renders_with_recipient_subject_link_and_expiry() {
    let templates = Templates::embedded();
    for (mail, subject) in one_of_each() {
        let kind = mail.kind.template_name();
        let (eml, parsed) = render(&templates, &mail);
        assert_eq!(parsed.header("To"), Some(mail.to.as_str()), "{kind}");
        assert_eq!(parsed.header("From"), Some("Access <no-reply@localhost>"));
        assert_eq!(parsed.header("Subject"), Some(subject), "{kind}");
        assert_eq!(parsed.header("X-Access-Mail-Kind"), Some(kind));
        assert_eq!(
            parsed.header("Date"),
            Some("Fri, 14 Mar 2025 09:30:00 +0000")
        );
        let id = parsed.header("Message-ID").unwrap();
        assert!(id.starts_with('<') && id.ends_with("@localhost>"), "{id}");
        assert!(
            parsed
                .header("Content-Type")
                .unwrap()
                .starts_with("multipart/alternative"),
            "{kind}"
        );
        assert_eq!(
            eml.matches("Content-Transfer-Encoding: 7bit").count(),
            2,
            "{kind}"
        );

        let text = parsed.text().unwrap();
        let html = parsed.html().unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{kind}");
        assert!(text.contains("Customer Center"), "{kind}");
        match mail.kind.link() {
            Some(link) => {
                // The link, whole on one line, in both parts and in the raw
                // file, and the expiry in words.
                assert!(text.lines().any(|l| l == link), "{kind}: {text}");
                assert!(html.contains(&format!("href=\"{link}\"")), "{kind}: {html}");
                assert!(eml.contains(link), "{kind}");
                let path = if kind == "email_change_validation" {
                    "/confirm-email"
                } else {
                    "/setup-password"
                };
                assert_eq!(extract_link(&eml, path).as_deref(), Some(link));
                let expiry = "This link expires on 2025-03-15 09:30 UTC (in 24 hours)";
                assert!(text.contains(expiry), "{kind}: {text}");
                assert!(
                    html.contains(
                        "This link expires on <strong>2025-03-15 09:30 UTC</strong> (in 24 hours)"
                    ),
                    "{kind}: {html}"
                );
            }
            None => {
                assert!(!text.contains("token="), "{kind}");
                assert!(!html.contains("token="), "{kind}");
                assert!(!text.contains("expires"), "{kind}");
            }
        }
    }
}

#[test]
fn texts_say_what_each_kind_is_about() {
    let templates = Templates::embedded();
    let mails = one_of_each();
    let text = |i: usize| {
        render(&templates, &mails[i].0)
            .1
            .text()
            .unwrap()
            .to_string()
    };

    let with_link = text(0);
    assert!(with_link.contains("Your login email is: ann@example.com"));
    assert!(with_link.contains("does not contain a password"));

    let notice = text(1);
    assert!(notice.contains("Your login email is: ann@example.com"));
    assert!(notice.contains("ask your contact for your temporary password"));
    assert!(notice
        .contains("You must change this temporary password when you log in for the first time"));

    let validation = text(2);
    assert!(validation.contains("from ann@example.com"));
    assert!(validation.contains("to   ann.new@example.org"));

    let change_notice = text(3);
    assert!(change_notice.contains("A validation email was sent to ann.new@example.org"));
    assert!(change_notice.contains("you keep logging in\nwith ann@example.com"));

    let changed = text(4);
    assert!(changed.contains("login ann@example.com was changed"));
    assert!(changed.contains("2025-03-14 09:30 UTC"));
}

#[test]
fn expiry_is_counted_from_now() {
    let templates = Templates::embedded();
    let ann = email("ann@example.com");
    let mail = |expires_at| OutgoingMail {
        to: ann.clone(),
        kind: MailKind::AccessNotificationWithLink {
            login: ann.clone(),
            link: SETUP_LINK.into(),
            expires_at,
        },
    };
    let text_of = |m: &OutgoingMail| templates.render_parts(m, &settings(), now()).unwrap().text;
    let t = text_of(&mail(now() + Duration::minutes(90)));
    assert!(
        t.contains("expires on 2025-03-14 11:00 UTC (in 1 hour 30 minutes)"),
        "{t}"
    );
    let t = text_of(&mail(now() + Duration::days(3)));
    assert!(t.contains("(in 3 days)"), "{t}");
    let t = text_of(&mail(now() + Duration::hours(24) - Duration::seconds(2)));
    assert!(t.contains("(in 24 hours)"), "{t}");
    let t = text_of(&mail(now() - Duration::minutes(1)));
    assert!(t.contains("(already expired)"), "{t}");
}

// ---------------------------------------------------------------------------
// No password, ever: drive the real aggregate with a known password.
// ---------------------------------------------------------------------------

const PW: &str = "correct-Horse-battery-9";

async fn run(
    customer: &mut access_domain::Customer,
    services: &CustomerServices,
    command: CustomerCommand,
) -> (Vec<CustomerEvent>, Vec<access_domain::IssuedToken>) {
    let decision = customer.decide(command, services).await.unwrap();
    for event in &decision.events {
        customer.apply(event.clone());
    }
    (decision.events, decision.issued)
}

fn assert_no_secret(eml: &str, what: &str) {
    assert!(!eml.contains(PW), "{what} contains the password");
    // Not in any encoding either: check the decoded parts.
    let parsed = parse_eml(eml);
    for part in &parsed.parts {
        assert!(!part.body.contains(PW), "{what} contains the password");
        assert!(
            !part.body.to_lowercase().contains("horse-battery"),
            "{what}"
        );
    }
    let hash = FakeHasher::hash_of(PW);
    assert!(
        !eml.contains(hash.as_str()),
        "{what} contains the password hash"
    );
    let digest_only = hash.as_str().trim_start_matches("fake:");
    assert!(
        !eml.contains(digest_only),
        "{what} contains the password hash"
    );
}

#[tokio::test]
async fn access_mails_never_contain_the_password() {
    let services = services_at(now());
    let templates = Templates::embedded();
    let mut customer = access_domain::Customer::default();
    let ann = email("ann@example.com");
    run(
        &mut customer,
        &services,
        CustomerCommand::RegisterCustomer {
            customer_id: CustomerId::new_random(),
            email: ann.clone(),
            name: None,
        },
    )
    .await;

    // An administrator grants access with a manual password and a notice.
    let (events, issued) = run(
        &mut customer,
        &services,
        CustomerCommand::GrantAccess {
            role: Role::CustomerCenter,
            credential: access_domain::Credential::ManualPassword {
                password: Password::parse(PW, &[]).unwrap(),
                password_confirm: Secret::new(PW),
                send_notification: true,
            },
        },
    )
    .await;
    assert!(events
        .iter()
        .any(|e| matches!(e, CustomerEvent::PasswordSet { .. })));
    let mails = mails_for(&events, &issued, "https://portal.example.com", None).unwrap();
    assert_eq!(mails.len(), 1);
    assert!(matches!(mails[0].kind, MailKind::AccessNotice { .. }));
    let (eml, parsed) = render(&templates, &mails[0]);
    assert_no_secret(&eml, "the access notice");
    assert!(!parsed.text().unwrap().contains("token="));

    // Then a notification with a setup link.
    let (events, issued) = run(
        &mut customer,
        &services,
        CustomerCommand::SendAccessNotification,
    )
    .await;
    assert_eq!(issued.len(), 1);
    let mails = mails_for(&events, &issued, "https://portal.example.com/", None).unwrap();
    assert_eq!(mails.len(), 1);
    let (eml, _) = render(&templates, &mails[0]);
    assert_no_secret(&eml, "the access notification");
    let token = issued[0].token.expose();
    assert_eq!(
        extract_link(&eml, "/setup-password").unwrap(),
        format!("https://portal.example.com/setup-password?token={token}")
    );
    assert_eq!(
        access_mail::extract_token(&eml, "/setup-password").unwrap(),
        token
    );

    // A self-service email change: validation to the new address, notice
    // to the old one.
    let new = email("ann.new@example.org");
    let (events, issued) = run(
        &mut customer,
        &services,
        CustomerCommand::RequestEmailChange {
            current_password: Secret::new(PW),
            new_email: new.clone(),
            new_email_confirm: new.clone(),
        },
    )
    .await;
    let mails = mails_for(&events, &issued, "https://portal.example.com", Some(&ann)).unwrap();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].to, new);
    assert_eq!(mails[1].to, ann);
    for mail in &mails {
        let (eml, _) = render(&templates, mail);
        assert_no_secret(&eml, mail.kind.template_name());
    }
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

#[test]
fn html_escapes_values_and_text_keeps_them_as_is() {
    let templates = Templates::embedded();
    let product = MailSettings {
        from: "Access <no-reply@localhost>".into(),
        product_name: "<b>Acme</b> & \"Co\"".into(),
    };
    // A quoted local part may hold `<`.
    let odd = email("\"a<script>b\"@example.com");
    let mail = OutgoingMail {
        to: odd.clone(),
        kind: MailKind::AccessNotice { login: odd },
    };
    let parts = templates.render_parts(&mail, &product, now()).unwrap();
    assert!(!parts.html.contains("<b>Acme"), "{}", parts.html);
    assert!(!parts.html.contains("<script>"), "{}", parts.html);
    assert!(parts
        .html
        .contains("&lt;b&gt;Acme&lt;/b&gt; &amp; &quot;Co&quot;"));
    assert!(parts
        .html
        .contains("&quot;a&lt;script&gt;b&quot;@example.com"));
    assert!(parts.text.contains("<b>Acme</b> & \"Co\""));
    assert!(parts.text.contains("\"a<script>b\"@example.com"));
    // The subject is a header, not HTML: kept as is (lettre encodes it).
    assert_eq!(parts.subject, "Your access to <b>Acme</b> & \"Co\"");
    let message = templates.render(&mail, &product, now()).unwrap();
    let parsed = parse_eml(&formatted(&message));
    assert_eq!(parsed.header("Subject"), Some(parts.subject.as_str()));
    assert_eq!(parsed.html(), Some(parts.html.as_str()));
}

#[test]
fn non_ascii_subjects_and_bodies_round_trip() {
    let templates = Templates::embedded();
    let product = MailSettings {
        from: "Accès <no-reply@localhost>".into(),
        product_name: "Espace Client – Société".into(),
    };
    let ann = email("ann@example.com");
    let mail = OutgoingMail {
        to: ann.clone(),
        kind: MailKind::AccessNotificationWithLink {
            login: ann,
            link: SETUP_LINK.into(),
            expires_at: now() + Duration::hours(24),
        },
    };
    let eml = formatted(&templates.render(&mail, &product, now()).unwrap());
    assert_eq!(eml.matches("Content-Transfer-Encoding: 8bit").count(), 2);
    let parsed = parse_eml(&eml);
    assert_eq!(
        parsed.header("Subject"),
        Some("Your access to Espace Client – Société: choose your password")
    );
    assert!(parsed.text().unwrap().contains("Espace Client – Société"));
    assert_eq!(
        extract_link(&eml, "/setup-password").as_deref(),
        Some(SETUP_LINK)
    );
}

#[test]
fn bad_sender_is_a_clear_error() {
    let templates = Templates::embedded();
    let (mail, _) = one_of_each().remove(1);
    let bad = MailSettings {
        from: "not an address".into(),
        product_name: "X".into(),
    };
    let err = templates.render(&mail, &bad, now()).unwrap_err();
    assert!(matches!(err, MailError::InvalidSender { .. }), "{err}");
    assert!(err.to_string().contains("not an address"), "{err}");
}

// ---------------------------------------------------------------------------
// Override directory
// ---------------------------------------------------------------------------

#[test]
fn override_dir_replaces_one_template_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("access_notice.subject.txt"),
        "Welcome to {{ product_name }}, {{ login }}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a template").unwrap();
    let templates = Templates::with_override_dir(dir.path()).unwrap();
    assert_eq!(templates.overridden(), ["access_notice.subject.txt"]);

    let mails = one_of_each();
    let (_, parsed) = render(&templates, &mails[1].0);
    assert_eq!(
        parsed.header("Subject"),
        Some("Welcome to Customer Center, ann@example.com")
    );
    // The body and the other kinds are the embedded ones.
    let embedded = Templates::embedded();
    assert_eq!(parsed.text(), render(&embedded, &mails[1].0).1.text());
    let (_, other) = render(&templates, &mails[0].0);
    assert_eq!(other.header("Subject"), Some(mails[0].1));
}

#[test]
fn override_dir_can_replace_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("layout.txt"),
        "ACME\n{% block body %}{% endblock %}\nACME support: +1 555 0100\n",
    )
    .unwrap();
    let templates = Templates::with_override_dir(dir.path()).unwrap();
    for (mail, _) in one_of_each() {
        let text = templates
            .render_parts(&mail, &settings(), now())
            .unwrap()
            .text;
        assert!(text.starts_with("ACME\n"), "{text}");
        assert!(text.contains("ACME support"), "{text}");
    }
}

#[test]
fn broken_overrides_fail_at_load_time() {
    // A syntax error.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("access_notice.txt"), "Hello {{ login ").unwrap();
    let err = Templates::with_override_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, MailError::Template { name, .. } if name == "access_notice.txt"),
        "{err}"
    );

    // An unknown variable (a typo would otherwise drop the value).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("access_notice.txt"), "Hello {{ logn }}").unwrap();
    let err = Templates::with_override_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("undefined"), "{err}");

    // A mail with a link whose template forgot it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("email_change_validation.html"),
        "<p>Please confirm {{ new_email }}.</p>",
    )
    .unwrap();
    let err = Templates::with_override_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("link"), "{err}");
    assert!(
        err.to_string().contains("email_change_validation.html"),
        "{err}"
    );

    // A missing directory.
    let err = Templates::with_override_dir(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, MailError::Io { .. }), "{err}");
}

#[test]
fn render_errors_never_show_the_token() {
    // The override passes the load-time check (its sample link has no `x`
    // in the token) but fails on a real one; the error must not echo it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("access_notification_with_link.txt"),
        "{{ link }}{% if 'secret' in link %}{{ link + 1 }}{% endif %}",
    )
    .unwrap();
    let templates = Templates::with_override_dir(dir.path()).unwrap();
    let ann = email("ann@example.com");
    let link = "https://portal.example.com/setup-password?token=secret-token-value";
    let mail = OutgoingMail {
        to: ann.clone(),
        kind: MailKind::AccessNotificationWithLink {
            login: ann,
            link: link.into(),
            expires_at: now() + Duration::hours(24),
        },
    };
    let err = templates.render(&mail, &settings(), now()).unwrap_err();
    assert!(matches!(err, MailError::Template { .. }), "{err}");
    let message = err.to_string();
    assert!(!message.contains("secret-token-value"), "{message}");
}

#[test]
fn embedded_templates_pass_the_load_time_checks() {
    let dir = tempfile::tempdir().unwrap();
    let templates = Templates::with_override_dir(dir.path()).unwrap();
    assert!(templates.overridden().is_empty());
    assert_eq!(access_mail::template_file_names().count(), 23);
}
