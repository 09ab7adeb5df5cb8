//! ACK frames (RFC 9000 §19.3), with ranges kept in their encoded form.

use std::fmt;
use std::ops::RangeInclusive;

use bytes::{BufMut, Bytes, BytesMut};

use super::{put_varint, ty};
use crate::wire::{DecodeError, Reader, VarInt};

/// The three ECN counts of an ACK frame of type 0x03 (RFC 9000 §19.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EcnCounts {
    /// Packets received with the ECT(0) codepoint.
    pub ect0: u64,
    /// Packets received with the ECT(1) codepoint.
    pub ect1: u64,
    /// Packets received with the ECN-CE codepoint.
    pub ce: u64,
}

impl EcnCounts {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ect0: r.read_varint()?,
            ect1: r.read_varint()?,
            ce: r.read_varint()?,
        })
    }

    fn encode(&self, buf: &mut impl BufMut) {
        put_varint(buf, self.ect0);
        put_varint(buf, self.ect1);
        put_varint(buf, self.ce);
    }

    fn encoded_len(&self) -> usize {
        VarInt::size(self.ect0) + VarInt::size(self.ect1) + VarInt::size(self.ce)
    }
}

/// The acknowledged packet numbers of an ACK frame (RFC 9000 §19.3.1).
///
/// The ranges stay in their encoded form: the largest acknowledged packet number, the First ACK Range,
/// and the (Gap, ACK Range Length) pairs as bytes. Decoding walks every pair once to check that no packet
/// number goes below zero, so iteration cannot fail; nothing is allocated by the peer's range count.
/// Two values are equal when they acknowledge the same ranges, however the pairs were encoded.
#[derive(Clone)]
pub struct AckRanges {
    largest: u64,
    first_range: u64,
    /// The number of (Gap, ACK Range Length) pairs in `rest` (the ACK Range Count field).
    count: u64,
    /// The encoded pairs, validated.
    rest: Bytes,
}

impl AckRanges {
    /// Decodes Largest Acknowledged, ACK Delay, ACK Range Count, First ACK Range and the ACK Ranges,
    /// returning the ranges and the delay.
    fn decode(r: &mut Reader<'_>) -> Result<(Self, u64), DecodeError> {
        let largest = r.read_varint()?;
        let delay = r.read_varint()?;
        let count = r.read_varint()?;
        let first_range = r.read_varint()?;
        // RFC 9000 §19.3.1: "If any computed packet number is negative, an endpoint MUST generate a
        // connection error of type FRAME_ENCODING_ERROR." smallest = largest - ack_range.
        let mut smallest = largest
            .checked_sub(first_range)
            .ok_or(DecodeError::Invalid("ACK range below packet number 0"))?;
        // Walk a copy of the reader: every pair consumes at least two bytes, so a huge count with a short
        // buffer stops at the end of the input.
        let mut probe = r.clone();
        for _ in 0..count {
            let gap = probe.read_varint()?;
            let len = probe.read_varint()?;
            // RFC 9000 §19.3.1: largest = previous_smallest - gap - 2, smallest = largest - ack_range;
            // a negative result MUST be a FRAME_ENCODING_ERROR.
            smallest = smallest
                .checked_sub(gap)
                .and_then(|v| v.checked_sub(2))
                .and_then(|v| v.checked_sub(len))
                .ok_or(DecodeError::Invalid("ACK range below packet number 0"))?;
        }
        let rest = r.read_bytes(probe.position() - r.position())?;
        Ok((
            Self {
                largest,
                first_range,
                count,
                rest,
            },
            delay,
        ))
    }

    /// The largest acknowledged packet number.
    pub fn largest(&self) -> u64 {
        self.largest
    }

    /// The number of ranges (at least one).
    pub fn num_ranges(&self) -> u64 {
        self.count.saturating_add(1)
    }

    /// The ranges, from the highest packet numbers to the lowest.
    pub fn iter(&self) -> AckRangesIter<'_> {
        AckRangesIter {
            r: Reader::new(&self.rest),
            left: self.count,
            next: Some(self.largest.saturating_sub(self.first_range)..=self.largest),
        }
    }

    fn encoded_len(&self) -> usize {
        VarInt::size(self.largest)
            + VarInt::size(self.count)
            + VarInt::size(self.first_range)
            + self.rest.len()
    }
}

impl PartialEq for AckRanges {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for AckRanges {}

impl fmt::Debug for AckRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a AckRanges {
    type Item = RangeInclusive<u64>;
    type IntoIter = AckRangesIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterates the ranges of an [`AckRanges`] from the highest packet numbers to the lowest.
#[derive(Debug, Clone)]
pub struct AckRangesIter<'a> {
    r: Reader<'a>,
    left: u64,
    next: Option<RangeInclusive<u64>>,
}

impl Iterator for AckRangesIter<'_> {
    type Item = RangeInclusive<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        let current = self.next.take()?;
        if self.left > 0 {
            self.left -= 1;
            // Validated at decode time (or built by `from_ranges`), so these reads and subtractions
            // succeed; should they not, the iteration simply ends.
            let gap = self.r.read_varint().ok();
            let len = self.r.read_varint().ok();
            self.next = gap.zip(len).and_then(|(gap, len)| {
                let largest = current.start().checked_sub(gap)?.checked_sub(2)?;
                Some(largest.checked_sub(len)?..=largest)
            });
        }
        Some(current)
    }
}

