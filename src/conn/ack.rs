//! Received packet numbers of one packet number space: duplicate detection (RFC 9000 §12.3) and ACK
//! generation (RFC 9000 §13.2, ECN counts §13.4.1).
//!
//! The connection keeps one [`ReceivedPackets`] per [`SpaceId`]. For every packet that decrypted and
//! was processed it calls [`ReceivedPackets::on_packet_received`]; it sends an ACK frame right away when
//! [`ReceivedPackets::wants_ack_now`], arms a timer at [`ReceivedPackets::ack_deadline`] otherwise, and
//! may piggyback one whenever [`ReceivedPackets::has_unacked`]. After sending the frame from
//! [`ReceivedPackets::build_ack`] it calls [`ReceivedPackets::on_ack_sent`], and once the peer
//! acknowledges the packet that carried it, [`ReceivedPackets::on_ack_of_ack`].

// The connection wires these up next; until then some items have no caller outside the tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::range_set::RangeSet;
use super::SpaceId;
use crate::wire::frame::{AckFrame, EcnCounts};
use crate::wire::VarInt;

pub(crate) use crate::datagram::EcnCodepoint;

/// The most out-of-order packets kept to report beside the ranges above the report floor.
const MAX_LATE: usize = 16;

/// How many ACK frames report an out-of-order packet before it is left to the ranges (or forgotten,
/// below the report floor): ACK frames are not retransmitted, so one could be lost.
const LATE_REPORTS: u8 = 3;

/// How and when acknowledgements are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckConfig {
    /// Our max_ack_delay transport parameter (RFC 9000 §18.2, default 25 ms): the longest an
    /// ack-eliciting 0-RTT/1-RTT packet waits for its acknowledgement.
    pub(crate) max_ack_delay: Duration,
    /// After this many unacknowledged ack-eliciting packets an ACK is sent at once (RFC 9000 §13.2.2:
    /// "A receiver SHOULD send an ACK frame after receiving at least two ack-eliciting packets"). 0 and
    /// 1 both mean every ack-eliciting packet.
    pub(crate) ack_eliciting_threshold: u64,
    /// The most ACK ranges put in one frame (the highest ones; RFC 9000 §13.2.3), at least 1.
    pub(crate) max_ack_ranges: usize,
    /// The most ranges of received packet numbers remembered, at least 1. The lowest are forgotten
    /// first and everything below them counts as a duplicate afterwards (RFC 9000 §13.2.3, §12.3).
    pub(crate) max_tracked_ranges: usize,
}

impl AckConfig {
    /// `TransportConfig`'s defaults (RFC 9000 §18.2's max_ack_delay, an ACK every second ack-eliciting
    /// packet as §13.2.2 recommends, and the crate's range limits).
    pub(crate) const DEFAULT: AckConfig = AckConfig {
        max_ack_delay: Duration::from_millis(25),
        ack_eliciting_threshold: 2,
        max_ack_ranges: 64,
        max_tracked_ranges: 256,
    };
}

impl Default for AckConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The packets received in one packet number space and the acknowledgement owed for them.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedPackets {
    space: SpaceId,
    config: AckConfig,
    /// Received packet numbers at or above `min_tracked`: duplicate detection (RFC 9000 §12.3), and the
    /// ACK ranges from `report_floor` up.
    ranges: RangeSet,
    /// Every packet number below this counts as already received (RFC 9000 §12.3: "a minimum packet
    /// number below which all packets are immediately dropped"). Raised only when the range cap
    /// forgets ranges (§13.2.3), not when the peer has seen our acknowledgement of them: a packet that
    /// comes later than that (reordered by more than a round trip) is still processed, and acknowledged,
    /// so that its sender learns its loss was spurious (RFC 9002 §6.1) instead of never hearing of it.
    min_tracked: u64,
    /// ACK frames report the packet numbers at or above this (and those in `late`): the peer has seen
    /// our acknowledgement of the ones below (RFC 9000 §13.2.4).
    report_floor: u64,
    /// Packets that arrived out of order (below the largest received), ascending, each with the number
    /// of ACK frames sent since: reported in the next [`LATE_REPORTS`] frames whatever the report floor
    /// does meanwhile, since a floor raised by the peer's acknowledgement of an earlier frame says
    /// nothing of packets that arrived after that frame. At most [`MAX_LATE`] (see `note_late` for
    /// which goes first).
    late: Vec<(u64, u8)>,
    /// The largest packet number received and when (RFC 9000 §13.2.3: MUST be retained; §13.2.5: the
    /// ACK Delay is measured from it).
    largest: Option<(u64, Instant)>,
    /// The largest ack-eliciting packet number received, for the reordering rules of §13.2.1.
    largest_ack_eliciting: Option<u64>,
    /// Ack-eliciting packets received since the last ACK frame was sent.
    unacked_ack_eliciting: u64,
    /// When the first of those arrived.
    first_unacked_at: Option<Instant>,
    /// Whether an ACK frame should be sent without delay.
    immediate: bool,
    /// Whether any packet (ack-eliciting or not) arrived since the last ACK frame was sent.
    unacked: bool,
    /// ECN counts, `Some` once an ECN-marked packet was received (RFC 9000 §13.4.1).
    ecn: Option<EcnCounts>,
    /// The last ACK frame sent: (packet number that carried it, its Largest Acknowledged).
    last_ack_sent: Option<(u64, u64)>,
    /// An ACK frame sent whose fate is still unknown, as (packet number that carried it, its Largest
    /// Acknowledged): the oldest such since the peer last acknowledged a packet at or above it. It lets
    /// the peer's acknowledgement of a packet that carried only ACK frames, which loss recovery does not
    /// keep, prune the ranges too (RFC 9000 §13.2.4), about once per round trip.
    ack_watch: Option<(u64, u64)>,
}

