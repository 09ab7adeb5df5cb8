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
    /// The address it came from. An IPv4-mapped IPv6 address (a dual-stack socket's report of an IPv4
    /// peer) is taken as the IPv4 address it maps, and an IPv6 flow label is ignored: the endpoint knows
    /// each peer by one form, the one its transmits name.
    pub remote: SocketAddr,
    /// The local address it arrived at, when the socket layer knows it (pktinfo). A datagram that
    /// arrived at a multicast, broadcast or unspecified address is dropped: QUIC runs over unicast, and
    /// an answer from such an address is refused by the system.
    pub local: Option<IpAddr>,
    /// Its ECN marking.
    pub ecn: Option<EcnCodepoint>,
    /// The UDP payload. The engine decrypts in place and keeps zero-copy slices of it.
    ///
    /// What it keeps is judged against the payload's length (held as it came only where that is a
    /// large share of it), so the payload should be an allocation of its own size, as
    /// `BytesMut::from(&buf[..n])` makes one: a view of a larger receive buffer that the caller reuses
    /// (spare capacity, or a slice split off it) keeps all of that buffer alive while any slice of the
    /// datagram is held.
    pub payload: BytesMut,
}

/// `addr` with an IPv4-mapped IPv6 address taken as the IPv4 address it maps, and without an IPv6 flow
/// label: RFC 9000 §1.2, an address is "the tuple of IP version, IP address, and UDP port number" (the
/// scope ID stays: it names the link of a link-local address).
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(mut v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => {
                v6.set_flowinfo(0);
                SocketAddr::V6(v6)
            }
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Writes `d`'s addresses in their canonical form (IPv4-mapped IPv6 addresses as IPv4 ones, IPv6 ones
/// without a flow label: see [`canonical`]), in place; returns whether both name one host and the remote
/// port is not 0.
#[inline(always)]
pub(crate) fn canonical_unicast(d: &mut Datagram) -> bool {
    if let SocketAddr::V6(v6) = &mut d.remote {
        match v6.ip().to_ipv4_mapped() {
            Some(v4) => d.remote = SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => v6.set_flowinfo(0),
        }
    }
    if let Some(IpAddr::V6(v6)) = d.local {
        if let Some(v4) = v6.to_ipv4_mapped() {
            d.local = Some(IpAddr::V4(v4));
        }
    }
    d.remote.port() != 0 && is_unicast(d.remote.ip()) && d.local.map_or(true, is_unicast)
}

/// Whether `ip` names one host: not multicast, broadcast (255.255.255.255) or unspecified.
#[inline]
pub(crate) fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// The most bytes one [`Transmit`] holds: what one UDP send carries over IPv4 (65,535 less the IP and
/// UDP headers; IPv6 allows 20 more, one bound serves both), GSO or not.
pub(crate) const MAX_TRANSMIT_SIZE: usize = 65_507;

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
