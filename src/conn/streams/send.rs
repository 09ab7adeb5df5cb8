//! The sending half of a stream (RFC 9000 §3.1): buffered data, what was sent, acknowledged and lost,
//! the FIN, RESET_STREAM and the peer's STOP_SENDING.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::conn::range_set::RangeSet;
use crate::wire::frame::{StreamFrame, StreamId};
use crate::wire::VarInt;

/// Where a RESET_STREAM we issued stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResetState {
    /// To be sent (first time or again after a loss).
    Pending,
    /// In flight.
    Sent,
    /// Acknowledged: the send side is over ("Reset Recvd", RFC 9000 §3.1).
    Acked,
}

/// A RESET_STREAM we issued.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResetInfo {
    /// The application error code.
    pub(super) code: u64,
    /// The final size: the highest offset sent (RFC 9000 §4.5).
    pub(super) final_size: u64,
    /// Where the frame stands.
    pub(super) state: ResetState,
}

/// What [`SendStream::write_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Wrote a STREAM frame.
    Frame {
        /// Offset of its data.
        offset: u64,
        /// Length of its data.
        len: u64,
        /// Whether it carried the FIN.
        fin: bool,
        /// Bytes of it that were never sent before (they consume connection credit).
        new: u64,
    },
    /// Not even the smallest useful frame fits in the space left.
    NoSpace,
    /// Only new data is left and the stream's flow-control limit is reached.
    StreamBlocked,
    /// Only new data is left and the connection's flow-control limit is reached.
    ConnBlocked,
    /// Nothing to send.
    Idle,
}

/// The sending half of a stream.
#[derive(Debug)]
pub(super) struct SendStream {
    /// The bytes from `base` to `write_offset`: written and not yet acknowledged in order.
    data: VecDeque<u8>,
    /// Stream offset of `data[0]`; every byte below was acknowledged.
    base: u64,
    /// Bytes the application wrote.
    write_offset: u64,
    /// The next offset never sent: the flow-control credit this stream consumed.
    sent: u64,
    /// Ranges to send again, above `base`.
    retransmit: RangeSet,
    /// Ranges acknowledged above `base`.
    acked: RangeSet,
    /// The peer's limit for this stream (initial parameter or MAX_STREAM_DATA).
    pub(super) max_data: u64,
    /// The application called finish.
    finished: bool,
    /// The FIN was sent and not declared lost since.
    fin_sent: bool,
    /// The FIN was acknowledged.
    fin_acked: bool,
    /// Our RESET_STREAM, once the application reset the stream or the peer stopped it.
    pub(super) reset: Option<ResetInfo>,
    /// The peer's STOP_SENDING code (RFC 9000 §3.5).
    pub(super) stopped: Option<u64>,
    /// The limit for which STREAM_DATA_BLOCKED was last queued.
    pub(super) blocked_at: Option<u64>,
    /// A write was refused or cut short for lack of buffer space: signal Writable when enough space frees up
    /// ([`writable_threshold`](Self::writable_threshold)).
    pub(super) want_writable: bool,
    /// The Finished event was emitted.
    pub(super) finished_signaled: bool,
}

impl SendStream {
    /// A stream the peer lets us send `max_data` bytes on.
    pub(super) fn new(max_data: u64) -> Self {
        Self {
            data: VecDeque::new(),
            base: 0,
            write_offset: 0,
            sent: 0,
            retransmit: RangeSet::new(),
            acked: RangeSet::new(),
            max_data,
            finished: false,
            fin_sent: false,
            fin_acked: false,
            reset: None,
            stopped: None,
            blocked_at: None,
            want_writable: false,
            finished_signaled: false,
        }
    }

    /// The most send-buffer capacity a forgotten stream keeps for reuse (see `Streams::new_stream`).
    pub(super) const REUSED_CAPACITY: usize = 2048;

    /// A fresh send half, as [`SendStream::new`], with the buffer storage of `old` (a half emptied by
    /// [`SendStream::release`]) if it has any.
    pub(super) fn reusing(old: Option<SendStream>, max_data: u64) -> Self {
        let mut fresh = Self::new(max_data);
        if let Some(old) = old {
            debug_assert!(old.data.is_empty(), "released before reuse");
            fresh.data = old.data;
        }
        fresh
    }

