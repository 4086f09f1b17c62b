//! Who is on the other end of a request. The peer that connected, unless it is a trusted proxy
//! (`admin_trusted_proxies`, `api_trusted_proxies`): then its `X-Forwarded-For` names the client
//! and its `X-Forwarded-Proto` says whether the client used https. Anyone else's headers are
//! ignored, so a client cannot choose the address a throttle or rate limit counts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::HttpRequest;
use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{setting}: `{entry}` is not an IP address or a CIDR network (e.g. 10.0.0.1 or 10.0.0.0/8)"
)]
pub struct ProxyError {
    setting: &'static str,
    entry: String,
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// Where a request came from, as far as can be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub address: IpAddr,
    pub https: bool,
}

impl TrustedProxies {
    /// The entries of the setting named `setting` (for the error).
    pub fn parse(setting: &'static str, entries: &[String]) -> Result<Self, ProxyError> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ProxyError {
                        setting,
                        entry: entry.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address and whether it used https, from the request's connection and, only
    /// through trusted proxies, its forwarding headers.
    pub fn origin(&self, request: &HttpRequest) -> Origin {
        let peer = request
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
        let direct_https = request.app_config().secure();
        if !self.trusts(peer) {
            return Origin {
                address: peer,
                https: direct_https,
            };
        }
        let header = |name| {
            request
                .headers()
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
        };
        // Each proxy appends the address it saw: walk back from the nearest while the hop
        // that reported an address is trusted; the first untrusted one is the client.
        let mut address = peer;
        for hop in header("x-forwarded-for").into_iter().rev() {
            if !self.trusts(address) {
                break;
            }
            match hop_address(hop) {
                Some(hop) => address = hop,
                None => break,
            }
        }
        // The nearest proxy's word on the scheme it was reached by.
        let forwarded_https = header("x-forwarded-proto")
            .last()
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        Origin {
            address,
            https: direct_https || forwarded_https,
        }
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(
            "admin_trusted_proxies",
            &entries.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn request(peer: &str, forwarded_for: Option<&str>, proto: Option<&str>) -> HttpRequest {
        let mut request = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(value) = forwarded_for {
            request = request.insert_header(("X-Forwarded-For", value));
        }
        if let Some(value) = proto {
            request = request.insert_header(("X-Forwarded-Proto", value));
        }
        request.to_http_request()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_are_addresses_or_networks_and_anything_else_is_named() {
        let parse = |entries: &[&str]| {
            let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
            TrustedProxies::parse("admin_trusted_proxies", &entries)
        };
        assert!(parse(&["10.0.0.1", " fd00::/8 "]).is_ok());
        let error = parse(&["10.0.0.0/8", "proxy.local"])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("admin_trusted_proxies: `proxy.local`"),
            "{error}"
        );
        assert!(parse(&["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn forwarding_headers_from_untrusted_peers_are_ignored() {
        let none = TrustedProxies::default();
        let origin = none.origin(&request(
            "203.0.113.9:5000",
            Some("198.51.100.1"),
            Some("https"),
        ));
        assert_eq!(
            origin,
            Origin {
                address: ip("203.0.113.9"),
                https: false
            }
        );
        let other = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            other
                .origin(&request("203.0.113.9:5000", Some("198.51.100.1"), None))
                .address,
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_scheme() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        let origin = trusted.origin(&request(
            "10.1.2.3:5000",
            Some("198.51.100.1"),
            Some("https"),
        ));
        assert_eq!(
            origin,
            Origin {
                address: ip("198.51.100.1"),
                https: true
            }
        );
        // A client's own X-Forwarded-For entries before the proxies' are not believed.
        let origin = trusted.origin(&request(
            "10.1.2.3:5000",
            Some("1.1.1.1, 198.51.100.1, 192.0.2.7:4430"),
            None,
        ));
        assert_eq!(origin.address, ip("198.51.100.1"));
        assert!(!origin.https);
        // Without the header the proxy itself is the client.
        assert_eq!(
            trusted
                .origin(&request("10.1.2.3:5000", None, None))
                .address,
            ip("10.1.2.3")
        );
        // Garbage stops the walk at the last address known.
        assert_eq!(
            trusted
                .origin(&request("10.1.2.3:5000", Some("not-an-ip"), None))
                .address,
            ip("10.1.2.3")
        );
        assert_eq!(
            trusted
                .origin(&request(
                    "[::ffff:10.1.2.3]:5000",
                    Some("[2001:db8::1]:443"),
                    None
                ))
                .address,
            ip("2001:db8::1")
        );
    }
}
