//! Transport parameters (RFC 9000 §18, RFC 9221 §3).
//!
//! Each endpoint sends its transport parameters once, inside the TLS handshake, as a sequence of
//! (identifier, length, value) triples (RFC 9000 §18). [`TransportParameters::decode`] validates everything
//! that can be checked without connection state; comparing the connection ID parameters against the IDs
//! actually seen on the wire (RFC 9000 §7.3) is left to the connection.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use bytes::{BufMut, Bytes};

use super::{ConnectionId, DecodeError, Reader, ResetToken, TransportError, VarInt};
use crate::Side;

/// Parameter identifiers (RFC 9000 §18.2, RFC 9221 §3).
mod id {
    pub(super) const ORIGINAL_DESTINATION_CONNECTION_ID: u64 = 0x00;
    pub(super) const MAX_IDLE_TIMEOUT: u64 = 0x01;
    pub(super) const STATELESS_RESET_TOKEN: u64 = 0x02;
    pub(super) const MAX_UDP_PAYLOAD_SIZE: u64 = 0x03;
    pub(super) const INITIAL_MAX_DATA: u64 = 0x04;
    pub(super) const INITIAL_MAX_STREAM_DATA_BIDI_LOCAL: u64 = 0x05;
    pub(super) const INITIAL_MAX_STREAM_DATA_BIDI_REMOTE: u64 = 0x06;
    pub(super) const INITIAL_MAX_STREAM_DATA_UNI: u64 = 0x07;
    pub(super) const INITIAL_MAX_STREAMS_BIDI: u64 = 0x08;
    pub(super) const INITIAL_MAX_STREAMS_UNI: u64 = 0x09;
    pub(super) const ACK_DELAY_EXPONENT: u64 = 0x0a;
    pub(super) const MAX_ACK_DELAY: u64 = 0x0b;
    pub(super) const DISABLE_ACTIVE_MIGRATION: u64 = 0x0c;
    pub(super) const PREFERRED_ADDRESS: u64 = 0x0d;
    pub(super) const ACTIVE_CONNECTION_ID_LIMIT: u64 = 0x0e;
    pub(super) const INITIAL_SOURCE_CONNECTION_ID: u64 = 0x0f;
    pub(super) const RETRY_SOURCE_CONNECTION_ID: u64 = 0x10;
    pub(super) const MAX_DATAGRAM_FRAME_SIZE: u64 = 0x20;
}

/// The RFC's name for a parameter this module knows, for error reasons.
fn name(id: u64) -> &'static str {
    match id {
        id::ORIGINAL_DESTINATION_CONNECTION_ID => "original_destination_connection_id",
        id::MAX_IDLE_TIMEOUT => "max_idle_timeout",
        id::STATELESS_RESET_TOKEN => "stateless_reset_token",
        id::MAX_UDP_PAYLOAD_SIZE => "max_udp_payload_size",
        id::INITIAL_MAX_DATA => "initial_max_data",
        id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL => "initial_max_stream_data_bidi_local",
        id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE => "initial_max_stream_data_bidi_remote",
        id::INITIAL_MAX_STREAM_DATA_UNI => "initial_max_stream_data_uni",
        id::INITIAL_MAX_STREAMS_BIDI => "initial_max_streams_bidi",
        id::INITIAL_MAX_STREAMS_UNI => "initial_max_streams_uni",
        id::ACK_DELAY_EXPONENT => "ack_delay_exponent",
        id::MAX_ACK_DELAY => "max_ack_delay",
        id::DISABLE_ACTIVE_MIGRATION => "disable_active_migration",
        id::PREFERRED_ADDRESS => "preferred_address",
        id::ACTIVE_CONNECTION_ID_LIMIT => "active_connection_id_limit",
        id::INITIAL_SOURCE_CONNECTION_ID => "initial_source_connection_id",
        id::RETRY_SOURCE_CONNECTION_ID => "retry_source_connection_id",
        id::MAX_DATAGRAM_FRAME_SIZE => "max_datagram_frame_size",
        _ => "unknown parameter",
    }
}

