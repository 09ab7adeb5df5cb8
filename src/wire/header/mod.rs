//! Packet headers (RFC 9000 §17, RFC 8999, RFC 9369 §3).
//!
//! Parsing takes two steps, because header protection hides the packet number and the low bits of the
//! first byte (RFC 9001 §5.4):
//!
//! 1. [`ProtectedHeader::decode`] reads the unprotected part: the packet type, version, connection IDs,
//!    token and length, and says where the packet number starts and where the packet ends (so coalesced
//!    packets can be split, RFC 9000 §12.2).
//! 2. After header protection is removed in place, [`ProtectedHeader::finish`] reads the packet number,
//!    the key phase and the reserved bits.
//!
//! [`InvariantHeader`] is the version-independent view of RFC 8999, used to answer unknown versions.

use std::ops::Range;

use bytes::{BufMut, Bytes};

use super::packet_number::TruncatedPn;
use super::{ConnectionId, DecodeError, Reader, VarInt};

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// The versions whose packets this module parses beyond the invariants.
pub const SUPPORTED_VERSIONS: [u32; 2] = [VERSION_1, VERSION_2];

/// Whether `version` is one this crate parses.
pub fn is_supported_version(version: u32) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

const LONG_FORM: u8 = 0x80;
const FIXED_BIT: u8 = 0x40;
const SPIN_BIT: u8 = 0x20;
const KEY_PHASE_BIT: u8 = 0x04;
const RETRY_TAG_LEN: usize = 16;

/// The type of a long-header packet (RFC 9000 §17.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LongType {
    /// Initial (RFC 9000 §17.2.2).
    Initial,
    /// 0-RTT (RFC 9000 §17.2.3).
    ZeroRtt,
    /// Handshake (RFC 9000 §17.2.4).
    Handshake,
    /// Retry (RFC 9000 §17.2.5).
    Retry,
}

impl LongType {
    /// The type for the two type bits of the first byte; v2 permutes them (RFC 9369 §3.2).
    pub fn from_bits(version: u32, bits: u8) -> Self {
        match (version == VERSION_2, bits & 0x03) {
            (false, 0) | (true, 1) => LongType::Initial,
            (false, 1) | (true, 2) => LongType::ZeroRtt,
            (false, 2) | (true, 3) => LongType::Handshake,
            _ => LongType::Retry,
        }
    }

    /// The two type bits for this type in `version`.
    pub fn to_bits(self, version: u32) -> u8 {
        let v1 = match self {
            LongType::Initial => 0,
            LongType::ZeroRtt => 1,
            LongType::Handshake => 2,
            LongType::Retry => 3,
        };
        if version == VERSION_2 {
            (v1 + 1) & 0x03
        } else {
            v1
        }
    }
}

/// Why a header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A long header of a version this crate does not speak: the caller may answer with Version
    /// Negotiation (RFC 9000 §6) using [`InvariantHeader`].
    UnsupportedVersion(u32),
    /// The header is malformed or truncated; the packet (and the rest of its datagram) is dropped.
    Malformed(DecodeError),
}