    /// Drops the stream's data, keeping the buffer's storage only if it is at most
    /// [`REUSED_CAPACITY`](Self::REUSED_CAPACITY) bytes.
    pub(super) fn release(&mut self) {
        if self.data.capacity() > Self::REUSED_CAPACITY {
            self.data = VecDeque::new();
        } else {
            self.data.clear();
        }
    }

    /// Bytes written and not yet acknowledged in order.
    pub(super) fn buffered(&self) -> usize {
        self.data.len()
    }

    /// The buffer's storage, in bytes.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Gives back storage above `keep` bytes once the buffer drained to half of it: a buffer grown while
    /// the congestion window was large does not keep its peak size for the rest of the stream, and the
    /// storage of a grown buffer stays within twice what it holds.
    pub(super) fn trim(&mut self, keep: usize) {
        let capacity = self.data.capacity();
        if capacity > keep.max(Self::REUSED_CAPACITY) && self.data.len() <= capacity / 2 {
            self.data.shrink_to(self.data.len().max(keep));
        }
    }

    /// Whether the application may still write (no finish, no reset).
    pub(super) fn is_writable(&self) -> bool {
        !self.finished && self.reset.is_none()
    }

    /// Copies as much of `src` as fits under `buffer_limit` buffered bytes; returns how much.
    pub(super) fn write(&mut self, src: &[u8], buffer_limit: usize) -> usize {
        let room = buffer_limit.saturating_sub(self.data.len());
        // Offsets stay below 2^62 (RFC 9000 §19.8).
        let offset_room = VarInt::MAX.into_inner().saturating_sub(self.write_offset);
        let n = src
            .len()
            .min(room)
            .min(usize::try_from(offset_room).unwrap_or(usize::MAX));
        // Storage doubles as it grows, but never past the limit: a buffer whose limit is 16 MiB does
        // not reserve 32 MiB to hold it.
        let needed = self.data.len() + n;
        if needed > self.data.capacity() {
            let target = self
                .data
                .capacity()
                .saturating_mul(2)
                .min(buffer_limit)
                .max(needed);
            self.data.reserve_exact(target - self.data.len());
        }
        // A slice, not `iter().take(n)`: extending from a slice is one copy, not a loop over bytes.
        self.data.extend(&src[..n]);
        self.write_offset += n as u64;
        n
    }

    /// Room left in the send buffer.
    pub(super) fn room(&self, buffer_limit: usize) -> usize {
        buffer_limit.saturating_sub(self.data.len())
    }

    /// The room a refused writer waits for before it is told to write again: a sixty-fourth of the
    /// buffer (2 KiB of the default 128 KiB, more while it has grown with the congestion window).
    /// Waking it for every acknowledgement had it write what one acknowledgement freed, a packet's worth
    /// give or take a few bytes, and the few bytes went out as a packet of their own (the sender-side
    /// silly window syndrome, RFC 1122 §4.2.3.4 for TCP): on a path whose bandwidth-delay product
    /// exceeds the buffer, every other packet carried a handful of bytes. A larger threshold leaves the
    /// buffer, and so the flight, emptier before it refills.
    pub(super) fn writable_threshold(buffer_limit: usize) -> usize {
        (buffer_limit / 64).max(1)
    }

    /// Marks the end of the stream; the FIN goes out after the buffered data.
    pub(super) fn finish(&mut self) {
        self.finished = true;
    }

    /// Abandons the stream with `code` (RFC 9000 §3.1 "Reset Sent"); returns false when there is nothing
    /// left to reset (already reset, or all data and the FIN acknowledged).
    pub(super) fn reset(&mut self, code: u64) -> bool {
        if self.reset.is_some() || self.is_all_acked() {
            return false;
        }
        // RFC 9000 §4.5: the final size is the flow-control credit consumed, i.e. the bytes sent.
        self.reset = Some(ResetInfo {
            code,
            final_size: self.sent,
            state: ResetState::Pending,
        });
        // RFC 9000 §13.3: after RESET_STREAM, stream data is not sent again.
        self.data = VecDeque::new();
        self.base = self.sent;
        self.retransmit.clear();
        self.acked.clear();
        true
    }

    /// All data and the FIN were acknowledged ("Data Recvd", RFC 9000 §3.1).
    pub(super) fn is_all_acked(&self) -> bool {
        self.reset.is_none() && self.finished && self.fin_acked && self.base == self.write_offset
    }

    /// The send side is over: everything acknowledged, or the reset acknowledged.
    pub(super) fn is_done(&self) -> bool {
        self.is_all_acked() || self.reset.is_some_and(|r| r.state == ResetState::Acked)
    }

