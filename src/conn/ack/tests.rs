use std::ops::RangeInclusive;
use std::time::Duration;

use std::collections::BTreeSet;

use bytes::BytesMut;
use proptest::prelude::*;

use super::{AckConfig, EcnCodepoint, ReceivedPackets};
use crate::conn::SpaceId;
use crate::wire::frame::{AckFrame, EcnCounts, Frame};
use crate::wire::Reader;

use crate::test_util::epoch;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn data() -> ReceivedPackets {
    ReceivedPackets::new(SpaceId::Data, AckConfig::default())
}

fn ranges(frame: &AckFrame) -> Vec<RangeInclusive<u64>> {
    frame.iter().collect()
}

/// Encodes `frame` as a `Frame::Ack`, decodes it back and checks both agree (and the length).
fn round_trip(frame: &AckFrame) {
    let frame = Frame::Ack(frame.clone());
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    assert_eq!(buf.len(), frame.encoded_len());
    let bytes = buf.freeze();
    let mut r = Reader::new(&bytes);
    let decoded = Frame::decode(&mut r).expect("our own ACK frame decodes");
    assert_eq!(decoded, frame);
    assert_eq!(r.remaining(), 0);
}

#[test]
fn in_order_packets_are_acked_every_second_ack_eliciting_packet() {
    let t0 = epoch();
    let mut rx = data();
    let mut acks = 0;
    for pn in 0..10u64 {
        let now = t0 + ms(pn);
        assert!(rx.on_packet_received(pn, true, None, now));
        if pn % 2 == 0 {
            assert!(!rx.wants_ack_now(), "pn {pn}");
            assert_eq!(rx.ack_deadline(), Some(now + ms(25)));
        } else {
            assert!(rx.wants_ack_now(), "pn {pn}");
            assert_eq!(rx.ack_deadline(), None);
            let frame = rx.build_ack(now, 3).expect("packets to acknowledge");
            assert_eq!(ranges(&frame), [0..=pn]);
            rx.on_ack_sent(frame.largest(), 100 + pn);
            assert!(!rx.wants_ack_now());
            assert!(!rx.has_unacked());
            assert_eq!(rx.ack_deadline(), None);
            acks += 1;
        }
    }
    assert_eq!(acks, 5);
    assert_eq!(rx.last_ack_sent(), Some((109, 9)));
}

#[test]
fn threshold_is_configurable() {
    let t0 = epoch();
    let config = AckConfig {
        ack_eliciting_threshold: 3,
        ..AckConfig::default()
    };
    let mut rx = ReceivedPackets::new(SpaceId::Data, config);
    rx.on_packet_received(0, true, None, t0);
    rx.on_packet_received(1, true, None, t0);
    assert!(!rx.wants_ack_now());
    rx.on_packet_received(2, true, None, t0);
    assert!(rx.wants_ack_now());
}

#[test]
fn a_single_ack_eliciting_packet_gives_a_deadline() {
    let t0 = epoch();
    let mut rx = data();
    rx.on_packet_received(0, true, None, t0 + ms(1));
    assert!(!rx.wants_ack_now());
    assert!(rx.has_unacked());
    assert_eq!(rx.ack_deadline(), Some(t0 + ms(26)));
    // A non-ack-eliciting packet after it neither moves nor hurries the deadline.
    rx.on_packet_received(1, false, None, t0 + ms(5));
    assert_eq!(rx.ack_deadline(), Some(t0 + ms(26)));
    assert!(!rx.wants_ack_now());
    // The ACK sent at the deadline covers both.
    let frame = rx.build_ack(t0 + ms(26), 3).expect("packets to acknowledge");
    assert_eq!(ranges(&frame), [0..=1]);
    rx.on_ack_sent(1, 0);
    assert_eq!(rx.ack_deadline(), None);
}

#[test]
fn a_gap_triggers_an_immediate_ack() {
    let t0 = epoch();
    let mut rx = data();
    rx.on_packet_received(0, true, None, t0);
    assert!(!rx.wants_ack_now());
    // 1 is missing.
    rx.on_packet_received(2, true, None, t0);
    assert!(rx.wants_ack_now());
    let frame = rx.build_ack(t0, 3).expect("packets to acknowledge");
    assert_eq!(ranges(&frame), [2..=2, 0..=0]);
    rx.on_ack_sent(2, 0);
    // The late packet is below the largest ack-eliciting one: immediate again.
    rx.on_packet_received(1, true, None, t0);
    assert!(rx.wants_ack_now());
    assert_eq!(ranges(&rx.build_ack(t0, 3).expect("packets")), [0..=2]);
}

