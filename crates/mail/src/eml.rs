//! Reading `.eml` files back: headers, decoded parts, and the link in a
//! mail. Meant for tests and tools that read what [`FileTransport`]
//! wrote; it understands what this crate writes (and the usual MIME
//! encodings), it is not a general mail parser.
//!
//! How a test gets the link of a mail:
//! ```
//! # let eml = "To: ann@example.com\r\nContent-Type: text/plain\r\n\r\nOpen https://x.example/setup-password?token=abc now\r\n";
//! let link = access_mail::extract_link(eml, "/setup-password").unwrap();
//! assert_eq!(link, "https://x.example/setup-password?token=abc");
//! assert_eq!(access_mail::extract_token(eml, "/setup-password").unwrap(), "abc");
//! ```
//!
//! [`FileTransport`]: crate::FileTransport

use base64::Engine;

/// A parsed message: its top-level headers and its leaf parts, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEml {
    /// Unfolded headers, in order; encoded words (RFC 2047) decoded.
    pub headers: Vec<(String, String)>,
    /// The leaf parts (a single-part message has one).
    pub parts: Vec<EmlPart>,
}

/// A leaf part with its transfer encoding undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmlPart {
    /// The media type, lower-cased, without parameters (`text/plain`).
    pub content_type: String,
    pub body: String,
}

impl ParsedEml {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body of the first part of this media type.
    pub fn body_of(&self, content_type: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.content_type.eq_ignore_ascii_case(content_type))
            .map(|p| p.body.as_str())
    }

    /// The `text/plain` body.
    pub fn text(&self) -> Option<&str> {
        self.body_of("text/plain")
    }

    /// The `text/html` body.
    pub fn html(&self) -> Option<&str> {
        self.body_of("text/html")
    }
}

/// Parses a message (CRLF or LF line ends).
pub fn parse_eml(eml: &str) -> ParsedEml {
    let normalized = eml.replace("\r\n", "\n");
    let (headers, body) = split_entity(&normalized);
    let mut parts = Vec::new();
    collect_parts(&headers, body, &mut parts, 0);
    ParsedEml {
        headers: headers
            .into_iter()
            .map(|(n, v)| {
                let v = decode_encoded_words(&v);
                (n, v)
            })
            .collect(),
        parts,
    }
}

/// The first link in the mail that contains `path` (e.g.
/// `"/setup-password"`), as a reader would copy it: the `text/plain` part
/// is searched first, then the HTML (entities undone), then any other part.
/// Only absolute links (`scheme://…`) count.
pub fn extract_link(eml: &str, path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let parsed = parse_eml(eml);
    let mut ordered: Vec<&EmlPart> = Vec::new();
    for wanted in ["text/plain", "text/html"] {
        ordered.extend(parsed.parts.iter().filter(|p| p.content_type == wanted));
    }
    ordered.extend(
        parsed
            .parts
            .iter()
            .filter(|p| p.content_type != "text/plain" && p.content_type != "text/html"),
    );
    ordered
        .into_iter()
        .find_map(|part| find_link(&part.body, path, part.content_type == "text/html"))
}

/// The `token` query parameter of [`extract_link`]'s link, percent-decoded.
pub fn extract_token(eml: &str, path: &str) -> Option<String> {
    let link = extract_link(eml, path)?;
    let (_, query) = link.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode)
}

fn is_link_boundary(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '[' | ']')
}

