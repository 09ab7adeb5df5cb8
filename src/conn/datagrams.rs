//! Unreliable datagrams (RFC 9221): bounded send and receive queues.

use std::collections::VecDeque;

use bytes::Bytes;

use super::assembler::compact;

/// What each received datagram costs against the receive limit besides its bytes (its queue slot and
/// allocation), so that empty datagrams count too.
pub(crate) const RECV_ENTRY_COST: usize = 64;

/// The same for a datagram queued for sending: without it, empty datagrams queued by an application that
/// never sends would grow the queue without bound.
const SEND_ENTRY_COST: usize = RECV_ENTRY_COST;

/// The queue slots an emptied queue keeps.
const KEPT_SLOTS: usize = 64;

/// Why a datagram could not be queued for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendDatagramError {
    /// The peer did not announce DATAGRAM support (max_datagram_frame_size, RFC 9221 §3; a value of 0
    /// means none, and 1 leaves room for no frame), or its parameters have not arrived yet.
    UnsupportedByPeer,
    /// Datagrams are disabled locally (no send buffer configured).
    Disabled,
    /// Larger than the peer accepts, than one packet can carry or than the send buffer holds; the limit
    /// is attached.
    TooLarge {
        /// The largest datagram payload that can be sent now.
        max: usize,
    },
    /// The connection is closing or closed: nothing more is sent.
    ConnectionClosed,
}

impl std::fmt::Display for SendDatagramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendDatagramError::UnsupportedByPeer => f.write_str("the peer does not accept datagrams"),
            SendDatagramError::Disabled => f.write_str("datagrams are disabled"),
            SendDatagramError::TooLarge { max } => write!(f, "datagram larger than {max} bytes"),
            SendDatagramError::ConnectionClosed => f.write_str("connection closed"),
        }
    }
}

impl std::error::Error for SendDatagramError {}

/// The datagram queues of one connection.
#[derive(Debug, Default)]
pub(crate) struct Datagrams {
    pub(crate) send: VecDeque<Bytes>,
    send_bytes: usize,
    recv: VecDeque<Bytes>,
    recv_bytes: usize,
    /// Datagrams dropped from the send queue because it was full (the oldest go first).
    pub(crate) send_dropped: u64,
    /// Datagrams dropped on arrival because the receive queue was full (the oldest go first).
    pub(crate) recv_dropped: u64,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    /// The last packet that carried datagrams left stream frames waiting: the next one writes stream
    /// frames first (see `build_packet_with`).
    pub(crate) streams_next: bool,
}

impl Datagrams {
    /// Queues `data`, dropping the oldest queued datagrams while the queue would exceed `limit` bytes
    /// (each datagram counted with [`SEND_ENTRY_COST`] more; one alone always fits).
    pub(crate) fn push_send(&mut self, data: Bytes, limit: usize) {
        let cost = data.len() + SEND_ENTRY_COST;
        while self.send_bytes + cost > limit {
            let Some(old) = self.send.pop_front() else { break };
            self.send_bytes -= old.len() + SEND_ENTRY_COST;
            self.send_dropped += 1;
        }
        self.send_bytes += cost;
        self.send.push_back(data);
    }

    /// The next datagram to send, if it fits `room` bytes of frame payload.
    pub(crate) fn pop_send_if(&mut self, fits: impl FnOnce(&Bytes) -> bool) -> Option<Bytes> {
        if !fits(self.send.front()?) {
            return None;
        }
        let d = self.send.pop_front()?;
        self.send_bytes -= d.len() + SEND_ENTRY_COST;
        self.sent += 1;
        release_if_emptied(&mut self.send);
        Some(d)
    }

    /// Drops (and counts) the queued datagrams longer than `max` bytes: the path MTU shrank below them,
    /// and one that can never fit a packet would hold up the queue behind it.
    pub(crate) fn drop_longer_than(&mut self, max: usize) {
        let before = self.send.len();
        self.send.retain(|d| d.len() <= max);
        self.send_dropped += (before - self.send.len()) as u64;
        self.send_bytes = self.send.iter().map(|d| d.len() + SEND_ENTRY_COST).sum();
    }

