//! Per-packet-number-space state: keys, CRYPTO streams, received packets, pending probes; and the record
//! of what each sent packet carried.

use tinyvec::TinyVec;

use super::ack::{AckConfig, ReceivedPackets};
use super::assembler::Assembler;
use super::range_set::RangeSet;
use super::streams::StreamsSent;
use super::SpaceId;
use crate::crypto::Keys;

/// What a sent packet carried that matters once it is acknowledged or lost.
///
/// One is kept per packet in flight and moved a few times on its way (into the sent list, out of it on
/// acknowledgement or loss), so it is kept small: what ordinary packets carry inline, the rest boxed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SentFrames {
    /// The Largest Acknowledged of an ACK frame it carried (for RFC 9000 §13.2.4).
    pub(crate) ack: Option<u64>,
    /// Stream data and flow-control frames it carried.
    pub(crate) streams: StreamsSent,
    /// Handshake and connection-management frames, if it carried any.
    pub(crate) rare: Option<Box<RareFrames>>,
}

impl SentFrames {
    /// An empty record, built from constants: `Default` fills the inline arrays element by element and
    /// then moves them, which cost a store-forwarding stall or two per packet sent.
    pub(crate) const EMPTY: SentFrames = SentFrames {
        ack: None,
        streams: StreamsSent::EMPTY,
        rare: None,
    };

    /// The record of rarer frames, created on first use.
    pub(crate) fn rare_mut(&mut self) -> &mut RareFrames {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// The frames of a sent packet that only the handshake and connection management send.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RareFrames {
    /// CRYPTO data as (offset, length).
    pub(crate) crypto: TinyVec<[(u64, u32); 2]>,
    /// It carried HANDSHAKE_DONE.
    pub(crate) handshake_done: bool,
    /// RETIRE_CONNECTION_ID sequence numbers it carried.
    pub(crate) retire_cids: TinyVec<[u64; 2]>,
    /// NEW_CONNECTION_ID sequence numbers it carried.
    pub(crate) new_cids: TinyVec<[u64; 2]>,
    /// The data of a PATH_CHALLENGE it carried.
    pub(crate) path_challenge: Option<[u8; 8]>,
    /// The token of a NEW_TOKEN frame it carried, with the client IP address it was made for and its
    /// generation (`NewTokens::replace_all`).
    pub(crate) new_token: Option<(bytes::Bytes, std::net::IpAddr, u32)>,
}

/// The outgoing CRYPTO stream of one space: everything TLS wrote, what was sent, lost and acknowledged.
#[derive(Debug)]
pub(crate) struct CryptoSend {
    /// The bytes written at this level from stream offset `base` on. Handshake flights are a few
    /// kilobytes and the space is dropped with its keys; in the 1-RTT space (session tickets), the
    /// storage is released once everything written is acknowledged.
    data: Vec<u8>,
    /// The stream offset of `data[0]`: everything before it was acknowledged and released.
    base: u64,
    /// The next offset never sent.
    sent: u64,
    /// Ranges to send again (lost, or queued by a probe).
    retransmit: RangeSet,
    /// Ranges the peer acknowledged.
    acked: RangeSet,
}

impl Default for CryptoSend {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl CryptoSend {
    /// Nothing written yet.
    pub(crate) const EMPTY: CryptoSend = CryptoSend {
        data: Vec::new(),
        base: 0,
        sent: 0,
        retransmit: RangeSet::new(),
        acked: RangeSet::new(),
    };

    /// Appends bytes from TLS.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Whether anything waits to be sent.
    pub(crate) fn has_data(&self) -> bool {
        !self.retransmit.is_empty() || self.sent < self.end()
    }

