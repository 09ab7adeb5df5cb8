//! quicsand: a sans-IO QUIC v1 transport engine.
//!
//! The engine does no I/O of its own. The caller feeds it received UDP datagrams together with the
//! current time, and pulls out datagrams to send, the next deadline and application events. Time only
//! enters as a `now: Instant` argument and randomness only through a seedable RNG taken from the
//! configuration, so a run can be replayed exactly.
//!
//! This release contains the foundation every later layer stands on:
//!
//! - [`wire`]: stateless codecs for the QUIC v1 wire format (RFC 9000, RFC 8999, RFC 9221): variable-length
//!   integers, packet numbers, connection IDs, packet headers, frames and transport parameters.
//! - [`crypto`]: packet protection on `ring` (RFC 9001 §5): initial secrets, HKDF-Expand-Label, payload
//!   protection with the three TLS 1.3 AEADs, header protection, the Retry integrity tag and key updates.

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod config;
mod conn;
pub mod crypto;
mod datagram;
mod endpoint;
mod event;
pub mod rng;
pub mod wire;

pub use config::{
    AcceptPolicy, ClientConfig, ConnectionIdGenerator, EndpointConfig, RandomCidGenerator, ServerConfig,
    TransportConfig,
};
pub use conn::ConnectionStats;
pub use conn::SpaceId;
pub use datagram::{Datagram, EcnCodepoint, Transmit};
pub use endpoint::{ConnRef, ConnectError, ConnectionHandle, Endpoint, EndpointStats, StaleHandle};
pub use event::{ConnectionError, Event};

/// Which end of a connection an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The endpoint that initiated the connection.
    Client,
    /// The endpoint that accepted the connection.
    Server,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// Whether this is [`Side::Client`].
    pub fn is_client(self) -> bool {
        self == Side::Client
    }

    /// Whether this is [`Side::Server`].
    pub fn is_server(self) -> bool {
        self == Side::Server
    }
}

#[cfg(any(test, fuzzing))]
pub mod fuzzing;
