//! The TLS handshake as QUIC sees it (RFC 9001 §4).
//!
//! The connection drives TLS only through the small [`Session`] trait: it feeds in the in-order contents of
//! CRYPTO frames with [`Session::read_handshake`] and pulls out handshake bytes and new keys with
//! [`Session::write_handshake`]. Keys come out as our own [`Keys`], so nothing outside this
//! module sees the TLS library, and a test or fuzzing build can put another implementation behind the trait.
//!
//! [`RustlsSession`] is the implementation on `rustls`, with helpers that build TLS 1.3-only configurations
//! ([`client_config`], [`server_config`], [`insecure_client_config`] and their `_with` variants taking
//! [`ConfigOptions`]).
//!
//! # Driving a session
//!
//! ```text
//! loop {
//!     session.read_handshake(level, &crypto_bytes)?;     // for each in-order chunk of CRYPTO data
//!     loop {
//!         let change = session.write_handshake(&mut buf);
//!         send buf as CRYPTO frames at the current write level; buf.clear();
//!         match change { None => break, Some(keys) => install keys, raise the write level }
//!     }
//! }
//! ```
//!
//! A TLS failure is a [`TransportError`] with code `CRYPTO_ERROR` (0x0100 + alert, RFC 9001 §4.8); the
//! connection closes with it. TLS alerts are never sent as TLS records in QUIC (RFC 9001 §4.8).

use std::fmt;

use super::{DirectionalKeys, Keys, PacketKey, Suite};
use crate::wire::TransportError;
use crate::Side;

// The null handshake exists only in fuzzing builds; `null.rs` refuses to compile in any other.
mod hello;
#[cfg(fuzzing)]
mod null;
mod rustls;
mod tickets;

#[cfg(test)]
mod tests;

pub use self::rustls::{
    client_config, client_config_with, insecure_client_config, insecure_client_config_with, server_config,
    server_config_with, ConfigOptions, RustlsSession,
};

#[cfg(fuzzing)]
pub use self::null::NullSession;
pub(crate) use self::tickets::for_version;

/// The encryption level of handshake bytes (RFC 9001 §4, §4.1.4).
///
/// CRYPTO frames are carried at the Initial, Handshake and 1-RTT levels; 0-RTT packets cannot carry them
/// (RFC 9001 §4.1.4), so [`Level::ZeroRtt`] only names the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Initial packets, protected with keys derived from the client's Destination Connection ID.
    Initial,
    /// 0-RTT packets: early data of a resumed session. Never carries handshake bytes.
    ZeroRtt,
    /// Handshake packets.
    Handshake,
    /// 1-RTT (short header) packets.
    OneRtt,
}

/// New keys a [`Session`] hands to the connection from [`Session::write_handshake`].
///
/// In both variants `local` protects what this endpoint sends and `remote` opens what the peer sends.
#[derive(Debug)]
pub enum KeyChange {
    /// Handshake keys: handshake bytes written after this go out in Handshake packets.
    Handshake(Keys),
    /// 1-RTT keys of key phase 0: handshake bytes written after this go out in 1-RTT packets.
    /// Later key phases come from [`Session::next_1rtt_keys`].
    OneRtt(Keys),
}

/// The TLS 1.3 handshake of one QUIC connection, as the connection sees it (RFC 9001 §4).
///
/// Implementations do no I/O and read no clock; every method returns promptly.
pub trait Session: Send {
    /// Which end of the connection this session is.
    fn side(&self) -> Side;

    /// Feeds handshake bytes that arrived in CRYPTO frames at `level`, in order and without gaps.
    ///
    /// RFC 9001 §4.1.3: the connection orders CRYPTO data per level and hands it to TLS only once TLS reads at
    /// that level. Data at any other level (including any data at all at [`Level::ZeroRtt`], which cannot
    /// carry CRYPTO frames) is a PROTOCOL_VIOLATION. A TLS failure is a CRYPTO_ERROR carrying the TLS alert
    /// (0x0100 + alert, RFC 9001 §4.8), or internal_error (0x0150) when TLS names no alert. Once a call has
    /// failed, the session stays failed and every later call returns the same error.
    fn read_handshake(&mut self, level: Level, data: &[u8]) -> Result<(), TransportError>;

