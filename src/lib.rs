//! quicsand: a sans-IO QUIC v1 transport engine.
//!
//! The engine does no I/O of its own. The caller feeds it received UDP datagrams together with the
//! current time, and pulls out datagrams to send, the next deadline and application events. Time only
//! enters as a `now: Instant` argument and randomness only through a seedable RNG taken from the
//! configuration, so a run can be replayed exactly.
//!
//! # The drive rule
//!
//! One [`Endpoint`] serves one UDP socket and all its connections. After any input
//! ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`]) or command ([`Endpoint::connect`],
//! [`Endpoint::close`], a call through [`Endpoint::conn`]):
//!
//! 1. drain [`Endpoint::poll_transmit`] and send what it returns;
//! 2. drain [`Endpoint::poll_event`];
//! 3. read [`Endpoint::poll_timeout`] and call [`Endpoint::handle_timeout`] when that instant comes. The
//!    deadline may already have passed (a retransmission timer measured from a packet sent long ago,
//!    armed only now by an input): then call `handle_timeout` at once, and drain again.
//!
//! # Example
//!
//! A client and a server endpoint, joined by a loop that plays the network, complete a handshake:
//!
//! ```
//! use std::time::Instant;
//!
//! use bytes::BytesMut;
//! use quicsand::crypto::tls;
//! use quicsand::{ClientConfig, Datagram, Endpoint, EndpointConfig, Event, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A certificate for the server (made with rcgen here; any DER certificate and key work).
//! let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
//! let cert_der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
//! let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
//! let alpn = vec![b"echo".to_vec()];
//!
//! let server_tls = tls::server_config(vec![cert_der.clone()], key, alpn.clone())?;
//! let mut server = Endpoint::new(EndpointConfig::with_seed(1), Some(ServerConfig::new(server_tls)));
//! let mut client = Endpoint::new(EndpointConfig::with_seed(2), None);
//! let (server_addr, client_addr) = ("127.0.0.1:4433".parse()?, "127.0.0.1:50000".parse()?);
//!
//! // The caller owns the clock. A simulation would start anywhere and jump between deadlines.
//! let mut now = Instant::now();
//! let client_tls = tls::client_config(vec![cert_der], alpn)?;
//! client.connect(now, ClientConfig::new(client_tls), server_addr, "localhost")?;
//!
//! let mut buf = Vec::new();
//! let mut connected = 0;
//! while connected < 2 {
//!     // 1. Drain what each side wants to send, delivering it to the other at once.
//!     while let Some(t) = client.poll_transmit(now, &mut buf) {
//!         for d in t.datagrams(&buf) {
//!             let payload = BytesMut::from(d);
//!             server.handle_datagram(now, Datagram { remote: client_addr, local: None, ecn: t.ecn, payload });
//!         }
//!     }
//!     while let Some(t) = server.poll_transmit(now, &mut buf) {
//!         for d in t.datagrams(&buf) {
//!             let payload = BytesMut::from(d);
//!             client.handle_datagram(now, Datagram { remote: server_addr, local: None, ecn: t.ecn, payload });
//!         }
//!     }
//!     // 2. Drain events.
//!     for endpoint in [&mut client, &mut server] {
//!         while let Some((_handle, event)) = endpoint.poll_event() {
//!             if event == Event::Connected {
//!                 connected += 1;
//!             }
//!         }
//!     }
//!     // 3. Nothing left to deliver: move the clock to the next deadline.
//!     if connected < 2 {
//!         let next = [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min();
//!         now = now.max(next.expect("a handshake in progress has a deadline"));
//!         client.handle_timeout(now);
//!         server.handle_timeout(now);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! - [`wire`]: stateless codecs for the QUIC v1 wire format (RFC 9000, RFC 8999, RFC 9221): variable-length
//!   integers, packet numbers, connection IDs, packet headers, frames and transport parameters.
//! - [`crypto`]: packet protection on `ring` (RFC 9001 §5) and the TLS 1.3 handshake through `rustls::quic`
//!   behind a small [`crypto::tls::Session`] trait.
//! - connections (crate-internal): packet number spaces, ACKs, RFC 9002 loss recovery, key updates,
//!   closing and draining, reached through [`Endpoint::conn`].
//! - [`Endpoint`]: routing by connection ID, accepting, Version Negotiation.
//! - address validation (RFC 9000 §8.1): Retry by [`RetryPolicy`] or on demand ([`Endpoint::retry`]),
//!   tokens sealed under [`TokenConfig`], NEW_TOKEN tokens kept in a client endpoint's [`TokenStore`].

#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod clock;
mod config;
mod conn;
pub mod crypto;
mod datagram;
mod endpoint;
mod event;
#[cfg(feature = "qlog")]
pub mod qlog;
pub mod rng;
// The blocking UDP driver: the crate's only I/O, and its only reader of the OS clock.
#[cfg(feature = "udp")]
pub mod udp;
// A deterministic network simulator driving endpoints over impaired links on a virtual clock.
#[cfg(feature = "sim")]
pub mod sim;
mod validation;
pub mod wire;

pub use config::{
    AcceptPolicy, ClientConfig, ConnectionIdGenerator, EndpointConfig, RandomCidGenerator, ServerConfig,
    TransportConfig,
};
pub use conn::SpaceId;
pub use conn::{
    CongestionAlgorithm, ConnectionStats, MtuDiscoveryConfig, ReadError, SendDatagramError, StreamEvent,
    StreamsConfig, WriteError,
};
pub use datagram::{Datagram, EcnCodepoint, Transmit};
pub use endpoint::RetryError;
pub use endpoint::{
    ConnRef, ConnectError, ConnectionHandle, Endpoint, EndpointStats, StaleHandle, StreamRef,
};
pub use event::{ConnectionError, Event};
pub use validation::{MemoryTokenStore, RetryPolicy, TokenConfig, TokenStore, WallClock};
pub use wire::frame::{Dir, StreamId};

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

#[cfg(test)]
mod test_util;
