//! Address validation settings (RFC 9000 §8.1): when a server answers with Retry, the key and lifetimes
//! of its tokens, the wall clock that dates them, and the client's store of NEW_TOKEN tokens.
//!
//! A server proves that a client owns its address before it sends more than three times what it
//! received (§8.1). The handshake proves it after one round trip; a token proves it at once. A token is
//! either the one a server put in a Retry packet (§8.1.2: short-lived, binds the client's address and
//! port and the connection IDs of the exchange) or one it sent in a NEW_TOKEN frame of an earlier
//! connection (§8.1.3: longer-lived, binds only the client's IP address). Both are sealed with an AEAD
//! key from [`TokenConfig::key`]: servers sharing that key accept each other's tokens, and nobody else
//! can make one.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// When a server answers a client's first Initial with a Retry (RFC 9000 §8.1.2) instead of starting
/// the handshake.
///
/// A Retry costs the client one round trip and the server nothing: no state is kept until the client
/// comes back with the token, which proves it receives packets at its address. A client that presents a
/// valid token (from a Retry, or from a NEW_TOKEN frame of an earlier connection) is never sent a Retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Never send Retry; unvalidated clients are held to the anti-amplification limit until their
    /// address is validated by the handshake.
    Never,
    /// Send a Retry to every client without a valid token.
    Always,
    /// Send a Retry to clients without a valid token once this many incoming handshakes are in progress
    /// (the count [`ServerConfig::max_incoming_handshakes`](crate::ServerConfig::max_incoming_handshakes)
    /// also limits): a flood of spoofed Initials then costs no connection state.
    WhenHandshakesExceed(usize),
}

impl Default for RetryPolicy {
    /// `WhenHandshakesExceed(256)`: no extra round trip in normal operation, and stateless answers once
    /// a server has a few hundred handshakes in flight, far below the default hard limit of 4096.
    fn default() -> Self {
        RetryPolicy::WhenHandshakesExceed(256)
    }
}

/// The current time as a duration since the Unix epoch, provided by the caller: the engine never reads
/// the OS clock. Tokens are dated by it and expire by it, so servers sharing a
/// [`TokenConfig::key`] should share a clock that roughly agrees (NTP is plenty: a token dated up to
/// ten seconds in the future is still accepted).
pub trait WallClock: Send + Sync {
    /// Time since 1970-01-01T00:00:00Z.
    fn unix_time(&self) -> Duration;
}

/// Address validation tokens: their key, lifetimes and clock (RFC 9000 §8.1.2, §8.1.3).
#[derive(Clone)]
pub struct TokenConfig {
    /// The 32-byte secret tokens are sealed with (AES-256-GCM keys derive from it by HKDF). Servers with
    /// the same key accept each other's tokens, which is what a pool of servers behind one address
    /// wants. `None` derives it from [`EndpointConfig::seed`](crate::EndpointConfig::seed), which is
    /// only as secret as the seed: a server facing the internet should set a key drawn from the
    /// operating system's RNG.
    pub key: Option<[u8; 32]>,
    /// How long a Retry token validates the client's address (RFC 9000 §8.1.3: Retry tokens SHOULD be
    /// short-lived; the client uses it within one round trip). Past it by up to a minute, the token no
    /// longer validates but the handshake goes on with the address not validated (the client, having
    /// followed our Retry, ignores another); later, it gets an INVALID_TOKEN close.
    pub retry_token_lifetime: Duration,
    /// How long a token sent in a NEW_TOKEN frame is accepted on later connections.
    pub new_token_lifetime: Duration,
    /// NEW_TOKEN frames sent on each connection once its handshake is confirmed (0 sends none; at
    /// most 8).
    pub new_tokens_per_connection: usize,
    /// The clock that dates and expires tokens. Without one, the endpoint measures time from the first
    /// `now` it used for a token: tokens are then only accepted by the endpoint that issued them, within
    /// its lifetime, even when others share its `key` (a restarted server rejects them, and clients get
    /// a Retry or the amplification limit again). Such tokens name the issuing endpoint by a value
    /// drawn from its [`seed`](crate::EndpointConfig::seed), so an endpoint restarted with the same seed
    /// and key counts as the same one. Servers that share tokens need a wall clock.
    pub wall_clock: Option<Arc<dyn WallClock>>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            key: None,
            retry_token_lifetime: Duration::from_secs(10),
            new_token_lifetime: Duration::from_secs(24 * 3600),
            new_tokens_per_connection: 1,
            wall_clock: None,
        }
    }
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: say only whether it is set.
        f.debug_struct("TokenConfig")
            .field("key", &self.key.map(|_| "<set>"))
            .field("retry_token_lifetime", &self.retry_token_lifetime)
            .field("new_token_lifetime", &self.new_token_lifetime)
            .field("new_tokens_per_connection", &self.new_tokens_per_connection)
            .field("wall_clock", &self.wall_clock.is_some())
            .finish()
    }
}

