//! The packets of one space still in flight, in a deque ordered by packet number.
//!
//! Packet numbers are sent in increasing order, and packets leave mostly from the front (acknowledged
//! or declared lost in order), so a ring buffer appended at the back does what an ordered map would,
//! without a tree node allocation per few packets. A packet taken out of the middle leaves an empty
//! slot; empty slots at the front are dropped at once, so the deque spans from the oldest packet in
//! flight to the newest. Lookups are binary searches; numbers skipped between packets take no room.
//!
//! Between two neighbouring slots lie only numbers never sent and packets sent but not in flight (only
//! ACK frames, or CONNECTION_CLOSE), which are not tracked. Each slot remembers whether one of those in
//! the gap below it was acknowledged: persistent congestion (RFC 9002 §7.6.2) needs to know that none of
//! the packets sent between two lost ones was.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};
use std::time::Instant;

use super::SentPacket;

/// Slots reserved when the first packet goes in flight.
const INITIAL_SLOTS: usize = 32;

/// One in-flight packet number: its packet until acknowledged or lost, then an empty slot.
#[derive(Debug)]
struct Slot<T> {
    pn: u64,
    /// Whether a packet sent between the previous slot's packet and this one (so not in flight) has been
    /// acknowledged.
    gap_acked: bool,
    packet: Option<SentPacket<T>>,
}

#[derive(Debug)]
pub(super) struct SentPackets<T> {
    /// Packet numbers strictly increase along the deque. The first slot, when there is one, is occupied.
    slots: VecDeque<Slot<T>>,
    /// Occupied slots.
    len: usize,
}

impl<T> Default for SentPackets<T> {
    fn default() -> Self {
        Self {
            slots: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> SentPackets<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds packet `pn`, larger than every packet number added before. `largest_acked` is the largest
    /// packet number of the space acknowledged so far: above the newest slot, it is a packet sent since
    /// (not in flight) and acknowledged, in the gap below `pn`.
    pub(super) fn insert(&mut self, pn: u64, packet: SentPacket<T>, largest_acked: Option<u64>) {
        let last = self.slots.back().map(|s| s.pn);
        if last.is_some_and(|last| last >= pn) {
            debug_assert!(false, "packet numbers increase");
            return;
        }
        if self.slots.capacity() == 0 {
            // One allocation for a typical flight, rather than a series of doublings from one slot.
            self.slots.reserve_exact(INITIAL_SLOTS);
        }
        let gap_acked = last.is_some_and(|last| largest_acked.is_some_and(|a| a > last));
        self.slots.push_back(Slot {
            pn,
            gap_acked,
            packet: Some(packet),
        });
        self.len += 1;
    }

    /// An ACK range ending at `hi` (a packet number that was sent) acknowledged a packet in the gap below
    /// the first slot above `hi`, unless `hi` is itself a slot's number: marks that slot.
    pub(super) fn on_range_acked(&mut self, hi: u64) {
        let index = self.slots.partition_point(|s| s.pn <= hi);
        let below = index.checked_sub(1).and_then(|i| self.slots.get(i)).map(|s| s.pn);
        if below.is_some_and(|pn| pn < hi) {
            if let Some(slot) = self.slots.get_mut(index) {
                slot.gap_acked = true;
            }
        }
    }

    /// Takes packet `pn` out, if tracked.
    pub(super) fn remove(&mut self, pn: u64) -> Option<SentPacket<T>> {
        let index = self.slots.binary_search_by_key(&pn, |s| s.pn).ok()?;
        let packet = self.slots.get_mut(index)?.packet.take()?;
        self.len -= 1;
        self.compact();
        Some(packet)
    }

    /// The slot indices holding packet numbers in `range`.
    fn indices(&self, range: &impl RangeBounds<u64>) -> std::ops::Range<usize> {
        let lo = match range.start_bound() {
            Bound::Included(&s) => self.slots.partition_point(|slot| slot.pn < s),
            Bound::Excluded(&s) => self.slots.partition_point(|slot| slot.pn <= s),
            Bound::Unbounded => 0,
        };
        let hi = match range.end_bound() {
            Bound::Included(&e) => self.slots.partition_point(|slot| slot.pn <= e),
            Bound::Excluded(&e) => self.slots.partition_point(|slot| slot.pn < e),
            Bound::Unbounded => self.slots.len(),
        };
        lo..hi.max(lo)
    }

    /// The tracked packets with numbers in `range`, ascending. The cost is a binary search plus the
    /// tracked packets inside the range, whatever its width.
    pub(super) fn range(
        &self,
        range: impl RangeBounds<u64>,
    ) -> impl Iterator<Item = (u64, &SentPacket<T>)> + '_ {
        self.slots
            .range(self.indices(&range))
            .filter_map(|s| s.packet.as_ref().map(|p| (s.pn, p)))
    }

    /// The slots with numbers in `range`, ascending, empty ones (packets acknowledged or declared lost)
    /// included: each as its packet number, whether a packet in the gap below it was acknowledged, and
    /// its packet if still tracked.
    pub(super) fn slots(
        &self,
        range: impl RangeBounds<u64>,
    ) -> impl Iterator<Item = (u64, bool, Option<&SentPacket<T>>)> + '_ {
        self.slots
            .range(self.indices(&range))
            .map(|s| (s.pn, s.gap_acked, s.packet.as_ref()))
    }

