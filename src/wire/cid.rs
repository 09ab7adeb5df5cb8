//! Connection IDs (RFC 9000 §5.1) and stateless reset tokens (RFC 9000 §10.3).

use std::fmt;

use bytes::BufMut;

use super::{DecodeError, Reader};

/// A QUIC v1 connection ID: 0 to 20 bytes, stored inline (the bytes past `len` are always zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectionId {
    len: u8,
    bytes: [u8; ConnectionId::MAX_LEN],
}

impl std::hash::Hash for ConnectionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One write of the ID's own bytes: equal IDs have equal lengths and bytes, and a routing lookup
        // per datagram should not hash 20 bytes plus prefixes for an 8-byte ID.
        state.write(self.bytes.get(..self.len()).unwrap_or_default());
    }
}

impl ConnectionId {
    /// The longest connection ID QUIC v1 allows (RFC 9000 §17.2).
    pub const MAX_LEN: usize = 20;

    /// A connection ID from `bytes`, or `None` when it is longer than 20 bytes.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut out = [0u8; Self::MAX_LEN];
        out.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self {
            len: bytes.len() as u8,
            bytes: out,
        })
    }

    /// The zero-length connection ID.
    pub const fn empty() -> Self {
        Self {
            len: 0,
            bytes: [0; Self::MAX_LEN],
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether this is the zero-length connection ID.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a connection ID of exactly `len` bytes (no length prefix).
    #[inline]
    pub fn decode_fixed(r: &mut Reader<'_>, len: usize) -> Result<Self, DecodeError> {
        if len > Self::MAX_LEN {
            return Err(DecodeError::Invalid("connection ID longer than 20 bytes"));
        }
        // The common case on the receive path: at least 20 bytes follow (a short header's ID, then the
        // rest of the packet). The ID is then built from a fixed-size window with the bytes past `len`
        // cleared, in registers: the variable-length copy of `new` goes through memory, and the wider
        // reads of the result that follow stalled on store forwarding.
        if let Some(window) = r.peek_rest().first_chunk::<{ Self::MAX_LEN }>() {
            let mut bytes = *window;
            for (i, b) in bytes.iter_mut().enumerate() {
                if i >= len {
                    *b = 0;
                }
            }
            r.skip(len)?;
            return Ok(Self {
                len: len as u8,
                bytes,
            });
        }
        Self::new(r.read_slice(len)?).ok_or(DecodeError::Invalid("connection ID longer than 20 bytes"))
    }

    /// Reads a connection ID preceded by its one-byte length (as in long headers).
    pub fn decode_prefixed(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.read_u8()?;
        Self::decode_fixed(r, usize::from(len))
    }

    /// Writes the one-byte length and the bytes.
    pub fn encode_prefixed<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(self.len);
        buf.put_slice(self);
    }
}

impl std::ops::Deref for ConnectionId {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.get(..self.len()).unwrap_or_default()
    }
}

impl AsRef<[u8]> for ConnectionId {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Default for ConnectionId {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.iter() {
            write!(f, "{b:02x}")?;
        }
        if self.is_empty() {
            f.write_str("<empty>")?;
        }
        Ok(())
    }
}

/// A 16-byte stateless reset token (RFC 9000 §10.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResetToken(pub [u8; ResetToken::LEN]);

impl ResetToken {
    /// Length in bytes.
    pub const LEN: usize = 16;

    /// Reads 16 bytes.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_array().map(ResetToken)
    }

    /// Writes the 16 bytes.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_slice(&self.0);
    }

    /// Whether `other` holds the same 16 bytes, compared in time independent of where they differ (a
    /// token is a secret until it is used, RFC 9000 §10.3.1).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        if other.len() != Self::LEN {
            return false;
        }
        let diff = self.0.iter().zip(other).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert!(ConnectionId::new(&[0; 20]).is_some());
        assert!(ConnectionId::new(&[0; 21]).is_none());
        let cid = ConnectionId::new(&[1, 2, 3]).unwrap();
        assert_eq!(&cid[..], &[1, 2, 3]);
        assert_eq!(cid.to_string(), "010203");
        let mut buf = Vec::new();
        cid.encode_prefixed(&mut buf);
        assert_eq!(buf, [3, 1, 2, 3]);
        assert_eq!(ConnectionId::decode_prefixed(&mut Reader::new(&buf)), Ok(cid));
        assert!(ConnectionId::decode_prefixed(&mut Reader::new(&[21; 22])).is_err());
        assert!(ConnectionId::decode_prefixed(&mut Reader::new(&[4, 1, 2, 3])).is_err());
    }

    /// `decode_fixed` reads through a 20-byte window when that much follows, else byte by byte: both
    /// give the same ID as `new` (the window's bytes past the ID do not leak into it) and advance alike.
    #[test]
    fn decode_fixed_with_and_without_a_full_window() {
        let packet: Vec<u8> = (1..=40).collect();
        for len in 0..=20 {
            for avail in [len, len + 1, 20, 21, 40] {
                let Some(src) = packet.get(..avail) else {
                    continue;
                };
                let mut r = Reader::new(src);
                let cid = ConnectionId::decode_fixed(&mut r, len).unwrap();
                assert_eq!(
                    cid,
                    ConnectionId::new(&packet[..len]).unwrap(),
                    "{len} of {avail}"
                );
                assert_eq!(r.position(), len);
            }
            if len > 0 {
                let short = &packet[..len - 1];
                assert!(ConnectionId::decode_fixed(&mut Reader::new(short), len).is_err());
            }
        }
        assert!(ConnectionId::decode_fixed(&mut Reader::new(&packet), 21).is_err());
    }
}