/// Why [`AckFrame::from_ranges`] refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidAckRanges(&'static str);

impl fmt::Display for InvalidAckRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidAckRanges {}

/// An ACK frame (RFC 9000 §19.3), type 0x02, or 0x03 when it carries ECN counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckFrame {
    /// The ACK Delay field as encoded: microseconds scaled down by the sender's `ack_delay_exponent`.
    pub delay: u64,
    /// The acknowledged packet numbers.
    pub ranges: AckRanges,
    /// The ECN counts, present in frames of type 0x03.
    pub ecn: Option<EcnCounts>,
}

impl AckFrame {
    /// Builds an ACK frame from `ranges` given from the highest packet numbers to the lowest.
    ///
    /// Adjacent ranges (such as `8..=9` then `5..=7`) are merged. Fails when there is no range, a range
    /// is empty, ranges overlap or are not descending, or a packet number is 2^62 or more. `delay` is the
    /// encoded ACK Delay value.
    pub fn from_ranges(
        ranges: impl IntoIterator<Item = RangeInclusive<u64>>,
        delay: u64,
        ecn: Option<EcnCounts>,
    ) -> Result<Self, InvalidAckRanges> {
        let mut ranges = ranges.into_iter();
        let first = ranges.next().ok_or(InvalidAckRanges("no ACK range"))?;
        let (mut hi, mut lo) = (*first.end(), *first.start());
        if lo > hi {
            return Err(InvalidAckRanges("empty ACK range"));
        }
        if hi > VarInt::MAX.into_inner() {
            return Err(InvalidAckRanges("packet number 2^62 or more"));
        }
        let mut builder = Builder {
            largest: hi,
            first_range: None,
            prev_smallest: 0,
            count: 0,
            rest: BytesMut::new(),
        };
        for r in ranges {
            let (next_hi, next_lo) = (*r.end(), *r.start());
            if next_lo > next_hi {
                return Err(InvalidAckRanges("empty ACK range"));
            }
            if next_hi >= lo {
                return Err(InvalidAckRanges("ACK ranges overlap or are not descending"));
            }
            if next_hi + 1 == lo {
                lo = next_lo;
                continue;
            }
            builder.push(hi, lo);
            (hi, lo) = (next_hi, next_lo);
        }
        builder.push(hi, lo);
        let ranges = AckRanges {
            largest: builder.largest,
            first_range: builder.first_range.unwrap_or(0),
            count: builder.count,
            rest: builder.rest.freeze(),
        };
        Ok(Self { delay, ranges, ecn })
    }

    /// Decodes the fields after the frame type; `ecn` is whether the type was 0x03.
    pub(super) fn decode_body(r: &mut Reader<'_>, ecn: bool) -> Result<Self, DecodeError> {
        let (ranges, delay) = AckRanges::decode(r)?;
        let ecn = if ecn { Some(EcnCounts::decode(r)?) } else { None };
        Ok(Self { delay, ranges, ecn })
    }

    /// The largest acknowledged packet number.
    pub fn largest(&self) -> u64 {
        self.ranges.largest
    }

    /// The acknowledged ranges, from the highest packet numbers to the lowest.
    pub fn iter(&self) -> AckRangesIter<'_> {
        self.ranges.iter()
    }

    /// The frame type: 0x03 with ECN counts, 0x02 without.
    pub fn frame_type(&self) -> u64 {
        if self.ecn.is_some() {
            ty::ACK_ECN
        } else {
            ty::ACK
        }
    }

    /// Writes the frame, type included.
    ///
    /// # Panics
    ///
    /// When the delay or an ECN count is 2^62 or more (a caller bug).
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_varint(buf, self.frame_type());
        put_varint(buf, self.ranges.largest);
        put_varint(buf, self.delay);
        put_varint(buf, self.ranges.count);
        put_varint(buf, self.ranges.first_range);
        buf.put_slice(&self.ranges.rest);
        if let Some(ecn) = &self.ecn {
            ecn.encode(buf);
        }
    }

    /// The number of bytes [`AckFrame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + VarInt::size(self.delay)
            + self.ranges.encoded_len()
            + self.ecn.as_ref().map_or(0, EcnCounts::encoded_len)
    }
}

/// Accumulates ranges for [`AckFrame::from_ranges`].
struct Builder {
    largest: u64,
    first_range: Option<u64>,
    prev_smallest: u64,
    count: u64,
    rest: BytesMut,
}

impl Builder {
    /// Appends the range `lo..=hi`; the caller checked it is non-empty and at least two below the
    /// previous one.
    fn push(&mut self, hi: u64, lo: u64) {
        if self.first_range.is_none() {
            self.first_range = Some(hi - lo);
        } else {
            // RFC 9000 §19.3.1: largest = previous_smallest - gap - 2.
            put_varint(&mut self.rest, self.prev_smallest - hi - 2);
            put_varint(&mut self.rest, hi - lo);
            self.count += 1;
        }
        self.prev_smallest = lo;
    }
}