impl From<DecodeError> for HeaderError {
    fn from(e: DecodeError) -> Self {
        HeaderError::Malformed(e)
    }
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported version {v:#010x}"),
            HeaderError::Malformed(e) => write!(f, "malformed header: {e}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The version-independent header of RFC 8999, with connection IDs of up to 255 bytes in long headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvariantHeader<'a> {
    /// A long header (RFC 8999 §5.1).
    Long {
        /// The version field.
        version: u32,
        /// Destination connection ID.
        dcid: &'a [u8],
        /// Source connection ID.
        scid: &'a [u8],
    },
    /// A short header (RFC 8999 §5.2); the destination connection ID length is known to the receiver.
    Short {
        /// Destination connection ID.
        dcid: &'a [u8],
    },
}

impl<'a> InvariantHeader<'a> {
    /// Parses the invariant fields at the start of `packet`; `short_dcid_len` is the length of the
    /// connection IDs the receiver issues.
    pub fn decode(packet: &'a [u8], short_dcid_len: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(packet);
        let first = r.read_u8()?;
        if first & LONG_FORM == 0 {
            return Ok(InvariantHeader::Short {
                dcid: r.read_slice(short_dcid_len)?,
            });
        }
        let version = r.read_u32()?;
        let dcid_len = r.read_u8()?;
        let dcid = r.read_slice(usize::from(dcid_len))?;
        let scid_len = r.read_u8()?;
        let scid = r.read_slice(usize::from(scid_len))?;
        Ok(InvariantHeader::Long { version, dcid, scid })
    }

    /// The destination connection ID.
    pub fn dcid(&self) -> &'a [u8] {
        match self {
            InvariantHeader::Long { dcid, .. } | InvariantHeader::Short { dcid } => dcid,
        }
    }
}

/// The part of a packet header readable before header protection is removed.
///
/// Byte ranges (`token`, `versions`) index the packet slice given to [`ProtectedHeader::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectedHeader {
    /// An Initial, 0-RTT or Handshake packet.
    Long {
        /// Initial, ZeroRtt or Handshake (never Retry).
        ty: LongType,
        /// The version field.
        version: u32,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID.
        scid: ConnectionId,
        /// The token of an Initial packet (empty for other types).
        token: Range<usize>,
        /// Offset of the packet number.
        pn_offset: usize,
        /// Length of the whole packet, header included.
        len: usize,
    },
    /// A Retry packet (RFC 9000 §17.2.5).
    Retry {
        /// The version field.
        version: u32,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID: the new connection ID the server chose.
        scid: ConnectionId,
        /// The retry token.
        token: Range<usize>,
        /// The Retry integrity tag (RFC 9001 §5.8).
        tag: [u8; RETRY_TAG_LEN],
        /// Length of the whole packet (the rest of the datagram).
        len: usize,
    },
    /// A short-header (1-RTT) packet (RFC 9000 §17.3.1).
    Short {
        /// The first byte, still protected except for the spin bit.
        first: u8,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Offset of the packet number.
        pn_offset: usize,
        /// Length of the whole packet (the rest of the datagram).
        len: usize,
    },
    /// A Version Negotiation packet (RFC 9000 §17.2.1).
    VersionNegotiation {
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID.
        scid: ConnectionId,
        /// The supported versions list, a multiple of 4 bytes.
        versions: Range<usize>,
        /// Length of the whole packet (the rest of the datagram).
        len: usize,
    },
}

/// What [`ProtectedHeader::finish`] reads once header protection is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainHeader {
    /// The truncated packet number.
    pub pn: TruncatedPn,
    /// Length of the header including the packet number: the AEAD's associated data.
    pub header_len: usize,
    /// The key phase bit of a short header (RFC 9001 §6); false for long headers.
    pub key_phase: bool,
    /// The reserved bits, which must be zero once payload protection is removed too (RFC 9000 §17.2,
    /// §17.3.1: PROTOCOL_VIOLATION otherwise).
    pub reserved_bits: u8,
}

impl ProtectedHeader {
    /// Parses the unprotected part of the packet that starts `packet`, whose receiver issues connection
    /// IDs of `short_dcid_len` bytes.
    ///
    /// Inlined for the short header, the one of nearly every packet, so that its caller builds it in
    /// place; long headers are parsed out of line.
    #[inline]
    pub fn decode(packet: &[u8], short_dcid_len: usize) -> Result<Self, HeaderError> {
        let mut r = Reader::new(packet);
        let first = r.read_u8()?;
        if first & LONG_FORM != 0 {
            return Self::decode_long(packet);
        }
        // RFC 9000 §17.3.1: a zero fixed bit is not a valid packet of this version.
        if first & FIXED_BIT == 0 {
            return Err(DecodeError::Invalid("fixed bit is zero").into());
        }
        let dcid = ConnectionId::decode_fixed(&mut r, short_dcid_len)?;
        Ok(ProtectedHeader::Short {
            first,
            dcid,
            pn_offset: r.position(),
            len: packet.len(),
        })
    }

