//! Frames (RFC 9000 §19, RFC 9221 §4).
//!
//! [`Frames`] walks the decrypted payload of a packet and yields one [`Frame`] at a time. Data-bearing
//! frames (STREAM, CRYPTO, DATAGRAM, NEW_TOKEN, close reasons) keep zero-copy [`Bytes`] slices of that
//! payload. Every rule the RFC states about a frame's own encoding is checked while decoding; a violation
//! is a [`FrameError`], which becomes a FRAME_ENCODING_ERROR [`TransportError`] in exactly one place.
//! Rules that need connection state (stream limits, which side may send a frame, whether DATAGRAM was
//! negotiated) belong to the connection layer.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes};

use super::{ConnectionId, DecodeError, Reader, ResetToken, TransportError, TransportErrorCode, VarInt};

mod ack;
mod stream;
#[cfg(test)]
mod tests;

pub use ack::{AckFrame, AckRanges, AckRangesIter, EcnCounts, InvalidAckRanges};
pub use stream::{CryptoFrame, Datagram, Dir, StreamFrame, StreamId};

/// Frame type values (RFC 9000 §12.4 Table 3, RFC 9221 §4).
pub(crate) mod ty {
    pub(crate) const PADDING: u64 = 0x00;
    pub(crate) const PING: u64 = 0x01;
    pub(crate) const ACK: u64 = 0x02;
    pub(crate) const ACK_ECN: u64 = 0x03;
    pub(crate) const RESET_STREAM: u64 = 0x04;
    pub(crate) const STOP_SENDING: u64 = 0x05;
    pub(crate) const CRYPTO: u64 = 0x06;
    pub(crate) const NEW_TOKEN: u64 = 0x07;
    pub(crate) const STREAM: u64 = 0x08;
    pub(crate) const STREAM_LAST: u64 = 0x0f;
    pub(crate) const MAX_DATA: u64 = 0x10;
    pub(crate) const MAX_STREAM_DATA: u64 = 0x11;
    pub(crate) const MAX_STREAMS_BIDI: u64 = 0x12;
    pub(crate) const MAX_STREAMS_UNI: u64 = 0x13;
    pub(crate) const DATA_BLOCKED: u64 = 0x14;
    pub(crate) const STREAM_DATA_BLOCKED: u64 = 0x15;
    pub(crate) const STREAMS_BLOCKED_BIDI: u64 = 0x16;
    pub(crate) const STREAMS_BLOCKED_UNI: u64 = 0x17;
    pub(crate) const NEW_CONNECTION_ID: u64 = 0x18;
    pub(crate) const RETIRE_CONNECTION_ID: u64 = 0x19;
    pub(crate) const PATH_CHALLENGE: u64 = 0x1a;
    pub(crate) const PATH_RESPONSE: u64 = 0x1b;
    pub(crate) const CONNECTION_CLOSE: u64 = 0x1c;
    pub(crate) const APPLICATION_CLOSE: u64 = 0x1d;
    pub(crate) const HANDSHAKE_DONE: u64 = 0x1e;
    pub(crate) const DATAGRAM: u64 = 0x30;
    pub(crate) const DATAGRAM_LEN: u64 = 0x31;
}

/// Writes `v` as a variable-length integer.
///
/// Frame encoders only see values below 2^62: decoded values always are, and the connection layer
/// never builds larger ones (stream IDs, offsets, counts and error codes are all bounded by the RFC).
fn put_varint(buf: &mut impl BufMut, v: u64) {
    VarInt::from_u64(v)
        .expect("frame fields are below 2^62 (encoder precondition)")
        .encode(buf);
}

/// The largest stream count a MAX_STREAMS or STREAMS_BLOCKED frame may carry: 2^60 (RFC 9000 §19.11).
pub const MAX_STREAM_COUNT: u64 = 1 << 60;

/// A frame that failed to decode: its type, and what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    /// The type of the offending frame; 0 when the type itself could not be read (RFC 9000 §19.19 uses
    /// 0 for "unknown").
    pub frame_type: u64,
    /// What was wrong.
    pub kind: DecodeError,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame of type {:#x}: {}", self.frame_type, self.kind)
    }
}

impl std::error::Error for FrameError {}