#[test]
fn a_gap_filled_by_non_ack_eliciting_packets_is_not_a_gap() {
    let t0 = epoch();
    let mut rx = data();
    rx.on_packet_received(0, true, None, t0);
    rx.on_packet_received(1, false, None, t0);
    rx.on_packet_received(2, false, None, t0);
    rx.on_packet_received(3, true, None, t0);
    // Reached the threshold of 2 anyway; check with a fresh count instead.
    rx.on_ack_sent(3, 0);
    rx.on_packet_received(4, false, None, t0);
    rx.on_packet_received(5, true, None, t0);
    assert!(
        !rx.wants_ack_now(),
        "4 was received, so 5 follows 3 without a gap"
    );
    rx.on_packet_received(7, false, None, t0);
    assert!(
        !rx.wants_ack_now(),
        "a non-ack-eliciting packet never triggers an ACK"
    );
}

#[test]
fn non_ack_eliciting_packets_alone_trigger_nothing() {
    let t0 = epoch();
    let mut rx = data();
    for pn in [0, 1, 5, 3, 9] {
        rx.on_packet_received(pn, false, Some(EcnCodepoint::Ce), t0);
    }
    assert!(!rx.wants_ack_now());
    assert_eq!(rx.ack_deadline(), None);
    // But they may be acknowledged along with something else.
    assert!(rx.has_unacked());
    let frame = rx.build_ack(t0, 3).expect("packets to acknowledge");
    assert_eq!(ranges(&frame), [9..=9, 5..=5, 3..=3, 0..=1]);
    for space in [SpaceId::Initial, SpaceId::Handshake] {
        let mut rx = ReceivedPackets::new(space, AckConfig::default());
        rx.on_packet_received(0, false, None, t0);
        assert!(!rx.wants_ack_now());
        assert_eq!(rx.ack_deadline(), None);
    }
}

#[test]
fn initial_and_handshake_are_acked_immediately() {
    let t0 = epoch();
    for space in [SpaceId::Initial, SpaceId::Handshake] {
        let mut rx = ReceivedPackets::new(space, AckConfig::default());
        assert_eq!(rx.space(), space);
        rx.on_packet_received(0, true, None, t0);
        assert!(rx.wants_ack_now());
        assert_eq!(rx.ack_deadline(), None);
    }
}

#[test]
fn ce_marked_ack_eliciting_packet_is_acked_immediately() {
    let t0 = epoch();
    let mut rx = data();
    rx.on_packet_received(0, true, Some(EcnCodepoint::Ce), t0);
    assert!(rx.wants_ack_now());
    let mut rx = data();
    rx.on_packet_received(0, true, None, t0);
    rx.on_packet_received(1, false, Some(EcnCodepoint::Ce), t0);
    assert!(rx.wants_ack_now(), "CE hurries the ACK already owed for packet 0");
}

#[test]
fn duplicates_are_detected() {
    let t0 = epoch();
    let mut rx = data();
    assert!(!rx.is_duplicate(0));
    assert!(rx.on_packet_received(0, true, Some(EcnCodepoint::Ect0), t0));
    assert!(rx.on_packet_received(2, true, None, t0));
    assert!(rx.is_duplicate(0));
    assert!(!rx.is_duplicate(1));
    assert!(rx.is_duplicate(2));
    assert!(!rx.is_duplicate(3));
    // A duplicate changes nothing, not even the ECN counts (RFC 9000 §13.4.1).
    assert!(!rx.on_packet_received(0, true, Some(EcnCodepoint::Ect0), t0));
    assert_eq!(
        rx.ecn_counts(),
        Some(EcnCounts {
            ect0: 1,
            ect1: 0,
            ce: 0
        })
    );
}