    /// [`decode`](Self::decode) for a packet whose first byte has the long-header form bit set.
    #[inline(never)]
    fn decode_long(packet: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(packet);
        let first = r.read_u8()?;
        let version = r.read_u32()?;
        if version == 0 {
            // RFC 9000 §17.2.1: the fixed bit and type bits of Version Negotiation are unused.
            let dcid = ConnectionId::decode_prefixed(&mut r)?;
            let scid = ConnectionId::decode_prefixed(&mut r)?;
            let start = r.position();
            let rest = r.read_rest();
            if rest.is_empty() || rest.len() % 4 != 0 {
                return Err(DecodeError::Invalid("version list is empty or not a multiple of 4").into());
            }
            return Ok(ProtectedHeader::VersionNegotiation {
                dcid,
                scid,
                versions: start..packet.len(),
                len: packet.len(),
            });
        }
        if !is_supported_version(version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        // RFC 9000 §17.2: packets with a zero fixed bit MUST be discarded.
        if first & FIXED_BIT == 0 {
            return Err(DecodeError::Invalid("fixed bit is zero").into());
        }
        // RFC 9000 §17.2: a v1 connection ID longer than 20 bytes MUST be dropped.
        let dcid = ConnectionId::decode_prefixed(&mut r)?;
        let scid = ConnectionId::decode_prefixed(&mut r)?;
        let ty = LongType::from_bits(version, first >> 4);
        let token = match ty {
            LongType::Retry => {
                let start = r.position();
                let rest_len = r.remaining();
                let token_len = rest_len.checked_sub(RETRY_TAG_LEN).ok_or(DecodeError::Invalid(
                    "Retry packet shorter than its integrity tag",
                ))?;
                r.skip(token_len)?;
                let tag = r.read_array()?;
                return Ok(ProtectedHeader::Retry {
                    version,
                    dcid,
                    scid,
                    token: start..start + token_len,
                    tag,
                    len: packet.len(),
                });
            }
            LongType::Initial => {
                let token_len = r.read_varint_len()?;
                let start = r.position();
                r.skip(token_len)?;
                start..start + token_len
            }
            LongType::ZeroRtt | LongType::Handshake => r.position()..r.position(),
        };
        let length = r.read_varint_len()?;
        let pn_offset = r.position();
        // RFC 9000 §17.2: Length covers the packet number and the payload.
        if length > r.remaining() {
            return Err(DecodeError::Invalid("Length field runs past the end of the datagram").into());
        }
        Ok(ProtectedHeader::Long {
            ty,
            version,
            dcid,
            scid,
            token,
            pn_offset,
            len: pn_offset + length,
        })
    }

    /// Reads the packet number, key phase and reserved bits of `packet` after header protection has been
    /// removed in place.
    pub fn finish(&self, packet: &[u8]) -> Result<PlainHeader, DecodeError> {
        let pn_offset = self
            .pn_offset()
            .ok_or(DecodeError::Invalid("packet type has no packet number"))?;
        let mut r = Reader::new(packet);
        let first = r.read_u8()?;
        r.skip(pn_offset.saturating_sub(1))?;
        let pn = TruncatedPn::decode(&mut r, usize::from(first & 0x03) + 1)?;
        if r.position() > self.len() {
            return Err(DecodeError::Invalid("packet number runs past the packet"));
        }
        let short = matches!(self, ProtectedHeader::Short { .. });
        Ok(PlainHeader {
            pn,
            header_len: r.position(),
            key_phase: short && first & KEY_PHASE_BIT != 0,
            reserved_bits: if short { first & 0x18 } else { first & 0x0c },
        })
    }

    /// The destination connection ID.
    pub fn dcid(&self) -> &ConnectionId {
        match self {
            ProtectedHeader::Long { dcid, .. }
            | ProtectedHeader::Retry { dcid, .. }
            | ProtectedHeader::Short { dcid, .. }
            | ProtectedHeader::VersionNegotiation { dcid, .. } => dcid,
        }
    }

    /// The source connection ID of a long header.
    pub fn scid(&self) -> Option<&ConnectionId> {
        match self {
            ProtectedHeader::Long { scid, .. }
            | ProtectedHeader::Retry { scid, .. }
            | ProtectedHeader::VersionNegotiation { scid, .. } => Some(scid),
            ProtectedHeader::Short { .. } => None,
        }
    }

    /// Where the packet number starts, for packets that have one.
    pub fn pn_offset(&self) -> Option<usize> {
        match self {
            ProtectedHeader::Long { pn_offset, .. } | ProtectedHeader::Short { pn_offset, .. } => {
                Some(*pn_offset)
            }
            _ => None,
        }
    }

    /// Length of the whole packet within its datagram; the next coalesced packet starts there.
    pub fn len(&self) -> usize {
        match self {
            ProtectedHeader::Long { len, .. }
            | ProtectedHeader::Retry { len, .. }
            | ProtectedHeader::Short { len, .. }
            | ProtectedHeader::VersionNegotiation { len, .. } => *len,
        }
    }

    /// Whether the packet is empty (never true for a parsed header; provided for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The long-header type, or `None` for short headers and Version Negotiation.
    pub fn long_type(&self) -> Option<LongType> {
        match self {
            ProtectedHeader::Long { ty, .. } => Some(*ty),
            ProtectedHeader::Retry { .. } => Some(LongType::Retry),
            _ => None,
        }
    }

    /// The version of a long header (0 for Version Negotiation, `None` for short headers).
    pub fn version(&self) -> Option<u32> {
        match self {
            ProtectedHeader::Long { version, .. } | ProtectedHeader::Retry { version, .. } => Some(*version),
            ProtectedHeader::VersionNegotiation { .. } => Some(0),
            ProtectedHeader::Short { .. } => None,
        }
    }

    /// The token of an Initial or Retry packet, sliced from the packet the header was parsed from.
    pub fn token<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        match self {
            ProtectedHeader::Long { token, .. } | ProtectedHeader::Retry { token, .. } => {
                packet.get(token.clone()).unwrap_or_default()
            }
            _ => &[],
        }
    }

