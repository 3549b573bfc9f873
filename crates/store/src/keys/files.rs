//! Where the master key comes from: given, a key file, or (for the
//! embedded SQLite default only) a key file generated next to the
//! database.

use super::{KeyError, MasterKey};

/// Where the master key came from (for the start-up log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `ACCESS_MASTER_KEY`.
    Given,
    /// `ACCESS_MASTER_KEY_FILE`, or the embedded default's key file.
    File(std::path::PathBuf),
    /// Generated now into this file (the embedded default's first start).
    Generated(std::path::PathBuf),
    /// Generated for an in-memory database (lives as long as the process).
    Ephemeral,
}

/// Why no master key could be had.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("ACCESS_MASTER_KEY: {0}")]
    Invalid(KeyError),
    #[error("master key file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("a PostgreSQL store needs a master key: set ACCESS_MASTER_KEY or ACCESS_MASTER_KEY_FILE (64 hex characters; `accessctl keys generate` prints one)")]
    Missing,
}

/// The master key for `database_url`: `given` (the key itself) or `file`,
/// or, for the embedded SQLite default only, the file `<database>.key`
/// next to the database, generated on first use with mode 0600.
pub fn master_key_for(
    database_url: &str,
    given: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<(MasterKey, MasterKeySource), MasterKeyError> {
    if let Some(text) = given {
        let key = MasterKey::parse(text).map_err(MasterKeyError::Invalid)?;
        return Ok((key, MasterKeySource::Given));
    }
    if let Some(path) = file {
        return read_key_file(path).map(|k| (k, MasterKeySource::File(path.to_path_buf())));
    }
    let Some(rest) = database_url.strip_prefix("sqlite:") else {
        return Err(MasterKeyError::Missing);
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || database_url.contains("mode=memory") {
        let (key, _) = MasterKey::generate().map_err(MasterKeyError::Invalid)?;
        return Ok((key, MasterKeySource::Ephemeral));
    }
    let key_path = std::path::PathBuf::from(format!("{path}.key"));
    if key_path.exists() {
        return read_key_file(&key_path).map(|k| (k, MasterKeySource::File(key_path)));
    }
    let (key, text) = MasterKey::generate().map_err(MasterKeyError::Invalid)?;
    write_new_key_file(&key_path, &text)?;
    Ok((key, MasterKeySource::Generated(key_path)))
}

fn file_error(path: &std::path::Path, detail: impl std::fmt::Display) -> MasterKeyError {
    MasterKeyError::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn read_key_file(path: &std::path::Path) -> Result<MasterKey, MasterKeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    MasterKey::parse(&text).map_err(|e| file_error(path, e))
}

/// Writes a new key file readable by its owner only; never overwrites.
fn write_new_key_file(path: &std::path::Path, text: &str) -> Result<(), MasterKeyError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| file_error(path, e))?;
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_gets_a_key_file_once_with_owner_only_access() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let (first, source) = master_key_for(&url, None, None).unwrap();
        let MasterKeySource::Generated(path) = source else {
            panic!("expected a generated key, got {source:?}")
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = master_key_for(&url, None, None).unwrap();
        assert_eq!(source, MasterKeySource::File(path));
        assert_eq!(first.id(), again.id());
    }

    #[test]
    fn postgres_needs_a_key_and_a_bad_key_is_refused() {
        assert!(matches!(
            master_key_for("postgres://h/db", None, None),
            Err(MasterKeyError::Missing)
        ));
        assert!(matches!(
            master_key_for("postgres://h/db", Some("nope"), None),
            Err(MasterKeyError::Invalid(_))
        ));
        let given = "11".repeat(32);
        let (key, source) = master_key_for("postgres://h/db", Some(&given), None).unwrap();
        assert_eq!(source, MasterKeySource::Given);
        assert_eq!(key.id(), MasterKey::parse(&given).unwrap().id());
        let err = master_key_for(
            "postgres://h/db",
            None,
            Some(std::path::Path::new("/nonexistent/k")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/k"), "{err}");
    }
}