/// Where a client keeps the tokens servers sent in NEW_TOKEN frames (RFC 9000 §8.1.3), to present one in
/// the first Initial of its next connection to the same server, which then skips Retry and the
/// amplification limit.
///
/// The endpoint owns its store ([`EndpointConfig::token_store`](crate::EndpointConfig::token_store)), so
/// it needs no locking. Tokens are filed by the server name given to
/// [`Endpoint::connect`](crate::Endpoint::connect), followed, for QUIC versions other than 1, by the
/// version (`"example.com (QUIC version 0x6b3343cf)"`: RFC 9369 §7, a token serves only the version
/// that brought it). A token is used once: [`take`](TokenStore::take) removes it (§8.1.3: reusing a token
/// lets observers link connections), and one connection files a token it received twice only once
/// (§19.7).
pub trait TokenStore: Send + fmt::Debug {
    /// Keeps `token`, received from `server_name`.
    fn insert(&mut self, server_name: &str, token: Bytes);
    /// Removes and returns a token for `server_name`, if any.
    fn take(&mut self, server_name: &str) -> Option<Bytes>;
}

/// The default [`TokenStore`]: in memory, bounded in servers and tokens per server; the least recently
/// used server is forgotten first, and each server's oldest token.
#[derive(Debug)]
pub struct MemoryTokenStore {
    servers: VecDeque<(String, VecDeque<Bytes>)>,
    max_servers: usize,
    per_server: usize,
}

impl MemoryTokenStore {
    /// A store keeping tokens for at most `max_servers` servers, `per_server` each (both at least 1).
    pub fn new(max_servers: usize, per_server: usize) -> Self {
        Self {
            servers: VecDeque::new(),
            max_servers: max_servers.max(1),
            per_server: per_server.max(1),
        }
    }
}

impl Default for MemoryTokenStore {
    /// 256 servers, 2 tokens each.
    fn default() -> Self {
        Self::new(256, 2)
    }
}

impl TokenStore for MemoryTokenStore {
    fn insert(&mut self, server_name: &str, token: Bytes) {
        let servers = &mut self.servers;
        let mut entry = match servers.iter().position(|(name, _)| name == server_name) {
            Some(i) => servers.remove(i).unwrap_or_default(),
            None => (server_name.to_string(), VecDeque::new()),
        };
        if entry.1.len() >= self.per_server {
            entry.1.pop_front();
        }
        entry.1.push_back(token);
        while servers.len() >= self.max_servers {
            servers.pop_front();
        }
        servers.push_back(entry);
    }

    fn take(&mut self, server_name: &str) -> Option<Bytes> {
        let servers = &mut self.servers;
        let i = servers.iter().position(|(name, _)| name == server_name)?;
        let (_, tokens) = servers.get_mut(i)?;
        // The newest token has the most lifetime left.
        let token = tokens.pop_back();
        if tokens.is_empty() {
            servers.remove(i);
        }
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_is_bounded_and_takes_each_token_once() {
        let mut store = MemoryTokenStore::new(2, 2);
        for t in [&b"a1"[..], b"a2", b"a3"] {
            store.insert("a", Bytes::from_static(t));
        }
        store.insert("b", Bytes::from_static(b"b1"));
        // "a" keeps its two newest tokens, newest first.
        assert_eq!(store.take("a").as_deref(), Some(&b"a3"[..]));
        store.insert("a", Bytes::from_static(b"a4"));
        // A third server evicts the least recently used one ("b").
        store.insert("c", Bytes::from_static(b"c1"));
        assert_eq!(store.take("b"), None);
        assert_eq!(store.take("a").as_deref(), Some(&b"a4"[..]));
        assert_eq!(store.take("a").as_deref(), Some(&b"a2"[..]));
        assert_eq!(store.take("a"), None);
        assert_eq!(store.take("c").as_deref(), Some(&b"c1"[..]));
        assert_eq!(store.take("c"), None);
    }
}