    /// The spin bit of a short header, which header protection leaves visible (RFC 9000 §17.4).
    pub fn spin(&self) -> bool {
        matches!(self, ProtectedHeader::Short { first, .. } if first & SPIN_BIT != 0)
    }

    /// The versions listed in a Version Negotiation packet, read from the packet it was parsed from.
    pub fn versions<'a>(&self, packet: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        let list = match self {
            ProtectedHeader::VersionNegotiation { versions, .. } => {
                packet.get(versions.clone()).unwrap_or_default()
            }
            _ => &[],
        };
        list.chunks_exact(4)
            .map(|c| c.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
    }
}

/// Splits a datagram into its coalesced packets (RFC 9000 §12.2).
///
/// Yields each packet's offset in the datagram and its header. Iteration stops after an error, after a
/// packet that fills the rest of the datagram, and before a packet whose destination connection ID
/// differs from the first one's (which RFC 9000 §12.2 says receivers SHOULD ignore).
#[derive(Debug, Clone)]
pub struct Coalesced<'a> {
    datagram: &'a [u8],
    offset: usize,
    short_dcid_len: usize,
    first_dcid: Option<ConnectionId>,
    done: bool,
}

impl<'a> Coalesced<'a> {
    /// An iterator over the packets of `datagram`.
    pub fn new(datagram: &'a [u8], short_dcid_len: usize) -> Self {
        Self {
            datagram,
            offset: 0,
            short_dcid_len,
            first_dcid: None,
            done: false,
        }
    }
}

impl Iterator for Coalesced<'_> {
    type Item = Result<(usize, ProtectedHeader), HeaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.datagram.get(self.offset..).filter(|r| !r.is_empty());
        let Some(rest) = rest else {
            self.done = true;
            return None;
        };
        let header = match ProtectedHeader::decode(rest, self.short_dcid_len) {
            Ok(h) => h,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        match self.first_dcid {
            None => self.first_dcid = Some(*header.dcid()),
            Some(first) if first != *header.dcid() => {
                self.done = true;
                return None;
            }
            Some(_) => {}
        }
        let at = self.offset;
        self.offset += header.len();
        Some(Ok((at, header)))
    }
}