    /// Hands every tracked packet with a number in `range` to `f`, ascending, and drops it where it
    /// lies: no record is moved out.
    pub(super) fn drain_range(
        &mut self,
        range: impl RangeBounds<u64>,
        mut f: impl FnMut(u64, &SentPacket<T>),
    ) {
        let indices = self.indices(&range);
        for slot in self.slots.range_mut(indices) {
            if let Some(p) = slot.packet.as_ref() {
                f(slot.pn, p);
                slot.packet = None;
                self.len -= 1;
            }
        }
        self.compact();
    }

    /// Drops the empty slots at the front. The storage stays when the last packet leaves: a busy sender
    /// whose every flight is acknowledged in full refills it at once; [`release`](Self::release) frees
    /// it when the sender has nothing more to send.
    fn compact(&mut self) {
        if self.len == 0 {
            self.slots.clear();
            return;
        }
        while self.slots.front().is_some_and(|s| s.packet.is_none()) {
            self.slots.pop_front();
        }
    }

    /// Frees the storage if nothing is in flight, so that an idle connection holds none.
    pub(super) fn release(&mut self) {
        if self.len == 0 {
            self.slots = VecDeque::new();
        }
    }

    /// Whether storage is held.
    #[cfg(test)]
    pub(super) fn holds_storage(&self) -> bool {
        self.slots.capacity() > 0
    }

    /// Every tracked packet, ascending.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &SentPacket<T>)> + '_ {
        self.range(..)
    }

    /// Takes out every tracked packet, ascending.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = (u64, SentPacket<T>)> {
        let slots = std::mem::take(&mut self.slots);
        self.len = 0;
        slots.into_iter().filter_map(|s| s.packet.map(|p| (s.pn, p)))
    }
}

/// How many of the latest packets not in flight [`RecentNotInFlight`] remembers.
const RECENT_NOT_IN_FLIGHT: usize = 4;

/// The numbers and send times of the latest few packets sent but not in flight (only ACK frames), which
/// [`SentPackets`] does not track: enough to take an RTT sample when one of them is an ACK's largest
/// acknowledged packet (RFC 9002 §5.1). A fixed ring, so remembering costs a store per such packet.
#[derive(Debug, Default)]
pub(super) struct RecentNotInFlight {
    /// `(packet number, send time)`, written round-robin at `next`.
    sent: [Option<(u64, Instant)>; RECENT_NOT_IN_FLIGHT],
    next: usize,
}

impl RecentNotInFlight {
    /// Remembers packet `pn`, sent at `time_sent`, in place of the oldest remembered.
    pub(super) fn record(&mut self, pn: u64, time_sent: Instant) {
        if let Some(slot) = self.sent.get_mut(self.next) {
            *slot = Some((pn, time_sent));
        }
        self.next = (self.next + 1) % RECENT_NOT_IN_FLIGHT;
    }

    /// The send time of packet `pn`, if it is one of those remembered.
    pub(super) fn time_sent(&self, pn: u64) -> Option<Instant> {
        self.sent
            .iter()
            .flatten()
            .find(|(p, _)| *p == pn)
            .map(|&(_, t)| t)
    }

