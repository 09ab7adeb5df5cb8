//! What a server checks in a ClientHello itself, reading its bytes on their way to TLS: that it carries
//! the quic_transport_parameters extension (RFC 9001 §8.2) and no legacy_session_id (§8.4).
//!
//! `rustls` accepts neither check as QUIC states it: it takes the transport parameters under the draft
//! codepoint 0xffa5 as well, and echoes a session ID. The reader follows the ClientHello's structure
//! (RFC 8446 §4.1.2) field by field as the bytes arrive, however they are cut, keeping a few integers and
//! never the bytes. It looks at every ClientHello of the Initial level (a second one follows a
//! HelloRetryRequest). Bytes that do not form a ClientHello stop it: TLS refuses them.

/// The quic_transport_parameters extension (RFC 9001 §8.2).
const QUIC_TRANSPORT_PARAMETERS: u32 = 0x39;

/// The ClientHello handshake message type (RFC 8446 §4).
const CLIENT_HELLO: u32 = 1;

/// legacy_version (2 bytes) and random (32), between the message header and legacy_session_id.
const VERSION_AND_RANDOM: u32 = 34;

/// What a ClientHello showed that closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finding {
    /// A non-empty legacy_session_id (RFC 9001 §8.4).
    SessionId,
    /// No quic_transport_parameters extension (RFC 9001 §8.2).
    NoTransportParameters,
}

/// The next field of the ClientHello to read: each a big-endian integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The handshake message header: msg_type (1 byte) and length (3).
    Header,
    /// legacy_session_id's length (1).
    SessionId,
    /// cipher_suites' length (2).
    CipherSuites,
    /// legacy_compression_methods' length (1).
    Compression,
    /// extensions' length (2).
    Extensions,
    /// One extension's type (2) and length (2).
    Extension,
    /// Nothing more is read: the bytes are not a well-formed ClientHello.
    Done,
}

impl Field {
    fn len(self) -> u8 {
        match self {
            Field::Header | Field::Extension => 4,
            Field::CipherSuites | Field::Extensions => 2,
            Field::SessionId | Field::Compression => 1,
            Field::Done => 0,
        }
    }
}

/// The reader of a server's Initial-level handshake bytes.
#[derive(Debug)]
pub(super) struct HelloScan {
    field: Field,
    /// The bytes of `field` read so far, as an integer.
    value: u32,
    /// How many bytes of `field` were read.
    have: u8,
    /// Bytes to pass over before `field`.
    skip: u32,
    /// Bytes of the current ClientHello after its header not yet read or passed over.
    message_left: u32,
    /// Bytes of its extensions block not yet read or passed over.
    extensions_left: u32,
    /// Whether it carried quic_transport_parameters.
    has_params: bool,
}

impl HelloScan {
    pub(super) fn new() -> Self {
        Self {
            field: Field::Header,
            value: 0,
            have: 0,
            skip: 0,
            message_left: 0,
            extensions_left: 0,
            has_params: false,
        }
    }

    /// Reads the next bytes of the Initial-level handshake stream, before TLS does: what they showed,
    /// if anything.
    pub(super) fn read(&mut self, mut data: &[u8]) -> Option<Finding> {
        while !data.is_empty() && self.field != Field::Done {
            if self.skip > 0 {
                let n = data.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                data = data.get(n..).unwrap_or_default();
                // n <= skip, which is a u32.
                self.skip -= n as u32;
                continue;
            }
            let Some((&byte, rest)) = data.split_first() else {
                break;
            };
            data = rest;
            self.value = self.value << 8 | u32::from(byte);
            self.have += 1;
            if self.have < self.field.len() {
                continue;
            }
            let value = std::mem::take(&mut self.value);
            self.have = 0;
            if let Some(finding) = self.on_field(value) {
                return Some(finding);
            }
        }
        None
    }

    fn on_field(&mut self, value: u32) -> Option<Finding> {
        let field = self.field;
        if field != Field::Header && !self.take(u32::from(field.len())) {
            return None;
        }
        match field {
            Field::Header => {
                if value >> 24 != CLIENT_HELLO {
                    self.field = Field::Done;
                    return None;
                }
                self.message_left = value & 0x00ff_ffff;
                self.has_params = false;
                self.pass(VERSION_AND_RANDOM, Field::SessionId);
            }
            Field::SessionId if value != 0 => return Some(Finding::SessionId),
            Field::SessionId => self.pass(0, Field::CipherSuites),
            Field::CipherSuites => self.pass(value, Field::Compression),
            Field::Compression => self.pass(value, Field::Extensions),
            Field::Extensions => {
                self.extensions_left = value;
                if value == 0 {
                    return self.end_of_extensions(0);
                }
                self.field = Field::Extension;
            }
            Field::Extension => {
                let len = value & 0xffff;
                self.has_params |= value >> 16 == QUIC_TRANSPORT_PARAMETERS;
                let Some(left) = self.extensions_left.checked_sub(4 + len) else {
                    self.field = Field::Done;
                    return None;
                };
                self.extensions_left = left;
                if left > 0 {
                    self.pass(len, Field::Extension);
                } else {
                    return self.end_of_extensions(len);
                }
            }
            Field::Done => {}
        }
        None
    }

    /// The extensions block ends after `len` more bytes: the ClientHello is judged, and what may follow
    /// it is passed over (a second ClientHello after a HelloRetryRequest is read in turn).
    fn end_of_extensions(&mut self, len: u32) -> Option<Finding> {
        if !self.take(len) {
            return None;
        }
        if !self.has_params {
            return Some(Finding::NoTransportParameters);
        }
        self.skip = len + std::mem::take(&mut self.message_left);
        self.field = Field::Header;
        None
    }

    /// Passes over `len` bytes of the message, then reads `next`.
    fn pass(&mut self, len: u32, next: Field) {
        if self.take(len) {
            self.skip = len;
            self.field = next;
        }
    }

    /// Counts `len` bytes against the message; a message too short for them stops the reader.
    fn take(&mut self, len: u32) -> bool {
        match self.message_left.checked_sub(len) {
            Some(left) => {
                self.message_left = left;
                true
            }
            None => {
                self.field = Field::Done;
                false
            }
        }
    }
}