/// The number of zero bytes `bytes` starts with. PADDING fills most of an Initial or a path MTU probe,
/// so the run is scanned 16 bytes at a time, not byte by byte.
fn zero_run(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(16);
    let mut run = 0;
    for chunk in chunks.by_ref() {
        let word = chunk.try_into().map_or(1, u128::from_ne_bytes);
        if word != 0 {
            break;
        }
        run += 16;
    }
    let tail = bytes.get(run..).unwrap_or_default();
    run + tail.iter().position(|&b| b != 0).unwrap_or(tail.len())
}

impl From<FrameError> for TransportError {
    /// Every malformed or unknown frame is a FRAME_ENCODING_ERROR naming the frame type (RFC 9000 §12.4:
    /// "An endpoint MUST treat the receipt of a frame of unknown type as a connection error of type
    /// FRAME_ENCODING_ERROR"; §19 for the per-frame rules).
    fn from(e: FrameError) -> Self {
        let reason = match e.kind {
            DecodeError::UnexpectedEnd => "frame truncated",
            DecodeError::Invalid(why) => why,
        };
        TransportError::frame_encoding_error(reason).with_frame(e.frame_type)
    }
}

/// A RESET_STREAM frame (RFC 9000 §19.4): the sender abandons a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetStream {
    /// The stream being reset.
    pub id: StreamId,
    /// The application protocol error code.
    pub error_code: u64,
    /// The final size of the stream in bytes.
    pub final_size: u64,
}

/// A STOP_SENDING frame (RFC 9000 §19.5): the receiver asks the peer to stop sending on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSending {
    /// The stream to stop.
    pub id: StreamId,
    /// The application protocol error code.
    pub error_code: u64,
}

/// A MAX_STREAM_DATA frame (RFC 9000 §19.10): a stream's flow-control limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStreamData {
    /// The stream.
    pub id: StreamId,
    /// The largest offset the peer may send on the stream.
    pub max: u64,
}

/// A STREAM_DATA_BLOCKED frame (RFC 9000 §19.13): a stream is blocked by flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDataBlocked {
    /// The blocked stream.
    pub id: StreamId,
    /// The offset at which the sender is blocked.
    pub limit: u64,
}

/// A MAX_STREAMS frame (RFC 9000 §19.11): the cumulative number of streams the peer may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStreams {
    /// Which streams: type 0x12 is bidirectional, 0x13 unidirectional.
    pub dir: Dir,
    /// The limit, at most [`MAX_STREAM_COUNT`].
    pub count: u64,
}

/// A STREAMS_BLOCKED frame (RFC 9000 §19.14): the sender wants to open more streams than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsBlocked {
    /// Which streams: type 0x16 is bidirectional, 0x17 unidirectional.
    pub dir: Dir,
    /// The stream limit at the time the frame was sent, at most [`MAX_STREAM_COUNT`].
    pub limit: u64,
}

/// A NEW_CONNECTION_ID frame (RFC 9000 §19.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewConnectionId {
    /// The sequence number the issuer assigned to the connection ID.
    pub sequence: u64,
    /// Connection IDs with smaller sequence numbers must be retired; at most `sequence`.
    pub retire_prior_to: u64,
    /// The connection ID, 1 to 20 bytes.
    pub id: ConnectionId,
    /// The stateless reset token that goes with it.
    pub reset_token: ResetToken,
}

/// The error code of a CONNECTION_CLOSE frame, which says which of its two types it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Type 0x1c: a transport error (or NO_ERROR).
    Transport {
        /// The transport error code.
        code: TransportErrorCode,
        /// The type of the frame that triggered the error, 0 when unknown (RFC 9000 §19.19).
        frame_type: u64,
    },
    /// Type 0x1d: an application protocol error code.
    Application(u64),
}

/// A CONNECTION_CLOSE frame (RFC 9000 §19.19), of type 0x1c or 0x1d.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionClose {
    /// The error code and its space.
    pub code: CloseCode,
    /// The reason phrase (should be UTF-8, not checked), a zero-copy slice of the packet when decoded.
    pub reason: Bytes,
}

