//! A bounds-checked cursor over a byte slice: the only way the codecs read input.

use bytes::Bytes;

use super::DecodeError;

/// A cursor over a byte slice that only offers checked reads.
///
/// When the reader is built over a [`Bytes`] with [`Reader::from_bytes`], [`Reader::read_bytes`] returns
/// zero-copy slices of that buffer; otherwise it copies.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    owner: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, starting at its first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            owner: None,
        }
    }

    /// A reader over `bytes` whose [`Reader::read_bytes`] hands out zero-copy slices.
    pub fn from_bytes(bytes: &'a Bytes) -> Self {
        Self {
            buf: bytes.as_ref(),
            pos: 0,
            owner: Some(bytes),
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread bytes, without consuming them.
    #[inline]
    pub fn peek_rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Reads one byte.
    #[inline]
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.read_array::<1>()?;
        Ok(b)
    }

    /// Reads a big-endian `u16`.
    pub fn read_u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.read_array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.read_array()?))
    }

    /// Reads exactly `N` bytes into an array.
    #[inline]
    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.read_slice(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads `n` bytes as a borrowed slice.
    #[inline]
    pub fn read_slice(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::UnexpectedEnd)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::UnexpectedEnd)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads `n` bytes as [`Bytes`]: zero-copy when the reader was built with [`Reader::from_bytes`].
    #[inline]
    pub fn read_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.skip(n)?;
        Ok(self.bytes_of(start..self.pos))
    }

    /// The bytes at `range` of the buffer (a range this reader has read past): a zero-copy slice when the
    /// reader was built with [`Reader::from_bytes`], else a copy. An out-of-bounds range gives nothing.
    #[inline]
    pub fn bytes_of(&self, range: std::ops::Range<usize>) -> Bytes {
        match (self.owner, self.buf.get(range.clone())) {
            (_, None) => Bytes::new(),
            // `buf` is the owner's whole content, so positions index it directly.
            (Some(owner), Some(_)) => owner.slice(range),
            (None, Some(s)) => Bytes::copy_from_slice(s),
        }
    }

    /// Reads every remaining byte as a borrowed slice.
    pub fn read_rest(&mut self) -> &'a [u8] {
        let s = self.peek_rest();
        self.pos = self.buf.len();
        s
    }

    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.read_slice(n).map(|_| ())
    }

    /// Reads a QUIC variable-length integer (RFC 9000 §16).
    #[inline]
    pub fn read_varint(&mut self) -> Result<u64, DecodeError> {
        super::VarInt::decode(self).map(u64::from)
    }

    /// Reads a variable-length integer that must fit a `usize` (lengths).
    pub fn read_varint_len(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.read_varint()?).map_err(|_| DecodeError::UnexpectedEnd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_reads_stop_at_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.read_u16(), Ok(0x0102));
        assert_eq!(r.read_u16(), Err(DecodeError::UnexpectedEnd));
        assert_eq!(r.position(), 2, "a failed read consumes nothing");
        assert_eq!(r.read_u8(), Ok(3));
        assert!(r.is_empty());
        assert_eq!(r.read_slice(usize::MAX), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn read_bytes_is_zero_copy_over_bytes() {
        let b = Bytes::from_static(b"hello world");
        let mut r = Reader::from_bytes(&b);
        r.skip(6).unwrap();
        let w = r.read_bytes(5).unwrap();
        assert_eq!(&w[..], b"world");
        assert_eq!(w.as_ptr(), b[6..].as_ptr());
    }
}
