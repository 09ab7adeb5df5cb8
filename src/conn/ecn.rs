//! Explicit Congestion Notification on the path we send on (RFC 9000 §13.4.2; RFC 9002 §7.1, Appendix
//! B.7).
//!
//! Packets go out marked ECT(0) while the path is being tested and once it is known to carry the marks;
//! the peer reports what arrived marked in the ECN counts of its ACK frames (type 0x03). The counts
//! validate the path: an ACK that newly acknowledges marked packets must carry counts, and the counts must
//! have grown by at least as many packets (ECT(0) or CE), never beyond what was sent marked, and never
//! with ECT(1), which we do not send. A path that fails (a network that clears or rewrites the field, a
//! peer that does not count) is no longer marked. On a validated path a rise of the CE count is a
//! congestion signal, answered as a loss would be, without retransmitting anything.
//!
//! Marks are tested afresh on each new path (RFC 9000 §13.4.2: "Each endpoint independently validates
//! ECN on each path"); the counts, per packet number space, carry over.

use crate::conn::SpaceId;
use crate::wire::frame::EcnCounts;

/// Marked packets sent on a new path before the marks must prove themselves (RFC 9000 §13.4.2 and
/// Appendix A.4 suggest ten).
pub(crate) const TESTING_PACKETS: u64 = 10;

/// Probe timeouts in a row, with no marked packet of the path acknowledged, that end its testing period
/// (RFC 9000 §13.4.2: "or for a period of three PTOs": the first PTO and the second, doubled, make three
/// PTOs' time).
pub(crate) const TESTING_PTOS: u32 = 2;

/// Probe timeouts in a row that end marking on a validated path (as the same number sends path MTU
/// discovery back to the base size, RFC 8899 §4.3).
pub(crate) const BLACK_HOLE_PTOS: u32 = 3;

/// Where the path stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcnPhase {
    /// Marking the first [`TESTING_PACKETS`] packets of the path.
    Testing,
    /// Those went out; no more marks until an acknowledgement shows how they arrived.
    Unknown,
    /// The peer's counts matched: every packet is marked.
    Capable,
    /// Validation failed on this path (or marks are off): nothing is marked.
    Failed,
    /// Turned off by configuration ([`TransportConfig::ecn`](crate::TransportConfig::ecn)).
    Off,
}

/// What an acknowledgement's ECN counts call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcnSignal {
    /// Nothing.
    None,
    /// The CE count rose: a congestion event (RFC 9002 §7.1, Appendix B.7).
    Congestion,
}

/// ECN state of a connection's current path, and the counts per packet number space.
#[derive(Debug, Clone)]
pub(crate) struct Ecn {
    phase: EcnPhase,
    /// Packets marked on the current path; those of them in flight (tracked by loss recovery, unlike
    /// ACK-only ones), and how many of these were declared lost and acknowledged.
    path_marked: u64,
    path_tracked: u64,
    path_lost: u64,
    path_acked: u64,
    /// Per space: packets sent marked ECT(0), and the peer's counts as last accepted.
    sent: [u64; 3],
    peer: [EcnCounts; 3],
    /// Paths whose validation failed (`ConnectionStats::ecn_validation_failures`).
    failures: u64,
}

