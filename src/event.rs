//! Events the engine reports to the application, and why connections end.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::conn::StreamEvent;
use crate::wire::TransportError;

/// Something that happened on a connection, from [`Endpoint::poll_event`](crate::Endpoint::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client started a connection to this server. Under [`AcceptPolicy::Ask`](crate::AcceptPolicy::Ask)
    /// the connection waits for [`Endpoint::accept`](crate::Endpoint::accept) or
    /// [`Endpoint::refuse`](crate::Endpoint::refuse).
    Incoming {
        /// The client's address.
        remote: SocketAddr,
    },
    /// The handshake completed (RFC 9001 §4.1.1): application data can flow.
    Connected,
    /// The handshake is confirmed (RFC 9001 §4.1.2): handshake keys are gone, key updates are allowed.
    HandshakeConfirmed,
    /// Something happened on a stream.
    Stream(StreamEvent),
    /// A DATAGRAM arrived while none was waiting (RFC 9221); read them with
    /// [`ConnRef::recv_datagram`](crate::ConnRef::recv_datagram).
    DatagramReceived,
    /// The connection is over, and this is its last event: the stream events of data that arrived
    /// before the end (in the very packet that closed it, say) come first, and that data can still be
    /// read while the handle is valid. The handle stays valid until the closing or draining period
    /// ends; a connection that ends without one (an idle timeout, a silent close) is freed at once,
    /// and its handle is stale from then on.
    ConnectionLost {
        /// Why.
        reason: ConnectionError,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer does not speak any version this endpoint offers (RFC 9000 §6).
    VersionMismatch,
    /// The peer broke the protocol, or this endpoint detected an error: the transport error sent.
    TransportError(TransportError),
    /// The peer closed the connection with a transport error (CONNECTION_CLOSE type 0x1c).
    ConnectionClosed {
        /// The error code, frame type and reason the peer sent.
        error: TransportError,
    },
    /// The peer's application closed the connection (CONNECTION_CLOSE type 0x1d).
    ApplicationClosed {
        /// The application's error code.
        code: u64,
        /// The reason the peer gave.
        reason: Bytes,
    },
    /// The server refused the connection, or this server refused it.
    Refused,
    /// Nothing was heard from the peer for the idle timeout (RFC 9000 §10.1), or the peer moved to an
    /// address that failed validation with no validated one to go back to (§9.3.2).
    TimedOut,
    /// This side closed the connection.
    LocallyClosed,
    /// The peer sent a stateless reset (RFC 9000 §10.3).
    Reset,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::VersionMismatch => f.write_str("no QUIC version in common with the peer"),
            ConnectionError::TransportError(e) => write!(f, "transport error: {e}"),
            ConnectionError::ConnectionClosed { error } => write!(f, "closed by peer: {error}"),
            ConnectionError::ApplicationClosed { code, reason } => {
                write!(
                    f,
                    "closed by peer application: code {code}, {}",
                    String::from_utf8_lossy(reason)
                )
            }
            ConnectionError::Refused => f.write_str("connection refused"),
            ConnectionError::TimedOut => f.write_str("idle timeout"),
            ConnectionError::LocallyClosed => f.write_str("closed locally"),
            ConnectionError::Reset => f.write_str("stateless reset"),
        }
    }
}

impl std::error::Error for ConnectionError {}
