//! Stream IDs (RFC 9000 §2.1) and the data-bearing frames: STREAM (§19.8), CRYPTO (§19.6) and DATAGRAM
//! (RFC 9221 §4).

use std::fmt;

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes};

use super::{put_varint, ty, FrameError};
use crate::wire::{DecodeError, Reader, VarInt};
use crate::Side;

/// The direction of a stream (RFC 9000 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Bidirectional: both ends send.
    Bi,
    /// Unidirectional: only the initiator sends.
    Uni,
}

/// A stream ID (RFC 9000 §2.1): a 62-bit integer whose two low bits give the initiator and direction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The stream ID of the `index`-th stream (counting from 0) opened by `initiator` in direction `dir`.
    ///
    /// `index` must be below 2^60 for the result to be a valid stream ID (RFC 9000 §19.11).
    pub const fn new(initiator: Side, dir: Dir, index: u64) -> Self {
        // RFC 9000 §2.1: bit 0 is the initiator (0 client, 1 server), bit 1 the direction (0 bidi, 1 uni).
        let side_bit = match initiator {
            Side::Client => 0,
            Side::Server => 1,
        };
        let dir_bit = match dir {
            Dir::Bi => 0,
            Dir::Uni => 2,
        };
        StreamId((index << 2) | dir_bit | side_bit)
    }

    /// The endpoint that opened the stream.
    pub const fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// The direction of the stream.
    pub const fn dir(self) -> Dir {
        if self.0 & 2 == 0 {
            Dir::Bi
        } else {
            Dir::Uni
        }
    }

    /// Whether the stream is bidirectional.
    pub const fn is_bidi(self) -> bool {
        self.0 & 2 == 0
    }

    /// Whether the stream is unidirectional.
    pub const fn is_uni(self) -> bool {
        !self.is_bidi()
    }

    /// The position of this stream among the streams of the same initiator and direction, from 0.
    pub const fn index(self) -> u64 {
        self.0 >> 2
    }
}

impl From<StreamId> for u64 {
    fn from(id: StreamId) -> u64 {
        id.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.initiator() {
            Side::Client => "client",
            Side::Server => "server",
        };
        let dir = match self.dir() {
            Dir::Bi => "bidi",
            Dir::Uni => "uni",
        };
        write!(f, "{} ({side} {dir} #{})", self.0, self.index())
    }
}

/// The largest offset plus length any stream may reach: 2^62 - 1 (RFC 9000 §19.6, §19.8).
const MAX_STREAM_END: u64 = VarInt::MAX.into_inner();

/// Checks that `offset + len` stays within 2^62 - 1.
fn check_end(offset: u64, len: usize) -> Result<(), DecodeError> {
    let end = u64::try_from(len).ok().and_then(|len| offset.checked_add(len));
    match end {
        Some(end) if end <= MAX_STREAM_END => Ok(()),
        _ => Err(DecodeError::Invalid("offset + length exceeds 2^62 - 1")),
    }
}

/// The largest `n` such that a length field for `n` plus `n` bytes fit in `avail` bytes.
fn max_with_len_prefix(avail: usize) -> usize {
    const LIMITS: [(usize, u64); 4] = [
        (1, (1 << 6) - 1),
        (2, (1 << 14) - 1),
        (4, (1 << 30) - 1),
        (8, MAX_STREAM_END),
    ];
    LIMITS
        .iter()
        .filter_map(|&(prefix, limit)| {
            let n = avail.checked_sub(prefix)?;
            Some(usize::try_from(limit).map_or(n, |limit| n.min(limit)))
        })
        .max()
        .unwrap_or(0)
}

/// A STREAM frame (RFC 9000 §19.8): a slice of one stream's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// The stream the data belongs to.
    pub id: StreamId,
    /// The offset of the first byte of `data` in the stream.
    pub offset: u64,
    /// Whether this frame carries the end of the stream.
    pub fin: bool,
    /// The data, a zero-copy slice of the packet when decoded.
    pub data: Bytes,
}

impl StreamFrame {
    const FIN: u64 = 0x01;
    const LEN: u64 = 0x02;
    const OFF: u64 = 0x04;

    /// Decodes the fields after the frame type `frame_type` (0x08 to 0x0f).
    pub(super) fn decode_body(r: &mut Reader<'_>, frame_type: u64) -> Result<Self, DecodeError> {
        let (id, offset, data) = Self::decode_fields(r, frame_type)?;
        Ok(Self {
            id,
            offset,
            fin: frame_type & Self::FIN != 0,
            data: r.bytes_of(data),
        })
    }