    /// Whether a FIN (re)transmission is owed.
    fn fin_owed(&self) -> bool {
        self.finished && !self.fin_sent && !self.fin_acked
    }

    /// Whether there is anything to send, flow control aside.
    pub(super) fn has_data(&self) -> bool {
        self.reset.is_none()
            && (!self.retransmit.is_empty() || self.sent < self.write_offset || self.fin_owed())
    }

    /// New bytes the stream's own limit lets go: what connection credit could be spent on now.
    pub(super) fn new_data_within_limit(&self) -> u64 {
        self.write_offset.min(self.max_data).saturating_sub(self.sent)
    }

    /// Whether only new data is left and the stream limit holds it back.
    pub(super) fn is_stream_blocked(&self) -> bool {
        self.reset.is_none()
            && self.retransmit.is_empty()
            && self.sent < self.write_offset
            && self.sent >= self.max_data
    }

    /// Blocked at the peer's limit, with STREAM_DATA_BLOCKED sent for that limit already.
    pub(super) fn blocked_frame_sent(&self) -> bool {
        self.is_stream_blocked() && self.blocked_at == Some(self.max_data)
    }

    /// Writes one STREAM frame for `id` into `buf` within `space` bytes: lost data first, then new
    /// data within the stream limit and `conn_credit` new bytes, then a lone FIN.
    pub(super) fn write_frame(
        &mut self,
        id: StreamId,
        buf: &mut Vec<u8>,
        space: usize,
        conn_credit: u64,
    ) -> Next {
        if self.reset.is_some() {
            return Next::Idle;
        }
        while let Some(r) = self
            .retransmit
            .min()
            .and_then(|m| self.retransmit.range_containing(m))
        {
            let start = (*r.start()).max(self.base);
            let end = r.end().saturating_add(1);
            if end <= start {
                // Below `base`: acknowledged meanwhile (not expected, acks remove retransmissions).
                self.retransmit.remove(r);
                continue;
            }
            let max_len = match StreamFrame::max_data_len(id, start, space, true) {
                Some(n) if n > 0 => n as u64,
                _ => return Next::NoSpace,
            };
            let len = end.saturating_sub(start).min(max_len);
            if len > 0 {
                self.retransmit.remove(start..=start + len - 1);
            }
            let fin = self.finished && start + len == self.write_offset && !self.fin_acked;
            self.encode(buf, id, start, len, fin);
            return Next::Frame {
                offset: start,
                len,
                fin,
                new: 0,
            };
        }
        if self.sent < self.write_offset {
            if self.sent >= self.max_data {
                return Next::StreamBlocked;
            }
            if conn_credit == 0 {
                return Next::ConnBlocked;
            }
            let max_len = match StreamFrame::max_data_len(id, self.sent, space, true) {
                Some(n) if n > 0 => n as u64,
                _ => return Next::NoSpace,
            };
            let start = self.sent;
            let len = (self.write_offset.min(self.max_data) - start)
                .min(conn_credit)
                .min(max_len);
            let fin = self.finished && start + len == self.write_offset;
            self.encode(buf, id, start, len, fin);
            self.sent += len;
            return Next::Frame {
                offset: start,
                len,
                fin,
                new: len,
            };
        }
        if self.fin_owed() {
            if StreamFrame::max_data_len(id, self.write_offset, space, true).is_none() {
                return Next::NoSpace;
            }
            self.encode(buf, id, self.write_offset, 0, true);
            return Next::Frame {
                offset: self.write_offset,
                len: 0,
                fin: true,
                new: 0,
            };
        }
        Next::Idle
    }

    /// Appends a STREAM frame (with its length field) carrying `len` buffered bytes at `offset`.
    fn encode(&mut self, buf: &mut Vec<u8>, id: StreamId, offset: u64, len: u64, fin: bool) {
        if fin {
            self.fin_sent = true;
        }
        let header = StreamFrame {
            id,
            offset,
            fin,
            data: Bytes::new(),
        };
        VarInt::saturating(header.frame_type(true)).encode(buf);
        VarInt::saturating(id.0).encode(buf);
        if offset != 0 {
            VarInt::saturating(offset).encode(buf);
        }
        VarInt::saturating(len).encode(buf);
        // Invariant: base <= offset and offset + len <= write_offset, so the range lies in `data`.
        let start = usize::try_from(offset - self.base).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        let (a, b) = self.data.as_slices();
        let a_end = end.min(a.len());
        if start < a_end {
            buf.extend_from_slice(a.get(start..a_end).unwrap_or_default());
        }
        let b_start = start.max(a.len()) - a.len();
        let b_end = end.max(a.len()) - a.len();
        if b_start < b_end {
            buf.extend_from_slice(b.get(b_start..b_end).unwrap_or_default());
        }
    }

