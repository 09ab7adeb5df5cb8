//! Borrowed views of one connection, for application calls.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::{ConnectionHandle, Endpoint};
use bytes::Bytes;

use crate::conn::{Connection, ConnectionStats, ReadError, SendDatagramError, WriteError};
use crate::crypto::Suite;
use crate::wire::frame::{Dir, StreamId};
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

    /// Starts a key update as soon as RFC 9001 §6 allows (the handshake is confirmed, a packet of the
    /// current phase was acknowledged and, after an earlier update, three PTOs have passed since, §6.5).
    pub fn force_key_update(&mut self) {
        self.connection_mut().force_key_update();
    }

    /// Opens a bidirectional stream, or `None` while the peer's stream limit is reached (a
    /// [`StreamEvent::Available`](crate::StreamEvent::Available) event says when to try again) or once
    /// the connection is closing.
    pub fn open_bi(&mut self) -> Option<StreamId> {
        self.open(Dir::Bi)
    }

    /// Opens a unidirectional stream, or `None` while the peer's stream limit is reached or once the
    /// connection is closing.
    pub fn open_uni(&mut self) -> Option<StreamId> {
        self.open(Dir::Uni)
    }

    fn open(&mut self, dir: Dir) -> Option<StreamId> {
        let conn = self.connection_mut();
        if conn.is_closed() {
            return None;
        }
        conn.streams.open(dir)
    }

    /// The next stream the peer opened in direction `dir`, in order.
    pub fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        self.connection_mut().streams.accept(dir)
    }

    /// A view of stream `id` for writing, reading, finishing, resetting and stopping it.
    pub fn stream(&mut self, id: StreamId) -> StreamRef<'_, 'a> {
        StreamRef { conn: self, id }
    }

    /// Queues an unreliable datagram (RFC 9221). When the send queue is full, the oldest queued datagram is
    /// dropped (counted in [`ConnectionStats::datagrams_send_dropped`]). Once the connection is closing,
    /// [`SendDatagramError::ConnectionClosed`].
    pub fn send_datagram(&mut self, data: Bytes) -> Result<(), SendDatagramError> {
        let conn = self.connection_mut();
        if conn.is_closed() {
            return Err(SendDatagramError::ConnectionClosed);
        }
        conn.send_datagram(data)
    }

    /// The oldest received datagram, if any.
    pub fn recv_datagram(&mut self) -> Option<Bytes> {
        self.connection_mut().recv_datagram()
    }

    /// The largest datagram payload [`ConnRef::send_datagram`] accepts now, or why none: once the
    /// connection is closing, [`SendDatagramError::ConnectionClosed`], as `send_datagram` says then.
    pub fn max_datagram_size(&self) -> Result<usize, SendDatagramError> {
        let conn = self.connection();
        if conn.is_closed() {
            return Err(SendDatagramError::ConnectionClosed);
        }
        conn.max_datagram_size()
    }

    /// Sends a PING, an ack-eliciting packet that makes the peer answer. During the handshake it goes
    /// with the handshake data not yet acknowledged, as a retransmission probe would.
    pub fn ping(&mut self) {
        self.connection_mut().ping();
    }

    /// Closes the connection with an application error `code` and `reason` (CONNECTION_CLOSE type
    /// 0x1d). Codes are variable-length integers on the wire: one of 2^62 or more is sent as 2^62 - 1.
    ///
    /// Nothing more is sent but the close: stream data the peer has not acknowledged (even if written
    /// and finished just before) and queued DATAGRAMs are lost, as in quinn. To be sure a last response
    /// arrives, finish its stream and close once [`StreamEvent::Finished`](crate::StreamEvent) comes (the
    /// peer has acknowledged everything), or let the peer close.
    pub fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {
        self.connection_mut().close(now, wire_code(code), reason);
    }

    /// Installs a qlog sink on this connection (replacing any other); the trace's header record is
    /// written to it at once. See [`crate::qlog`].
    #[cfg(feature = "qlog")]
    pub fn set_qlog(&mut self, sink: Box<dyn crate::qlog::QlogSink>) {
        self.connection_mut().set_qlog(sink);
    }

    /// Removes this connection's qlog sink and returns it.
    #[cfg(feature = "qlog")]
    pub fn take_qlog(&mut self) -> Option<Box<dyn crate::qlog::QlogSink>> {
        self.connection_mut().take_qlog()
    }
}