/// A header to write: Initial, 0-RTT, Handshake or short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// An Initial packet header.
    Initial {
        /// Version.
        version: u32,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID.
        scid: ConnectionId,
        /// Token (empty unless echoing a Retry or NEW_TOKEN token).
        token: Bytes,
    },
    /// A 0-RTT packet header.
    ZeroRtt {
        /// Version.
        version: u32,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID.
        scid: ConnectionId,
    },
    /// A Handshake packet header.
    Handshake {
        /// Version.
        version: u32,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID.
        scid: ConnectionId,
    },
    /// A short (1-RTT) header.
    Short {
        /// The spin bit (RFC 9000 §17.4).
        spin: bool,
        /// The key phase bit (RFC 9001 §6).
        key_phase: bool,
        /// Destination connection ID.
        dcid: ConnectionId,
    },
}

/// Where [`Header::encode`] put its fields, to finish the packet once its payload is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialEncode {
    /// Offset of the packet number (where header protection samples from, plus 4).
    pub pn_offset: usize,
    /// Length of the header including the packet number.
    pub header_len: usize,
    /// Offset of the 2-byte Length placeholder of a long header.
    length_offset: Option<usize>,
}

/// Width of the Length placeholder: packets up to 16383 bytes, more than any path MTU in practice.
const LENGTH_FIELD_LEN: usize = 2;

impl PartialEncode {
    /// Fills in the Length field of a long header for a packet of `packet_len` bytes in total (header,
    /// payload and AEAD tag); `packet` starts at the header. Nothing to do for short headers.
    pub fn set_length(&self, packet: &mut [u8], packet_len: usize) -> Result<(), DecodeError> {
        let Some(at) = self.length_offset else {
            return Ok(());
        };
        let length = packet_len
            .checked_sub(self.pn_offset)
            .ok_or(DecodeError::Invalid("packet shorter than its header"))?;
        let field = packet
            .get_mut(at..at + LENGTH_FIELD_LEN)
            .ok_or(DecodeError::Invalid("packet shorter than its header"))?;
        let mut out: &mut [u8] = field;
        VarInt::encode_with_len(length as u64, LENGTH_FIELD_LEN, &mut out)
            .ok_or(DecodeError::Invalid("packet too long for a 2-byte Length field"))
    }
}

impl Header {
    /// The destination connection ID.
    pub fn dcid(&self) -> &ConnectionId {
        match self {
            Header::Initial { dcid, .. }
            | Header::ZeroRtt { dcid, .. }
            | Header::Handshake { dcid, .. }
            | Header::Short { dcid, .. } => dcid,
        }
    }

    /// Writes the header with packet number `pn`. Long headers get a 2-byte Length placeholder that
    /// [`PartialEncode::set_length`] fills in. Reserved bits are written as zero.
    pub fn encode<B: BufMut>(&self, pn: TruncatedPn, buf: &mut B) -> PartialEncode {
        let (version, ty, dcid, scid, token) = match self {
            Header::Short {
                spin,
                key_phase,
                dcid,
            } => {
                let mut first = FIXED_BIT | pn.len_bits();
                if *spin {
                    first |= SPIN_BIT;
                }
                if *key_phase {
                    first |= KEY_PHASE_BIT;
                }
                buf.put_u8(first);
                buf.put_slice(dcid);
                pn.encode(buf);
                let pn_offset = 1 + dcid.len();
                return PartialEncode {
                    pn_offset,
                    header_len: pn_offset + pn.encoded_len(),
                    length_offset: None,
                };
            }
            Header::Initial {
                version,
                dcid,
                scid,
                token,
            } => (*version, LongType::Initial, dcid, scid, Some(token)),
            Header::ZeroRtt { version, dcid, scid } => (*version, LongType::ZeroRtt, dcid, scid, None),
            Header::Handshake { version, dcid, scid } => (*version, LongType::Handshake, dcid, scid, None),
        };
        buf.put_u8(LONG_FORM | FIXED_BIT | (ty.to_bits(version) << 4) | pn.len_bits());
        buf.put_u32(version);
        dcid.encode_prefixed(buf);
        scid.encode_prefixed(buf);
        let mut pos = 7 + dcid.len() + scid.len();
        if let Some(token) = token {
            let len = VarInt::saturating(token.len() as u64);
            len.encode(buf);
            buf.put_slice(token);
            pos += len.encoded_len() + token.len();
        }
        let length_offset = pos;
        buf.put_u16(0x4000);
        pn.encode(buf);
        let pn_offset = pos + LENGTH_FIELD_LEN;
        PartialEncode {
            pn_offset,
            header_len: pn_offset + pn.encoded_len(),
            length_offset: Some(length_offset),
        }
    }