    /// A STREAM frame at `offset` with `len` bytes (and the FIN when `fin`) was acknowledged. Returns
    /// the buffer bytes released.
    pub(super) fn on_acked(&mut self, offset: u64, len: u64, fin: bool) -> usize {
        if self.reset.is_some() {
            return 0;
        }
        if fin {
            self.fin_acked = true;
        }
        let start = offset.max(self.base);
        let end = offset.saturating_add(len).min(self.sent);
        if start >= end {
            return 0;
        }
        if !self.retransmit.is_empty() {
            self.retransmit.remove(start..=end - 1);
        }
        if start == self.base && self.acked.is_empty() {
            // In-order acknowledgement, the common case: release the bytes without the range set.
            let n = usize::try_from(end - self.base)
                .unwrap_or(usize::MAX)
                .min(self.data.len());
            self.data.drain(..n);
            self.base = end;
            return n;
        }
        self.acked.insert(start..=end - 1);
        let Some(r) = self.acked.range_containing(self.base) else {
            return 0;
        };
        self.acked.remove(r.clone());
        let n = usize::try_from(r.end() + 1 - self.base)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        self.data.drain(..n);
        self.base = r.end() + 1;
        n
    }

    /// A STREAM frame at `offset` with `len` bytes was lost: queue what of it is not acknowledged
    /// (nothing once reset: RFC 9000 §13.3).
    pub(super) fn on_lost(&mut self, offset: u64, len: u64, fin: bool) {
        if self.reset.is_some() {
            return;
        }
        if fin && !self.fin_acked {
            self.fin_sent = false;
        }
        let start = offset.max(self.base);
        let end = offset.saturating_add(len).min(self.sent);
        if start >= end {
            return;
        }
        // Subtract the acknowledged ranges within the piece. Only those are visited: a peer acknowledging
        // every other one-byte piece (raising MAX_STREAM_DATA a byte at a time) holds thousands of
        // ranges, and walking all of them for each lost piece was quadratic in what it sent.
        let mut cursor = start;
        for r in self.acked.overlapping(start, end - 1) {
            if *r.end() < cursor {
                continue;
            }
            if *r.start() >= end {
                break;
            }
            if *r.start() > cursor {
                self.retransmit.insert(cursor..=*r.start() - 1);
            }
            cursor = r.end() + 1;
        }
        if cursor < end {
            self.retransmit.insert(cursor..=end - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::range_set::tests::take_visited;
    use crate::wire::frame::Dir;
    use crate::Side;

    /// A lost piece is checked against the acknowledged ranges around it only: with 4,000 acknowledged
    /// one-byte pieces, each loss walked all ranges below it (about 8 million range visits for the
    /// 4,000 losses here).
    #[test]
    fn a_lost_piece_visits_only_the_acknowledged_ranges_around_it() {
        let id = StreamId::new(Side::Client, Dir::Uni, 0);
        let mut s = SendStream::new(u64::MAX);
        assert_eq!(s.write(&[7; 8000], usize::MAX), 8000);
        let mut buf = Vec::new();
        for _ in 0..8000 {
            // One byte of connection credit each time: one-byte frames.
            assert!(matches!(
                s.write_frame(id, &mut buf, 100, 1),
                Next::Frame { len: 1, .. }
            ));
        }
        for offset in (1..8000).step_by(2) {
            s.on_acked(offset, 1, false);
        }
        assert_eq!(s.acked.len(), 4000);
        take_visited();
        for offset in (0..8000).step_by(2) {
            s.on_lost(offset, 1, false);
        }
        let visited = take_visited();
        assert!(visited <= 2 * 4000, "{visited} ranges visited for 4,000 losses");
        // Exactly the lost bytes wait for retransmission.
        assert_eq!(s.retransmit.len(), 4000);
        assert!(s
            .retransmit
            .iter()
            .all(|r| r.start() == r.end() && r.start() % 2 == 0));
    }
}
