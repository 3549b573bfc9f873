//! Tokens in the links of emails name their customer: `<customer id>.<token>`.
//! The id tells the service which customer's stream to check; only the
//! SHA-256 digest of the token part is stored (in the customer's events).

use access_domain::{CustomerId, Secret};

/// Longest token part accepted.
const MAX_TOKEN_LEN: usize = 256;

/// The link token for a customer's plain token.
pub fn join(customer_id: CustomerId, token: &Secret) -> Secret {
    Secret::new(format!("{customer_id}.{}", token.expose()))
}

/// Splits a link token; `None` when it is not of that shape.
pub fn split(raw: &str) -> Option<(CustomerId, Secret)> {
    let (id, token) = raw.trim().split_once('.')?;
    let id = id.parse().ok()?;
    let valid = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.chars().all(|c| c.is_ascii_alphanumeric());
    valid.then(|| (id, Secret::new(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_round_trip_and_junk_is_refused() {
        let id = CustomerId::new_random();
        let joined = join(id, &Secret::new("abc123"));
        let (back, token) = split(joined.expose()).unwrap();
        assert_eq!(back, id);
        assert_eq!(token.expose(), "abc123");
        for junk in [
            "",
            "abc",
            "not-a-uuid.abc",
            &format!("{id}."),
            &format!("{id}.a b"),
            &format!("{id}.{}", "a".repeat(300)),
        ] {
            assert!(split(junk).is_none(), "{junk}");
        }
    }
}
