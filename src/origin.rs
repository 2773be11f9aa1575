//! The Origin check for WebSocket upgrades. Browsers send cookies with cross-site WebSocket
//! requests, so without this any page on the web could open a socket as the signed-in person.
//!
//! The app's own origin comes from the request. `X-Forwarded-Host`, `X-Forwarded-Proto` and
//! `Forwarded` are believed only from the proxies listed in `TRUSTED_PROXIES`: actix reads them
//! from anyone, which would let a client that reaches the app directly choose the origin it is
//! checked against.

use std::net::IpAddr;

use actix_web::{HttpRequest, http::header};
use anyhow::Context as _;

/// Origins allowed to open sockets. Empty means only the app's own origin (same scheme, host
/// and port as the request).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    origins: Vec<String>,
    proxies: TrustedProxies,
}

impl AllowedOrigins {
    /// Parses a comma-separated list such as `https://tasks.example.com,https://example.com`.
    pub fn parse(list: &str) -> Self {
        Self {
            origins: list
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            proxies: TrustedProxies::default(),
        }
    }

    /// Believes forwarded headers from these peers when working out the app's own origin.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    pub fn allows(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if self.origins.is_empty() {
            self.own_origin(req).is_some_and(|own| origin == own)
        } else {
            self.origins.iter().any(|allowed| allowed == origin)
        }
    }

    /// This app's origin as the browser sees it (`http://host:port`); `None` for a request that
    /// names no host at all (every browser sends one).
    pub fn own_origin(&self, req: &HttpRequest) -> Option<String> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
        let from_proxy = req
            .peer_addr()
            .is_some_and(|peer| self.proxies.contains(peer.ip()));
        if from_proxy {
            let info = req.connection_info();
            return Some(format!("{}://{}", info.scheme(), info.host()));
        }
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{host}"))
    }
}

/// Peers whose forwarded headers are believed: addresses (`10.0.0.5`, `::1`) and ranges in CIDR
/// notation (`10.0.0.0/8`). Empty: nobody's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list; anything that is not an address or a range is an error,
    /// so a typo fails start-up instead of silently trusting no one (or everyone).
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut ranges = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (addr, bits) = entry.split_once('/').unwrap_or((entry, ""));
            let addr: IpAddr = addr
                .parse()
                .with_context(|| format!("TRUSTED_PROXIES: {entry:?} is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() {
                max
            } else {
                bits.parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .with_context(|| format!("TRUSTED_PROXIES: bad prefix length in {entry:?}"))?
            };
            ranges.push((addr, bits));
        }
        Ok(Self(ranges))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 peer may arrive as a v4-mapped v6 address on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                bits,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(net.to_bits(), ip.to_bits(), bits, 128)
            }
            _ => false,
        })
    }
}

/// Whether the first `bits` of two `width`-bit addresses agree.
fn prefix_matches(net: u128, ip: u128, bits: u8, width: u8) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = u32::from(width - bits);
    (net >> shift) == (ip >> shift)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn by_default_only_the_apps_own_origin_may_connect() {
        let allowed = AllowedOrigins::default();
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header((header::HOST, "localhost:3000"));
            if let Some(origin) = origin {
                r = r.insert_header((header::ORIGIN, origin));
            }
            r.to_http_request()
        };
        assert!(allowed.allows(&req(Some("http://localhost:3000"))));
        assert!(!allowed.allows(&req(Some("http://evil.example"))));
        assert!(!allowed.allows(&req(Some("http://localhost:3001"))));
        assert!(!allowed.allows(&req(None)));

        let without_host = TestRequest::default()
            .insert_header((header::ORIGIN, "http://localhost:8080"))
            .to_http_request();
        assert_eq!(allowed.own_origin(&without_host), None);
        assert!(!allowed.allows(&without_host));
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let allowed = AllowedOrigins::parse(" https://a.example/ , https://b.example ");
        let req = |origin: &str| {
            TestRequest::default()
                .insert_header((header::HOST, "internal:3000"))
                .insert_header((header::ORIGIN, origin))
                .to_http_request()
        };
        assert!(allowed.allows(&req("https://a.example")));
        assert!(allowed.allows(&req("https://b.example")));
        assert!(!allowed.allows(&req("http://internal:3000")));
    }

    fn forwarded(peer: &str) -> HttpRequest {
        TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .insert_header((header::HOST, "127.0.0.1:3000"))
            .insert_header(("X-Forwarded-Host", "tasks.example.com"))
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header((header::ORIGIN, "https://tasks.example.com"))
            .to_http_request()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let untrusting = AllowedOrigins::default();
        assert!(
            !untrusting.allows(&forwarded("127.0.0.1:5000")),
            "nobody is trusted by default"
        );
        let trusting = AllowedOrigins::default()
            .with_trusted_proxies(TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap());
        assert!(trusting.allows(&forwarded("127.0.0.1:5000")));
        assert!(trusting.allows(&forwarded("10.20.30.40:5000")));
        assert!(
            trusting.allows(&forwarded("[::ffff:10.1.1.1]:5000")),
            "v4-mapped"
        );
        assert!(!trusting.allows(&forwarded("192.168.1.1:5000")));
        // An untrusted peer is checked against what it actually asked for.
        let direct = TestRequest::default()
            .peer_addr("192.168.1.1:5000".parse().unwrap())
            .insert_header((header::HOST, "127.0.0.1:3000"))
            .insert_header(("X-Forwarded-Host", "evil.example"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:3000"))
            .to_http_request();
        assert!(trusting.allows(&direct));
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges_and_refuse_anything_else() {
        let proxies = TrustedProxies::parse(" ::1, fd00::/8 ,192.168.0.0/16,").unwrap();
        for yes in ["::1", "fd12::3", "192.168.200.1"] {
            assert!(proxies.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["::2", "fe00::1", "192.169.0.1", "127.0.0.1"] {
            assert!(!proxies.contains(no.parse().unwrap()), "{no}");
        }
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        for bad in ["localhost", "10.0.0.0/33", "::/129", "10.0.0.1/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }
}
