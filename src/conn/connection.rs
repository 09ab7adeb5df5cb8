//! STUB: the connection as the endpoint sees it. Being replaced by the real state machine.
#![allow(dead_code, unused_variables, clippy::too_many_arguments, clippy::ptr_arg)]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;

use crate::config::{ClientConfig, ServerConfig};
use crate::datagram::{EcnCodepoint, Transmit};
use crate::event::Event;
use crate::rng::Rng;
use crate::wire::{ConnectionId, TransportError};
use crate::Side;

/// What a connection asks of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// Route datagrams for this connection ID to the connection too.
    NewLocalCid(ConnectionId),
    /// Stop routing this connection ID to the connection.
    RetireLocalCid(ConnectionId),
    /// The handshake finished (counts toward `max_incoming_handshakes`).
    HandshakeDone,
}

/// Parameters of a new server-side connection, taken from the client's first Initial.
#[derive(Debug, Clone)]
pub(crate) struct IncomingInfo {
    pub(crate) version: u32,
    pub(crate) remote: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    /// The destination connection ID the client chose (initial keys derive from it).
    pub(crate) original_dcid: ConnectionId,
    /// The client's source connection ID.
    pub(crate) client_scid: ConnectionId,
}

/// One QUIC connection.
pub(crate) struct Connection {
    side: Side,
}

impl Connection {
    /// A client connection; its first Initial is ready in `poll_transmit`.
    pub(crate) fn new_client(
        now: Instant,
        config: &ClientConfig,
        remote: SocketAddr,
        server_name: &str,
        local_cid: ConnectionId,
        initial_dcid: ConnectionId,
        rng: Rng,
    ) -> Result<Self, TransportError> {
        Ok(Self { side: Side::Client })
    }

    /// A server connection for a client's first Initial; feed that datagram with `handle_datagram` next.
    pub(crate) fn new_server(
        now: Instant,
        config: &ServerConfig,
        info: IncomingInfo,
        local_cid: ConnectionId,
        hold: bool,
        rng: Rng,
    ) -> Result<Self, TransportError> {
        Ok(Self { side: Side::Server })
    }

    /// A datagram routed to this connection (possibly several coalesced packets).
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        payload: BytesMut,
    ) {
    }

    /// Writes the next datagram(s) into `buf` (cleared first).
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        max_segments: usize,
    ) -> Option<Transmit> {
        None
    }

    /// The next deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs whatever timers expired at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {}

    /// The next application event.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        None
    }

    /// The next request to the endpoint.
    pub(crate) fn poll_endpoint_event(&mut self) -> Option<EndpointEvent> {
        None
    }

    /// Whether the connection is over and its state can be freed (after closing/draining).
    pub(crate) fn is_drained(&self) -> bool {
        false
    }

    /// Lets a held server connection proceed (AcceptPolicy::Ask).
    pub(crate) fn accept(&mut self, now: Instant) {}

    /// Refuses a held server connection: it closes with CONNECTION_REFUSED.
    pub(crate) fn refuse(&mut self, now: Instant) {}

    /// Closes with an application error code and reason.
    pub(crate) fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {}

    /// Which side this is.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        true
    }
}