#[test]
fn ack_delay_is_encoded_with_the_exponent() {
    let t0 = epoch();
    let mut rx = data();
    rx.on_packet_received(0, true, None, t0);
    rx.on_packet_received(3, true, None, t0 + ms(2));
    // Measured from the largest packet number (3), not from the first packet.
    let frame = rx.build_ack(t0 + ms(10), 3).expect("packets to acknowledge");
    assert_eq!(frame.delay, 1000, "8 ms = 8000 us >> 3");
    assert_eq!(rx.build_ack(t0 + ms(10), 0).expect("packets").delay, 8000);
    assert_eq!(rx.build_ack(t0 + ms(10), 20).expect("packets").delay, 0);
    // A `now` before the receive time gives 0, not a panic.
    assert_eq!(rx.build_ack(t0, 3).expect("packets").delay, 0);
    // A lower packet arriving later does not move the reference time.
    rx.on_packet_received(1, true, None, t0 + ms(9));
    assert_eq!(rx.build_ack(t0 + ms(10), 3).expect("packets").delay, 1000);
    round_trip(&frame);
}

#[test]
fn ecn_counts_are_reported() {
    let t0 = epoch();
    let mut rx = data();
    rx.on_packet_received(0, true, None, t0);
    assert_eq!(rx.build_ack(t0, 3).expect("packets").ecn, None);
    let marks = [
        EcnCodepoint::Ect0,
        EcnCodepoint::Ect0,
        EcnCodepoint::Ect1,
        EcnCodepoint::Ce,
    ];
    for (pn, mark) in (1..).zip(marks) {
        rx.on_packet_received(pn, true, Some(mark), t0);
    }
    let frame = rx.build_ack(t0, 3).expect("packets to acknowledge");
    assert_eq!(
        frame.ecn,
        Some(EcnCounts {
            ect0: 2,
            ect1: 1,
            ce: 1
        })
    );
    assert_eq!(frame.frame_type(), 0x03);
    round_trip(&frame);
}

#[test]
fn build_ack_respects_the_frame_range_cap() {
    let t0 = epoch();
    let config = AckConfig {
        max_ack_ranges: 3,
        ..AckConfig::default()
    };
    let mut rx = ReceivedPackets::new(SpaceId::Data, config);
    for pn in (0..20).step_by(2) {
        rx.on_packet_received(pn, true, None, t0);
    }
    let frame = rx.build_ack(t0, 3).expect("packets to acknowledge");
    assert_eq!(ranges(&frame), [18..=18, 16..=16, 14..=14]);
    // Still tracked, and still not duplicates.
    assert!(rx.is_duplicate(0));
    round_trip(&frame);
}

#[test]
fn tracking_respects_the_range_cap() {
    let t0 = epoch();
    let mut rx = data();
    let cap = AckConfig::default().max_tracked_ranges;
    for pn in (0..20_000u64).step_by(2) {
        assert!(rx.on_packet_received(pn, true, None, t0));
        assert!(rx.ranges.len() <= cap);
    }
    assert_eq!(rx.ranges.len(), cap);
    let lowest_kept = 20_000 - 2 * cap as u64;
    assert_eq!(rx.ranges.min(), Some(lowest_kept));
    // Everything below the kept ranges counts as a duplicate, received or not.
    assert_eq!(rx.min_tracked(), lowest_kept - 1);
    assert!(rx.is_duplicate(lowest_kept - 3));
    assert!(rx.is_duplicate(lowest_kept - 2));
    assert!(!rx.is_duplicate(lowest_kept - 1));
    assert!(!rx.is_duplicate(lowest_kept + 1));
    // A late packet just above the floor is accepted and merges with the lowest range.
    assert!(rx.on_packet_received(lowest_kept - 1, true, None, t0));
    assert_eq!(rx.ranges.len(), cap);
    assert!(rx.is_duplicate(lowest_kept - 1));
    let frame = rx.build_ack(t0, 3).expect("packets to acknowledge");
    assert_eq!(frame.iter().count(), AckConfig::default().max_ack_ranges);
    assert_eq!(frame.largest(), 19_998);
    round_trip(&frame);
}