    /// Reads the fields after the frame type and skips the data: the stream, the offset, and where the
    /// data lies in the reader's buffer.
    #[inline(always)]
    fn decode_fields(
        r: &mut Reader<'_>,
        frame_type: u64,
    ) -> Result<(StreamId, u64, Range<usize>), DecodeError> {
        let id = StreamId(r.read_varint()?);
        let offset = if frame_type & Self::OFF != 0 {
            r.read_varint()?
        } else {
            0
        };
        let len = if frame_type & Self::LEN != 0 {
            r.read_varint_len()?
        } else {
            r.remaining()
        };
        let start = r.position();
        r.skip(len)?;
        // RFC 9000 §19.8: offset + length beyond 2^62 - 1 MUST be a FRAME_ENCODING_ERROR or
        // FLOW_CONTROL_ERROR; we report FRAME_ENCODING_ERROR.
        check_end(offset, len)?;
        Ok((id, offset, start..r.position()))
    }

    /// Decodes the STREAM frame at `*pos` in `payload` and moves `*pos` past it, or returns `None` (and
    /// leaves `*pos`) when the frame there is of another type. Gives the same frame and type as received,
    /// or the same error, as [`Frame::decode_typed`](super::Frame::decode_typed) would.
    ///
    /// The data is cut from `payload` without copying. When it runs to the end of `payload` (the usual
    /// case: STREAM is the last frame of most packets), `payload` itself becomes the data and is left
    /// empty, which spares a reference count increment and decrement per packet.
    #[inline]
    pub(crate) fn decode_owned(
        payload: &mut Bytes,
        pos: &mut usize,
    ) -> Option<Result<(StreamFrame, u64), FrameError>> {
        // Only the minimal, one-byte encodings of the types; a longer one goes through `Frame::decode`.
        let frame_type = u64::from(*payload.get(*pos)?);
        if !(ty::STREAM..=ty::STREAM_LAST).contains(&frame_type) {
            return None;
        }
        let mut r = Reader::new(payload);
        let fields = r
            .skip(*pos + 1)
            .and_then(|()| Self::decode_fields(&mut r, frame_type));
        let (id, offset, range) = match fields {
            Ok(fields) => fields,
            Err(kind) => return Some(Err(FrameError { frame_type, kind })),
        };
        *pos = range.end;
        let data = if range.end == payload.len() {
            let mut data = std::mem::take(payload);
            data.advance(range.start);
            data
        } else {
            payload.slice(range)
        };
        let frame = Self {
            id,
            offset,
            fin: frame_type & Self::FIN != 0,
            data,
        };
        Some(Ok((frame, frame_type)))
    }

    /// The frame type this frame encodes with: 0x08 plus the OFF, LEN and FIN bits.
    pub fn frame_type(&self, with_len: bool) -> u64 {
        let mut t = ty::STREAM;
        if self.offset != 0 {
            t |= Self::OFF;
        }
        if with_len {
            t |= Self::LEN;
        }
        if self.fin {
            t |= Self::FIN;
        }
        t
    }

    /// Writes the frame. Without the length field (`with_len == false`) the data runs to the end of the
    /// packet, so the frame must be the last in its packet.
    ///
    /// # Panics
    ///
    /// When the stream ID or offset is 2^62 or more (a caller bug: such values cannot be sent).
    pub fn encode(&self, buf: &mut impl BufMut, with_len: bool) {
        put_varint(buf, self.frame_type(with_len));
        put_varint(buf, self.id.0);
        if self.offset != 0 {
            put_varint(buf, self.offset);
        }
        if with_len {
            put_varint(buf, self.data.len() as u64);
        }
        buf.put_slice(&self.data);
    }

    /// The number of bytes [`StreamFrame::encode`] writes.
    pub fn encoded_len(&self, with_len: bool) -> usize {
        Self::header_len(self.id, self.offset, self.data.len(), with_len) + self.data.len()
    }

    /// The size of a STREAM frame header (type, ID, offset and, when `with_len`, length) for `data_len`
    /// bytes of data at `offset` of stream `id`.
    pub fn header_len(id: StreamId, offset: u64, data_len: usize, with_len: bool) -> usize {
        let offset_len = if offset != 0 { VarInt::size(offset) } else { 0 };
        let len_len = if with_len {
            VarInt::size(data_len as u64)
        } else {
            0
        };
        1 + VarInt::size(id.0) + offset_len + len_len
    }