    /// The number of bytes [`Header::encode`] writes with packet number `pn`.
    pub fn encoded_len(&self, pn: TruncatedPn) -> usize {
        match self {
            Header::Short { dcid, .. } => 1 + dcid.len() + pn.encoded_len(),
            Header::Initial {
                dcid, scid, token, ..
            } => {
                7 + dcid.len()
                    + scid.len()
                    + VarInt::size(token.len() as u64)
                    + token.len()
                    + LENGTH_FIELD_LEN
                    + pn.encoded_len()
            }
            Header::ZeroRtt { dcid, scid, .. } | Header::Handshake { dcid, scid, .. } => {
                7 + dcid.len() + scid.len() + LENGTH_FIELD_LEN + pn.encoded_len()
            }
        }
    }
}

/// A Retry packet without its integrity tag, which the caller appends (RFC 9001 §5.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryHeader {
    /// Version.
    pub version: u32,
    /// Destination connection ID: the client's source connection ID.
    pub dcid: ConnectionId,
    /// Source connection ID: the connection ID the server chose.
    pub scid: ConnectionId,
    /// The retry token.
    pub token: Bytes,
}

impl RetryHeader {
    /// Writes the Retry packet up to, not including, the integrity tag. The unused low four bits of the
    /// first byte are taken from `unused_bits` (RFC 9000 §17.2.5 leaves them unused).
    pub fn encode<B: BufMut>(&self, unused_bits: u8, buf: &mut B) {
        buf.put_u8(
            LONG_FORM | FIXED_BIT | (LongType::Retry.to_bits(self.version) << 4) | (unused_bits & 0x0f),
        );
        buf.put_u32(self.version);
        self.dcid.encode_prefixed(buf);
        self.scid.encode_prefixed(buf);
        buf.put_slice(&self.token);
    }

    /// The number of bytes [`RetryHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        7 + self.dcid.len() + self.scid.len() + self.token.len()
    }
}

/// Writes a Version Negotiation packet (RFC 9000 §17.2.1) answering a packet whose invariant header
/// carried `their_dcid` and `their_scid`: the connection IDs are swapped, as §6.1 requires.
/// `unused_bits` fills the seven unused bits of the first byte (a random value, by §17.2.1).
pub fn encode_version_negotiation<B: BufMut>(
    unused_bits: u8,
    their_dcid: &[u8],
    their_scid: &[u8],
    versions: &[u32],
    buf: &mut B,
) {
    buf.put_u8(LONG_FORM | (unused_bits & 0x7f));
    buf.put_u32(0);
    // Invariant connection IDs are at most 255 bytes, so the casts cannot truncate a valid input.
    buf.put_u8(their_scid.len().min(255) as u8);
    buf.put_slice(their_scid.get(..255).unwrap_or(their_scid));
    buf.put_u8(their_dcid.len().min(255) as u8);
    buf.put_slice(their_dcid.get(..255).unwrap_or(their_dcid));
    for v in versions {
        buf.put_u32(*v);
    }
}

#[cfg(test)]
mod tests;
