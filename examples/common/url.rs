//! `https://host:port/path` URLs, as the client takes them.

use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The host as written, without IPv6 brackets: the TLS server name.
    pub host: String,
    /// The port (443 when absent).
    pub port: u16,
    /// The path, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `https://host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| format!("{s}: only https:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| format!("{s}: unclosed '['"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("{s}: {after:?} after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s}: no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{s}: bad port {p:?}"))?,
            None => 443,
        };
        Ok(Url {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The address to connect to: the first IPv4 address the host resolves to, else the first address.
    ///
    /// IPv4 first because the server example listens on 127.0.0.1 by default, and many hosts files list
    /// `::1 localhost` before `127.0.0.1 localhost`; with no fallback between addresses (no Happy
    /// Eyeballs here), `https://localhost:4433` would otherwise wait on an address nobody listens on.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", self.host))?;
        prefer_ipv4(addrs).ok_or_else(|| format!("{}: no address", self.host))
    }
}

/// The first IPv4 address of `addrs`, else the first address.
fn prefer_ipv4(addrs: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let mut first = None;
    for a in addrs {
        if a.is_ipv4() {
            return Some(a);
        }
        first.get_or_insert(a);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_address_is_preferred_wherever_it_comes_in_the_list() {
        let v6: SocketAddr = "[::1]:4433".parse().unwrap();
        let v6b: SocketAddr = "[::2]:4433".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        assert_eq!(prefer_ipv4([v6, v4]), Some(v4));
        assert_eq!(prefer_ipv4([v4, v6]), Some(v4));
        assert_eq!(prefer_ipv4([v6, v6b]), Some(v6));
        assert_eq!(prefer_ipv4([]), None);
    }

    #[test]
    fn text_after_an_ipv6_literal_must_be_a_port() {
        let url = Url::parse("https://[::1]:4433/a").expect("valid");
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("::1", 4433, "/a")
        );
        assert_eq!(Url::parse("https://[::1]/a").expect("valid").port, 443);
        for bad in ["https://[::1]4433/a", "https://[::1]x", "https://[::1]:"] {
            assert!(Url::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
