//! Database URLs in messages: without their secrets.

/// A URL without its secrets, for messages and help: the password of the
/// user part (`user:***@`) and the value of every query parameter whose
/// name speaks of a secret (`password`, `sslpassword`, `pwd`, `token`,
/// `secret`, …: `name=***`).
pub fn redact_url(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    };
    let Some(query_start) = url.find('?') else {
        return url;
    };
    let (head, rest) = url.split_at(query_start + 1);
    let (query, fragment) = match rest.find('#') {
        Some(hash) => rest.split_at(hash),
        None => (rest, ""),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}{fragment}", query.join("&"))
}

/// Whether a URL query parameter's name (percent-decoded, any case) names
/// something secret.
fn is_secret_parameter(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let name = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "auth", "credential"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("mysql://x"), "mysql://x");
    }

    #[test]
    fn secret_query_parameters_are_redacted_in_urls() {
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?sslpassword=s3cret#frag"),
            "postgres://u:***@h/db?sslpassword=***#frag"
        );
        assert_eq!(
            redact_url("smtp://h:587?PassWord=a&Token=b&auth_secret=c&pwd=d"),
            "smtp://h:587?PassWord=***&Token=***&auth_secret=***&pwd=***"
        );
        assert_eq!(
            redact_url("postgres://h/db?pass%77ord=x"),
            "postgres://h/db?pass%77ord=***"
        );
        assert_eq!(
            redact_url("sqlite://access.db?mode=rwc"),
            "sqlite://access.db?mode=rwc"
        );
    }
}