impl ReceivedPackets {
    /// Nothing received yet in `space`.
    pub(crate) const fn new(space: SpaceId, config: AckConfig) -> Self {
        Self {
            space,
            config,
            ranges: RangeSet::with_max_ranges(config.max_tracked_ranges),
            min_tracked: 0,
            report_floor: 0,
            late: Vec::new(),
            largest: None,
            largest_ack_eliciting: None,
            unacked_ack_eliciting: 0,
            first_unacked_at: None,
            immediate: false,
            unacked: false,
            ecn: None,
            last_ack_sent: None,
            ack_watch: None,
        }
    }

    /// The packet number space.
    pub(crate) fn space(&self) -> SpaceId {
        self.space
    }

    /// The largest packet number received, used to decode truncated packet numbers (RFC 9000 §17.1,
    /// Appendix A.3). Kept even when all ranges are pruned (RFC 9000 §13.2.3).
    pub(crate) fn largest(&self) -> Option<u64> {
        self.largest.map(|(pn, _)| pn)
    }

    /// The largest packet, just processed, arrived at `at`, before it could be: it waited for its keys.
    /// RFC 9000 §13.2.5: the ACK Delay "SHOULD include buffering delays caused by unavailability of
    /// decryption keys".
    pub(crate) fn largest_arrived_at(&mut self, at: Instant) {
        if let Some((_, t)) = &mut self.largest {
            *t = (*t).min(at);
        }
    }

    /// Packet numbers below this are treated as duplicates (see [`ReceivedPackets::is_duplicate`]).
    pub(crate) fn min_tracked(&self) -> u64 {
        self.min_tracked
    }

    /// Packet numbers below this (other than late arrivals) are no longer reported in ACK frames.
    #[cfg(test)]
    pub(crate) fn report_floor(&self) -> u64 {
        self.report_floor
    }

    /// Whether an ACK frame would report anything: a packet at or above the report floor (the largest
    /// received, if any is), or a late one.
    pub(crate) fn has_reportable(&self) -> bool {
        self.largest
            .is_some_and(|(largest, _)| largest >= self.report_floor)
            || !self.late.is_empty()
    }

    /// The ECN counts reported so far, `None` until an ECN-marked packet arrives.
    pub(crate) fn ecn_counts(&self) -> Option<EcnCounts> {
        self.ecn
    }

    /// The last ACK frame sent, as (packet number that carried it, its Largest Acknowledged).
    pub(crate) fn last_ack_sent(&self) -> Option<(u64, u64)> {
        self.last_ack_sent
    }

    /// Keeps out-of-order packet `pn` (new, below the largest received) to report (see `late`).
    #[cold]
    fn note_late(&mut self, pn: u64) {
        if self.late.len() >= MAX_LATE {
            // The entry that needs the list least goes: the most reported; among those, one at or above
            // the report floor (the ranges report it as well, for now); then the lowest. A packet below
            // the floor, reordered past a round trip, has no other record to be reported from.
            let floor = self.report_floor;
            let least_needed = self
                .late
                .iter()
                .enumerate()
                .max_by_key(|&(i, &(p, n))| (n, p >= floor, std::cmp::Reverse(i)))
                .map(|(at, _)| at);
            if let Some(at) = least_needed {
                self.late.remove(at);
            }
        }
        let at = self.late.partition_point(|&(p, _)| p < pn);
        self.late.insert(at, (pn, 0));
    }

