//! Transport error codes (RFC 9000 §20.1) and the error a connection closes with.

use std::borrow::Cow;
use std::fmt;

/// A transport error code as carried in a CONNECTION_CLOSE frame of type 0x1c (RFC 9000 §20.1).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportErrorCode(pub u64);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $val:expr,)*) => {
        impl TransportErrorCode {
            $($(#[$doc])* pub const $name: Self = TransportErrorCode($val);)*

            /// The RFC's name for a defined code, `None` for others (including CRYPTO_ERROR codes).
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// The connection is being closed abruptly in the absence of any error.
    NO_ERROR = 0x00,
    /// The endpoint encountered an internal error and cannot continue.
    INTERNAL_ERROR = 0x01,
    /// The server refused to accept a new connection.
    CONNECTION_REFUSED = 0x02,
    /// More data was received than permitted by advertised flow-control limits.
    FLOW_CONTROL_ERROR = 0x03,
    /// A stream-related frame exceeded the advertised stream limit.
    STREAM_LIMIT_ERROR = 0x04,
    /// A frame was received for a stream that was not in a state permitting it.
    STREAM_STATE_ERROR = 0x05,
    /// A stream's final size changed, or data was received beyond it.
    FINAL_SIZE_ERROR = 0x06,
    /// A frame was badly formatted.
    FRAME_ENCODING_ERROR = 0x07,
    /// Transport parameters were malformed, missing, invalid or otherwise in error.
    TRANSPORT_PARAMETER_ERROR = 0x08,
    /// The peer provided more connection IDs than the advertised active_connection_id_limit.
    CONNECTION_ID_LIMIT_ERROR = 0x09,
    /// A protocol compliance error not covered by a more specific code.
    PROTOCOL_VIOLATION = 0x0a,
    /// A Retry or NEW_TOKEN token was not valid.
    INVALID_TOKEN = 0x0b,
    /// The application or application protocol caused the connection to be closed.
    APPLICATION_ERROR = 0x0c,
    /// More data was received in CRYPTO frames than can be buffered.
    CRYPTO_BUFFER_EXCEEDED = 0x0d,
    /// A key update error was detected.
    KEY_UPDATE_ERROR = 0x0e,
    /// The AEAD confidentiality or integrity limit was reached.
    AEAD_LIMIT_REACHED = 0x0f,
    /// No viable network path exists.
    NO_VIABLE_PATH = 0x10,
}

impl TransportErrorCode {
    /// The CRYPTO_ERROR code for a TLS alert (0x0100 + alert, RFC 9000 §20.1, RFC 9001 §4.8).
    pub const fn crypto(alert: u8) -> Self {
        TransportErrorCode(0x0100 | alert as u64)
    }

    /// The TLS alert when this is a CRYPTO_ERROR code (0x0100 to 0x01ff).
    pub fn tls_alert(self) -> Option<u8> {
        if (0x0100..=0x01ff).contains(&self.0) {
            Some((self.0 & 0xff) as u8)
        } else {
            None
        }
    }
}

impl fmt::Debug for TransportErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TransportErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.tls_alert()) {
            (Some(name), _) => f.write_str(name),
            (None, Some(alert)) => write!(f, "CRYPTO_ERROR(alert {alert})"),
            (None, None) => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

/// A transport-level error: the code, the frame type that triggered it (if any) and a reason.
///
/// This is what a connection closes with when the peer breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// The wire code.
    pub code: TransportErrorCode,
    /// The type of the frame that triggered the error, when one did.
    pub frame_type: Option<u64>,
    /// A human-readable reason, sent in CONNECTION_CLOSE.
    pub reason: Cow<'static, str>,
}

impl TransportError {
    /// An error with `code` and `reason`, not tied to a frame.
    pub fn new(code: TransportErrorCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            frame_type: None,
            reason: reason.into(),
        }
    }

    /// The same error, tied to the frame type that triggered it.
    pub fn with_frame(mut self, frame_type: u64) -> Self {
        self.frame_type = Some(frame_type);
        self
    }
}

macro_rules! ctors {
    ($($fn:ident => $code:ident,)*) => {
        impl TransportError {
            $(
                #[doc = concat!("A `", stringify!($code), "` error with `reason`.")]
                pub fn $fn(reason: impl Into<Cow<'static, str>>) -> Self {
                    Self::new(TransportErrorCode::$code, reason)
                }
            )*
        }
    };
}

ctors! {
    internal_error => INTERNAL_ERROR,
    flow_control_error => FLOW_CONTROL_ERROR,
    stream_limit_error => STREAM_LIMIT_ERROR,
    stream_state_error => STREAM_STATE_ERROR,
    final_size_error => FINAL_SIZE_ERROR,
    frame_encoding_error => FRAME_ENCODING_ERROR,
    transport_parameter_error => TRANSPORT_PARAMETER_ERROR,
    connection_id_limit_error => CONNECTION_ID_LIMIT_ERROR,
    protocol_violation => PROTOCOL_VIOLATION,
    invalid_token => INVALID_TOKEN,
    crypto_buffer_exceeded => CRYPTO_BUFFER_EXCEEDED,
    key_update_error => KEY_UPDATE_ERROR,
    aead_limit_reached => AEAD_LIMIT_REACHED,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(ty) = self.frame_type {
            write!(f, " in frame {ty:#x}")?;
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for TransportError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_rfc9000_section_20_1() {
        assert_eq!(TransportErrorCode::FRAME_ENCODING_ERROR.0, 0x07);
        assert_eq!(TransportErrorCode::NO_VIABLE_PATH.0, 0x10);
        assert_eq!(TransportErrorCode::crypto(0x78).0, 0x178);
        assert_eq!(TransportErrorCode(0x178).tls_alert(), Some(0x78));
        assert_eq!(TransportErrorCode(0x200).tls_alert(), None);
        assert_eq!(
            TransportErrorCode::PROTOCOL_VIOLATION.to_string(),
            "PROTOCOL_VIOLATION"
        );
        assert_eq!(TransportErrorCode(0x128).to_string(), "CRYPTO_ERROR(alert 40)");
        let e = TransportError::frame_encoding_error("bad ack").with_frame(0x02);
        assert_eq!(e.to_string(), "FRAME_ENCODING_ERROR in frame 0x2: bad ack");
    }
}