/// The bit that records a known parameter in the `seen` bitset of [`TransportParameters::decode`], or
/// `None` for parameters this module ignores.
fn known_bit(id: u64) -> Option<u32> {
    match id {
        0x00..=0x10 => Some(1 << id),
        id::MAX_DATAGRAM_FRAME_SIZE => Some(1 << 17),
        _ => None,
    }
}

/// Parameters only a server may send (RFC 9000 §18.2).
fn is_server_only(id: u64) -> bool {
    matches!(
        id,
        id::ORIGINAL_DESTINATION_CONNECTION_ID
            | id::STATELESS_RESET_TOKEN
            | id::PREFERRED_ADDRESS
            | id::RETRY_SOURCE_CONNECTION_ID
    )
}

/// The unknown (and reserved) parameter identifiers [`TransportParameters::decode`] has seen, to find
/// their duplicates: RFC 9000 §7.4, "An endpoint SHOULD treat receipt of duplicate transport parameters
/// as a connection error of type TRANSPORT_PARAMETER_ERROR", whether or not it knows the parameter.
///
/// A fixed-size record, whatever the peer sends: the first [`UnknownIds::CAP`] distinct identifiers are
/// kept, and each later unknown parameter is compared with them only, so a list of thousands costs a
/// bounded amount of work per parameter and no allocation. A repeat of any of the first `CAP` is caught
/// wherever it comes; a pair of repeats both past them is not (the rule is a SHOULD).
struct UnknownIds {
    ids: [u64; UnknownIds::CAP],
    len: usize,
}

impl Default for UnknownIds {
    fn default() -> Self {
        Self {
            ids: [0; Self::CAP],
            len: 0,
        }
    }
}

impl UnknownIds {
    /// Far more than any endpoint sends: a GREASE parameter or two, and a few extensions'.
    const CAP: usize = 64;

    /// An error when `id` was seen before; otherwise records it while there is room.
    fn check(&mut self, id: u64) -> Result<(), TransportError> {
        if self.ids.get(..self.len).unwrap_or_default().contains(&id) {
            return Err(TransportError::transport_parameter_error(format!(
                "parameter {id:#x}: duplicate parameter"
            )));
        }
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = id;
            self.len += 1;
        }
        Ok(())
    }
}

/// A TRANSPORT_PARAMETER_ERROR about parameter `id`.
fn invalid(id: u64, why: &str) -> TransportError {
    TransportError::transport_parameter_error(format!("{}: {why}", name(id)))
}