/// RFC 9000 §13.2.4: once the peer has seen an ACK frame, the packet numbers at or below its Largest
/// Acknowledged are no longer reported; they stay known for duplicate detection (§12.3), and one that
/// never arrived is still taken if it comes late, and reported on its own (§13.2.3: a range is retained
/// unless such packets will not be accepted), with the largest received as every frame has.
#[test]
fn ack_of_ack_stops_reporting_at_or_below_its_largest() {
    let t0 = epoch();
    let mut rx = data();
    for pn in [0, 1, 2, 4, 5, 8] {
        rx.on_packet_received(pn, true, None, t0);
    }
    let frame = rx.build_ack(t0, 3).expect("packets to acknowledge");
    rx.on_ack_sent(frame.largest(), 7);
    rx.on_packet_received(10, true, None, t0);
    rx.on_packet_received(11, false, None, t0);
    // The peer acknowledged our packet 7, which acknowledged up to 4 (say, an older frame).
    rx.on_ack_of_ack(4);
    assert_eq!(rx.report_floor(), 5);
    assert_eq!(
        ranges(&rx.build_ack(t0, 3).expect("packets")),
        [10..=11, 8..=8, 5..=5]
    );
    // What was received stays a duplicate; 3 and 6 were never received and are not.
    assert!(rx.is_duplicate(2));
    assert!(!rx.is_duplicate(3));
    assert!(!rx.is_duplicate(6));
    // Reporting everything acknowledged keeps the largest and makes nothing due.
    rx.on_ack_of_ack(11);
    assert_eq!(rx.largest(), Some(11));
    assert!(rx.is_duplicate(11));
    assert!(rx.build_ack(t0, 3).is_none());
    assert!(!rx.has_unacked());
    assert!(!rx.wants_ack_now());
    assert_eq!(rx.ack_deadline(), None);
    // An older frame's acknowledgement arriving late changes nothing.
    rx.on_ack_of_ack(2);
    assert_eq!(rx.report_floor(), 12);
    // A bogus value above the largest received never hides future packets.
    rx.on_ack_of_ack(1000);
    assert!(!rx.is_duplicate(12));
    // 3 comes now, late: taken, and acknowledged on its own beside the largest.
    assert!(rx.on_packet_received(3, true, None, t0 + ms(1)));
    assert!(rx.is_duplicate(3));
    assert!(rx.has_unacked());
    assert_eq!(
        ranges(&rx.build_ack(t0 + ms(1), 3).expect("packets")),
        [11..=11, 3..=3]
    );
    // It goes in the next three frames whatever the floor does (a floor raised by an earlier frame's
    // acknowledgement says nothing of a packet that came after that frame), then no more.
    rx.on_ack_sent(11, 40);
    rx.on_ack_of_ack(11);
    assert_eq!(
        ranges(&rx.build_ack(t0 + ms(1), 3).expect("packets")),
        [11..=11, 3..=3]
    );
    rx.on_ack_sent(11, 41);
    rx.on_ack_sent(11, 42);
    assert!(rx.build_ack(t0 + ms(1), 3).is_none());
    // New packets are reported from where the floor stands.
    rx.on_packet_received(12, true, None, t0 + ms(1));
    assert_eq!(ranges(&rx.build_ack(t0 + ms(1), 3).expect("packets")), [12..=12]);
    assert_eq!(rx.ack_deadline(), Some(t0 + ms(26)));
}

/// RFC 9000 §13.2.3, §13.2.4: the peer's acknowledgement of the packet that carried an ACK frame prunes
/// the ranges at or below that frame's Largest Acknowledged, whatever else the packet carried: the
/// oldest ACK frame sent since the last such check is watched. A peer that acknowledges later packets
/// without it (it was lost) moves the watch to the next ACK frame sent.
#[test]
fn the_peers_ack_of_an_ack_frame_prunes_what_it_reported() {
    let t0 = epoch();
    let mut rx = data();
    let peer_ack = |r: &[RangeInclusive<u64>]| AckFrame::from_ranges(r.iter().cloned(), 0, None).unwrap();
    for pn in [0, 1, 3, 4] {
        rx.on_packet_received(pn, true, None, t0);
    }
    // Our packet 20 carried an ACK up to 4, our packet 21 one up to 6.
    rx.on_ack_sent(4, 20);
    rx.on_packet_received(6, true, None, t0);
    rx.on_ack_sent(6, 21);
    rx.on_packet_received(8, true, None, t0);
    // An ACK of packets below 20 tells nothing about it.
    rx.on_peer_ack(&peer_ack(&[10..=19]));
    assert_eq!(rx.report_floor(), 0);
    // One of 20 (and 21): the frame of packet 20 was seen, what it reported is no longer reported.
    rx.on_peer_ack(&peer_ack(&[20..=21]));
    assert_eq!(rx.report_floor(), 5);
    assert_eq!(ranges(&rx.build_ack(t0, 3).expect("packets")), [8..=8, 6..=6]);
    // Packet 30's ACK frame (up to 8) is watched next; the peer acknowledges 31 but not 30: lost.
    rx.on_ack_sent(8, 30);
    rx.on_peer_ack(&peer_ack(&[31..=31]));
    assert_eq!(rx.report_floor(), 5);
    rx.on_ack_sent(8, 32);
    rx.on_peer_ack(&peer_ack(&[32..=32, 30..=30]));
    assert_eq!(rx.report_floor(), 9);
    assert!(rx.build_ack(t0, 3).is_none());
}