    /// Whether packet number `pn` must be discarded as a duplicate (RFC 9000 §12.3: "A receiver MUST
    /// discard a newly unprotected packet unless it is certain that it has not processed another packet
    /// with the same packet number"). Call after removing packet protection.
    ///
    /// Besides the packet numbers actually received, everything below [`ReceivedPackets::min_tracked`]
    /// counts as a duplicate: those ranges were forgotten because too many ranges were tracked
    /// (§13.2.3), so a packet that old is dropped even if it never arrived before.
    pub(crate) fn is_duplicate(&self, pn: u64) -> bool {
        pn < self.min_tracked || self.ranges.contains(pn)
    }

    /// Records a processed packet: packet number `pn`, whether it was ack-eliciting, the ECN codepoint
    /// of its IP packet and when it arrived. Decides whether an ACK is due now or by a deadline.
    ///
    /// Returns `false`, changing nothing, for a duplicate (see [`ReceivedPackets::is_duplicate`]);
    /// duplicates do not count for ECN either (RFC 9000 §13.4.1).
    pub(crate) fn on_packet_received(
        &mut self,
        pn: u64,
        ack_eliciting: bool,
        ecn: Option<EcnCodepoint>,
        now: Instant,
    ) -> bool {
        if self.is_duplicate(pn) {
            return false;
        }
        let (_, evicted) = self.ranges.insert_evicting(pn..=pn);
        if let Some(evicted) = evicted {
            // RFC 9000 §13.2.3: "A receiver MUST retain an ACK Range unless it can ensure that it will
            // not subsequently accept packets with numbers in that range. Maintaining a minimum packet
            // number that increases as ranges are discarded is one way to achieve this".
            self.min_tracked = self.min_tracked.max(evicted.end().saturating_add(1));
        }
        match self.largest {
            Some((largest, _)) if pn < largest => self.note_late(pn),
            _ => self.largest = Some((pn, now)),
        }
        // RFC 9000 §13.4.1: count each processed packet once per codepoint.
        if let Some(codepoint) = ecn {
            let counts = self.ecn.get_or_insert_with(EcnCounts::default);
            match codepoint {
                EcnCodepoint::Ect0 => counts.ect0 += 1,
                EcnCodepoint::Ect1 => counts.ect1 += 1,
                EcnCodepoint::Ce => counts.ce += 1,
            }
        }
        self.unacked = true;
        if !ack_eliciting {
            // RFC 9000 §13.2.1: "An endpoint MUST NOT send a non-ack-eliciting packet in response to a
            // non-ack-eliciting packet, even if there are packet gaps". A CE mark only hurries an ACK
            // that is owed anyway for earlier ack-eliciting packets.
            if ecn == Some(EcnCodepoint::Ce) && self.unacked_ack_eliciting > 0 {
                self.immediate = true;
            }
            return true;
        }
        self.unacked_ack_eliciting += 1;
        self.first_unacked_at.get_or_insert(now);
        let reordered = self.is_reordered(pn);
        self.largest_ack_eliciting = Some(self.largest_ack_eliciting.map_or(pn, |l| l.max(pn)));
        self.immediate |= match self.space {
            // RFC 9000 §13.2.1: "An endpoint MUST acknowledge all ack-eliciting Initial and Handshake
            // packets immediately".
            SpaceId::Initial | SpaceId::Handshake => true,
            // RFC 9000 §13.2.2: after `ack_eliciting_threshold` (two by default) packets; §13.2.1: "without
            // delay" for reordering or a gap, and ECN-CE "SHOULD be acknowledged immediately".
            SpaceId::Data => {
                self.unacked_ack_eliciting >= self.config.ack_eliciting_threshold
                    || reordered
                    || ecn == Some(EcnCodepoint::Ce)
            }
        };
        true
    }

    /// RFC 9000 §13.2.1: whether ack-eliciting packet `pn` (already recorded) arrived "less than another
    /// ack-eliciting packet that has been received", or above the highest one "and there are missing
    /// packets between that packet and this packet". Forgotten packet numbers (below `min_tracked`) do
    /// not count as missing.
    fn is_reordered(&self, pn: u64) -> bool {
        let Some(largest) = self.largest_ack_eliciting else {
            return false;
        };
        if pn < largest {
            return true;
        }
        // Every packet number in `largest + 1 ..= pn - 1` received: the range holding `pn` (just
        // inserted, unless the cap dropped it) reaches down to `largest + 1` or below the floor.
        let from = largest.saturating_add(1).max(self.min_tracked);
        if pn <= from {
            return false;
        }
        !self
            .ranges
            .range_containing(pn)
            .is_some_and(|r| *r.start() <= from)
    }