    /// How many data bytes a STREAM frame for `id` at `offset` can carry in `space` bytes, or `None` when
    /// not even the header of an empty frame fits.
    pub fn max_data_len(id: StreamId, offset: u64, space: usize, with_len: bool) -> Option<usize> {
        let fixed = Self::header_len(id, offset, 0, false);
        let avail = space.checked_sub(fixed)?;
        if !with_len {
            return Some(avail);
        }
        avail.checked_sub(1)?;
        Some(max_with_len_prefix(avail))
    }
}

/// A CRYPTO frame (RFC 9000 §19.6): a slice of the TLS handshake stream of one packet number space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoFrame {
    /// The offset of the first byte of `data` in the crypto stream.
    pub offset: u64,
    /// The data, a zero-copy slice of the packet when decoded.
    pub data: Bytes,
}

impl CryptoFrame {
    /// Decodes the fields after the frame type.
    pub(super) fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.read_varint()?;
        let len = r.read_varint_len()?;
        let data = r.read_bytes(len)?;
        // RFC 9000 §19.6: offset + length beyond 2^62 - 1 MUST be a FRAME_ENCODING_ERROR or
        // CRYPTO_BUFFER_EXCEEDED; we report FRAME_ENCODING_ERROR.
        check_end(offset, data.len())?;
        Ok(Self { offset, data })
    }

    /// Writes the frame, type included.
    ///
    /// # Panics
    ///
    /// When the offset is 2^62 or more (a caller bug).
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_varint(buf, ty::CRYPTO);
        put_varint(buf, self.offset);
        put_varint(buf, self.data.len() as u64);
        buf.put_slice(&self.data);
    }

    /// The number of bytes [`CryptoFrame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        Self::header_len(self.offset, self.data.len()) + self.data.len()
    }

    /// The size of a CRYPTO frame header for `data_len` bytes at `offset`.
    pub fn header_len(offset: u64, data_len: usize) -> usize {
        1 + VarInt::size(offset) + VarInt::size(data_len as u64)
    }

    /// How many data bytes a CRYPTO frame at `offset` can carry in `space` bytes, or `None` when not
    /// even the header of an empty frame fits.
    pub fn max_data_len(offset: u64, space: usize) -> Option<usize> {
        let avail = space.checked_sub(1 + VarInt::size(offset))?;
        avail.checked_sub(1)?;
        Some(max_with_len_prefix(avail))
    }
}

/// A DATAGRAM frame (RFC 9221 §4): one unreliable application datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The datagram, a zero-copy slice of the packet when decoded. It may be empty (RFC 9221 §4).
    pub data: Bytes,
}

impl Datagram {
    const LEN: u64 = 0x01;

    /// Decodes the fields after the frame type `frame_type` (0x30 or 0x31).
    pub(super) fn decode_body(r: &mut Reader<'_>, frame_type: u64) -> Result<Self, DecodeError> {
        // RFC 9221 §4: without the LEN bit the data extends to the end of the packet.
        let len = if frame_type & Self::LEN != 0 {
            r.read_varint_len()?
        } else {
            r.remaining()
        };
        Ok(Self {
            data: r.read_bytes(len)?,
        })
    }

    /// The frame type this frame encodes with: 0x31 with the length field, 0x30 without.
    pub fn frame_type(with_len: bool) -> u64 {
        if with_len {
            ty::DATAGRAM | Self::LEN
        } else {
            ty::DATAGRAM
        }
    }

    /// Writes the frame. Without the length field the data runs to the end of the packet, so the frame
    /// must be the last in its packet.
    pub fn encode(&self, buf: &mut impl BufMut, with_len: bool) {
        put_varint(buf, Self::frame_type(with_len));
        if with_len {
            put_varint(buf, self.data.len() as u64);
        }
        buf.put_slice(&self.data);
    }

    /// The number of bytes [`Datagram::encode`] writes.
    pub fn encoded_len(&self, with_len: bool) -> usize {
        Self::header_len(self.data.len(), with_len) + self.data.len()
    }

    /// The size of a DATAGRAM frame header for `data_len` bytes.
    pub fn header_len(data_len: usize, with_len: bool) -> usize {
        1 + if with_len {
            VarInt::size(data_len as u64)
        } else {
            0
        }
    }

    /// How many data bytes a DATAGRAM frame can carry in `space` bytes, or `None` when not even an empty
    /// frame fits.
    pub fn max_data_len(space: usize, with_len: bool) -> Option<usize> {
        let avail = space.checked_sub(1)?;
        if !with_len {
            return Some(avail);
        }
        avail.checked_sub(1)?;
        Some(max_with_len_prefix(avail))
    }
}