#[test]
fn nothing_received_builds_no_frame() {
    let rx = data();
    assert!(rx.build_ack(epoch(), 3).is_none());
    assert!(!rx.has_unacked());
    assert_eq!(rx.largest(), None);
}

#[test]
fn built_frames_round_trip_through_the_codec() {
    let t0 = epoch();
    let mut rx = data();
    for pn in [0, 1, 2, 3, 7, 8, 20, 1 << 40, (1 << 62) - 1] {
        rx.on_packet_received(pn, true, Some(EcnCodepoint::Ect1), t0);
    }
    let frame = rx.build_ack(t0 + ms(3), 3).expect("packets to acknowledge");
    assert_eq!(
        ranges(&frame),
        [
            (1 << 62) - 1..=(1 << 62) - 1,
            1 << 40..=1 << 40,
            20..=20,
            7..=8,
            0..=3
        ]
    );
    round_trip(&frame);
}

/// Checks, after every step of a random arrival order with tiny caps and occasional ack-of-acks, that
/// no received packet number is ever accepted again, that every ACK frame only acknowledges received
/// packet numbers and always includes the largest, and that it round-trips through the codec.
fn check_random_arrivals(arrivals: &[(u64, bool, bool)]) {
    let t0 = epoch();
    let config = AckConfig {
        max_ack_ranges: 3,
        max_tracked_ranges: 4,
        ..AckConfig::default()
    };
    let mut rx = ReceivedPackets::new(SpaceId::Data, config);
    let mut received = BTreeSet::new();
    for (i, &(pn, ack_eliciting, ack_of_ack)) in (0u64..).zip(arrivals) {
        let now = t0 + ms(i);
        let accepted = rx.on_packet_received(pn, ack_eliciting, None, now);
        if received.contains(&pn) {
            assert!(!accepted, "pn {pn} accepted twice");
        }
        if accepted {
            received.insert(pn);
        }
        for &seen in &received {
            assert!(rx.is_duplicate(seen), "pn {seen} forgotten");
        }
        assert_eq!(rx.largest(), received.last().copied());
        assert!(rx.ranges.len() <= 4);
        if rx.wants_ack_now() || ack_of_ack {
            let Some(frame) = rx.build_ack(now, 3) else {
                continue;
            };
            assert_eq!(Some(frame.largest()), rx.largest());
            assert!(frame.iter().count() <= 3);
            for r in frame.iter() {
                assert!(r.clone().all(|v| received.contains(&v)), "{r:?} not all received");
            }
            round_trip(&frame);
            rx.on_ack_sent(frame.largest(), i);
            if ack_of_ack {
                rx.on_ack_of_ack(frame.largest());
            }
        }
    }
}

proptest! {
    #[test]
    fn random_arrivals_keep_the_invariants(
        arrivals in prop::collection::vec((0..40u64, any::<bool>(), prop::bool::weighted(0.1)), 0..80),
    ) {
        check_random_arrivals(&arrivals);
    }
}