impl ConnectionClose {
    /// How much of `reason` to keep when at most `max` bytes of it fit: `max`, less the start of a
    /// UTF-8 character it would cut through (RFC 9000 §19.19: the reason SHOULD be UTF-8; a reason that
    /// is not is cut anywhere).
    pub(crate) fn reason_cut(reason: &[u8], max: usize) -> usize {
        if max >= reason.len() {
            return reason.len();
        }
        match std::str::from_utf8(reason) {
            Ok(text) => (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0),
            Err(_) => max,
        }
    }

    /// The frame type: 0x1c for a transport error, 0x1d for an application error.
    pub fn frame_type(&self) -> u64 {
        match self.code {
            CloseCode::Transport { .. } => ty::CONNECTION_CLOSE,
            CloseCode::Application(_) => ty::APPLICATION_CLOSE,
        }
    }

    fn decode_body(r: &mut Reader<'_>, frame_type: u64) -> Result<Self, DecodeError> {
        let error_code = r.read_varint()?;
        let code = if frame_type == ty::CONNECTION_CLOSE {
            CloseCode::Transport {
                code: TransportErrorCode(error_code),
                frame_type: r.read_varint()?,
            }
        } else {
            CloseCode::Application(error_code)
        };
        let len = r.read_varint_len()?;
        Ok(Self {
            code,
            reason: r.read_bytes(len)?,
        })
    }

    fn encode(&self, buf: &mut impl BufMut) {
        put_varint(buf, self.frame_type());
        match self.code {
            CloseCode::Transport { code, frame_type } => {
                put_varint(buf, code.0);
                put_varint(buf, frame_type);
            }
            CloseCode::Application(code) => put_varint(buf, code),
        }
        put_varint(buf, self.reason.len() as u64);
        buf.put_slice(&self.reason);
    }

    fn encoded_len(&self) -> usize {
        let code_len = match self.code {
            CloseCode::Transport { code, frame_type } => VarInt::size(code.0) + VarInt::size(frame_type),
            CloseCode::Application(code) => VarInt::size(code),
        };
        1 + code_len + VarInt::size(self.reason.len() as u64) + self.reason.len()
    }
}

impl From<TransportError> for ConnectionClose {
    /// The CONNECTION_CLOSE (type 0x1c) frame that reports `e` to the peer.
    fn from(e: TransportError) -> Self {
        let reason = match e.reason {
            Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        };
        // RFC 9000 §19.19: a frame type of 0 is used when the frame type is unknown.
        Self {
            code: CloseCode::Transport {
                code: e.code,
                frame_type: e.frame_type.unwrap_or(0),
            },
            reason,
        }
    }
}

/// One QUIC frame (RFC 9000 §19, RFC 9221 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// PADDING (0x00, §19.1): a run of this many zero bytes, decoded as one frame.
    Padding(usize),
    /// PING (0x01, §19.2).
    Ping,
    /// ACK (0x02, or 0x03 with ECN counts; §19.3).
    Ack(AckFrame),
    /// RESET_STREAM (0x04, §19.4).
    ResetStream(ResetStream),
    /// STOP_SENDING (0x05, §19.5).
    StopSending(StopSending),
    /// CRYPTO (0x06, §19.6).
    Crypto(CryptoFrame),
    /// NEW_TOKEN (0x07, §19.7): a non-empty address validation token.
    NewToken(Bytes),
    /// STREAM (0x08 to 0x0f, §19.8).
    Stream(StreamFrame),
    /// MAX_DATA (0x10, §19.9): the connection's flow-control limit.
    MaxData(u64),
    /// MAX_STREAM_DATA (0x11, §19.10).
    MaxStreamData(MaxStreamData),
    /// MAX_STREAMS (0x12 bidirectional, 0x13 unidirectional; §19.11).
    MaxStreams(MaxStreams),
    /// DATA_BLOCKED (0x14, §19.12): the connection-level limit at which the sender is blocked.
    DataBlocked(u64),
    /// STREAM_DATA_BLOCKED (0x15, §19.13).
    StreamDataBlocked(StreamDataBlocked),
    /// STREAMS_BLOCKED (0x16 bidirectional, 0x17 unidirectional; §19.14).
    StreamsBlocked(StreamsBlocked),
    /// NEW_CONNECTION_ID (0x18, §19.15).
    NewConnectionId(NewConnectionId),
    /// RETIRE_CONNECTION_ID (0x19, §19.16): the sequence number of the connection ID to retire.
    RetireConnectionId(u64),
    /// PATH_CHALLENGE (0x1a, §19.17): eight bytes of data to echo.
    PathChallenge([u8; 8]),
    /// PATH_RESPONSE (0x1b, §19.18): the data of the PATH_CHALLENGE being answered.
    PathResponse([u8; 8]),
    /// CONNECTION_CLOSE (0x1c transport, 0x1d application; §19.19).
    Close(ConnectionClose),
    /// HANDSHAKE_DONE (0x1e, §19.20).
    HandshakeDone,
    /// DATAGRAM (0x30, or 0x31 with a length; RFC 9221 §4).
    Datagram(Datagram),
}

