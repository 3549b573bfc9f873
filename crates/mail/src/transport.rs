//! Where mail goes: the `ACCESS_MAIL` setting and the transports.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use lettre::Message;

use crate::deliver::Transport;
use crate::error::MailError;

/// Where mail goes, parsed from the `ACCESS_MAIL` setting:
/// - `file:DIR` (or `file:///abs/dir`): one `.eml` file per message in
///   `DIR`, created if missing;
/// - `smtp://…` / `smtps://…`: an SMTP server (see [`crate::smtp`]).
#[derive(Clone, PartialEq, Eq)]
pub enum MailTarget {
    File(PathBuf),
    /// An SMTP URL (may hold credentials: `Display` and `Debug` hide them).
    Smtp(String),
}

impl FromStr for MailTarget {
    type Err = MailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(MailError::InvalidTarget(
                "the setting is empty; expected `file:DIR` or `smtp://HOST`".into(),
            ));
        }
        if let Some(rest) = s.strip_prefix("file:") {
            let dir = match rest.strip_prefix("//") {
                // `file:///abs/dir`: an absolute path after an empty host.
                Some(path) if path.starts_with('/') => path,
                Some(_) => {
                    return Err(MailError::InvalidTarget(
                        "a `file://` URL must have an empty host and an absolute path \
                         (`file:///var/mail/access`); or use `file:DIR`"
                            .into(),
                    ))
                }
                None => rest,
            };
            if dir.trim().is_empty() {
                return Err(MailError::InvalidTarget(
                    "`file:` needs a directory, e.g. `file:./mail` or `file:/var/mail/access`"
                        .into(),
                ));
            }
            return Ok(Self::File(PathBuf::from(dir)));
        }
        if s.starts_with("smtp://") || s.starts_with("smtps://") {
            // Validate now, so a bad setting fails at start-up.
            crate::smtp::SmtpSettings::parse(s)?;
            return Ok(Self::Smtp(s.to_string()));
        }
        // Do not echo the value: it may hold credentials.
        Err(match s.split_once(':') {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                MailError::InvalidTarget(format!(
                    "unknown scheme `{scheme}`; expected `file:DIR` or `smtp://HOST`"
                ))
            }
            _ => MailError::InvalidTarget(
                "expected `file:DIR` (e.g. `file:./mail`) or `smtp://HOST`".into(),
            ),
        })
    }
}

impl MailTarget {
    /// The transport for this target. The directory of a `File` target is
    /// created if missing.
    pub fn transport(&self) -> Result<Arc<dyn Transport>, MailError> {
        match self {
            Self::File(dir) => Ok(Arc::new(FileTransport::new(dir)?)),
            Self::Smtp(url) => Ok(Arc::new(crate::smtp::SmtpTransport::new(
                crate::smtp::SmtpSettings::parse(url)?,
            )?)),
        }
    }
}

/// `smtp://user:pass@host` → `smtp://***@host`.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***{}", &rest[at..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

impl fmt::Display for MailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(dir) => write!(f, "file:{}", dir.display()),
            Self::Smtp(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for MailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(dir) => f.debug_tuple("File").field(dir).finish(),
            Self::Smtp(url) => f.debug_tuple("Smtp").field(&redact_url(url)).finish(),
        }
    }
}

/// Writes each message to `DIR/<message-id>.eml` (the `Message-ID` without
/// its angle brackets, other characters than `A-Z a-z 0-9 . _ - @` replaced
/// by `_`; a random UUID if the message has none).
///
/// Atomic: the message is written and flushed to `DIR/.<name>.tmp` (a
/// hidden name that does not end in `.eml`), then renamed, so a reader
/// listing `*.eml` never sees a half-written file. On Unix the files are
/// readable by their owner only (they hold live links).
#[derive(Debug, Clone)]
pub struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    /// A transport into `dir`, created (with its parents) if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, MailError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| MailError::Io {
            action: "create the mail directory",
            path: dir.clone(),
            source: e,
        })?;
        Ok(Self { dir })
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name a message gets.
    pub fn file_name(message: &Message) -> String {
        let id = message
            .headers()
            .get_raw("Message-ID")
            .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
            .filter(|id| !id.is_empty())
            .map(|id| {
                id.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|id| !id.starts_with('.'))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        format!("{id}.eml")
    }

    /// Writes `bytes` to `dir/name` through a temporary file and a rename.
    fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, MailError> {
        let final_path = dir.join(name);
        let temp_path = dir.join(format!(".{}.{}.tmp", name, uuid::Uuid::new_v4().simple()));
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| MailError::Io {
                action,
                path,
                source,
            }
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = options
            .open(&temp_path)
            .map_err(io("create the temporary mail file", &temp_path))
            .and_then(|mut file| {
                file.write_all(bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(io("write the temporary mail file", &temp_path))
            })
            .and_then(|()| {
                std::fs::rename(&temp_path, &final_path)
                    .map_err(io("move the mail file into place", &final_path))
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&temp_path);
        }
        result.map(|()| final_path)
    }
}

#[async_trait::async_trait]
impl Transport for FileTransport {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let name = Self::file_name(message);
        let bytes = message.formatted();
        let path = match tokio::runtime::Handle::try_current() {
            // Off the async workers: the write ends with an fsync.
            Ok(handle) => {
                let dir = self.dir.clone();
                handle
                    .spawn_blocking(move || Self::write_atomically(&dir, &name, &bytes))
                    .await
                    .map_err(|e| {
                        MailError::Delivery(format!("the file writer task failed: {e}"))
                    })??
            }
            // Not on a Tokio runtime: write in place.
            Err(_) => Self::write_atomically(&self.dir, &name, &bytes)?,
        };
        tracing::debug!(path = %path.display(), "mail written");
        Ok(())
    }

    async fn send_raw(
        &self,
        id: &str,
        _from: &str,
        _to: &str,
        bytes: &[u8],
    ) -> Result<(), MailError> {
        let name: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{}.eml", name.trim_start_matches('.'));
        let dir = self.dir.clone();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || Self::write_atomically(&dir, &name, &bytes))
            .await
            .map_err(|e| MailError::Delivery(format!("the file writer task failed: {e}")))??;
        Ok(())
    }
}