#[test]
fn an_ack_of_ranges_far_apart_is_cut_to_fit_its_packet() {
    // A peer skipping packet numbers by 2^40 makes each range cost about 16 bytes; with room for 200
    // ranges configured, the whole frame would outgrow a packet and never be sent.
    let config = AckConfig {
        max_ack_ranges: 200,
        ..AckConfig::default()
    };
    let mut rx = ReceivedPackets::new(SpaceId::Data, config);
    let t0 = epoch();
    for i in 0..200u64 {
        assert!(rx.on_packet_received(i << 40, true, None, t0));
    }
    let whole = rx.build_ack(t0, 3).expect("packets");
    assert!(whole.encoded_len() > 1200);
    let cut = rx.build_ack_within(t0, 3, 1100).expect("packets");
    assert!(cut.encoded_len() <= 1100, "{}", cut.encoded_len());
    assert_eq!(cut.largest(), 199 << 40, "the newest ranges are kept");
    assert!(ranges(&cut).len() >= 50);
    round_trip(&cut);
    // Room enough: nothing is left out.
    assert_eq!(rx.build_ack_within(t0, 3, usize::MAX), Some(whole));
}

/// One step of [`check_against_model`].
#[derive(Debug, Clone)]
enum Step {
    /// A packet arrives: packet number, ack-eliciting, ECN-CE.
    Receive(u64, bool, bool),
    /// An ACK frame is sent, if one is owed (`false`) or whenever one can be built (`true`), within
    /// `room` bytes (`None`: unlimited).
    Send(bool, Option<usize>),
    /// The peer acknowledges the packet that carried the `n`-th ACK frame sent (modulo their number).
    AckOfAck(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..60u64, any::<bool>(), prop::bool::weighted(0.05))
            .prop_map(|(pn, ae, ce)| Step::Receive(pn, ae, ce)),
        3 => (any::<bool>(), prop::option::weighted(0.2, 8..40usize))
            .prop_map(|(any, room)| Step::Send(any, room)),
        2 => any::<usize>().prop_map(Step::AckOfAck),
    ]
}