    /// Whether an ACK frame should be sent now, without waiting for the deadline.
    pub(crate) fn wants_ack_now(&self) -> bool {
        self.immediate && self.unacked_ack_eliciting > 0 && self.has_reportable()
    }

    /// When a delayed ACK frame is due: `max_ack_delay` after the first unacknowledged ack-eliciting
    /// packet (RFC 9000 §13.2.1: "ack-eliciting packets MUST be acknowledged at least once within the
    /// maximum delay"). `None` when no ack-eliciting packet waits or [`ReceivedPackets::wants_ack_now`].
    pub(crate) fn ack_deadline(&self) -> Option<Instant> {
        if self.immediate || !self.has_reportable() {
            return None;
        }
        // An absurd max_ack_delay that overflows `Instant` means no deadline rather than a panic.
        self.first_unacked_at
            .and_then(|first| first.checked_add(self.config.max_ack_delay))
    }

    /// Whether an ack-eliciting packet received is not yet covered by an ACK frame sent since: only
    /// then may a packet of ACK frames alone go (RFC 9000 §13.2.1).
    pub(crate) fn ack_owed(&self) -> bool {
        self.unacked_ack_eliciting > 0
    }

    /// Whether some received packet is not covered by an ACK frame sent since, so one may be
    /// piggybacked. Non-ack-eliciting packets alone never make an ACK due (no deadline, not
    /// [`ReceivedPackets::wants_ack_now`]) but are acknowledged with the next one (RFC 9000 §13.2).
    pub(crate) fn has_unacked(&self) -> bool {
        self.unacked && self.has_reportable()
    }

    /// The ACK frame to send at `now`: the highest tracked ranges first, at most
    /// [`AckConfig::max_ack_ranges`] of them (RFC 9000 §13.2.3: older ranges are omitted), the ACK
    /// Delay and the ECN counts once any ECN-marked packet arrived (§13.4.1, frame type 0x03).
    ///
    /// The ACK Delay is the time since the largest packet number arrived, in microseconds shifted
    /// right by `ack_delay_exponent` (RFC 9000 §13.2.5, §19.3), in every space: §13.2.5 asks to report
    /// measured delays even above max_ack_delay, "especially useful during the handshake"; the peer
    /// MAY ignore it for Initial packets (RFC 9002 §5.3). `ack_delay_exponent` is our transport
    /// parameter (at most 20).
    ///
    /// `None` when no packet number is tracked (nothing received, or all pruned).
    pub(crate) fn build_ack(&self, now: Instant, ack_delay_exponent: u8) -> Option<AckFrame> {
        self.build_ack_ranges(now, ack_delay_exponent, self.config.max_ack_ranges.max(1))
    }

    /// As [`build_ack`](Self::build_ack), within `room` bytes: the oldest ranges are left out until the
    /// frame fits (RFC 9000 §13.2.3 lets them go); `None` if not even the newest range fits. With ranges far apart (a peer skipping packet
    /// numbers by billions), a frame of many ranges could outgrow any packet, and an ACK that never goes
    /// out would leave its deadline passed for good.
    pub(crate) fn build_ack_within(
        &self,
        now: Instant,
        ack_delay_exponent: u8,
        room: usize,
    ) -> Option<AckFrame> {
        let mut count = self.config.max_ack_ranges.max(1);
        loop {
            let frame = self.build_ack_ranges(now, ack_delay_exponent, count)?;
            if frame.encoded_len() <= room {
                return Some(frame);
            }
            if count == 1 {
                return None;
            }
            count /= 2;
        }
    }

