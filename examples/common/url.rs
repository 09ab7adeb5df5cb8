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
            (host, after.strip_prefix(':'))
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

    /// The first address the host resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.host))
    }
}