/// Runs `steps` against a simple model: the set of packet numbers received, the report floor (one
/// above the highest Largest Acknowledged of an acknowledged frame, capped at one above the largest
/// received then), and for every packet when it arrived (in ACK frames sent). Checks that every ACK frame
/// is valid (round-trips, descending, disjoint, not adjacent), acknowledges only received packets, holds
/// the largest; with no cap on ranges or room, that it holds everything received at or above the report
/// floor and every packet that arrived out of order since the last frame; that the pending state clears
/// once a frame is sent and that what is owed can always be built.
fn check_against_model(space: SpaceId, max_ack_ranges: usize, max_tracked_ranges: usize, steps: &[Step]) {
    let t0 = epoch();
    let config = AckConfig {
        max_ack_ranges,
        max_tracked_ranges,
        ..AckConfig::default()
    };
    let uncapped = max_ack_ranges >= 1000;
    let mut rx = ReceivedPackets::new(space, config);
    let mut received = BTreeSet::new();
    let mut floor = 0u64;
    // Largest Acknowledged of each frame sent.
    let mut sent: Vec<u64> = Vec::new();
    // Packets that arrived below the largest since the last frame.
    let mut late_since: Vec<u64> = Vec::new();
    let mut late_total = 0usize;
    for (i, s) in (0u64..).zip(steps) {
        let now = t0 + ms(i);
        match *s {
            Step::Receive(pn, ae, ce) => {
                let ecn = ce.then_some(EcnCodepoint::Ce);
                let forgotten = pn < rx.min_tracked();
                let accepted = rx.on_packet_received(pn, ae, ecn, now);
                assert_eq!(accepted, !received.contains(&pn) && !forgotten, "pn {pn}");
                if accepted {
                    if received.last().is_some_and(|&l| pn < l) {
                        late_since.push(pn);
                        late_total += 1;
                    }
                    received.insert(pn);
                }
            }
            Step::AckOfAck(n) => {
                if !sent.is_empty() {
                    let largest = sent[n % sent.len()];
                    rx.on_ack_of_ack(largest);
                    let cap = received.last().map_or(0, |&l| l + 1);
                    floor = floor.max((largest + 1).min(cap));
                    assert_eq!(rx.report_floor(), floor);
                }
            }
            Step::Send(anyway, room) => {
                let owed = rx.wants_ack_now() || rx.ack_deadline().is_some_and(|d| d <= now);
                if rx.wants_ack_now() || rx.ack_deadline().is_some() || rx.has_unacked() {
                    assert!(rx.build_ack(now, 3).is_some(), "owed but nothing to build");
                }
                if !(owed || anyway) {
                    continue;
                }
                let frame = match room {
                    Some(room) => rx.build_ack_within(now, 3, room),
                    None => rx.build_ack(now, 3),
                };
                let Some(frame) = frame else {
                    continue;
                };
                if let Some(room) = room {
                    assert!(frame.encoded_len() <= room);
                }
                round_trip(&frame);
                let got = ranges(&frame);
                assert_eq!(Some(frame.largest()), received.last().copied());
                for w in got.windows(2) {
                    assert!(w[1].end() + 1 < *w[0].start(), "{got:?} not descending and apart");
                }
                for r in &got {
                    assert!(r.clone().all(|v| received.contains(&v)), "{r:?} not all received");
                }
                if uncapped && room.is_none() {
                    let has = |pn: u64| got.iter().any(|r| r.contains(&pn));
                    // Below `min_tracked`, the cap forgot what was received (RFC 9000 §13.2.3).
                    for &pn in received.range(floor.max(rx.min_tracked())..) {
                        assert!(has(pn), "{pn} at or above the floor {floor} missing from {got:?}");
                    }
                    if late_total <= 16 {
                        for &pn in &late_since {
                            assert!(has(pn), "late {pn} missing from {got:?}");
                        }
                    }
                } else {
                    assert!(got.len() <= max_ack_ranges.max(1));
                }
                rx.on_ack_sent(frame.largest(), 1000 + sent.len() as u64);
                sent.push(frame.largest());
                late_since.clear();
                assert!(!rx.has_unacked());
                assert!(!rx.wants_ack_now());
                assert_eq!(rx.ack_deadline(), None);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn ack_frames_match_a_model(
        space in prop_oneof![Just(SpaceId::Data), Just(SpaceId::Initial)],
        max_ack_ranges in prop_oneof![Just(1usize), Just(2), Just(3), Just(1000)],
        max_tracked_ranges in prop_oneof![Just(2usize), Just(5), Just(256)],
        steps in prop::collection::vec(step(), 0..120),
    ) {
        check_against_model(space, max_ack_ranges, max_tracked_ranges, &steps);
    }
}

/// A late packet that the range cap drops as soon as it is inserted (it became the lowest of too many
/// ranges) is still taken (`on_packet_received` says so, and its frames were processed), so it must
/// be acknowledged: above the report floor, the late list is its only record. RFC 9000 §13.2.1: an
/// ack-eliciting packet is acknowledged; RFC 9002 §6.1: otherwise its sender never learns its loss was
/// spurious.
#[test]
fn a_late_packet_the_range_cap_drops_at_once_is_still_acknowledged() {
    let t0 = epoch();
    // Fewer ranges tracked than reported (both are `TransportConfig` settings); nothing of ours
    // acknowledged yet, so the report floor stays at 0.
    let config = AckConfig {
        max_tracked_ranges: 4,
        ..AckConfig::default()
    };
    let mut rx = ReceivedPackets::new(SpaceId::Data, config);
    // Every third packet lost: five ranges, so {0} went to make room and 1 and 2 are not duplicates.
    for pn in [0, 3, 6, 9, 12] {
        assert!(rx.on_packet_received(pn, true, None, t0));
    }
    assert_eq!(rx.min_tracked(), 1);
    assert_eq!(rx.report_floor(), 0);
    // 1 comes late: new, so taken (and its frames processed), but as the lowest of five ranges the cap
    // drops it at once.
    assert!(
        rx.on_packet_received(1, true, None, t0 + ms(1)),
        "1 is new: taken"
    );
    assert!(rx.is_duplicate(1));
    assert!(rx.wants_ack_now(), "reordered");
    let frame = rx.build_ack(t0 + ms(1), 3).expect("packets");
    round_trip(&frame);
    assert_eq!(
        ranges(&frame),
        [12..=12, 9..=9, 6..=6, 3..=3, 1..=1],
        "packet 1 taken but never acknowledged"
    );
}

/// The late list is full of packets that arrived out of order but above the report floor, which the
/// ranges report anyway, when one arrives from below the floor (reordered past a round trip), which only
/// the late list reports: it is the one to keep.
#[test]
fn a_full_late_list_keeps_the_packet_below_the_report_floor() {
    let t0 = epoch();
    let mut rx = data();
    // 0..=100 but 50; our frame of them acknowledged: the floor is 101.
    for pn in (0..=100).filter(|&pn| pn != 50) {
        rx.on_packet_received(pn, true, None, t0);
    }
    rx.on_ack_sent(100, 7);
    rx.on_ack_of_ack(100);
    assert_eq!(rx.report_floor(), 101);
    // 101..=140 with the even ones from 102 to 134 missing, then 50, then those 17, all late, before
    // any ACK frame goes out (one batch of datagrams handled before the next transmission).
    for pn in (101..=140).filter(|&pn| !(102..=134).contains(&pn) || pn % 2 == 1) {
        rx.on_packet_received(pn, true, None, t0 + ms(1));
    }
    assert!(rx.on_packet_received(50, true, None, t0 + ms(2)));
    for pn in (102..=134).step_by(2) {
        assert!(rx.on_packet_received(pn, true, None, t0 + ms(2)));
    }
    let frame = rx.build_ack(t0 + ms(2), 3).expect("packets");
    round_trip(&frame);
    assert_eq!(ranges(&frame), [101..=140, 50..=50]);
}

/// One step of [`check_timing`]: a packet arrives (number, ack-eliciting, ECN-CE), or an ACK frame is
/// sent (when owed, or whenever one can be built).
#[derive(Debug, Clone)]
enum TimingStep {
    Receive(u64, bool, bool),
    Send(bool),
}

/// Checks when ACK frames are due against RFC 9000 §13.2.1 and §13.2.2 read literally: in the
/// application space, an ack-eliciting packet is acknowledged at once when it is the second since the
/// last ACK frame, when its number is below that of another ack-eliciting packet received, when it is
/// above the highest such and packets are missing between them, or when it is marked CE (a CE mark on
/// a non-ack-eliciting packet hurries an ACK already owed); otherwise within max_ack_delay of the first
/// ack-eliciting packet not yet acknowledged; and nothing is owed for non-ack-eliciting packets alone.
fn check_timing(steps: &[TimingStep]) {
    let t0 = epoch();
    let mut rx = data();
    let mut received = BTreeSet::new();
    let mut eliciting = BTreeSet::new();
    let (mut count, mut first, mut immediate) = (0u64, None, false);
    for (i, s) in (0u64..).zip(steps) {
        let now = t0 + ms(i);
        match *s {
            TimingStep::Receive(pn, ae, ce) => {
                let ecn = ce.then_some(EcnCodepoint::Ce);
                let accepted = rx.on_packet_received(pn, ae, ecn, now);
                assert_eq!(accepted, !received.contains(&pn), "pn {pn}");
                if !accepted {
                    continue;
                }
                if ae {
                    let below_another = eliciting.iter().any(|&q| q > pn);
                    let gap_above = eliciting
                        .last()
                        .is_some_and(|&l: &u64| pn > l && (l + 1..pn).any(|k| !received.contains(&k)));
                    count += 1;
                    first.get_or_insert(now);
                    immediate |= count >= 2 || below_another || gap_above || ce;
                    eliciting.insert(pn);
                } else if ce && count > 0 {
                    immediate = true;
                }
                received.insert(pn);
            }
            TimingStep::Send(anyway) => {
                let owed = rx.wants_ack_now() || rx.ack_deadline().is_some_and(|d| d <= now);
                if owed || anyway {
                    if let Some(frame) = rx.build_ack(now, 3) {
                        rx.on_ack_sent(frame.largest(), 1000 + i);
                        (count, first, immediate) = (0, None, false);
                    }
                }
            }
        }
        let due_now = count > 0 && immediate;
        assert_eq!(rx.wants_ack_now(), due_now, "step {i}: {s:?}");
        let deadline = first.filter(|_| !due_now).map(|f| f + ms(25));
        assert_eq!(rx.ack_deadline(), deadline, "step {i}: {s:?}");
        assert_eq!(rx.ack_owed(), count > 0, "step {i}: {s:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn ack_timing_follows_the_rfc_rules(
        steps in prop::collection::vec(prop_oneof![
            6 => (0..40u64, any::<bool>(), prop::bool::weighted(0.05))
                .prop_map(|(pn, ae, ce)| TimingStep::Receive(pn, ae, ce)),
            2 => any::<bool>().prop_map(TimingStep::Send),
        ], 0..100),
    ) {
        check_timing(&steps);
    }
}
