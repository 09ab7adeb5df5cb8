//! Borrowed views of one connection, for application calls.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::{ConnectionHandle, Endpoint};
use bytes::Bytes;

use crate::conn::{Connection, ConnectionStats, SendDatagramError};
use crate::crypto::Suite;
use crate::wire::transport_params::TransportParameters;
use crate::Side;

/// A borrowed view of one connection of an [`Endpoint`], from [`Endpoint::conn`].
///
/// Keep it short-lived: when it is dropped, the endpoint picks up whatever the calls changed (packets to
/// send, events, deadlines).
pub struct ConnRef<'a> {
    endpoint: &'a mut Endpoint,
    handle: ConnectionHandle,
    touched: bool,
}

impl fmt::Debug for ConnRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnRef")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<'a> ConnRef<'a> {
    /// A view of `handle`, which the caller checked is live.
    pub(super) fn new(endpoint: &'a mut Endpoint, handle: ConnectionHandle) -> Self {
        Self {
            endpoint,
            handle,
            touched: false,
        }
    }

    fn connection(&self) -> &Connection {
        &self
            .endpoint
            .table
            .get(self.handle)
            .expect("a ConnRef's handle was live when it was made, and only its drop can remove it")
            .conn
    }

    fn connection_mut(&mut self) -> &mut Connection {
        self.touched = true;
        &mut self
            .endpoint
            .table
            .get_mut(self.handle)
            .expect("a ConnRef's handle was live when it was made, and only its drop can remove it")
            .conn
    }

    /// The connection's handle.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle
    }

    /// Which side of the connection this endpoint is.
    pub fn side(&self) -> Side {
        self.connection().side()
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.connection().is_handshaking()
    }

    /// Whether the handshake is confirmed (RFC 9001 §4.1.2).
    pub fn is_handshake_confirmed(&self) -> bool {
        self.connection().is_handshake_confirmed()
    }

    /// Whether the connection is closing, draining or over.
    pub fn is_closed(&self) -> bool {
        self.connection().is_closed()
    }

    /// The negotiated ALPN protocol, once known.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.connection().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The server name: the one the client asked for (SNI).
    pub fn server_name(&self) -> Option<String> {
        self.connection().server_name().map(str::to_owned)
    }

    /// The negotiated cipher suite, once known.
    pub fn suite(&self) -> Option<Suite> {
        self.connection().suite()
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection().remote_address()
    }

    /// The current 1-RTT key phase bit and the number of key updates so far (RFC 9001 §6).
    pub fn key_phase(&self) -> (bool, u64) {
        self.connection().key_phase()
    }

    /// The peer's transport parameters, once received.
    pub fn peer_transport_parameters(&self) -> Option<TransportParameters> {
        self.connection().peer_params().cloned()
    }

    /// Counters and RTT estimates.
    pub fn stats(&self) -> ConnectionStats {
        self.connection().stats()
    }

    /// Starts a key update as soon as RFC 9001 §6 allows (the handshake is confirmed and a packet of the
    /// current phase was acknowledged).
    pub fn force_key_update(&mut self) {
        self.connection_mut().force_key_update();
    }

    /// Queues an unreliable datagram (RFC 9221). When the send queue is full, the oldest queued datagram is
    /// dropped (counted in [`ConnectionStats::datagrams_send_dropped`]).
    pub fn send_datagram(&mut self, data: Bytes) -> Result<(), SendDatagramError> {
        self.connection_mut().send_datagram(data)
    }

    /// The oldest received datagram, if any.
    pub fn recv_datagram(&mut self) -> Option<Bytes> {
        self.connection_mut().recv_datagram()
    }

    /// The largest datagram payload [`ConnRef::send_datagram`] accepts now, or why none.
    pub fn max_datagram_size(&self) -> Result<usize, SendDatagramError> {
        self.connection().max_datagram_size()
    }

    /// Sends a PING, an ack-eliciting packet that makes the peer answer.
    pub fn ping(&mut self) {
        self.connection_mut().ping();
    }

    /// Closes the connection with an application error `code` and `reason` (CONNECTION_CLOSE type
    /// 0x1d).
    pub fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {
        self.connection_mut().close(now, code, reason);
    }
}

impl Drop for ConnRef<'_> {
    fn drop(&mut self) {
        self.endpoint.after_conn(self.handle, self.touched);
    }
}