    /// The stream offset after the last byte written.
    fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    /// The next chunk to send, at most `max_len` bytes: lost data first, then new data. Marks it sent.
    pub(crate) fn next_chunk(&mut self, max_len: usize) -> Option<(u64, &[u8])> {
        if max_len == 0 {
            return None;
        }
        let (start, end) = if let Some(r) = self
            .retransmit
            .min()
            .and_then(|m| self.retransmit.range_containing(m))
        {
            let end = (*r.end() + 1).min(r.start() + max_len as u64);
            self.retransmit.remove(*r.start()..=end - 1);
            (*r.start(), end)
        } else if self.sent < self.end() {
            let end = self.end().min(self.sent + max_len as u64);
            let start = self.sent;
            self.sent = end;
            (start, end)
        } else {
            return None;
        };
        // Retransmissions and new data both lie at or above `base`: below it, everything was acknowledged.
        let bytes = self
            .data
            .get((start - self.base) as usize..(end - self.base) as usize)?;
        Some((start, bytes))
    }

    /// Data sent at `offset` was lost: queue what of it is not acknowledged.
    pub(crate) fn on_lost(&mut self, offset: u64, len: u32) {
        if len == 0 {
            return;
        }
        let end = offset + u64::from(len) - 1;
        if end < self.base {
            return;
        }
        let start = offset.max(self.base);
        self.retransmit.insert(start..=end);
        for acked in self.acked.overlapping(start, end) {
            self.retransmit.remove(acked);
        }
    }

    /// Data sent at `offset` was acknowledged.
    pub(crate) fn on_acked(&mut self, offset: u64, len: u32) {
        if len == 0 {
            return;
        }
        let range = offset..=offset + u64::from(len) - 1;
        self.acked.insert(range.clone());
        self.retransmit.remove(range);
        // Everything written so far is acknowledged: release the storage (what a connection holds for
        // its session tickets once they arrived).
        let end = self.end();
        if end > self.base
            && self.sent == end
            && self.retransmit.is_empty()
            && self
                .acked
                .range_containing(self.base)
                .is_some_and(|r| *r.end() + 1 >= end)
        {
            self.base = end;
            self.data = Vec::new();
            self.acked = RangeSet::new();
        }
    }

    /// Whether some data was sent and is not acknowledged yet.
    pub(crate) fn has_unacked(&self) -> bool {
        self.sent > self.base
            && self
                .acked
                .range_containing(self.base)
                .map_or(true, |r| *r.end() + 1 < self.sent)
    }

    /// A probe timeout: queue everything sent and not acknowledged, to be sent again (RFC 9002 §6.2.4).
    pub(crate) fn requeue_unacked(&mut self) {
        if self.sent <= self.base {
            return;
        }
        self.retransmit.insert(self.base..=self.sent - 1);
        for acked in self.acked.iter() {
            self.retransmit.remove(acked);
        }
    }
}

/// Everything one packet number space holds besides the sent packets (which recovery tracks).
#[derive(Debug)]
pub(crate) struct PacketSpace {
    /// Packet protection keys (Initial and Handshake spaces; the Data space keeps its keys apart, for key
    /// updates). `None` before they exist and after they are discarded.
    pub(crate) keys: Option<Keys>,
    /// Whether the keys were discarded (RFC 9001 §4.9): nothing is sent or accepted in the space again.
    pub(crate) discarded: bool,
    /// Outgoing CRYPTO data.
    pub(crate) crypto_send: CryptoSend,
    /// Incoming CRYPTO data.
    pub(crate) crypto_recv: Assembler,
    /// Received packet numbers and the acknowledgement owed for them.
    pub(crate) received: ReceivedPackets,
    /// Ack-eliciting probe packets owed after a PTO (RFC 9002 §6.2.4).
    pub(crate) probes: u8,
    /// A PING is wanted (keep-alive or an explicit request).
    pub(crate) ping_pending: bool,
    /// Our unacknowledged CRYPTO data of this space was queued again on receiving the peer's again
    /// (RFC 9002 §6.2.3; once per space).
    pub(crate) crypto_resent_early: bool,
}

impl PacketSpace {
    /// A space with no keys yet.
    pub(crate) fn new(received: ReceivedPackets) -> Self {
        Self {
            keys: None,
            discarded: false,
            crypto_send: CryptoSend::default(),
            crypto_recv: Assembler::default(),
            received,
            probes: 0,
            ping_pending: false,
            crypto_resent_early: false,
        }
    }

