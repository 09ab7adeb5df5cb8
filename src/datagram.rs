//! What crosses the sans-IO boundary: datagrams in, transmits out.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;

/// An ECN codepoint of the IP header (RFC 3168, RFC 9000 §13.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcnCodepoint {
    /// ECT(0).
    Ect0,
    /// ECT(1).
    Ect1,
    /// Congestion experienced.
    Ce,
}

impl EcnCodepoint {
    /// The codepoint from the two ECN bits of the IP header; `None` for Not-ECT.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 0b11 {
            0b10 => Some(EcnCodepoint::Ect0),
            0b01 => Some(EcnCodepoint::Ect1),
            0b11 => Some(EcnCodepoint::Ce),
            _ => None,
        }
    }

    /// The two ECN bits of the IP header.
    pub fn bits(self) -> u8 {
        match self {
            EcnCodepoint::Ect0 => 0b10,
            EcnCodepoint::Ect1 => 0b01,
            EcnCodepoint::Ce => 0b11,
        }
    }
}

/// A received UDP datagram, handed to [`Endpoint::handle_datagram`](crate::Endpoint::handle_datagram).
#[derive(Debug, Clone)]
pub struct Datagram {
    /// The address it came from.
    pub remote: SocketAddr,
    /// The local address it arrived at, when the socket layer knows it (pktinfo).
    pub local: Option<IpAddr>,
    /// Its ECN marking.
    pub ecn: Option<EcnCodepoint>,
    /// The UDP payload. The engine decrypts in place and keeps zero-copy slices of it.
    pub payload: BytesMut,
}

/// A datagram (or a batch of equal-size datagrams) to send, returned by
/// [`Endpoint::poll_transmit`](crate::Endpoint::poll_transmit) with its bytes in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local address to send from, when it matters (the address the peer's datagrams arrived at).
    pub src_ip: Option<IpAddr>,
    /// The ECN marking to set.
    pub ecn: Option<EcnCodepoint>,
    /// Total bytes written to the buffer.
    pub size: usize,
    /// When set, the buffer holds several datagrams of this size (the last may be shorter), ready for GSO;
    /// when `None`, it holds one datagram of `size` bytes.
    pub segment_size: Option<usize>,
}

impl Transmit {
    /// The datagrams this transmit holds, split from `buf` (the buffer given to `poll_transmit`).
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let buf = buf.get(..self.size).unwrap_or(buf);
        buf.chunks(self.segment_size.unwrap_or(self.size).max(1))
    }
}