/// The transport parameters one endpoint sends (RFC 9000 §18.2, RFC 9221 §3).
///
/// [`Default`] gives the values the RFC assumes for absent parameters. Integer parameters are stored as
/// [`VarInt`]s, so any value can be encoded; [`TransportParameters::decode`] rejects values the RFC calls
/// invalid, and so should a caller building its own parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportParameters {
    /// original_destination_connection_id (0x00): the Destination Connection ID of the client's first
    /// Initial packet. Server only.
    pub original_destination_connection_id: Option<ConnectionId>,
    /// max_idle_timeout (0x01), in milliseconds; 0 means no idle timeout from this endpoint.
    pub max_idle_timeout: VarInt,
    /// stateless_reset_token (0x02): the reset token for the connection ID used in the handshake. Server
    /// only.
    pub stateless_reset_token: Option<ResetToken>,
    /// max_udp_payload_size (0x03): the largest UDP payload this endpoint is willing to receive; at least
    /// 1200, default 65527.
    pub max_udp_payload_size: VarInt,
    /// initial_max_data (0x04): the initial connection-level flow control limit.
    pub initial_max_data: VarInt,
    /// initial_max_stream_data_bidi_local (0x05): the initial flow control limit for bidirectional streams
    /// opened by the sender of these parameters.
    pub initial_max_stream_data_bidi_local: VarInt,
    /// initial_max_stream_data_bidi_remote (0x06): the initial flow control limit for bidirectional
    /// streams opened by the receiver of these parameters.
    pub initial_max_stream_data_bidi_remote: VarInt,
    /// initial_max_stream_data_uni (0x07): the initial flow control limit for unidirectional streams opened
    /// by the receiver of these parameters.
    pub initial_max_stream_data_uni: VarInt,
    /// initial_max_streams_bidi (0x08): how many bidirectional streams the receiver may open; at most 2^60.
    pub initial_max_streams_bidi: VarInt,
    /// initial_max_streams_uni (0x09): how many unidirectional streams the receiver may open; at most 2^60.
    pub initial_max_streams_uni: VarInt,
    /// ack_delay_exponent (0x0a): the exponent that scales the ACK Delay field; at most 20, default 3.
    pub ack_delay_exponent: VarInt,
    /// max_ack_delay (0x0b), in milliseconds: the longest this endpoint delays an acknowledgment; below
    /// 2^14, default 25.
    pub max_ack_delay: VarInt,
    /// disable_active_migration (0x0c): whether the sender does not support active connection migration on
    /// the handshake address.
    pub disable_active_migration: bool,
    /// preferred_address (0x0d): the address the server would rather be reached at. Server only.
    pub preferred_address: Option<PreferredAddress>,
    /// active_connection_id_limit (0x0e): how many of the peer's connection IDs this endpoint is willing to
    /// store; at least 2, default 2.
    pub active_connection_id_limit: VarInt,
    /// initial_source_connection_id (0x0f): the Source Connection ID of the sender's first Initial packet.
    pub initial_source_connection_id: Option<ConnectionId>,
    /// retry_source_connection_id (0x10): the Source Connection ID of the server's Retry packet. Server
    /// only.
    pub retry_source_connection_id: Option<ConnectionId>,
    /// max_datagram_frame_size (0x20, RFC 9221 §3): the largest DATAGRAM frame this endpoint accepts;
    /// absent or 0 means DATAGRAM frames are not supported.
    pub max_datagram_frame_size: Option<VarInt>,
    /// One reserved parameter to send (RFC 9000 §18.1): its identifier (see
    /// [`TransportParameters::grease_id`]) and value. Only written by [`TransportParameters::encode`];
    /// decoding ignores reserved parameters and always leaves this `None`.
    pub grease: Option<(VarInt, Bytes)>,
}

impl Default for TransportParameters {
    fn default() -> Self {
        // RFC 9000 §18.2: absent parameters default to 0 unless stated otherwise.
        Self {
            original_destination_connection_id: None,
            max_idle_timeout: VarInt::ZERO,
            stateless_reset_token: None,
            max_udp_payload_size: VarInt::from_u32(65527),
            initial_max_data: VarInt::ZERO,
            initial_max_stream_data_bidi_local: VarInt::ZERO,
            initial_max_stream_data_bidi_remote: VarInt::ZERO,
            initial_max_stream_data_uni: VarInt::ZERO,
            initial_max_streams_bidi: VarInt::ZERO,
            initial_max_streams_uni: VarInt::ZERO,
            ack_delay_exponent: VarInt::from_u32(3),
            max_ack_delay: VarInt::from_u32(25),
            disable_active_migration: false,
            preferred_address: None,
            active_connection_id_limit: VarInt::from_u32(2),
            initial_source_connection_id: None,
            retry_source_connection_id: None,
            max_datagram_frame_size: None,
            grease: None,
        }
    }
}

/// The value of one parameter, as [`TransportParameters::for_each_param`] hands it out.
enum Value<'a> {
    Int(VarInt),
    Raw(&'a [u8]),
    Preferred(&'a PreferredAddress),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Int(v) => v.encoded_len(),
            Value::Raw(b) => b.len(),
            Value::Preferred(p) => p.encoded_len(),
        }
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Value::Int(v) => v.encode(buf),
            Value::Raw(b) => buf.put_slice(b),
            Value::Preferred(p) => p.encode(buf),
        }
    }
}