impl Frame {
    /// Decodes one frame. A run of PADDING bytes is one [`Frame::Padding`].
    ///
    /// On error the reader is left somewhere inside the bad frame; the rest of the packet cannot be
    /// trusted anyway.
    pub fn decode(r: &mut Reader<'_>) -> Result<Frame, FrameError> {
        Self::decode_typed(r).map(|(frame, _)| frame)
    }

    /// As [`Frame::decode`], also returning the frame type as received. It is what a CONNECTION_CLOSE
    /// for an error in the frame names (RFC 9000 §19.19), and it may differ from
    /// [`Frame::frame_type`]: a STREAM frame without a Length field, or with an Offset field holding 0,
    /// and a DATAGRAM frame without a Length field, re-encode with another type.
    pub(crate) fn decode_typed(r: &mut Reader<'_>) -> Result<(Frame, u64), FrameError> {
        let start = r.position();
        // RFC 9000 §19.19: frame type 0 stands for "unknown", which is what a truncated type is.
        let frame_type = r
            .read_varint()
            .map_err(|kind| FrameError { frame_type: 0, kind })?;
        if frame_type == ty::PADDING {
            // Scan the run of zero bytes in one pass rather than decoding a frame per byte.
            let run = zero_run(r.peek_rest());
            r.skip(run).map_err(|kind| FrameError { frame_type, kind })?;
            return Ok((Frame::Padding(r.position() - start), frame_type));
        }
        Self::decode_body(r, frame_type)
            .map(|frame| (frame, frame_type))
            .map_err(|kind| FrameError { frame_type, kind })
    }

