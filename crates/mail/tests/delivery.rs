//! Delivery to files and reading the files back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use access_domain::EmailAddress;
use access_mail::{
    extract_link, extract_token, parse_eml, FileTransport, MailKind, MailSettings, MailTarget,
    Mailer, MemoryTransport, OutgoingMail, Templates, Transport,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 30, 0).unwrap()
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn validation(token: &str) -> OutgoingMail {
    OutgoingMail {
        to: email("ann.new@example.org"),
        kind: MailKind::EmailChangeValidation {
            old_email: email("ann@example.com"),
            new_email: email("ann.new@example.org"),
            link: format!("https://portal.example.com/confirm-email?token={token}"),
            expires_at: now() + Duration::hours(24),
        },
    }
}

fn eml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn file_transport_writes_a_parseable_eml_with_the_link_intact() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mail").join("out");
    let transport = FileTransport::new(&dir).unwrap();
    assert!(dir.is_dir(), "the directory is created");

    // A 64-character hex token, as access-security issues them: the link is
    // longer than 76 characters (where quoted-printable would wrap it).
    let token = "9f".repeat(32);
    let message = Templates::embedded()
        .render(&validation(&token), &MailSettings::default(), now())
        .unwrap();
    transport.send(&message).await.unwrap();

    let files = eml_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file.extension().unwrap(), "eml");
    let message_id = message.headers().get_raw("Message-ID").unwrap();
    assert_eq!(
        file.file_name().unwrap().to_str().unwrap(),
        format!("{}.eml", message_id.trim_matches(['<', '>']))
    );

    let eml = std::fs::read_to_string(file).unwrap();
    let parsed = parse_eml(&eml);
    assert_eq!(parsed.header("To"), Some("ann.new@example.org"));
    assert_eq!(
        parsed.header("Subject"),
        Some("Confirm your new login email for Customer Center")
    );
    assert_eq!(
        parsed.header("X-Access-Mail-Kind"),
        Some("email_change_validation")
    );
    let link = format!("https://portal.example.com/confirm-email?token={token}");
    // Copyable as is from the raw file (8bit, one line) ...
    assert!(eml.lines().any(|l| l.trim_end() == link), "{eml}");
    // ... and by the helpers.
    assert_eq!(extract_link(&eml, "/confirm-email"), Some(link));
    assert_eq!(extract_token(&eml, "/confirm-email"), Some(token));
    assert_eq!(extract_link(&eml, "/setup-password"), None);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn each_message_gets_its_own_file_and_no_temporary_file_remains() {
    let dir = tempfile::tempdir().unwrap();
    let transport = FileTransport::new(dir.path()).unwrap();
    let templates = Templates::embedded();
    for i in 0..5 {
        let message = templates
            .render(
                &validation(&format!("tok{i}")),
                &MailSettings::default(),
                now(),
            )
            .unwrap();
        transport.send(&message).await.unwrap();
    }
    let files = eml_files(dir.path());
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(files
        .iter()
        .all(|f| f.extension().is_some_and(|e| e == "eml")));
    let mut tokens: Vec<String> = files
        .iter()
        .map(|f| extract_token(&std::fs::read_to_string(f).unwrap(), "/confirm-email").unwrap())
        .collect();
    tokens.sort();
    assert_eq!(tokens, ["tok0", "tok1", "tok2", "tok3", "tok4"]);
}

#[tokio::test]
async fn a_file_target_gives_a_file_transport() {
    let dir = tempfile::tempdir().unwrap();
    let target: MailTarget = format!("file:{}", dir.path().join("spool").display())
        .parse()
        .unwrap();
    let transport = target.transport().unwrap();
    let message = Templates::embedded()
        .render(&validation("abc"), &MailSettings::default(), now())
        .unwrap();
    transport.send(&message).await.unwrap();
    assert_eq!(eml_files(&dir.path().join("spool")).len(), 1);
}

#[tokio::test]
async fn mailer_renders_then_sends_in_order() {
    let memory = MemoryTransport::new();
    let mailer = Mailer::new(
        Templates::embedded(),
        MailSettings::default(),
        Arc::new(memory.clone()),
    );
    let notice = OutgoingMail {
        to: email("ann@example.com"),
        kind: MailKind::EmailChangeNotice {
            old_email: email("ann@example.com"),
            new_email: email("ann.new@example.org"),
        },
    };
    let sent = mailer
        .send_all(&[validation("t-1"), notice], now())
        .await
        .unwrap();
    assert_eq!(sent, 2);
    let messages = memory.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        parse_eml(&messages[0]).header("To"),
        Some("ann.new@example.org")
    );
    assert_eq!(
        extract_token(&messages[0], "/confirm-email").as_deref(),
        Some("t-1")
    );
    assert_eq!(
        parse_eml(&messages[1]).header("To"),
        Some("ann@example.com")
    );
    assert_eq!(extract_link(&messages[1], "/confirm-email"), None);
}

#[tokio::test]
async fn mailer_sends_nothing_when_a_mail_cannot_be_rendered() {
    let memory = MemoryTransport::new();
    let mailer = Mailer::new(
        Templates::embedded(),
        MailSettings {
            from: "nobody".into(),
            product_name: "X".into(),
        },
        Arc::new(memory.clone()),
    );
    assert!(mailer.send_all(&[validation("t")], now()).await.is_err());
    assert!(memory.messages().is_empty());
}

#[test]
fn long_lines_fall_back_to_base64_and_the_link_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    // A line longer than the 998 octets 8bit allows.
    let filler = "x".repeat(1200);
    std::fs::write(
        dir.path().join("email_change_validation.txt"),
        format!("{filler}\nOpen {{{{ link }}}}.\n"),
    )
    .unwrap();
    let templates = Templates::with_override_dir(dir.path()).unwrap();
    let message = templates
        .render(&validation("long-line"), &MailSettings::default(), now())
        .unwrap();
    let eml = String::from_utf8(message.formatted()).unwrap();
    assert!(eml.contains("Content-Transfer-Encoding: base64"), "{eml}");
    assert_eq!(
        extract_link(&eml, "/confirm-email").as_deref(),
        Some("https://portal.example.com/confirm-email?token=long-line")
    );
}

#[test]
fn extract_link_reads_quoted_printable_bodies() {
    // What lettre's default encoding gives a body with a long line.
    let link = format!(
        "https://portal.example.com/setup-password?token={}",
        "ab".repeat(40)
    );
    let message = lettre::Message::builder()
        .from("a@example.com".parse().unwrap())
        .to("b@example.com".parse().unwrap())
        .subject("QP")
        .body(format!("Caf\u{e9}: open {link}\n"))
        .unwrap();
    let eml = String::from_utf8(message.formatted()).unwrap();
    assert!(eml.contains("quoted-printable"), "{eml}");
    assert!(!eml.contains(&link), "the link is wrapped in the raw text");
    assert_eq!(extract_link(&eml, "/setup-password"), Some(link));
}

#[test]
fn extract_link_unescapes_html_only_bodies() {
    let eml = "To: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
               <a href=\"https://x.example/confirm-email?token=a&amp;b=1\">go</a>\r\n";
    assert_eq!(
        extract_link(eml, "/confirm-email").as_deref(),
        Some("https://x.example/confirm-email?token=a&b=1")
    );
    assert_eq!(extract_token(eml, "/confirm-email").as_deref(), Some("a"));
    // A path that only prefixes another one does not match.
    assert_eq!(extract_link(eml, "/confirm"), None);
}