    /// Stores a received datagram, dropping the oldest while the queue would exceed `limit` bytes (each
    /// datagram counted with [`RECV_ENTRY_COST`] more). Returns whether the application should be told
    /// (the queue was empty).
    pub(crate) fn push_recv(&mut self, data: Bytes, limit: usize, buffer_len: usize) -> bool {
        self.received += 1;
        // The application was told when the queue last became non-empty and has not read since.
        let was_empty = self.recv.is_empty();
        let cost = data.len() + RECV_ENTRY_COST;
        if cost > limit {
            // It could never be stored: dropped alone, not after everything waiting was dropped for it.
            self.recv_dropped += 1;
            return false;
        }
        while self.recv_bytes + cost > limit {
            let Some(old) = self.recv.pop_front() else { break };
            self.recv_bytes -= old.len() + RECV_ENTRY_COST;
            self.recv_dropped += 1;
        }
        self.recv_bytes += cost;
        // A small datagram, or one that is less than half of the large buffer it came in (a UDP datagram,
        // or a batch of them), is copied out of it: the application may let it wait, and a slice would
        // keep the whole buffer alive.
        self.recv.push_back(compact(data, buffer_len));
        was_empty
    }

    /// The oldest received datagram.
    pub(crate) fn pop_recv(&mut self) -> Option<Bytes> {
        let d = self.recv.pop_front()?;
        self.recv_bytes -= d.len() + RECV_ENTRY_COST;
        release_if_emptied(&mut self.recv);
        Some(d)
    }

    /// The received datagrams waiting for the application, and the slots of their queue.
    #[cfg(test)]
    pub(crate) fn recv_slots(&self) -> (usize, usize) {
        (self.recv.len(), self.recv.capacity())
    }

    /// Fuzzing hook: asserts that each queue's byte count is what it holds and stays within its limit
    /// (`None`: datagrams are not received, so nothing is held). One datagram alone always fits the send
    /// queue, but never one larger than the limit (`send_datagram` refuses those).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn assert_bounded(&self, send_limit: usize, recv_limit: Option<usize>) {
        let cost = |q: &VecDeque<Bytes>, entry: usize| q.iter().map(|d| d.len() + entry).sum::<usize>();
        assert_eq!(
            self.send_bytes,
            cost(&self.send, SEND_ENTRY_COST),
            "send queue: byte count"
        );
        assert_eq!(
            self.recv_bytes,
            cost(&self.recv, RECV_ENTRY_COST),
            "receive queue: byte count"
        );
        assert!(
            self.send_bytes <= send_limit || (self.send.len() == 1 && self.send[0].len() <= send_limit),
            "send queue: {} bytes in {} datagrams over the limit of {send_limit}",
            self.send_bytes,
            self.send.len()
        );
        assert!(
            self.recv_bytes <= recv_limit.unwrap_or(0),
            "receive queue: {} bytes in {} datagrams over the limit of {recv_limit:?}",
            self.recv_bytes,
            self.recv.len()
        );
    }
}

