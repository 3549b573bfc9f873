//! The client's address, also behind load balancers.
//!
//! A request's TCP peer is the client, unless the peer is one of the
//! operator's trusted proxies (`ACCESS_TRUSTED_PROXIES`). Then the client
//! is the right-most address of the header the proxy writes
//! (`ACCESS_FORWARDED_HEADER`: `X-Forwarded-For` by default, or RFC 7239
//! `Forwarded: for=`) that is not itself a trusted proxy: every proxy
//! appends the address it saw, so the entries right of the client come
//! from proxies we trust and everything left of it is the client's own
//! word. Only that one header is read: a proxy appends to one and passes
//! the other through, so the other is whatever the client wrote. From an
//! untrusted peer the header is ignored (anyone can send it). A malformed
//! entry met before the client is found makes the peer the client (logged
//! once, at debug).
//!
//! The headers are parsed here by hand: the crates that parse `Forwarded`
//! do not walk the chain against a set of trusted networks, which is the
//! part that matters, and the grammar we need is a few lines.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header the trusted proxies append the client's address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, AWS, most).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1, …`.
    Forwarded,
}

/// The networks of the proxies in front of the service, and the header
/// they write.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

/// `ACCESS_TRUSTED_PROXIES` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("ACCESS_TRUSTED_PROXIES: `{0}` is not an address or a CIDR (e.g. 10.0.0.0/8, ::1/128)")]
pub struct TrustedProxiesError(String);

impl TrustedProxies {
    /// Comma-separated CIDRs or single addresses (empty: none), whose
    /// proxies write `header`.
    pub fn new(spec: &str, header: ForwardedHeader) -> Result<Self, TrustedProxiesError> {
        Ok(Self {
            header,
            ..Self::parse(spec)?
        })
    }

    /// Comma-separated CIDRs or single addresses; empty: none; the proxies
    /// write `X-Forwarded-For`.
    pub fn parse(spec: &str) -> Result<Self, TrustedProxiesError> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| TrustedProxiesError(s.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|nets| Self {
                nets,
                header: ForwardedHeader::default(),
            })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers, self.header);
        for entry in chain.iter().rev() {
            match entry {
                Some(ip) if self.trusts(*ip) => continue,
                Some(ip) => return *ip,
                None => {
                    malformed_once();
                    return peer;
                }
            }
        }
        // Every hop is a trusted proxy: the left-most is where it began.
        chain.first().copied().flatten().unwrap_or(peer)
    }
}

fn malformed_once() {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(
            "a trusted proxy sent a malformed Forwarded / X-Forwarded-For header; \
             the proxy's own address is used (logged once)"
        );
    }
}

/// The addresses named by the proxies' header, left to right over all its
/// lines; `None` for an entry that is not an address (`unknown`, an
/// obfuscated name, garbage).
fn forwarded_chain(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let (name, entry): (&str, fn(&str) -> Option<IpAddr>) = match header {
        ForwardedHeader::Forwarded => ("forwarded", forwarded_for),
        ForwardedHeader::XForwardedFor => ("x-forwarded-for", |e| node(e.trim())),
    };
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(entry)
        .collect()
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| node(value.trim().trim_matches('"')))
    })?
}

/// An address, maybe with a port: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`.
fn node(raw: &str) -> Option<IpAddr> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = raw.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let inner = raw.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// The key a per-address limit counts under: an IPv4 address, or an IPv6
/// address's /64 (one subscriber usually holds a whole /64).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The client's address, set on every request by the middleware below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Middleware: works out the client's address once per request.
pub async fn resolve(
    axum::extract::State(proxies): axum::extract::State<std::sync::Arc<TrustedProxies>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|axum::extract::ConnectInfo(addr)| addr.ip());
    if let Some(peer) = peer {
        let client = proxies.client(peer, request.headers());
        request.extensions_mut().insert(ClientIp(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let none = TrustedProxies::parse("").unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.1")]);
        assert_eq!(none.client(ip("198.51.100.7"), &h), ip("198.51.100.7"));
        let some = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(some.client(ip("198.51.100.7"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        let h = headers(&[(
            "x-forwarded-for",
            "1.1.1.1, 203.0.113.5, 192.168.1.1, 10.1.1.1",
        )]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.6, 10.0.0.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.6"));
        // Only trusted hops: the left-most.
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.0.0.9")]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.3.3.3"));
        // No header: the peer.
        assert_eq!(t.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_is_read_when_the_proxies_write_it() {
        let t = TrustedProxies::new("10.0.0.0/8", ForwardedHeader::Forwarded).unwrap();
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            (
                "forwarded",
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.7",
            ),
        ]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "proto=https;for=\"192.0.2.60:8080\"")]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("192.0.2.60"));
        // The other header is the client's word.
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn a_client_supplied_forwarded_header_does_not_beat_the_proxys_x_forwarded_for() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[
            ("forwarded", "for=198.51.100.77"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        let h = headers(&[
            ("forwarded", "for=unknown"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn a_malformed_entry_before_the_client_falls_back_to_the_peer() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        for value in ["garbage", "203.0.113.1, _hidden", "unknown"] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.0.0.2"), "{value}");
        }
        let f = TrustedProxies::new("10.0.0.0/8", ForwardedHeader::Forwarded).unwrap();
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(f.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        // Garbage left of the client is the client's own word: ignored.
        let h = headers(&[("x-forwarded-for", "garbage, 203.0.113.1")]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.1"));
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_are_plain_ipv4() {
        let t = TrustedProxies::parse("127.0.0.1/32").unwrap();
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.9")]);
        assert_eq!(t.client(ip("::ffff:127.0.0.1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("203.0.113.9")), ip("203.0.113.9"));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = TrustedProxies::parse("10.0.0.0/8, nonsense").unwrap_err();
        assert!(err.to_string().contains("`nonsense`"));
        assert!(TrustedProxies::parse(" , ").unwrap().nets.is_empty());
    }
}
