//! Web origins (`scheme://host[:port]`) as browsers send them in the `Origin` header: the
//! pages a publishable key may be used from.

use std::fmt;
use std::str::FromStr;

/// An `http` or `https` origin in the form browsers serialize it: lower case, no default
/// port, no path. Two origins are the same page origin exactly when their text is equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebOrigin(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("`{0}` is not an origin: write scheme://host[:port], e.g. https://shop.example")]
    Unreadable(String),
    #[error("`{0}` has a scheme other than http or https")]
    Scheme(String),
    #[error(
        "`{0}` has a path, query or fragment: an origin is only scheme://host[:port], e.g. https://shop.example"
    )]
    Path(String),
    #[error("`{0}` has a user name or password: an origin is only scheme://host[:port]")]
    Userinfo(String),
    #[error(
        "`{0}` has a host that is not a DNS name or IP address (write international names in their xn-- form)"
    )]
    Host(String),
    #[error("`{0}` has a port that is not between 1 and 65535")]
    Port(String),
    #[error("`{0}` is longer than {MAX_ORIGIN_CHARS} characters")]
    TooLong(String),
}

/// Longer origins are refused: a DNS name has at most 253 characters.
pub const MAX_ORIGIN_CHARS: usize = 300;

impl WebOrigin {
    /// Reads an origin; a single trailing `/` is forgiven, any other path is refused.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let text = text.trim();
        let shown = || text.chars().take(MAX_ORIGIN_CHARS).collect::<String>();
        if text.len() > MAX_ORIGIN_CHARS {
            return Err(OriginError::TooLong(shown()));
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| OriginError::Unreadable(shown()))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(OriginError::Scheme(shown())),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(OriginError::Path(shown()));
        }
        if authority.contains('@') {
            return Err(OriginError::Userinfo(shown()));
        }
        let (host, port) = split_port(authority).ok_or_else(|| OriginError::Host(shown()))?;
        let host = host.to_ascii_lowercase();
        if !valid_host(&host) {
            return Err(OriginError::Host(shown()));
        }
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(OriginError::Port(shown())),
                Ok(port) if port == default_port => None,
                Ok(port) => Some(port),
            },
        };
        Ok(Self(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `host` and the text after its `:`, for `name`, `name:port`, `[v6]` and `[v6]:port`.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let host = &authority[..v6.len() + 2];
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for WebOrigin {
    type Err = OriginError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_read_as_browsers_send_them() {
        let cases = [
            ("https://shop.example", "https://shop.example"),
            ("HTTPS://Shop.Example/", "https://shop.example"),
            ("https://shop.example:443", "https://shop.example"),
            ("http://shop.example:80", "http://shop.example"),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
            (" http://localhost:3000 ", "http://localhost:3000"),
            (
                "https://xn--bcher-kva.example",
                "https://xn--bcher-kva.example",
            ),
        ];
        for (text, origin) in cases {
            assert_eq!(WebOrigin::parse(text).unwrap().as_str(), origin, "{text}");
        }
    }

    #[test]
    fn anything_but_scheme_host_and_port_is_refused_saying_what() {
        type Expected = fn(&OriginError) -> bool;
        let cases: [(&str, Expected); 12] = [
            ("shop.example", |e| matches!(e, OriginError::Unreadable(_))),
            ("ftp://shop.example", |e| {
                matches!(e, OriginError::Scheme(_))
            }),
            ("null", |e| matches!(e, OriginError::Unreadable(_))),
            ("https://shop.example/cart", |e| {
                matches!(e, OriginError::Path(_))
            }),
            ("https://shop.example?a=1", |e| {
                matches!(e, OriginError::Path(_))
            }),
            ("https://shop.example//", |e| {
                matches!(e, OriginError::Path(_))
            }),
            ("https://ana@shop.example", |e| {
                matches!(e, OriginError::Userinfo(_))
            }),
            ("https://*.shop.example", |e| {
                matches!(e, OriginError::Host(_))
            }),
            ("https://bücher.example", |e| {
                matches!(e, OriginError::Host(_))
            }),
            ("https://", |e| matches!(e, OriginError::Host(_))),
            ("https://shop.example:0", |e| {
                matches!(e, OriginError::Port(_))
            }),
            ("https://shop.example:99999", |e| {
                matches!(e, OriginError::Port(_))
            }),
        ];
        for (text, expected) in cases {
            let error = WebOrigin::parse(text).unwrap_err();
            assert!(expected(&error), "{text}: {error:?}");
            assert!(error.to_string().contains(text.trim()), "{error}");
        }
        let path = WebOrigin::parse("https://shop.example/cart")
            .unwrap_err()
            .to_string();
        assert!(path.contains("scheme://host[:port]"), "{path}");
    }
}