impl Ecn {
    /// Marks from the first packet, or never when `enabled` is false.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            phase: if enabled { EcnPhase::Testing } else { EcnPhase::Off },
            path_marked: 0,
            path_tracked: 0,
            path_lost: 0,
            path_acked: 0,
            sent: [0; 3],
            peer: [EcnCounts::default(); 3],
            failures: 0,
        }
    }

    /// Packets sent marked, in every space (`ConnectionStats::ecn_marked_sent`).
    pub(crate) fn marked_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Validations that failed, once per path at most (`ConnectionStats::ecn_validation_failures`).
    pub(crate) fn failures(&self) -> u64 {
        self.failures
    }

    /// Marking ends on the current path.
    fn fail(&mut self) {
        if self.phase != EcnPhase::Failed {
            tracing::debug!("ECN validation failed: packets go unmarked on this path");
            self.phase = EcnPhase::Failed;
            self.failures += 1;
        }
    }

    /// The phase of the current path.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> EcnPhase {
        self.phase
    }

    /// The peer's counts for `space` as last accepted.
    #[cfg(test)]
    pub(crate) fn peer_counts(&self, space: SpaceId) -> EcnCounts {
        self.peer[space.index()]
    }

    /// Whether the next packets go out marked ECT(0).
    #[inline]
    pub(crate) fn marking(&self) -> bool {
        matches!(self.phase, EcnPhase::Testing | EcnPhase::Capable)
    }

    /// A packet of `space` went out marked, `in_flight` or not. Every packet counts, ACK-only ones too
    /// (loss recovery does not track them, but the peer counts them).
    #[inline]
    pub(crate) fn on_marked_sent(&mut self, space: SpaceId, in_flight: bool) {
        self.sent[space.index()] += 1;
        self.path_marked += 1;
        self.path_tracked += u64::from(in_flight);
        if self.phase == EcnPhase::Testing && self.path_marked >= TESTING_PACKETS {
            self.phase = EcnPhase::Unknown;
        }
    }

    /// A probe timeout, the `consecutive`th in a row. RFC 9000 §13.4.2 bounds the testing period to "the
    /// first ten outgoing packets on a path, or ... a period of three PTOs": a path that drops marked
    /// packets acknowledges none, and while each PTO lets only a packet or two go (the handshake), ten
    /// take longer than the connection waits. At the second PTO in a row (three PTOs' time) with none of
    /// the path's marked packets acknowledged, the testing ends: the next packets go unmarked, and the
    /// marked ones, when acknowledged or lost, still decide.
    ///
    /// On a validated path, [`BLACK_HOLE_PTOS`] in a row may mean the path began dropping marked packets
    /// (a route change onto a middlebox that does): no acknowledgement would ever fail validation then, so
    /// marking ends for the path, as after a failed validation. A plain outage costs ECN on that path only.
    pub(crate) fn on_pto(&mut self, consecutive: u32) {
        if self.phase == EcnPhase::Testing && self.path_acked == 0 && consecutive >= TESTING_PTOS {
            self.phase = EcnPhase::Unknown;
        }
        if self.phase == EcnPhase::Capable && consecutive >= BLACK_HOLE_PTOS {
            self.fail();
        }
    }

    /// `lost` tracked packets sent marked on the current path were declared lost. All of the testing
    /// period's marked packets lost, none acknowledged, suggests a path that drops marked packets (RFC
    /// 9000 §13.4.2: "it can disable marking on the assumption that the marking caused the loss").
    pub(crate) fn on_lost(&mut self, lost: u64) {
        self.path_lost += lost;
        if self.phase == EcnPhase::Unknown && self.path_acked == 0 && self.path_lost >= self.path_tracked {
            self.fail();
        }
    }

    /// An ACK frame of `space` with `counts` newly acknowledged `marked` tracked packets sent marked
    /// (of the current path: `marked_this_path` of them); `largest_increased` tells whether it raised the
    /// largest acknowledged packet number (RFC 9000 §13.4.2.1: counts of an ACK that does not are not
    /// validated, as reordered ACK frames carry smaller counts).
    pub(crate) fn on_ack(
        &mut self,
        space: SpaceId,
        counts: Option<EcnCounts>,
        marked: u64,
        marked_this_path: u64,
        largest_increased: bool,
    ) -> EcnSignal {
        self.path_acked += marked_this_path;
        let i = space.index();
        if self.phase == EcnPhase::Failed && largest_increased {
            // The counts go on as the baseline of the next path's test (RFC 9000 Appendix A.4: "existing
            // ECN counts are remembered as a baseline"): what this path did to the marks (ECT(1) or CE
            // counted for them) is not held against the next one.
            if let Some(c) = counts {
                self.remember(i, c);
            }
        }
        if matches!(self.phase, EcnPhase::Failed | EcnPhase::Off) || !largest_increased {
            return EcnSignal::None;
        }
        let Some(c) = counts else {
            // RFC 9000 §13.4.2.1: "If an ACK frame newly acknowledges a packet that the endpoint sent
            // with either the ECT(0) or ECT(1) codepoint set, ECN validation fails if the corresponding
            // ECN counts are not present in the ACK frame."
            if marked > 0 {
                self.fail();
            }
            return EcnSignal::None;
        };
        let prev = self.peer[i];
        let valid = c.ect0 >= prev.ect0
            && c.ce >= prev.ce
            // We never send ECT(1), so its count may not grow beyond the path's baseline (it does not
            // shrink, and a path left that rewrote the marks may have raised it); nor more ECT(0) than
            // we marked (§13.4.2.1: counts beyond what was sent with a codepoint fail validation).
            && c.ect1 <= prev.ect1
            && c.ect0.saturating_add(c.ce) <= self.sent[i]
            // §13.4.2.1: the ECT(0) and CE counts grew by at least the newly acknowledged marked packets
            // (a lost ACK frame can make them grow by more).
            && (c.ect0 - prev.ect0).saturating_add(c.ce - prev.ce) >= marked;
        if !valid {
            self.fail();
            self.remember(i, c);
            return EcnSignal::None;
        }
        self.peer[i] = c;
        // Only marks that crossed this path validate it (RFC 9000 §13.4.2: "validates the ECN counts for
        // each network path"): packets of the path left, in flight when the connection moved, say
        // nothing of the new one.
        if marked_this_path > 0 && matches!(self.phase, EcnPhase::Testing | EcnPhase::Unknown) {
            self.phase = EcnPhase::Capable;
        }
        if c.ce > prev.ce {
            EcnSignal::Congestion
        } else {
            EcnSignal::None
        }
    }

    /// Keeps the peer's counts of space `i` as the baseline, each no lower than before (the counts
    /// only grow; a reordered or false report does not lower them).
    fn remember(&mut self, i: usize, c: EcnCounts) {
        let p = &mut self.peer[i];
        p.ect0 = p.ect0.max(c.ect0);
        p.ect1 = p.ect1.max(c.ect1);
        p.ce = p.ce.max(c.ce);
    }

    /// The connection moved to another path: its marks are tested again, unless turned off.
    pub(crate) fn on_path_change(&mut self) {
        if self.phase != EcnPhase::Off {
            self.phase = EcnPhase::Testing;
        }
        self.path_marked = 0;
        self.path_tracked = 0;
        self.path_lost = 0;
        self.path_acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ect0: u64, ce: u64) -> Option<EcnCounts> {
        Some(EcnCounts { ect0, ect1: 0, ce })
    }

    fn sent(e: &mut Ecn, n: u64) {
        for _ in 0..n {
            if e.marking() {
                e.on_marked_sent(SpaceId::Data, true);
            }
        }
    }

    #[test]
    fn ten_marked_packets_then_none_until_validated() {
        let mut e = Ecn::new(true);
        sent(&mut e, 25);
        assert_eq!(e.sent[SpaceId::Data.index()], TESTING_PACKETS);
        assert_eq!(e.phase(), EcnPhase::Unknown);
        assert!(!e.marking());
        // All ten arrived as ECT(0): the path carries marks.
        let s = e.on_ack(SpaceId::Data, counts(10, 0), 10, 10, true);
        assert_eq!(s, EcnSignal::None);
        assert_eq!(e.phase(), EcnPhase::Capable);
        assert!(e.marking());
    }

    #[test]
    fn validation_failures() {
        // No counts in an ACK of marked packets.
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        e.on_ack(SpaceId::Data, None, 2, 2, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
        assert!(!e.marking());
        // Counts that grew less than the marked packets acknowledged (a path clearing the field).
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        e.on_ack(SpaceId::Data, counts(1, 0), 2, 2, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
        // ECT(1), which we never send.
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        e.on_ack(
            SpaceId::Data,
            Some(EcnCounts {
                ect0: 2,
                ect1: 1,
                ce: 0,
            }),
            2,
            2,
            true,
        );
        assert_eq!(e.phase(), EcnPhase::Failed);
        // More than was sent marked.
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        e.on_ack(SpaceId::Data, counts(3, 1), 2, 2, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
        // Counts going back.
        let mut e = Ecn::new(true);
        sent(&mut e, 4);
        e.on_ack(SpaceId::Data, counts(2, 0), 2, 2, true);
        assert_eq!(e.phase(), EcnPhase::Capable);
        e.on_ack(SpaceId::Data, counts(1, 0), 0, 0, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
    }

    #[test]
    fn an_ack_that_does_not_raise_the_largest_is_not_validated() {
        let mut e = Ecn::new(true);
        sent(&mut e, 4);
        e.on_ack(SpaceId::Data, counts(3, 0), 3, 3, true);
        // A reordered, older ACK frame: smaller counts, newly acknowledging a packet it covers.
        assert_eq!(
            e.on_ack(SpaceId::Data, counts(1, 0), 1, 1, false),
            EcnSignal::None
        );
        assert_eq!(e.phase(), EcnPhase::Capable);
    }

    /// RFC 9000 §13.4.2.1: "An endpoint MUST NOT fail ECN validation as a result of processing an ACK
    /// frame that does not increase the largest acknowledged packet number", missing counts included; nor
    /// does an ACK frame without counts fail it when it newly acknowledges no marked packet.
    #[test]
    fn an_ack_without_counts_fails_only_when_it_raises_the_largest_over_marked_packets() {
        let mut e = Ecn::new(true);
        sent(&mut e, 4);
        e.on_ack(SpaceId::Data, counts(3, 0), 3, 3, true);
        assert_eq!(e.on_ack(SpaceId::Data, None, 1, 1, false), EcnSignal::None);
        assert_eq!(e.phase(), EcnPhase::Capable);
        assert_eq!(e.on_ack(SpaceId::Data, None, 0, 0, true), EcnSignal::None);
        assert_eq!(e.phase(), EcnPhase::Capable);
        e.on_ack(SpaceId::Data, None, 1, 1, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
    }

    #[test]
    fn a_rising_ce_count_is_a_congestion_signal_counted_per_space() {
        let mut e = Ecn::new(true);
        e.on_marked_sent(SpaceId::Handshake, true);
        sent(&mut e, 5);
        assert_eq!(
            e.on_ack(SpaceId::Handshake, counts(0, 1), 1, 1, true),
            EcnSignal::Congestion
        );
        assert_eq!(e.on_ack(SpaceId::Data, counts(3, 0), 3, 3, true), EcnSignal::None);
        assert_eq!(
            e.on_ack(SpaceId::Data, counts(3, 2), 2, 2, true),
            EcnSignal::Congestion
        );
        assert_eq!(e.on_ack(SpaceId::Data, counts(3, 2), 0, 0, true), EcnSignal::None);
        assert_eq!(e.phase(), EcnPhase::Capable);
    }

    #[test]
    fn a_path_that_loses_every_marked_packet_is_not_marked_again() {
        let mut e = Ecn::new(true);
        sent(&mut e, 12);
        e.on_lost(9);
        assert_eq!(e.phase(), EcnPhase::Unknown, "one of the ten is still out");
        e.on_lost(1);
        assert_eq!(e.phase(), EcnPhase::Failed);
        // A new path is tested afresh.
        e.on_path_change();
        assert!(e.marking());
        sent(&mut e, 10);
        assert_eq!(e.phase(), EcnPhase::Unknown);
    }

    #[test]
    fn off_never_marks() {
        let mut e = Ecn::new(false);
        sent(&mut e, 3);
        e.on_path_change();
        assert!(!e.marking());
        assert_eq!(e.sent, [0; 3]);
        assert_eq!(e.phase(), EcnPhase::Off);
    }
    /// RFC 9000 §13.4.2: "an endpoint validates the ECN counts for each network path". After a path
    /// change, an acknowledgement of packets marked on the path left (in flight when the connection
    /// moved) says nothing of the new path: it must not end the new path's testing period as
    /// "capable". Else a new path that drops marked packets gets every packet marked, and loses them
    /// all, instead of ten.
    #[test]
    fn acks_of_the_previous_paths_marked_packets_do_not_validate_a_new_path() {
        let mut e = Ecn::new(true);
        sent(&mut e, 10);
        e.on_ack(SpaceId::Data, counts(10, 0), 10, 10, true);
        assert_eq!(e.phase(), EcnPhase::Capable);
        // Five more marked packets in flight on the old path, then the connection moves.
        sent(&mut e, 5);
        e.on_path_change();
        sent(&mut e, 3);
        // An ACK of the old path's five only, raising the largest acknowledged; the counts grew by five.
        e.on_ack(SpaceId::Data, counts(15, 0), 5, 0, true);
        assert_eq!(e.phase(), EcnPhase::Testing, "the new path is still being tested");
        // The new path drops marked packets: the rest of the ten are lost too, and marking stops.
        sent(&mut e, 7);
        assert_eq!(e.phase(), EcnPhase::Unknown);
        e.on_lost(10);
        assert_eq!(e.phase(), EcnPhase::Failed);
    }

    /// Appendix A.4 of RFC 9000: "To start testing a path, the ECN state is set to "testing", and
    /// existing ECN counts are remembered as a baseline." ECT(1) counted on a path that rewrote the
    /// marks (which failed it) stays in the peer's count for good: a later path that carries the marks
    /// as sent must still validate.
    #[test]
    fn ect1_counted_on_a_failed_path_does_not_fail_the_next_one() {
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        let rewritten = EcnCounts {
            ect0: 0,
            ect1: 2,
            ce: 0,
        };
        e.on_ack(SpaceId::Data, Some(rewritten), 2, 2, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
        e.on_path_change();
        sent(&mut e, 3);
        // The new path carries ECT(0): that count grew by the three newly acknowledged.
        let carried = EcnCounts {
            ect0: 3,
            ect1: 2,
            ce: 0,
        };
        e.on_ack(SpaceId::Data, Some(carried), 3, 3, true);
        assert_eq!(e.phase(), EcnPhase::Capable);
        // A rise of ECT(1) on this path still fails it.
        sent(&mut e, 1);
        let again = EcnCounts {
            ect0: 3,
            ect1: 3,
            ce: 0,
        };
        e.on_ack(SpaceId::Data, Some(again), 1, 1, true);
        assert_eq!(e.phase(), EcnPhase::Failed);
    }

    #[test]
    fn three_ptos_time_without_an_acknowledgement_ends_the_testing_period() {
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        e.on_pto(1);
        assert_eq!(e.phase(), EcnPhase::Testing);
        e.on_pto(2);
        assert_eq!(e.phase(), EcnPhase::Unknown);
        assert!(!e.marking());
        // The marked packets, acknowledged after all, validate the path.
        e.on_ack(SpaceId::Data, counts(3, 0), 3, 3, true);
        assert_eq!(e.phase(), EcnPhase::Capable);
        // A validated path that stops acknowledging anything for three PTOs in a row stops marking.
        e.on_pto(2);
        assert_eq!(e.phase(), EcnPhase::Capable);
        e.on_pto(3);
        assert_eq!(e.phase(), EcnPhase::Failed);
        // A path with one marked packet acknowledged is not cut short by PTOs.
        let mut e = Ecn::new(true);
        sent(&mut e, 3);
        e.on_ack(SpaceId::Data, counts(1, 0), 1, 1, false);
        e.on_pto(5);
        assert_eq!(e.phase(), EcnPhase::Testing);
    }
}