impl Drop for ConnRef<'_> {
    fn drop(&mut self) {
        // The application is done with the connection for now: what its reads left of batches of
        // datagrams kept as they came is looked at (not between its reads, which would copy data it
        // is about to read).
        if let Some(entry) = self.endpoint.table.get_mut(self.handle) {
            entry.conn.trim_read();
        }
        self.endpoint.after_conn(self.handle, self.touched);
    }
}

/// A borrowed view of one stream of a connection, from [`ConnRef::stream`].
pub struct StreamRef<'r, 'a> {
    conn: &'r mut ConnRef<'a>,
    id: StreamId,
}

impl fmt::Debug for StreamRef<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRef")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StreamRef<'_, '_> {
    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Writes as much of `data` as the stream's send buffer takes and returns how much that was. When
    /// nothing fits, it returns [`WriteError::Blocked`]. After a refused write or one that took only
    /// part of `data`, a [`StreamEvent::Writable`](crate::StreamEvent) event follows when
    /// acknowledgements have freed a sixty-fourth of the send buffer
    /// ([`StreamsConfig::send_buffer`](crate::StreamsConfig::send_buffer), or more while buffers have
    /// grown with the congestion window, see [`max_send_buffer`](crate::StreamsConfig::max_send_buffer)),
    /// so that the writes it prompts fill whole packets. Once the connection is closing,
    /// [`WriteError::ConnectionClosed`].
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let id = self.id;
        self.sending()?.streams.write(id, data)
    }

    /// Ends the stream after what was written (a STREAM frame with FIN).
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let id = self.id;
        self.sending()?.streams.finish(id)
    }

    /// The connection, if it still sends.
    fn sending(&mut self) -> Result<&mut Connection, WriteError> {
        let conn = self.conn.connection_mut();
        if conn.is_closed() {
            return Err(WriteError::ConnectionClosed);
        }
        Ok(conn)
    }

    /// Abandons sending with an application error code (RESET_STREAM, RFC 9000 §19.4); one of 2^62 or
    /// more is sent as 2^62 - 1. [`WriteError::ConnectionClosed`] once the connection is closing, as
    /// for writes: no RESET_STREAM would go out.
    pub fn reset(&mut self, code: u64) -> Result<(), WriteError> {
        let id = self.id;
        self.sending()?.streams.reset(id, wire_code(code))
    }

    /// Asks the peer to stop sending, with an application error code (STOP_SENDING, RFC 9000 §19.5);
    /// one of 2^62 or more is sent as 2^62 - 1. [`ReadError::ConnectionClosed`] once the connection is
    /// closing, as for [`reset`](Self::reset): no STOP_SENDING would go out. [`ReadError::ClosedStream`]
    /// once the receiving side is over (read to its end, its reset read, or stopped before), as reads say.
    pub fn stop(&mut self, code: u64) -> Result<(), ReadError> {
        let conn = self.conn.connection_mut();
        if conn.is_closed() {
            return Err(ReadError::ConnectionClosed);
        }
        conn.streams.stop(self.id, wire_code(code))
    }

    /// Reads in-order bytes into `buf`: `Ok(Some(n))` with `n > 0`, `Ok(None)` at the end of the stream,
    /// [`ReadError::Blocked`] when nothing is there yet. An empty `buf` reads nothing: `Ok(Some(0))`, or
    /// the error of a stream that cannot be read.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        self.conn.connection_mut().streams.read(self.id, buf)
    }

    /// Reads the next in-order chunk of at most `max` bytes without copying it: `Ok(None)` at the end,
    /// [`ReadError::Blocked`] when nothing is there yet. As with an empty `buf` for [`read`](Self::read),
    /// a `max` of 0 reads nothing: an empty chunk while data waits, so a loop that reads until `Blocked`
    /// or `None` must ask for more than 0 bytes.
    pub fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        self.conn.connection_mut().streams.read_chunk(self.id, max)
    }

    /// Sets the stream's send priority: higher goes first; equal priorities share round-robin. A
    /// stream we cannot send on (a peer's unidirectional one, or one never opened) is
    /// [`WriteError::UnknownStream`]; one over and forgotten, [`WriteError::ClosedStream`]. A stream
    /// finished, reset or stopped but not yet forgotten takes the priority (`Ok`): what it still has to
    /// send follows it.
    pub fn set_priority(&mut self, priority: i32) -> Result<(), WriteError> {
        self.conn.connection_mut().streams.set_priority(self.id, priority)
    }
}

/// An application error code as the wire carries it: a variable-length integer, at most 2^62 - 1
/// (RFC 9000 §16); larger codes would not encode.
fn wire_code(code: u64) -> u64 {
    crate::wire::VarInt::saturating(code).into_inner()
}