    /// Queues our CRYPTO data of this space that was sent and is not acknowledged to go again now, once
    /// per space (RFC 9002 §6.2.3), unless it already waits to go (declared lost, or held back by the
    /// amplification limit). Whether it did.
    pub(crate) fn resend_crypto_early(&mut self) -> bool {
        if self.crypto_resent_early || !self.crypto_send.has_unacked() || self.crypto_send.has_data() {
            return false;
        }
        self.crypto_resent_early = true;
        self.crypto_send.requeue_unacked();
        true
    }

    /// A discarded space with nothing in it (RFC 9001 §4.9): what a space becomes when its keys are
    /// discarded, and what a released Initial or Handshake space reads as.
    pub(crate) const fn discarded(space: SpaceId) -> Self {
        Self {
            keys: None,
            discarded: true,
            crypto_send: CryptoSend::EMPTY,
            crypto_recv: Assembler::EMPTY,
            received: ReceivedPackets::new(space, AckConfig::DEFAULT),
            probes: 0,
            ping_pending: false,
            crypto_resent_early: false,
        }
    }
}

/// What the Initial and Handshake spaces read as once released.
const RELEASED_PAIR: [PacketSpace; 2] = [
    PacketSpace::discarded(SpaceId::Initial),
    PacketSpace::discarded(SpaceId::Handshake),
];
static RELEASED: [PacketSpace; 2] = RELEASED_PAIR;

/// The three packet number spaces, indexed by [`SpaceId::index`].
///
/// The Initial and Handshake spaces share one box, which is freed once both are discarded (RFC 9001
/// §4.9): an established connection holds only the application data space, about 0.9 KB less per
/// connection. A released space reads as discarded and empty. Mutable access to one through `IndexMut`
/// re-creates the box in that state, without a panic (the connection releases it again at its next
/// timer); code that may meet a discarded space changes it through [`live_mut`](Self::live_mut), which
/// never does.
#[derive(Debug)]
pub(crate) struct Spaces {
    handshake: Option<Box<[PacketSpace; 2]>>,
    data: PacketSpace,
}

impl Spaces {
    /// Fresh spaces without keys, acknowledging with `ack`.
    pub(crate) fn new(ack: AckConfig) -> Self {
        let space = |id| PacketSpace::new(ReceivedPackets::new(id, ack));
        Self {
            handshake: Some(Box::new([space(SpaceId::Initial), space(SpaceId::Handshake)])),
            data: space(SpaceId::Data),
        }
    }

    /// Frees the Initial and Handshake spaces if both are discarded.
    pub(crate) fn release_discarded(&mut self) {
        if self
            .handshake
            .as_ref()
            .is_some_and(|b| b.iter().all(|s| s.discarded))
        {
            self.handshake = None;
        }
    }

    /// Space `i` for changes, unless it is discarded (or released, which it then stays).
    pub(crate) fn live_mut(&mut self, i: usize) -> Option<&mut PacketSpace> {
        if self[i].discarded {
            return None;
        }
        Some(&mut self[i])
    }

    /// Whether the Initial and Handshake spaces are released.
    #[cfg(test)]
    pub(crate) fn handshake_released(&self) -> bool {
        self.handshake.is_none()
    }

    /// The three spaces in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &PacketSpace> {
        [&self[0], &self[1], &self.data].into_iter()
    }
}

/// The Initial and Handshake spaces as they read once released, in a box of their own.
#[cold]
#[inline(never)]
fn released_pair() -> Box<[PacketSpace; 2]> {
    Box::new(RELEASED_PAIR)
}

impl std::ops::Index<usize> for Spaces {
    type Output = PacketSpace;