/// The encoded size of one (identifier, length, value) triple.
fn param_len(id: u64, value: &Value<'_>) -> usize {
    let len = value.len();
    VarInt::size(id) + VarInt::size(len as u64) + len
}

impl TransportParameters {
    /// The identifier of the `n`th reserved (GREASE) parameter, `31 * n + 27` (RFC 9000 §18.1).
    pub fn grease_id(n: u32) -> VarInt {
        // 31 * (2^32 - 1) + 27 is far below 2^62.
        VarInt::saturating(31 * u64::from(n) + 27)
    }

    /// Whether `id` is a reserved (GREASE) parameter identifier, `31 * N + 27` (RFC 9000 §18.1).
    pub fn is_reserved_id(id: u64) -> bool {
        id % 31 == 27
    }

    /// Calls `f` with every parameter to send: those that differ from their default, the connection ID
    /// parameters when present, and the GREASE parameter when set. Both [`Self::encode`] and
    /// [`Self::encoded_len`] go through here, so they cannot disagree.
    fn for_each_param<'a>(&'a self, mut f: impl FnMut(u64, Value<'a>)) {
        let d = Self::default();
        let mut int = |id: u64, v: VarInt, default: VarInt| {
            if v != default {
                f(id, Value::Int(v));
            }
        };
        int(id::MAX_IDLE_TIMEOUT, self.max_idle_timeout, d.max_idle_timeout);
        int(
            id::MAX_UDP_PAYLOAD_SIZE,
            self.max_udp_payload_size,
            d.max_udp_payload_size,
        );
        int(id::INITIAL_MAX_DATA, self.initial_max_data, d.initial_max_data);
        int(
            id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL,
            self.initial_max_stream_data_bidi_local,
            d.initial_max_stream_data_bidi_local,
        );
        int(
            id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE,
            self.initial_max_stream_data_bidi_remote,
            d.initial_max_stream_data_bidi_remote,
        );
        int(
            id::INITIAL_MAX_STREAM_DATA_UNI,
            self.initial_max_stream_data_uni,
            d.initial_max_stream_data_uni,
        );
        int(
            id::INITIAL_MAX_STREAMS_BIDI,
            self.initial_max_streams_bidi,
            d.initial_max_streams_bidi,
        );
        int(
            id::INITIAL_MAX_STREAMS_UNI,
            self.initial_max_streams_uni,
            d.initial_max_streams_uni,
        );
        int(
            id::ACK_DELAY_EXPONENT,
            self.ack_delay_exponent,
            d.ack_delay_exponent,
        );
        int(id::MAX_ACK_DELAY, self.max_ack_delay, d.max_ack_delay);
        int(
            id::ACTIVE_CONNECTION_ID_LIMIT,
            self.active_connection_id_limit,
            d.active_connection_id_limit,
        );
        if let Some(v) = self.max_datagram_frame_size {
            f(id::MAX_DATAGRAM_FRAME_SIZE, Value::Int(v));
        }
        if let Some(cid) = &self.original_destination_connection_id {
            f(id::ORIGINAL_DESTINATION_CONNECTION_ID, Value::Raw(cid));
        }
        if let Some(token) = &self.stateless_reset_token {
            f(id::STATELESS_RESET_TOKEN, Value::Raw(&token.0));
        }
        if self.disable_active_migration {
            // RFC 9000 §18.2: disable_active_migration is a zero-length value.
            f(id::DISABLE_ACTIVE_MIGRATION, Value::Raw(&[]));
        }
        if let Some(addr) = &self.preferred_address {
            f(id::PREFERRED_ADDRESS, Value::Preferred(addr));
        }
        if let Some(cid) = &self.initial_source_connection_id {
            f(id::INITIAL_SOURCE_CONNECTION_ID, Value::Raw(cid));
        }
        if let Some(cid) = &self.retry_source_connection_id {
            f(id::RETRY_SOURCE_CONNECTION_ID, Value::Raw(cid));
        }
        if let Some((grease_id, value)) = &self.grease {
            f(grease_id.into_inner(), Value::Raw(value));
        }
    }

