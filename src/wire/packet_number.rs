//! Packet number encoding and decoding (RFC 9000 §17.1, Appendix A.2 and A.3).

use bytes::BufMut;

use super::{DecodeError, Reader};

/// The largest packet number QUIC allows, 2^62 - 1 (RFC 9000 §12.3).
pub const MAX_PACKET_NUMBER: u64 = (1 << 62) - 1;

/// A packet number as it appears on the wire: its least significant 1 to 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedPn {
    value: u32,
    len: u8,
}

impl TruncatedPn {
    /// The truncated form of `full_pn` that a receiver who has seen `largest_acked` (the largest packet
    /// number of ours the peer acknowledged, if any) decodes unambiguously (RFC 9000 §17.1, Appendix A.2).
    pub fn encode_for(full_pn: u64, largest_acked: Option<u64>) -> Self {
        let len = encoded_len(full_pn, largest_acked);
        Self::truncate(full_pn, len)
    }

    /// The `len` least significant bytes of `full_pn`; `len` is clamped to 1..=4.
    pub fn truncate(full_pn: u64, len: usize) -> Self {
        let len = len.clamp(1, 4);
        let mask = (1u64 << (8 * len)) - 1;
        Self {
            value: (full_pn & mask) as u32,
            len: len as u8,
        }
    }

    /// Reads a truncated packet number of `len` bytes (1 to 4).
    pub fn decode(r: &mut Reader<'_>, len: usize) -> Result<Self, DecodeError> {
        if !(1..=4).contains(&len) {
            return Err(DecodeError::Invalid("packet number length must be 1 to 4 bytes"));
        }
        let mut value = 0u32;
        for b in r.read_slice(len)? {
            value = (value << 8) | u32::from(*b);
        }
        Ok(Self {
            value,
            len: len as u8,
        })
    }

    /// The truncated value.
    pub fn value(self) -> u32 {
        self.value
    }

    /// Length on the wire, 1 to 4 bytes (what [`TruncatedPn::encode`] writes).
    pub fn encoded_len(self) -> usize {
        usize::from(self.len)
    }

    /// The two bits that encode the length in the first byte of a header (length - 1).
    pub fn len_bits(self) -> u8 {
        self.len - 1
    }

    /// Writes the truncated value in `len()` bytes.
    pub fn encode<B: BufMut>(self, buf: &mut B) {
        buf.put_uint(u64::from(self.value), self.encoded_len());
    }

    /// The full packet number, given the largest packet number successfully processed in this packet
    /// number space (RFC 9000 Appendix A.3).
    #[inline]
    pub fn expand(self, largest_pn: Option<u64>) -> u64 {
        decode_packet_number(largest_pn, u64::from(self.value), 8 * self.encoded_len())
    }
}

/// The number of bytes (1 to 4) needed to send `full_pn` so that a peer that acknowledged
/// `largest_acked` decodes it: enough bits for twice the unacknowledged range (RFC 9000 §17.1, A.2).
pub fn encoded_len(full_pn: u64, largest_acked: Option<u64>) -> usize {
    let num_unacked = match largest_acked {
        Some(acked) => full_pn.saturating_sub(acked),
        None => full_pn.saturating_add(1),
    };
    // min_bits = floor(log2(num_unacked)) + 1 more than the bits of num_unacked; i.e. the bits of
    // 2 * num_unacked.
    let min_bits = 64 - num_unacked.leading_zeros() as usize + 1;
    min_bits.div_ceil(8).clamp(1, 4)
}

/// Expands a truncated packet number of `pn_nbits` bits (8, 16, 24 or 32) to the full value closest to
/// `largest_pn + 1` (RFC 9000 Appendix A.3).
#[inline]
pub fn decode_packet_number(largest_pn: Option<u64>, truncated_pn: u64, pn_nbits: usize) -> u64 {
    let expected = largest_pn.map_or(0, |l| l + 1);
    let win = 1u64 << pn_nbits;
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | (truncated_pn & mask);
    if candidate.saturating_add(hwin) <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 9000 Appendix A.2.
    #[test]
    fn rfc9000_appendix_a2_examples() {
        assert_eq!(encoded_len(0xac5c02, Some(0xabe8b3)), 2);
        assert_eq!(encoded_len(0xace8fe, Some(0xabe8b3)), 3);
        assert_eq!(encoded_len(0, None), 1);
        assert_eq!(encoded_len(MAX_PACKET_NUMBER, None), 4);
    }

    /// RFC 9000 Appendix A.3.
    #[test]
    fn rfc9000_appendix_a3_example() {
        assert_eq!(decode_packet_number(Some(0xa82f30ea), 0x9b32, 16), 0xa82f9b32);
        let pn = TruncatedPn::decode(&mut Reader::new(&[0x9b, 0x32]), 2).unwrap();
        assert_eq!(pn.expand(Some(0xa82f30ea)), 0xa82f9b32);
    }

    #[test]
    fn first_packets() {
        assert_eq!(decode_packet_number(None, 0, 8), 0);
        assert_eq!(decode_packet_number(None, 5, 8), 5);
        assert_eq!(decode_packet_number(Some(0xff), 0x00, 8), 0x100);
        assert!(TruncatedPn::decode(&mut Reader::new(&[0; 8]), 5).is_err());
    }

    proptest! {
        /// Whatever the sender picks with `encode_for`, the receiver recovers the full number as long as
        /// it has processed any packet in the window the sender assumed.
        #[test]
        fn encode_then_decode(
            largest_acked in 0u64..(1 << 40),
            ahead in 1u64..(1 << 30),
            seen in 0u64..(1 << 30),
        ) {
            let full = largest_acked + ahead;
            let pn = TruncatedPn::encode_for(full, Some(largest_acked));
            // The receiver's largest processed packet lies between what was acked and what is sent.
            let largest_seen = largest_acked + seen % ahead;
            let mut buf = Vec::new();
            pn.encode(&mut buf);
            prop_assert_eq!(buf.len(), pn.encoded_len());
            let back = TruncatedPn::decode(&mut Reader::new(&buf), pn.encoded_len()).unwrap();
            prop_assert_eq!(back.expand(Some(largest_seen)), full);
        }

        #[test]
        fn decode_never_panics(largest in any::<Option<u64>>(), t in any::<u32>(), n in 1usize..=4) {
            let largest = largest.map(|l| l % (MAX_PACKET_NUMBER + 1));
            let _ = decode_packet_number(largest, u64::from(t), 8 * n);
        }
    }
}