fn find_link(body: &str, path: &str, html: bool) -> Option<String> {
    let mut from = 0;
    while let Some(found) = body[from..].find(path) {
        let at = from + found;
        from = at + path.len();
        let start = body[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| is_link_boundary(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = body[at..]
            .char_indices()
            .find(|(_, c)| is_link_boundary(*c))
            .map_or(body.len(), |(i, _)| at + i);
        let candidate = &body[start..end];
        let candidate = if html {
            unescape_html(candidate)
        } else {
            candidate.to_string()
        };
        // Trailing sentence punctuation is not part of a link.
        let candidate = candidate.trim_end_matches(['.', ',', ';', ':', '!']);
        let Some(after_path) = candidate.find(path).map(|i| &candidate[i + path.len()..]) else {
            continue;
        };
        let path_ends = after_path.is_empty() || after_path.starts_with(['?', '#', '/']);
        if candidate.contains("://") && path_ends {
            return Some(candidate.to_string());
        }
    }
    None
}

fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|i| *i <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The byte of two hex digits.
fn hex_byte(high: u8, low: u8) -> Option<u8> {
    let digit = |d: u8| char::from(d).to_digit(16);
    let value = digit(high)? * 16 + digit(low)?;
    u8::try_from(value).ok()
}

/// Appends `bytes` to `out` with every `<escape>XY` (two hex digits)
/// replaced by its byte; an escape without two hex digits stays as it is.
/// Percent-encoding (`%`) and quoted-printable (`=`) differ only there.
fn unescape_hex(bytes: &[u8], escape: u8, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == escape && i + 3 <= bytes.len() {
            if let Some(b) = hex_byte(bytes[i + 1], bytes[i + 2]) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    unescape_hex(s.as_bytes(), b'%', &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits an entity into unfolded headers and its body.
fn split_entity(entity: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match entity.find("\n\n") {
        Some(i) => (&entity[..i], &entity[i + 2..]),
        None if entity.starts_with('\n') => ("", &entity[1..]),
        None => (entity, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `boundary` parameter of a `Content-Type` value.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some(value.to_string())
    })
}

fn collect_parts(headers: &[(String, String)], body: &str, out: &mut Vec<EmlPart>, depth: usize) {
    let content_type = header(headers, "Content-Type").unwrap_or("text/plain");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media_type.starts_with("multipart/") && depth < 8 {
        if let Some(boundary) = boundary(content_type) {
            let delimiter = format!("--{boundary}");
            let mut current: Option<Vec<&str>> = None;
            for line in body.split('\n') {
                let trimmed = line.trim_end();
                if trimmed == delimiter || trimmed == format!("{delimiter}--") {
                    if let Some(lines) = current.take() {
                        let entity = lines.join("\n");
                        let (part_headers, part_body) = split_entity(&entity);
                        collect_parts(&part_headers, part_body, out, depth + 1);
                    }
                    if trimmed == delimiter {
                        current = Some(Vec::new());
                    } else {
                        break;
                    }
                } else if let Some(lines) = current.as_mut() {
                    lines.push(line);
                }
            }
            return;
        }
    }
    let encoding = header(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| body.to_string())
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.to_string(),
    };
    out.push(EmlPart {
        content_type: media_type,
        body: decoded.replace("\r\n", "\n"),
    });
}

fn decode_quoted_printable(body: &str) -> String {
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches([' ', '\t', '\r']);
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        unescape_hex(line.as_bytes(), b'=', &mut out);
        if !soft_break && lines.peek().is_some() {
            out.push(b'\n');
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`);
/// whitespace between two encoded words is dropped.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        let Some(word) = parse_encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            last_was_word = false;
            continue;
        };
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&word.0);
        rest = &rest[start + word.1..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: the text and its length.
fn parse_encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let text = &inner[..end];
    let length = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => {
            let mut out = Vec::new();
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => out.push(b' '),
                    b'=' if i + 3 <= b.len() => {
                        out.push(hex_byte(b[i + 1], b[i + 2])?);
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), length))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn encoded_words_are_decoded() {
        assert_eq!(decode_encoded_words("=?utf-8?b?Q2Fmw6k=?= ok"), "Café ok");
        assert_eq!(
            decode_encoded_words("=?UTF-8?Q?Caf=C3=A9_au_lait?="),
            "Café au lait"
        );
        assert_eq!(
            decode_encoded_words("=?utf-8?b?QQ==?= =?utf-8?b?Qg==?="),
            "AB",
            "whitespace between encoded words is dropped"
        );
        assert_eq!(decode_encoded_words("plain =? text"), "plain =? text");
    }

    #[test]
    fn quoted_printable_is_decoded() {
        assert_eq!(
            decode_quoted_printable("https://x.example/a?token=3Dab=\ncd caf=C3=A9\nnext"),
            "https://x.example/a?token=abcd café\nnext"
        );
        assert_eq!(decode_quoted_printable("=E2=82"), "\u{fffd}");
        assert_eq!(decode_quoted_printable("a=ZZb"), "a=ZZb");
    }

    #[test]
    fn headers_are_unfolded_and_parts_split() {
        let eml = "Subject: a\r\n b\r\nContent-Type: multipart/alternative;\r\n boundary=\"XX\"\r\n\r\n\
                   preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\n\
                   Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--XX--\r\n";
        let parsed = parse_eml(eml);
        assert_eq!(parsed.header("subject"), Some("a b"));
        assert_eq!(parsed.text(), Some("hello"));
        assert_eq!(parsed.html(), Some("<b>hi</b>"));
    }

    #[test]
    fn links_stop_at_delimiters_and_punctuation() {
        let body = "See (https://x.example/confirm-email?token=abc). Or <https://y.example/confirm-email?token=d%2Be>";
        assert_eq!(
            find_link(body, "/confirm-email", false).as_deref(),
            Some("https://x.example/confirm-email?token=abc")
        );
        let eml = "Content-Type: text/plain\n\nOr <https://y.example/confirm-email?token=d%2Be>\n";
        assert_eq!(extract_token(eml, "/confirm-email").as_deref(), Some("d+e"));
        assert_eq!(
            extract_link(
                "Content-Type: text/plain\n\n/confirm-email?token=x\n",
                "/confirm-email"
            ),
            None
        );
        assert_eq!(extract_link("x", ""), None);
    }
}