    /// The number of bytes [`Self::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let mut total = 0;
        self.for_each_param(|id, value| total += param_len(id, &value));
        total
    }

    /// Writes the parameters as a sequence of (identifier, length, value) triples (RFC 9000 §18).
    ///
    /// Parameters equal to their default are left out; connection ID parameters, the reset token, the
    /// preferred address, max_datagram_frame_size and the GREASE parameter are written when present.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        self.for_each_param(|id, value| {
            // Every identifier is one of our constants or came from a `VarInt`, so none saturates.
            VarInt::saturating(id).encode(buf);
            VarInt::saturating(value.len() as u64).encode(buf);
            value.encode(buf);
        });
    }

    /// Decodes the parameters `sender` sent (RFC 9000 §18).
    ///
    /// Every failure is a TRANSPORT_PARAMETER_ERROR whose reason names the parameter and the rule. Unknown
    /// and reserved parameters are skipped (RFC 9000 §7.4.2, §18.1), but a duplicate is an error, as for
    /// known ones (§7.4).
    pub fn decode(sender: Side, bytes: &[u8]) -> Result<Self, TransportError> {
        let mut params = Self::default();
        // One bit per known parameter: a fixed-size record, whatever the peer sends.
        let mut seen: u32 = 0;
        let mut unknown = UnknownIds::default();
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            // RFC 9000 §18: each parameter is an (identifier, length, value) triple.
            let id = r.read_varint().map_err(|_| {
                TransportError::transport_parameter_error("truncated transport parameter identifier")
            })?;
            let len = r.read_varint().map_err(|_| {
                TransportError::transport_parameter_error("truncated transport parameter length")
            })?;
            // Borrow the value: nothing is allocated by the peer's length.
            let value = usize::try_from(len)
                .ok()
                .and_then(|len| r.read_slice(len).ok())
                .ok_or_else(|| {
                    TransportError::transport_parameter_error("transport parameter length exceeds the input")
                })?;
            // RFC 9000 §7.4.2, §18.1: the values of unknown and reserved parameters are ignored; their
            // repetition is not (below).
            let Some(bit) = known_bit(id) else {
                unknown.check(id)?;
                continue;
            };
            // RFC 9000 §7.4: duplicate transport parameters are a TRANSPORT_PARAMETER_ERROR.
            if seen & bit != 0 {
                return Err(invalid(id, "duplicate parameter"));
            }
            seen |= bit;
            // RFC 9000 §18.2: a client MUST NOT send a server-only parameter; the server treats receipt
            // as a TRANSPORT_PARAMETER_ERROR.
            if sender.is_client() && is_server_only(id) {
                return Err(invalid(id, "server-only parameter sent by a client"));
            }
            params.apply(id, value)?;
        }
        // RFC 9000 §18.2: a server that chooses a zero-length connection ID MUST NOT provide a preferred
        // address; the client treats a violation as a TRANSPORT_PARAMETER_ERROR.
        if params.preferred_address.is_some()
            && params
                .initial_source_connection_id
                .is_some_and(|cid| cid.is_empty())
        {
            return Err(invalid(
                id::PREFERRED_ADDRESS,
                "sent with a zero-length connection ID",
            ));
        }
        Ok(params)
    }

    /// Validates the value of known parameter `id` and stores it.
    fn apply(&mut self, id: u64, value: &[u8]) -> Result<(), TransportError> {
        // RFC 9000 §7.4: an invalid value is a TRANSPORT_PARAMETER_ERROR.
        match id {
            id::ORIGINAL_DESTINATION_CONNECTION_ID => {
                self.original_destination_connection_id = Some(decode_cid(id, value)?);
            }
            id::MAX_IDLE_TIMEOUT => self.max_idle_timeout = decode_int(id, value)?,
            id::STATELESS_RESET_TOKEN => {
                // RFC 9000 §18.2: the token is a sequence of 16 bytes.
                let token = <[u8; ResetToken::LEN]>::try_from(value)
                    .map_err(|_| invalid(id, "value is not exactly 16 bytes"))?;
                self.stateless_reset_token = Some(ResetToken(token));
            }
            id::MAX_UDP_PAYLOAD_SIZE => {
                let v = decode_int(id, value)?;
                // RFC 9000 §18.2: values below 1200 are invalid.
                if v.into_inner() < 1200 {
                    return Err(invalid(id, "below 1200"));
                }
                self.max_udp_payload_size = v;
            }
            id::INITIAL_MAX_DATA => self.initial_max_data = decode_int(id, value)?,
            id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL => {
                self.initial_max_stream_data_bidi_local = decode_int(id, value)?;
            }
            id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE => {
                self.initial_max_stream_data_bidi_remote = decode_int(id, value)?;
            }
            id::INITIAL_MAX_STREAM_DATA_UNI => self.initial_max_stream_data_uni = decode_int(id, value)?,
            id::INITIAL_MAX_STREAMS_BIDI => self.initial_max_streams_bidi = decode_stream_count(id, value)?,
            id::INITIAL_MAX_STREAMS_UNI => self.initial_max_streams_uni = decode_stream_count(id, value)?,
            id::ACK_DELAY_EXPONENT => {
                let v = decode_int(id, value)?;
                // RFC 9000 §18.2: values above 20 are invalid.
                if v.into_inner() > 20 {
                    return Err(invalid(id, "above 20"));
                }
                self.ack_delay_exponent = v;
            }
            id::MAX_ACK_DELAY => {
                let v = decode_int(id, value)?;
                // RFC 9000 §18.2: values of 2^14 or greater are invalid.
                if v.into_inner() >= 1 << 14 {
                    return Err(invalid(id, "2^14 or greater"));
                }
                self.max_ack_delay = v;
            }
            id::DISABLE_ACTIVE_MIGRATION => {
                // RFC 9000 §18.2: this parameter is a zero-length value.
                if !value.is_empty() {
                    return Err(invalid(id, "value is not empty"));
                }
                self.disable_active_migration = true;
            }
            id::PREFERRED_ADDRESS => {
                let mut r = Reader::new(value);
                let addr = PreferredAddress::decode(&mut r).map_err(|e| invalid(id, &e.to_string()))?;
                if !r.is_empty() {
                    return Err(invalid(id, "trailing bytes after the stateless reset token"));
                }
                self.preferred_address = Some(addr);
            }
            id::ACTIVE_CONNECTION_ID_LIMIT => {
                let v = decode_int(id, value)?;
                // RFC 9000 §18.2: the value MUST be at least 2; a smaller one is a TRANSPORT_PARAMETER_ERROR.
                if v.into_inner() < 2 {
                    return Err(invalid(id, "below 2"));
                }
                self.active_connection_id_limit = v;
            }
            id::INITIAL_SOURCE_CONNECTION_ID => {
                self.initial_source_connection_id = Some(decode_cid(id, value)?);
            }
            id::RETRY_SOURCE_CONNECTION_ID => {
                self.retry_source_connection_id = Some(decode_cid(id, value)?);
            }
            id::MAX_DATAGRAM_FRAME_SIZE => self.max_datagram_frame_size = Some(decode_int(id, value)?),
            // `known_bit` only admits the identifiers above.
            _ => {}
        }
        Ok(())
    }
}