    fn decode_body(r: &mut Reader<'_>, frame_type: u64) -> Result<Frame, DecodeError> {
        Ok(match frame_type {
            ty::PING => Frame::Ping,
            ty::ACK | ty::ACK_ECN => Frame::Ack(AckFrame::decode_body(r, frame_type == ty::ACK_ECN)?),
            ty::RESET_STREAM => Frame::ResetStream(ResetStream {
                id: StreamId(r.read_varint()?),
                error_code: r.read_varint()?,
                final_size: r.read_varint()?,
            }),
            ty::STOP_SENDING => Frame::StopSending(StopSending {
                id: StreamId(r.read_varint()?),
                error_code: r.read_varint()?,
            }),
            ty::CRYPTO => Frame::Crypto(CryptoFrame::decode_body(r)?),
            ty::NEW_TOKEN => {
                let len = r.read_varint_len()?;
                // RFC 9000 §19.7: a client MUST treat an empty token as a FRAME_ENCODING_ERROR.
                if len == 0 {
                    return Err(DecodeError::Invalid("empty NEW_TOKEN token"));
                }
                Frame::NewToken(r.read_bytes(len)?)
            }
            ty::STREAM..=ty::STREAM_LAST => Frame::Stream(StreamFrame::decode_body(r, frame_type)?),
            ty::MAX_DATA => Frame::MaxData(r.read_varint()?),
            ty::MAX_STREAM_DATA => Frame::MaxStreamData(MaxStreamData {
                id: StreamId(r.read_varint()?),
                max: r.read_varint()?,
            }),
            ty::MAX_STREAMS_BIDI | ty::MAX_STREAMS_UNI => {
                let dir = if frame_type == ty::MAX_STREAMS_BIDI {
                    Dir::Bi
                } else {
                    Dir::Uni
                };
                // RFC 9000 §19.11: a count above 2^60 MUST be a FRAME_ENCODING_ERROR.
                Frame::MaxStreams(MaxStreams {
                    dir,
                    count: read_stream_count(r)?,
                })
            }
            ty::DATA_BLOCKED => Frame::DataBlocked(r.read_varint()?),
            ty::STREAM_DATA_BLOCKED => Frame::StreamDataBlocked(StreamDataBlocked {
                id: StreamId(r.read_varint()?),
                limit: r.read_varint()?,
            }),
            ty::STREAMS_BLOCKED_BIDI | ty::STREAMS_BLOCKED_UNI => {
                let dir = if frame_type == ty::STREAMS_BLOCKED_BIDI {
                    Dir::Bi
                } else {
                    Dir::Uni
                };
                // RFC 9000 §19.14: a count above 2^60 MUST be a STREAM_LIMIT_ERROR or
                // FRAME_ENCODING_ERROR; we report FRAME_ENCODING_ERROR.
                Frame::StreamsBlocked(StreamsBlocked {
                    dir,
                    limit: read_stream_count(r)?,
                })
            }
            ty::NEW_CONNECTION_ID => Frame::NewConnectionId(decode_new_connection_id(r)?),
            ty::RETIRE_CONNECTION_ID => Frame::RetireConnectionId(r.read_varint()?),
            ty::PATH_CHALLENGE => Frame::PathChallenge(r.read_array()?),
            ty::PATH_RESPONSE => Frame::PathResponse(r.read_array()?),
            ty::CONNECTION_CLOSE | ty::APPLICATION_CLOSE => {
                Frame::Close(ConnectionClose::decode_body(r, frame_type)?)
            }
            ty::HANDSHAKE_DONE => Frame::HandshakeDone,
            ty::DATAGRAM | ty::DATAGRAM_LEN => Frame::Datagram(Datagram::decode_body(r, frame_type)?),
            // RFC 9000 §12.4: a frame of unknown type MUST be a FRAME_ENCODING_ERROR.
            _ => return Err(DecodeError::Invalid("unknown frame type")),
        })
    }

    /// The frame type this frame encodes with. STREAM and DATAGRAM frames count with their length
    /// field, as [`Frame::encode`] writes them.
    pub fn frame_type(&self) -> u64 {
        match self {
            Frame::Padding(_) => ty::PADDING,
            Frame::Ping => ty::PING,
            Frame::Ack(ack) => ack.frame_type(),
            Frame::ResetStream(_) => ty::RESET_STREAM,
            Frame::StopSending(_) => ty::STOP_SENDING,
            Frame::Crypto(_) => ty::CRYPTO,
            Frame::NewToken(_) => ty::NEW_TOKEN,
            Frame::Stream(s) => s.frame_type(true),
            Frame::MaxData(_) => ty::MAX_DATA,
            Frame::MaxStreamData(_) => ty::MAX_STREAM_DATA,
            Frame::MaxStreams(MaxStreams { dir: Dir::Bi, .. }) => ty::MAX_STREAMS_BIDI,
            Frame::MaxStreams(MaxStreams { dir: Dir::Uni, .. }) => ty::MAX_STREAMS_UNI,
            Frame::DataBlocked(_) => ty::DATA_BLOCKED,
            Frame::StreamDataBlocked(_) => ty::STREAM_DATA_BLOCKED,
            Frame::StreamsBlocked(StreamsBlocked { dir: Dir::Bi, .. }) => ty::STREAMS_BLOCKED_BIDI,
            Frame::StreamsBlocked(StreamsBlocked { dir: Dir::Uni, .. }) => ty::STREAMS_BLOCKED_UNI,
            Frame::NewConnectionId(_) => ty::NEW_CONNECTION_ID,
            Frame::RetireConnectionId(_) => ty::RETIRE_CONNECTION_ID,
            Frame::PathChallenge(_) => ty::PATH_CHALLENGE,
            Frame::PathResponse(_) => ty::PATH_RESPONSE,
            Frame::Close(c) => c.frame_type(),
            Frame::HandshakeDone => ty::HANDSHAKE_DONE,
            Frame::Datagram(_) => Datagram::frame_type(true),
        }
    }