    /// The earliest send time of those remembered numbered above `pn`: no earlier than packet `pn` was
    /// sent, since numbers grow with time.
    pub(super) fn earliest_above(&self, pn: u64) -> Option<Instant> {
        self.sent
            .iter()
            .flatten()
            .filter(|(p, _)| *p > pn)
            .map(|&(_, t)| t)
            .min()
    }

    /// Forgets them all.
    pub(super) fn clear(&mut self) {
        self.sent = [None; RECENT_NOT_IN_FLIGHT];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(size: u16) -> SentPacket<u64> {
        SentPacket {
            time_sent: crate::test_util::epoch(),
            size,
            ack_eliciting: true,
            in_flight: true,
            mtu_probe: false,
            ecn_marked: false,
            data: u64::from(size),
        }
    }

    fn numbers<T>(s: &SentPackets<T>) -> Vec<u64> {
        s.iter().map(|(pn, _)| pn).collect()
    }

    #[test]
    fn gaps_ranges_and_compaction() {
        let mut s = SentPackets::default();
        for pn in [3, 4, 7, 8, 9] {
            s.insert(pn, packet(pn as u16), None);
        }
        assert_eq!(s.len(), 5);
        assert_eq!(numbers(&s), [3, 4, 7, 8, 9]);
        // Ranges are clamped to what is tracked, whatever their width.
        let r: Vec<u64> = s.range(0..=u64::MAX - 1).map(|(pn, _)| pn).collect();
        assert_eq!(r, [3, 4, 7, 8, 9]);
        let r: Vec<u64> = s.range(4..8).map(|(pn, _)| pn).collect();
        assert_eq!(r, [4, 7]);
        assert_eq!(s.range(10..).count(), 0);
        assert_eq!(s.range(..3).count(), 0);
        // Removing the front drops the gap behind it too.
        assert_eq!(s.remove(3).map(|p| p.data), Some(3));
        assert_eq!(s.remove(3), None);
        assert_eq!(s.remove(4).map(|p| p.data), Some(4));
        assert_eq!(s.slots.front().map(|s| s.pn), Some(7));
        assert_eq!(s.slots.len(), 3);
        // A removal in the middle leaves a hole that iteration skips.
        assert_eq!(s.remove(8).map(|p| p.data), Some(8));
        assert_eq!(numbers(&s), [7, 9]);
        let mut drained = Vec::new();
        s.drain_range(0..=8, |pn, p| drained.push((pn, p.data)));
        assert_eq!(drained, [(7, 7)]);
        assert_eq!(numbers(&s), [9]);
        s.drain_range(9..=9, |_, _| {});
        assert!(s.is_empty());
        // Empty: the storage stays for the next flight until released, and the next packet starts a
        // new span.
        assert!(s.holds_storage());
        assert_eq!(s.slots.len(), 0);
        s.insert(1000, packet(1), None);
        // Release frees nothing while a packet is in flight.
        s.release();
        assert!(s.holds_storage());
        // Numbers far apart take no room in between.
        s.insert(1 << 60, packet(2), None);
        assert_eq!(s.slots.len(), 2);
        assert_eq!(s.range(1001..).map(|(pn, _)| pn).collect::<Vec<_>>(), [1 << 60]);
        assert_eq!(s.remove(1 << 60).map(|p| p.data), Some(2));
        assert_eq!(numbers(&s), [1000]);
        assert_eq!(s.take_all().map(|(pn, _)| pn).collect::<Vec<_>>(), [1000]);
        assert!(s.is_empty());
        assert!(!s.holds_storage());
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn storage_is_kept_across_flights_until_released() {
        let mut s = SentPackets::default();
        s.insert(0, packet(1), None);
        s.insert(1, packet(1), None);
        s.drain_range(0..=1, |_, _| {});
        assert!(s.is_empty());
        assert!(s.holds_storage());
        let capacity = s.slots.capacity();
        s.insert(2, packet(1), None);
        assert_eq!(s.slots.capacity(), capacity, "the next flight reuses the storage");
        assert_eq!(s.remove(2).map(|p| p.data), Some(1));
        s.release();
        assert!(!s.holds_storage());
        assert_eq!(s.iter().count(), 0);
    }
}
