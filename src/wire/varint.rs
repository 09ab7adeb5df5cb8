//! Variable-length integers (RFC 9000 §16).

use std::fmt;

use bytes::BufMut;

use super::{DecodeError, Reader};

/// An integer below 2^62, encoded on the wire in 1, 2, 4 or 8 bytes (RFC 9000 §16).
#[derive(Debug, Default, Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VarInt(u64);

/// A value that does not fit a [`VarInt`] (2^62 or more).
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub struct VarIntBoundsExceeded;

impl fmt::Display for VarIntBoundsExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value does not fit a QUIC variable-length integer")
    }
}

impl std::error::Error for VarIntBoundsExceeded {}

impl VarInt {
    /// The largest encodable value, 2^62 - 1.
    pub const MAX: VarInt = VarInt((1 << 62) - 1);
    /// Zero.
    pub const ZERO: VarInt = VarInt(0);

    /// A `VarInt` from a `u32`, which always fits.
    pub const fn from_u32(v: u32) -> Self {
        VarInt(v as u64)
    }

    /// A `VarInt` from a `u64`, or an error when it is 2^62 or more.
    pub const fn from_u64(v: u64) -> Result<Self, VarIntBoundsExceeded> {
        if v <= Self::MAX.0 {
            Ok(VarInt(v))
        } else {
            Err(VarIntBoundsExceeded)
        }
    }

    /// A `VarInt` from a `u64`, saturating at [`VarInt::MAX`].
    pub const fn saturating(v: u64) -> Self {
        if v <= Self::MAX.0 {
            VarInt(v)
        } else {
            Self::MAX
        }
    }

    /// The value.
    pub const fn into_inner(self) -> u64 {
        self.0
    }

    /// The number of bytes the shortest encoding of `v` takes; `v` must be below 2^62.
    pub const fn size(v: u64) -> usize {
        if v < 1 << 6 {
            1
        } else if v < 1 << 14 {
            2
        } else if v < 1 << 30 {
            4
        } else {
            8
        }
    }

    /// The number of bytes [`VarInt::encode`] writes.
    pub const fn encoded_len(self) -> usize {
        Self::size(self.0)
    }

    /// Writes the shortest encoding.
    #[inline]
    pub fn encode<B: BufMut>(self, buf: &mut B) {
        let v = self.0;
        match self.encoded_len() {
            1 => buf.put_u8(v as u8),
            2 => buf.put_u16(0x4000 | v as u16),
            4 => buf.put_u32(0x8000_0000 | v as u32),
            _ => buf.put_u64(0xc000_0000_0000_0000 | v),
        }
    }

    /// Writes `v` in exactly `len` bytes (1, 2, 4 or 8), as a placeholder to patch later.
    ///
    /// Returns `None` (and writes nothing) when `v` does not fit `len` bytes or `len` is not a valid size.
    pub fn encode_with_len<B: BufMut>(v: u64, len: usize, buf: &mut B) -> Option<()> {
        match len {
            1 if v < 1 << 6 => buf.put_u8(v as u8),
            2 if v < 1 << 14 => buf.put_u16(0x4000 | v as u16),
            4 if v < 1 << 30 => buf.put_u32(0x8000_0000 | v as u32),
            8 if v <= Self::MAX.0 => buf.put_u64(0xc000_0000_0000_0000 | v),
            _ => return None,
        }
        Some(())
    }

    /// Reads one variable-length integer. Longer-than-needed encodings are accepted, as §16 allows.
    ///
    /// Each length reads a fixed-size array (no loop over a run-time count): several of these are decoded
    /// per received frame.
    #[inline]
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let first = r.read_u8()?;
        let high = u64::from(first & 0x3f);
        let v = match first >> 6 {
            0 => high,
            1 => {
                let [b] = r.read_array::<1>()?;
                (high << 8) | u64::from(b)
            }
            2 => {
                let b = r.read_array::<3>()?;
                (high << 24) | u64::from(u32::from_be_bytes([0, b[0], b[1], b[2]]))
            }
            _ => {
                let b = r.read_array::<7>()?;
                (high << 56) | (u64::from_be_bytes([0, b[0], b[1], b[2], b[3], b[4], b[5], b[6]]))
            }
        };
        Ok(VarInt(v))
    }
}