    /// Appends handshake bytes to send to `buf`, at the connection's current write level.
    ///
    /// When this returns a [`KeyChange`], the bytes appended by this call still belong to the old level, and
    /// the connection raises its write level to the new keys' level. Call again until it returns `None`:
    /// more bytes may follow at the new level.
    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<KeyChange>;

    /// The packet keys of the next 1-RTT key phase as `(local, remote)` (RFC 9001 §6.1).
    ///
    /// `None` until [`KeyChange::OneRtt`] has been returned. Each call advances one phase: the first call
    /// gives phase 1, the next phase 2, and so on. Header protection keys never change (RFC 9001 §6.1).
    fn next_1rtt_keys(&mut self) -> Option<(Box<dyn PacketKey>, Box<dyn PacketKey>)>;

    /// The receive key of the phase the next call to [`next_1rtt_keys`](Self::next_1rtt_keys) will return,
    /// without advancing: the `remote` half of that pair.
    ///
    /// The connection prepares the next receive key in advance (RFC 9001 §9.5), but derives the next send
    /// key only when it switches phase, so an idle connection holds three packet keys rather than four.
    /// `None` exactly when `next_1rtt_keys` would return `None`.
    fn peek_next_1rtt_remote_key(&self) -> Option<Box<dyn PacketKey>>;

    /// The keys for 0-RTT packets, when this session has them: the client's sending keys or the server's
    /// receiving keys for early data of a resumed session (RFC 9001 §4.6).
    fn zero_rtt_keys(&self) -> Option<DirectionalKeys>;

    /// Whether the TLS handshake is still in progress: `false` once this side has sent and received the
    /// Finished messages it needs (RFC 9001 §4.1.1 "handshake complete").
    fn is_handshaking(&self) -> bool;

    /// The peer's quic_transport_parameters extension as raw bytes (RFC 9001 §8.2), once received.
    ///
    /// The connection decodes them with
    /// [`TransportParameters::decode`](crate::wire::transport_params::TransportParameters::decode). They are
    /// authenticated only when the handshake completes.
    fn peer_transport_parameters(&self) -> Option<&[u8]>;

    /// The negotiated ALPN protocol (RFC 9001 §8.1), once known.
    fn alpn_protocol(&self) -> Option<&[u8]>;

    /// The server name: the one the client connects to, or the one the server received in SNI.
    fn server_name(&self) -> Option<&str>;

    /// The negotiated cipher suite, once the ServerHello has been sent or received.
    fn suite(&self) -> Option<Suite>;

    /// The peer's certificate chain, end entity first, as DER; `None` until received or when the peer sent
    /// none (a client without a certificate).
    fn peer_certificates(&self) -> Option<Vec<Vec<u8>>>;
}

/// Why a TLS configuration or session could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsConfigError {
    /// The server name is neither a DNS name nor an IP address.
    InvalidServerName(String),
    /// No cipher suite is left that is TLS 1.3, usable with QUIC (RFC 9001 §5.3), offered by the crypto
    /// provider and allowed by the requested restriction.
    NoCipherSuite,
    /// A trust anchor could not be parsed.
    InvalidRootCertificate(::rustls::Error),
    /// `rustls` refused the configuration (for example a private key that does not match the certificate).
    Rustls(::rustls::Error),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::InvalidServerName(name) => write!(f, "invalid server name {name:?}"),
            TlsConfigError::NoCipherSuite => {
                f.write_str("no TLS 1.3 cipher suite usable with QUIC is configured")
            }
            TlsConfigError::InvalidRootCertificate(e) => write!(f, "invalid root certificate: {e}"),
            TlsConfigError::Rustls(e) => write!(f, "TLS configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsConfigError::InvalidRootCertificate(e) | TlsConfigError::Rustls(e) => Some(e),
            TlsConfigError::InvalidServerName(_) | TlsConfigError::NoCipherSuite => None,
        }
    }
}

impl From<::rustls::Error> for TlsConfigError {
    fn from(e: ::rustls::Error) -> Self {
        TlsConfigError::Rustls(e)
    }
}