/// An integer parameter: one variable-length integer that exactly fills the value (RFC 9000 §18.2).
fn decode_int(id: u64, value: &[u8]) -> Result<VarInt, TransportError> {
    let mut r = Reader::new(value);
    let v = VarInt::decode(&mut r).map_err(|_| invalid(id, "value is shorter than its integer"))?;
    if !r.is_empty() {
        return Err(invalid(id, "integer does not fill the value"));
    }
    Ok(v)
}

/// initial_max_streams_{bidi,uni}: RFC 9000 §4.6, §18.2: a value above 2^60 is a TRANSPORT_PARAMETER_ERROR.
fn decode_stream_count(id: u64, value: &[u8]) -> Result<VarInt, TransportError> {
    let v = decode_int(id, value)?;
    if v.into_inner() > 1 << 60 {
        return Err(invalid(id, "above 2^60"));
    }
    Ok(v)
}

/// A connection ID parameter: the whole value, at most 20 bytes (RFC 9000 §17.2, §18.2).
fn decode_cid(id: u64, value: &[u8]) -> Result<ConnectionId, TransportError> {
    ConnectionId::new(value).ok_or_else(|| invalid(id, "connection ID longer than 20 bytes"))
}

/// The server's preferred address (RFC 9000 §9.6, §18.2, transport parameter 0x0d).
///
/// On the wire both address families are always present; a family the server does not offer is sent as
/// the all-zero address and port, which this type represents as `None`. IPv6 flow information and scope
/// IDs are not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreferredAddress {
    /// The IPv4 address and port, or `None` when sent as 0.0.0.0:0.
    pub ipv4: Option<SocketAddrV4>,
    /// The IPv6 address and port, or `None` when sent as \[::\]:0.
    pub ipv6: Option<SocketAddrV6>,
    /// The connection ID with sequence number 1 to use at the preferred address; never zero-length.
    pub connection_id: ConnectionId,
    /// The stateless reset token for `connection_id`.
    pub stateless_reset_token: ResetToken,
}