    #[inline]
    fn index(&self, i: usize) -> &PacketSpace {
        if i == SpaceId::Data.index() {
            return &self.data;
        }
        match &self.handshake {
            Some(b) => &b[i],
            None => &RELEASED[i],
        }
    }
}

impl std::ops::IndexMut<usize> for Spaces {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut PacketSpace {
        if i == SpaceId::Data.index() {
            return &mut self.data;
        }
        &mut self.handshake.get_or_insert_with(released_pair)[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_spaces_read_as_discarded_and_come_back_on_mutable_access() {
        let mut spaces = Spaces::new(AckConfig::DEFAULT);
        spaces[SpaceId::Initial.index()]
            .crypto_send
            .write(b"client hello");
        spaces[SpaceId::Initial.index()].discarded = true;
        spaces.release_discarded();
        assert!(!spaces.handshake_released(), "the Handshake space is still live");
        spaces[SpaceId::Handshake.index()].discarded = true;
        spaces.release_discarded();
        assert!(spaces.handshake_released());
        for (i, s) in spaces.iter().enumerate() {
            assert_eq!(s.discarded, i != SpaceId::Data.index());
            assert!(s.keys.is_none() && !s.crypto_send.has_data() && s.received.largest().is_none());
            assert_eq!(s.received.space().index(), i);
        }
        // The application space is unaffected; touching a released space mutably re-creates it,
        // discarded and empty, without a panic, and the next release frees it again.
        spaces[SpaceId::Data.index()].ping_pending = true;
        assert!(spaces.handshake_released());
        spaces[SpaceId::Handshake.index()].probes = 1;
        assert!(!spaces.handshake_released());
        assert!(spaces[SpaceId::Handshake.index()].discarded);
        assert!(spaces[SpaceId::Data.index()].ping_pending);
        spaces.release_discarded();
        assert!(spaces.handshake_released());
        // `live_mut` leaves released spaces alone.
        assert!(spaces.live_mut(SpaceId::Initial.index()).is_none());
        assert!(spaces.live_mut(SpaceId::Handshake.index()).is_none());
        assert!(spaces.handshake_released());
        assert!(spaces.live_mut(SpaceId::Data.index()).is_some());
    }

    #[test]
    fn crypto_send_retransmits_only_what_is_lost_and_unacked() {
        let mut c = CryptoSend::default();
        c.write(&[7; 100]);
        assert_eq!(c.next_chunk(40).map(|(o, d)| (o, d.len())), Some((0, 40)));
        assert_eq!(c.next_chunk(100).map(|(o, d)| (o, d.len())), Some((40, 60)));
        assert!(!c.has_data());
        c.on_acked(0, 40);
        c.on_lost(20, 50); // 20..40 was acked meanwhile
        assert_eq!(c.next_chunk(100).map(|(o, d)| (o, d.len())), Some((40, 30)));
        assert!(!c.has_data());
        c.requeue_unacked();
        assert_eq!(c.next_chunk(100).map(|(o, d)| (o, d.len())), Some((40, 60)));
        c.on_acked(40, 60);
        assert!(!c.has_data());
    }

    #[test]
    fn crypto_send_releases_acknowledged_data_and_keeps_offsets() {
        let mut c = CryptoSend::default();
        c.write(&[1; 50]);
        assert_eq!(c.next_chunk(100).map(|(o, d)| (o, d.len())), Some((0, 50)));
        c.on_acked(0, 50);
        assert_eq!(c.data.capacity(), 0, "everything acknowledged: storage released");
        // A late loss report or a probe of released data sends nothing.
        c.on_lost(0, 50);
        c.requeue_unacked();
        assert!(!c.has_data());
        // Later data (another ticket) continues at offset 50.
        c.write(&[2; 30]);
        let (offset, data) = c.next_chunk(100).expect("new data");
        assert_eq!((offset, data), (50, &[2u8; 30][..]));
        c.on_lost(50, 30);
        assert_eq!(
            c.next_chunk(10).map(|(o, d)| (o, d.to_vec())),
            Some((50, vec![2; 10]))
        );
        c.on_acked(50, 10);
        c.on_acked(60, 20);
        assert!(!c.has_data());
        assert_eq!(c.data.capacity(), 0);
    }
}