    /// Writes the frame. STREAM and DATAGRAM frames carry their length field; use
    /// [`StreamFrame::encode`] or [`Datagram::encode`] to leave it out for the last frame of a packet.
    /// [`Frame::Padding`]`(n)` writes `n` zero bytes.
    ///
    /// # Panics
    ///
    /// When an integer field is 2^62 or more, which no valid frame has (a caller bug).
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Frame::Padding(n) => buf.put_bytes(0, *n),
            Frame::Ack(ack) => ack.encode(buf),
            Frame::Crypto(c) => c.encode(buf),
            Frame::Stream(s) => s.encode(buf, true),
            Frame::Close(c) => c.encode(buf),
            Frame::Datagram(d) => d.encode(buf, true),
            _ => {
                put_varint(buf, self.frame_type());
                self.encode_simple_body(buf);
            }
        }
    }

    /// Writes the fields after the type of the frames without a payload struct of their own encoder.
    fn encode_simple_body(&self, buf: &mut impl BufMut) {
        match self {
            Frame::ResetStream(f) => {
                put_varint(buf, f.id.0);
                put_varint(buf, f.error_code);
                put_varint(buf, f.final_size);
            }
            Frame::StopSending(f) => {
                put_varint(buf, f.id.0);
                put_varint(buf, f.error_code);
            }
            Frame::NewToken(token) => {
                put_varint(buf, token.len() as u64);
                buf.put_slice(token);
            }
            Frame::MaxData(v) | Frame::DataBlocked(v) | Frame::RetireConnectionId(v) => put_varint(buf, *v),
            Frame::MaxStreamData(f) => {
                put_varint(buf, f.id.0);
                put_varint(buf, f.max);
            }
            Frame::MaxStreams(f) => put_varint(buf, f.count),
            Frame::StreamDataBlocked(f) => {
                put_varint(buf, f.id.0);
                put_varint(buf, f.limit);
            }
            Frame::StreamsBlocked(f) => put_varint(buf, f.limit),
            Frame::NewConnectionId(f) => {
                put_varint(buf, f.sequence);
                put_varint(buf, f.retire_prior_to);
                f.id.encode_prefixed(buf);
                f.reset_token.encode(buf);
            }
            Frame::PathChallenge(data) | Frame::PathResponse(data) => buf.put_slice(data),
            Frame::Padding(_)
            | Frame::Ping
            | Frame::HandshakeDone
            | Frame::Ack(_)
            | Frame::Crypto(_)
            | Frame::Stream(_)
            | Frame::Close(_)
            | Frame::Datagram(_) => {}
        }
    }

    /// The number of bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let v = VarInt::size;
        match self {
            Frame::Padding(n) => *n,
            Frame::Ping | Frame::HandshakeDone => 1,
            Frame::Ack(ack) => ack.encoded_len(),
            Frame::ResetStream(f) => 1 + v(f.id.0) + v(f.error_code) + v(f.final_size),
            Frame::StopSending(f) => 1 + v(f.id.0) + v(f.error_code),
            Frame::Crypto(c) => c.encoded_len(),
            Frame::NewToken(token) => 1 + v(token.len() as u64) + token.len(),
            Frame::Stream(s) => s.encoded_len(true),
            Frame::MaxData(x) | Frame::DataBlocked(x) | Frame::RetireConnectionId(x) => 1 + v(*x),
            Frame::MaxStreamData(f) => 1 + v(f.id.0) + v(f.max),
            Frame::MaxStreams(f) => 1 + v(f.count),
            Frame::StreamDataBlocked(f) => 1 + v(f.id.0) + v(f.limit),
            Frame::StreamsBlocked(f) => 1 + v(f.limit),
            Frame::NewConnectionId(f) => {
                1 + v(f.sequence) + v(f.retire_prior_to) + 1 + f.id.len() + ResetToken::LEN
            }
            Frame::PathChallenge(_) | Frame::PathResponse(_) => 1 + 8,
            Frame::Close(c) => c.encoded_len(),
            Frame::Datagram(d) => d.encoded_len(true),
        }
    }

    /// Whether the frame elicits an acknowledgement: all but ACK, PADDING and CONNECTION_CLOSE
    /// (RFC 9002 §2, RFC 9000 §13.2.1).
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(self, Frame::Ack(_) | Frame::Padding(_) | Frame::Close(_))
    }

    /// Whether the frame is a probing frame: PATH_CHALLENGE, PATH_RESPONSE, NEW_CONNECTION_ID and
    /// PADDING (RFC 9000 §9.1, the "P" marks of §12.4 Table 3).
    pub fn is_probing(&self) -> bool {
        matches!(
            self,
            Frame::PathChallenge(_) | Frame::PathResponse(_) | Frame::NewConnectionId(_) | Frame::Padding(_)
        )
    }

    /// Whether the frame may appear in Initial and Handshake packets: PADDING, PING, ACK, CRYPTO and a
    /// CONNECTION_CLOSE of type 0x1c (the "I" and "H" columns of RFC 9000 §12.4 Table 3; §17.2.2).
    ///
    /// RFC 9000 §12.4: a frame in a packet type that does not permit it MUST be treated as a connection
    /// error of type PROTOCOL_VIOLATION.
    pub fn allowed_in_initial_or_handshake(&self) -> bool {
        match self {
            Frame::Padding(_) | Frame::Ping | Frame::Ack(_) | Frame::Crypto(_) => true,
            Frame::Close(c) => matches!(c.code, CloseCode::Transport { .. }),
            _ => false,
        }
    }

    /// Whether the frame may appear in 0-RTT packets: everything except ACK, CRYPTO, NEW_TOKEN,
    /// PATH_RESPONSE and HANDSHAKE_DONE (the "0" column of RFC 9000 §12.4 Table 3, §17.2.3). DATAGRAM is
    /// allowed (RFC 9221 §4 and §7: 0-RTT or 1-RTT keys).
    pub fn allowed_in_0rtt(&self) -> bool {
        !matches!(
            self,
            Frame::Ack(_)
                | Frame::Crypto(_)
                | Frame::NewToken(_)
                | Frame::PathResponse(_)
                | Frame::HandshakeDone
        )
    }
}