impl From<VarInt> for u64 {
    fn from(v: VarInt) -> u64 {
        v.0
    }
}

impl From<u8> for VarInt {
    fn from(v: u8) -> Self {
        VarInt(v.into())
    }
}

impl From<u16> for VarInt {
    fn from(v: u16) -> Self {
        VarInt(v.into())
    }
}

impl From<u32> for VarInt {
    fn from(v: u32) -> Self {
        VarInt(v.into())
    }
}

impl TryFrom<u64> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        Self::from_u64(v)
    }
}

impl TryFrom<usize> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(v: usize) -> Result<Self, Self::Error> {
        Self::from_u64(v as u64)
    }
}

impl fmt::Display for VarInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_hex(bytes: &[u8]) -> (u64, usize) {
        let mut r = Reader::new(bytes);
        let v = VarInt::decode(&mut r).unwrap();
        (v.into_inner(), r.position())
    }

    /// RFC 9000 Appendix A.1 gives these sample encodings.
    #[test]
    fn rfc9000_appendix_a1_examples() {
        assert_eq!(
            decode_hex(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            (151_288_809_941_952_652, 8)
        );
        assert_eq!(decode_hex(&[0x9d, 0x7f, 0x3e, 0x7d]), (494_878_333, 4));
        assert_eq!(decode_hex(&[0x7b, 0xbd]), (15_293, 2));
        assert_eq!(decode_hex(&[0x25]), (37, 1));
        // The same value in a longer encoding is still 37.
        assert_eq!(decode_hex(&[0x40, 0x25]), (37, 2));

        let mut out = Vec::new();
        VarInt::from_u64(151_288_809_941_952_652)
            .unwrap()
            .encode(&mut out);
        VarInt::from_u32(494_878_333).encode(&mut out);
        VarInt::from_u32(15_293).encode(&mut out);
        VarInt::from_u32(37).encode(&mut out);
        assert_eq!(
            out,
            [0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c, 0x9d, 0x7f, 0x3e, 0x7d, 0x7b, 0xbd, 0x25]
        );
    }

    #[test]
    fn bounds() {
        assert!(VarInt::from_u64(1 << 62).is_err());
        assert_eq!(VarInt::from_u64((1 << 62) - 1), Ok(VarInt::MAX));
        assert_eq!(VarInt::saturating(u64::MAX), VarInt::MAX);
        assert_eq!(decode_hex(&[0xff; 8]).0, VarInt::MAX.into_inner());
        assert!(VarInt::decode(&mut Reader::new(&[0x40])).is_err());
        assert!(VarInt::encode_with_len(64, 1, &mut Vec::new()).is_none());
    }

    proptest! {
        #[test]
        fn round_trip(v in 0..=VarInt::MAX.into_inner()) {
            let v = VarInt::from_u64(v).unwrap();
            let mut buf = Vec::new();
            v.encode(&mut buf);
            prop_assert_eq!(buf.len(), v.encoded_len());
            let mut r = Reader::new(&buf);
            prop_assert_eq!(VarInt::decode(&mut r), Ok(v));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn fixed_length_round_trip(v in 0..=VarInt::MAX.into_inner(), len in prop::sample::select(vec![1usize, 2, 4, 8])) {
            let mut buf = Vec::new();
            let fits = VarInt::size(v) <= len;
            prop_assert_eq!(VarInt::encode_with_len(v, len, &mut buf).is_some(), fits);
            if fits {
                prop_assert_eq!(buf.len(), len);
                prop_assert_eq!(VarInt::decode(&mut Reader::new(&buf)).unwrap().into_inner(), v);
            }
        }
    }
}