/// Keeps the formatted messages in memory (for tests of other crates).
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    sent: Arc<Mutex<Vec<String>>>,
}

impl MemoryTransport {
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages sent so far, as RFC 5322 text, oldest first.
    pub fn messages(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    async fn send(&self, message: &Message) -> Result<(), MailError> {
        let text = String::from_utf8_lossy(&message.formatted()).into_owned();
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
        Ok(())
    }

    async fn send_raw(
        &self,
        _id: &str,
        _from: &str,
        _to: &str,
        bytes: &[u8],
    ) -> Result<(), MailError> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(String::from_utf8_lossy(bytes).into_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn file_targets_parse() {
        assert_eq!(
            "file:./mail".parse::<MailTarget>().unwrap(),
            MailTarget::File(PathBuf::from("./mail"))
        );
        assert_eq!(
            "  file:/var/mail/access \n".parse::<MailTarget>().unwrap(),
            MailTarget::File(PathBuf::from("/var/mail/access"))
        );
        assert_eq!(
            "file:///var/mail/access".parse::<MailTarget>().unwrap(),
            MailTarget::File(PathBuf::from("/var/mail/access"))
        );
        assert_eq!(
            MailTarget::File(PathBuf::from("/tmp/m")).to_string(),
            "file:/tmp/m"
        );
    }

    #[test]
    fn bad_targets_are_clear_errors() {
        for (raw, expected) in [
            ("", "empty"),
            ("   ", "empty"),
            ("file:", "needs a directory"),
            ("file:   ", "needs a directory"),
            ("file://", "file:///"),
            ("file://host/dir", "empty host"),
            ("mailto:ann@example.com", "unknown scheme `mailto`"),
            ("./mail", "expected `file:DIR`"),
        ] {
            let err = raw.parse::<MailTarget>().unwrap_err();
            assert!(matches!(err, MailError::InvalidTarget(_)), "{raw:?}: {err}");
            assert!(err.to_string().contains(expected), "{raw:?}: {err}");
        }
    }

    #[test]
    fn smtp_targets_parse_and_hide_credentials() {
        for raw in [
            "smtp://localhost:25?tls=none",
            "smtps://user:pw@mail.example.com",
        ] {
            let target = raw.parse::<MailTarget>().unwrap();
            assert!(matches!(target, MailTarget::Smtp(_)));
            assert!(!format!("{target} {target:?}").contains(":pw"), "{target}");
        }
        let target = MailTarget::Smtp("smtps://user:pw@mail.example.com:465".into());
        assert_eq!(target.to_string(), "smtps://***@mail.example.com:465");
        assert!(!format!("{target:?}").contains("pw"));
        assert!(target.transport().is_ok());
    }

    #[test]
    fn unknown_values_are_not_echoed() {
        let err = "s3cr3t-value".parse::<MailTarget>().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn file_names_come_from_the_message_id() {
        let message = Message::builder()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .message_id(Some("<abc.123/../x@host>".into()))
            .body(String::from("hi"))
            .unwrap();
        assert_eq!(FileTransport::file_name(&message), "abc.123_.._x@host.eml");
        let message = Message::builder()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .body(String::from("hi"))
            .unwrap();
        let name = FileTransport::file_name(&message);
        assert!(name.ends_with(".eml") && name.len() == 36 + 4, "{name}");
    }

    #[test]
    fn an_unusable_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = FileTransport::new(file.join("sub")).unwrap_err();
        assert!(matches!(err, MailError::Io { .. }), "{err}");
        assert!(
            err.to_string().contains("create the mail directory"),
            "{err}"
        );
    }
}