/// Reads the stream count of MAX_STREAMS or STREAMS_BLOCKED, which may not exceed 2^60
/// (RFC 9000 §19.11, §19.14).
fn read_stream_count(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let count = r.read_varint()?;
    if count > MAX_STREAM_COUNT {
        return Err(DecodeError::Invalid("stream count above 2^60"));
    }
    Ok(count)
}

fn decode_new_connection_id(r: &mut Reader<'_>) -> Result<NewConnectionId, DecodeError> {
    let sequence = r.read_varint()?;
    let retire_prior_to = r.read_varint()?;
    // RFC 9000 §19.15: Retire Prior To greater than Sequence Number MUST be a FRAME_ENCODING_ERROR.
    if retire_prior_to > sequence {
        return Err(DecodeError::Invalid(
            "NEW_CONNECTION_ID retire_prior_to above sequence number",
        ));
    }
    let len = usize::from(r.read_u8()?);
    // RFC 9000 §19.15: lengths below 1 or above 20 MUST be a FRAME_ENCODING_ERROR.
    if !(1..=ConnectionId::MAX_LEN).contains(&len) {
        return Err(DecodeError::Invalid("NEW_CONNECTION_ID length outside 1..=20"));
    }
    let id = ConnectionId::decode_fixed(r, len)?;
    let reset_token = ResetToken::decode(r)?;
    Ok(NewConnectionId {
        sequence,
        retire_prior_to,
        id,
        reset_token,
    })
}

/// The frames of a decrypted packet payload, in order.
///
/// Yields `Err` once for the first malformed frame and then stops. An empty payload yields nothing; RFC
/// 9000 §12.4 makes a packet without frames a PROTOCOL_VIOLATION, which the caller checks.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// The frames of `payload`; data-bearing frames get zero-copy slices of it.
    pub fn new(payload: &'a Bytes) -> Self {
        Self {
            r: Reader::from_bytes(payload),
            failed: false,
        }
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<Frame, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let frame = Frame::decode(&mut self.r);
        self.failed = frame.is_err();
        Some(frame)
    }
}

impl std::iter::FusedIterator for Frames<'_> {}