impl PreferredAddress {
    /// Bytes before the connection ID: IPv4 address and port, IPv6 address and port, CID length.
    const FIXED_LEN: usize = 4 + 2 + 16 + 2 + 1;

    /// The number of bytes [`Self::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        Self::FIXED_LEN + self.connection_id.len() + ResetToken::LEN
    }

    /// Writes the value of the preferred_address parameter (RFC 9000 §18.2), without identifier or length.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        let v4 = self
            .ipv4
            .unwrap_or_else(|| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        buf.put_slice(&v4.ip().octets());
        buf.put_u16(v4.port());
        let v6 = self
            .ipv6
            .unwrap_or_else(|| SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        buf.put_slice(&v6.ip().octets());
        buf.put_u16(v6.port());
        self.connection_id.encode_prefixed(buf);
        self.stateless_reset_token.encode(buf);
    }

    /// Reads the value of the preferred_address parameter (RFC 9000 §18.2).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // RFC 9000 §18.2: an all-zero address and port stands for a family the server does not offer.
        let ip4 = Ipv4Addr::from(r.read_array::<4>()?);
        let port4 = r.read_u16()?;
        let ipv4 = (!(ip4.is_unspecified() && port4 == 0)).then(|| SocketAddrV4::new(ip4, port4));
        let ip6 = Ipv6Addr::from(r.read_array::<16>()?);
        let port6 = r.read_u16()?;
        let ipv6 = (!(ip6.is_unspecified() && port6 == 0)).then(|| SocketAddrV6::new(ip6, port6, 0, 0));
        let connection_id = ConnectionId::decode_prefixed(r)?;
        // RFC 9000 §18.2: a server MUST NOT include a zero-length connection ID in this parameter.
        if connection_id.is_empty() {
            return Err(DecodeError::Invalid("zero-length connection ID"));
        }
        let stateless_reset_token = ResetToken::decode(r)?;
        Ok(Self {
            ipv4,
            ipv6,
            connection_id,
            stateless_reset_token,
        })
    }
}

#[cfg(test)]
mod tests;