    fn build_ack_ranges(&self, now: Instant, ack_delay_exponent: u8, count: usize) -> Option<AckFrame> {
        let (largest, received_at) = self.largest?;
        if !self.has_reportable() {
            return None;
        }
        let micros =
            u64::try_from(now.saturating_duration_since(received_at).as_micros()).unwrap_or(u64::MAX);
        let delay = micros
            .checked_shr(u32::from(ack_delay_exponent))
            .unwrap_or(0)
            .min(VarInt::MAX.into_inner());
        // The ranges at or above the report floor (the lowest cut at it), then the late arrivals below.
        // RFC 9000 §13.2.3: every ACK frame SHOULD hold the largest packet number received (a frame for
        // late arrivals alone too), lest the peer's ECN validation see its Largest Acknowledged go back.
        let floor = self.report_floor.min(largest);
        let above = self
            .ranges
            .iter_rev()
            .take_while(move |r| *r.end() >= floor)
            .map(move |r| (*r.start()).max(floor)..=*r.end());
        // A late packet at or above both floors is in `above`; one below `min_tracked` is in no range (the
        // cap dropped its range, at once if it came in as the lowest), so the late list is its only
        // record. Every range starts at or above both floors, so the late ones below stay descending.
        let cut = floor.max(self.min_tracked);
        let late = self
            .late
            .iter()
            .rev()
            .filter(move |&&(pn, _)| pn < cut)
            .map(|&(pn, _)| pn..=pn);
        let ranges = above.chain(late).take(count);
        // Packet numbers are below 2^62 (RFC 9000 §12.3) and the ranges are disjoint and descending, so
        // this cannot fail; if it did, no frame is better than a panic.
        AckFrame::from_ranges(ranges, delay, self.ecn).ok()
    }

    /// Records that an ACK frame with Largest Acknowledged `largest_acked` was sent in our packet
    /// `sent_in`. When it covers the largest packet received, nothing is owed any more: the pending
    /// count, deadline and immediate flag reset (RFC 9000 §13.2.1: no second ACK-only packet in
    /// response to the same ack-eliciting packet).
    pub(crate) fn on_ack_sent(&mut self, largest_acked: u64, sent_in: u64) {
        self.last_ack_sent = Some((sent_in, largest_acked));
        if !self.late.is_empty() {
            // Reported, from the ranges above the floor or on their own.
            self.late.retain_mut(|(_, n)| {
                *n += 1;
                *n < LATE_REPORTS
            });
        }
        self.ack_watch.get_or_insert((sent_in, largest_acked));
        if self.largest.is_some_and(|(largest, _)| largest_acked >= largest) {
            self.reset_pending();
        }
    }

    /// The peer acknowledged a packet of ours that carried an ACK frame with Largest Acknowledged
    /// `largest_acked`: it has seen that frame, so we stop acknowledging packet numbers at or below it
    /// (RFC 9000 §13.2.4: "the receiver can stop acknowledging packets less than or equal to the Largest
    /// Acknowledged field in the sent ACK frame"). They stay known for duplicate detection: one that
    /// never arrived may still come, late, and is then processed and acknowledged on its own.
    ///
    /// The report floor is capped just above the largest packet number received, so a bogus value can
    /// never keep packets we have not received yet from being acknowledged.
    pub(crate) fn on_ack_of_ack(&mut self, largest_acked: u64) {
        let Some((largest, _)) = self.largest else {
            return;
        };
        let floor = largest_acked.min(largest).saturating_add(1);
        self.report_floor = self.report_floor.max(floor);
        if !self.has_reportable() {
            // Whatever arrived since that frame is now below the floor: nothing is left to acknowledge.
            self.reset_pending();
        }
    }

    /// The peer's ACK frame `ack`, valid for this space, arrived. If it acknowledges the packet of the
    /// ACK frame watched (see `ack_watch`), the peer has seen that frame: RFC 9000 §13.2.3, "After
    /// receiving acknowledgments for an ACK frame, the receiver SHOULD stop tracking those acknowledged
    /// ACK Ranges". This covers packets that carried only ACK frames: not in flight, they are not kept
    /// by loss recovery, whose record of the packet's contents ([`on_ack_of_ack`](Self::on_ack_of_ack))
    /// serves the others. Without it, a receiver that only ever sends ACK frames (one reading
    /// datagrams, or a stream whose window needs no update) never prunes, and repeats every range it
    /// tracks in every ACK frame.
    pub(crate) fn on_peer_ack(&mut self, ack: &AckFrame) {
        let Some((pn, largest_acked)) = self.ack_watch else {
            return;
        };
        if ack.largest() < pn {
            return;
        }
        // Acknowledged, or lost (the peer acknowledged a later packet without it): the next ACK frame
        // sent is watched instead.
        self.ack_watch = None;
        if ack.iter().take_while(|r| *r.end() >= pn).any(|r| r.contains(&pn)) {
            self.on_ack_of_ack(largest_acked);
        }
    }

    fn reset_pending(&mut self) {
        self.unacked_ack_eliciting = 0;
        self.first_unacked_at = None;
        self.immediate = false;
        self.unacked = false;
    }
}

#[cfg(test)]
mod tests;