/// Releases the slots of an emptied queue that a burst grew beyond [`KEPT_SLOTS`]: up to 16,384 of 32
/// bytes each under the default limits, which would otherwise stay held for the connection's life.
fn release_if_emptied(queue: &mut VecDeque<Bytes>) {
    if queue.is_empty() && queue.capacity() > KEPT_SLOTS {
        // Down to the slots kept rather than none: bursts of a few dozen then cost no reallocation.
        queue.shrink_to(KEPT_SLOTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the path MTU shrinks, datagrams that no longer fit a packet leave the queue (counted), so
    /// the ones behind them still go.
    #[test]
    fn datagrams_too_long_for_a_smaller_mtu_are_dropped() {
        let mut d = Datagrams::default();
        for len in [1400, 100, 1300, 200] {
            d.push_send(Bytes::from(vec![0; len]), 1 << 20);
        }
        d.drop_longer_than(1150);
        assert_eq!(d.send_dropped, 2);
        assert_eq!(d.send_bytes, 300 + 2 * SEND_ENTRY_COST);
        assert_eq!(d.pop_send_if(|_| true).map(|b| b.len()), Some(100));
        assert_eq!(d.pop_send_if(|_| true).map(|b| b.len()), Some(200));
        assert!(d.pop_send_if(|_| true).is_none());
    }

    #[test]
    fn queues_drop_the_oldest_when_full() {
        let mut d = Datagrams::default();
        // Room for three datagrams of 10 bytes and their queue slots.
        for i in 0..5u8 {
            d.push_send(Bytes::from(vec![i; 10]), 3 * (10 + SEND_ENTRY_COST));
        }
        assert_eq!(d.send_dropped, 2);
        assert_eq!(d.send.front().map(|b| b[0]), Some(2));
        assert!(
            d.pop_send_if(|b| b.len() < 5).is_none(),
            "too large for the room: stays queued"
        );
        assert_eq!(d.pop_send_if(|_| true).map(|b| b[0]), Some(2));

        let limit = 5 + RECV_ENTRY_COST;
        assert!(d.push_recv(Bytes::from_static(b"abc"), limit, 0));
        assert!(
            !d.push_recv(Bytes::from_static(b"def"), limit, 0),
            "not the first in the queue"
        );
        assert_eq!(d.recv_dropped, 1);
        assert_eq!(d.pop_recv().as_deref(), Some(&b"def"[..]));
        assert_eq!(d.pop_recv(), None);
    }

    #[test]
    fn a_datagram_larger_than_the_receive_limit_drops_only_itself() {
        // One that could never be stored is dropped on arrival; the datagrams already waiting stay.
        let mut d = Datagrams::default();
        let limit = 100 + 2 * RECV_ENTRY_COST;
        assert!(d.push_recv(Bytes::from_static(b"first"), limit, 0));
        assert!(!d.push_recv(Bytes::from(vec![0; 500]), limit, 0));
        assert_eq!(d.recv_dropped, 1);
        assert_eq!(d.pop_recv().as_deref(), Some(&b"first"[..]));
        assert_eq!(d.pop_recv(), None);
    }

    #[test]
    fn empty_datagrams_count_against_the_receive_limit() {
        // Each queued datagram costs a slot whatever its length: a peer sending empty ones (two bytes of
        // frame each) cannot make the queue grow without bound.
        let mut d = Datagrams::default();
        let limit = 1 << 20;
        for _ in 0..500_000 {
            d.push_recv(Bytes::new(), limit, 0);
        }
        assert_eq!(d.recv.len(), limit / RECV_ENTRY_COST);
        assert_eq!(d.recv_dropped, 500_000 - (limit / RECV_ENTRY_COST) as u64);
        while d.pop_recv().is_some() {}
        assert_eq!(d.recv_bytes, 0);
    }

    #[test]
    fn small_received_datagrams_do_not_keep_their_packet_alive() {
        let mut d = Datagrams::default();
        let packet = Bytes::from(vec![9u8; 1500]);
        d.push_recv(packet.slice(100..110), 1 << 20, packet.len());
        d.push_recv(packet.slice(200..1400), 1 << 20, packet.len());
        let small = d.pop_recv().unwrap();
        let large = d.pop_recv().unwrap();
        assert!(!packet.as_ptr_range().contains(&small.as_ptr()), "copied out");
        assert!(packet.as_ptr_range().contains(&large.as_ptr()), "zero-copy");
    }

    /// Empty datagrams count against the send limit too: before, a million of them queued under a
    /// limit of 1200 bytes.
    #[test]
    fn empty_datagrams_count_against_the_send_limit() {
        let mut d = Datagrams::default();
        let limit = 1200;
        for _ in 0..1_000_000 {
            d.push_send(Bytes::new(), limit);
        }
        assert_eq!(d.send.len(), limit / SEND_ENTRY_COST);
        assert_eq!(d.send_dropped, 1_000_000 - (limit / SEND_ENTRY_COST) as u64);
        // One datagram as large as the limit still goes alone.
        d.push_send(Bytes::from(vec![1; limit]), limit);
        assert_eq!(d.send.len(), 1);
        assert_eq!(d.pop_send_if(|_| true).map(|b| b.len()), Some(limit));
        assert_eq!(d.send_bytes, 0);
    }

    /// A burst of small datagrams grows a queue to thousands of slots (a peer's empty datagrams, 600 to a
    /// packet, fill the receive queue's 16,384 in 28 packets): once the queue is read empty, its slots
    /// are released, not held for the connection's life.
    #[test]
    fn emptied_queues_release_their_slots() {
        let mut d = Datagrams::default();
        for _ in 0..20_000 {
            d.push_recv(Bytes::new(), 1 << 20, 0);
            d.push_send(Bytes::new(), 1 << 20);
        }
        assert!(d.recv.capacity() >= 16_384 && d.send.capacity() >= 16_384);
        while d.pop_recv().is_some() {}
        while d.pop_send_if(|_| true).is_some() {}
        assert!(d.recv.capacity() <= KEPT_SLOTS, "{}", d.recv.capacity());
        assert!(d.send.capacity() <= KEPT_SLOTS, "{}", d.send.capacity());
    }
}
