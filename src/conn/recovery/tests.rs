//! Tests for RTT estimation and loss detection (RFC 9002 §5, §6).

use super::*;
use proptest::prelude::*;

use crate::test_util::epoch;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn us(x: u64) -> Duration {
    Duration::from_micros(x)
}

/// A context with max_ack_delay 25 ms.
fn ctx(handshake_confirmed: bool) -> RecoveryContext {
    RecoveryContext {
        max_ack_delay: ms(25),
        handshake_confirmed,
        has_handshake_keys: true,
        at_anti_amplification_limit: false,
        local_delay: Duration::ZERO,
    }
}

/// An ack-eliciting packet of 1000 bytes in flight, sent at `t`.
fn pkt(t: Instant, data: u64) -> SentPacket<u64> {
    SentPacket {
        time_sent: t,
        size: 1000,
        ack_eliciting: true,
        in_flight: true,
        mtu_probe: false,
        ecn_marked: false,
        data,
    }
}

/// What [`LossDetection::on_ack_received`] returns, with the packets it handed to its callback collected
/// in ascending order, as the tests check them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome<T> {
    acked: Vec<(u64, SentPacket<T>)>,
    lost: Vec<(u64, SentPacket<T>)>,
    largest_acked_time_sent: Option<Instant>,
    rtt_sampled: bool,
    persistent_congestion: bool,
    spurious: Vec<u64>,
}

impl<T: Clone> LossDetection<T> {
    fn ack<I>(
        &mut self,
        space: SpaceId,
        ranges: I,
        ack_delay: Duration,
        now: Instant,
        ctx: &RecoveryContext,
    ) -> Result<Outcome<T>, AckError>
    where
        I: IntoIterator<Item = RangeInclusive<u64>>,
    {
        let mut acked = Vec::new();
        let out = self.on_ack_received(space, ranges, ack_delay, now, ctx, |_, pn, p| {
            acked.push((pn, p.clone()));
        })?;
        assert_eq!(
            acked.len(),
            out.acked,
            "the count matches the packets handed over"
        );
        assert!(
            acked.windows(2).all(|w| w[0].0 < w[1].0),
            "handed over in ascending order"
        );
        Ok(Outcome {
            acked,
            lost: out.lost,
            largest_acked_time_sent: out.largest_acked_time_sent,
            rtt_sampled: out.rtt_sampled,
            persistent_congestion: out.persistent_congestion,
            spurious: out.spurious,
        })
    }
}

fn pns(packets: &[(u64, SentPacket<u64>)]) -> Vec<u64> {
    packets.iter().map(|(pn, _)| *pn).collect()
}

fn server() -> LossDetection<u64> {
    LossDetection::new(Side::Server, INITIAL_RTT)
}

fn client() -> LossDetection<u64> {
    LossDetection::new(Side::Client, INITIAL_RTT)
}

// ---- RTT estimation (RFC 9002 §5) ----

#[test]
fn rtt_initial_values() {
    let rtt = RttEstimator::new(INITIAL_RTT);
    assert_eq!(rtt.smoothed(), ms(333));
    assert_eq!(rtt.rttvar(), us(166_500));
    assert!(!rtt.has_sample());
    // RFC 9002 §6.2.2: 333 ms "results in handshakes starting with a PTO of 1 second": 333 + 4 * 166.5.
    assert_eq!(rtt.pto_base(), ms(999));
}

#[test]
fn rtt_first_sample_initialises() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    // The ack delay is ignored on the first sample (RFC 9002 §5.3).
    rtt.update(ms(100), ms(30), ms(25), true);
    assert_eq!(rtt.latest(), ms(100));
    assert_eq!(rtt.min(), ms(100));
    assert_eq!(rtt.smoothed(), ms(100));
    assert_eq!(rtt.rttvar(), ms(50));
    assert_eq!(rtt.pto_base(), ms(300));
}

#[test]
fn rtt_ewma_matches_hand_computed_values() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    rtt.update(ms(100), Duration::ZERO, ms(25), true);
    // latest 200, ack_delay 20 <= max 25; 200 >= min 100 + 20, so adjusted = 180.
    // rttvar = 3/4 * 50 + 1/4 * |100 - 180| = 37.5 + 20 = 57.5
    // smoothed = 7/8 * 100 + 1/8 * 180 = 87.5 + 22.5 = 110
    rtt.update(ms(200), ms(20), ms(25), true);
    assert_eq!(rtt.latest(), ms(200));
    assert_eq!(rtt.min(), ms(100));
    assert_eq!(rtt.rttvar(), us(57_500));
    assert_eq!(rtt.smoothed(), ms(110));
    // latest 80: min becomes 80, adjusted = 80.
    // rttvar = 3/4 * 57.5 + 1/4 * |110 - 80| = 43.125 + 7.5 = 50.625
    // smoothed = 7/8 * 110 + 1/8 * 80 = 96.25 + 10 = 106.25
    rtt.update(ms(80), Duration::ZERO, ms(25), true);
    assert_eq!(rtt.min(), ms(80));
    assert_eq!(rtt.rttvar(), us(50_625));
    assert_eq!(rtt.smoothed(), us(106_250));
    // pto_base = 106.25 + max(4 * 50.625, 1) = 308.75
    assert_eq!(rtt.pto_base(), us(308_750));
    // loss delay = 9/8 * max(106.25, 80) = 119.53125
    assert_eq!(rtt.loss_delay(), Duration::from_nanos(119_531_250));
}

#[test]
fn rtt_ack_delay_capped_once_handshake_confirmed() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    rtt.update(ms(100), Duration::ZERO, ms(25), true);
    // ack_delay 100 capped to max_ack_delay 25: adjusted = 300 - 25 = 275.
    // smoothed = (7 * 100 + 275) / 8 = 121.875
    rtt.update(ms(300), ms(100), ms(25), true);
    assert_eq!(rtt.smoothed(), us(121_875));
}

#[test]
fn rtt_ack_delay_not_capped_before_confirmation() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    rtt.update(ms(100), Duration::ZERO, ms(25), false);
    // RFC 9002 §5.3: max_ack_delay ignored before confirmation: adjusted = 300 - 100 = 200.
    // smoothed = (700 + 200) / 8 = 112.5
    rtt.update(ms(300), ms(100), ms(25), false);
    assert_eq!(rtt.smoothed(), us(112_500));
}

#[test]
fn rtt_ack_delay_never_subtracted_below_min_rtt() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    rtt.update(ms(100), Duration::ZERO, ms(25), true);
    // 110 < min 100 + 20, so the sample is used unadjusted: smoothed = (700 + 110) / 8 = 101.25.
    rtt.update(ms(110), ms(20), ms(25), true);
    assert_eq!(rtt.smoothed(), us(101_250));
    assert_eq!(rtt.min(), ms(100));
}

/// RFC 9002 §5.3 lets an endpoint ignore, before confirmation, a sample whose ACK delay cannot be
/// subtracted: taken whole, one that is mostly the peer's delay (a Handshake ACK sent again with a lost
/// Finished at the peer's backed-off PTO) sets the estimate to seconds on a fast path.
#[test]
fn rtt_sample_mostly_ack_delay_before_confirmation_is_ignored() {
    // As the first sample: nothing changes, and the next sample initialises the estimator.
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    assert!(!rtt.update(ms(4_100), ms(4_000), ms(25), false));
    assert!(!rtt.has_sample());
    assert_eq!(rtt.smoothed(), INITIAL_RTT);
    assert_eq!(rtt.pto_base(), ms(999));
    assert!(rtt.update(ms(90), Duration::ZERO, ms(25), true));
    assert_eq!(
        (rtt.min(), rtt.smoothed(), rtt.rttvar()),
        (ms(90), ms(90), ms(45))
    );

    // As a later sample whose delay would take it below min_rtt: ignored too.
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    assert!(rtt.update(ms(100), Duration::ZERO, ms(25), false));
    assert!(!rtt.update(ms(4_050), ms(4_000), ms(25), false));
    assert_eq!(
        (rtt.latest(), rtt.smoothed(), rtt.rttvar()),
        (ms(100), ms(100), ms(50))
    );
    // One it can be subtracted from is taken, adjusted: 4,150 - 4,000 = 150.
    assert!(rtt.update(ms(4_150), ms(4_000), ms(25), false));
    assert_eq!(rtt.latest_adjusted(), ms(150));
}

/// An ignored sample still lowers min_rtt (RFC 9002 §5.2: "the lesser of min_rtt and latest_rtt"; the
/// sample is ignored for its ACK delay, which min_rtt never uses).
#[test]
fn rtt_ignored_sample_still_lowers_min_rtt() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    assert!(rtt.update(ms(100), Duration::ZERO, ms(25), false));
    assert!(!rtt.update(ms(60), ms(40), ms(25), false));
    assert_eq!((rtt.min(), rtt.smoothed()), (ms(60), ms(100)));
}

/// In the Initial space the ACK delay is not subtracted (RFC 9002 §5.3 MAY), but a sample that is mostly
/// that delay is ignored before confirmation all the same: the ACK of a ClientHello in a server's PTO
/// probe, a second after it arrived, on a 20 ms path.
#[test]
fn rtt_initial_sample_mostly_ack_delay_is_ignored() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    assert!(!rtt.update_initial(ms(1_020), ms(1_000), ms(25), false));
    assert!(!rtt.has_sample());
    // One with a small delay is taken whole, the delay not subtracted.
    assert!(rtt.update_initial(ms(20), ms(5), ms(25), false));
    assert_eq!((rtt.min(), rtt.smoothed()), (ms(20), ms(20)));
    assert!(rtt.update_initial(ms(30), ms(5), ms(25), false));
    assert_eq!(rtt.latest_adjusted(), ms(30));
}

/// What is not ignored: a first sample with a smaller share of ACK delay (taken whole, RFC 9002 §5.3),
/// and any sample once the handshake is confirmed (the delay then capped at max_ack_delay).
#[test]
fn rtt_sample_with_ack_delay_is_taken_otherwise() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    assert!(rtt.update(ms(100), ms(49), ms(25), false));
    assert_eq!(rtt.smoothed(), ms(100));
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    assert!(rtt.update(ms(4_100), ms(4_000), ms(25), true));
    assert_eq!(rtt.smoothed(), ms(4_100));
    assert!(rtt.update(ms(4_200), ms(4_000), ms(25), true));
    assert_eq!(rtt.latest_adjusted(), ms(4_175));
}

#[test]
fn rtt_huge_ack_delay_saturates() {
    let mut rtt = RttEstimator::new(INITIAL_RTT);
    rtt.update(ms(100), Duration::ZERO, ms(25), false);
    rtt.update(ms(100), Duration::MAX, Duration::MAX, false);
    rtt.update(Duration::MAX, Duration::MAX, Duration::MAX, true);
    let _ = rtt.pto_base();
    let _ = rtt.loss_delay();
}

// ---- ACK processing ----

#[test]
fn rtt_sample_only_for_newly_acked_largest_with_ack_eliciting() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    let padding_only = SentPacket {
        ack_eliciting: false,
        ..pkt(t0 + ms(1), 1)
    };
    ld.on_packet_sent(SpaceId::Data, 1, padding_only);
    // Newly acknowledges only a non-ack-eliciting packet: no sample (RFC 9002 §5.1).
    let out = ld.ack(SpaceId::Data, [1..=1], ms(0), t0 + ms(100), &c).unwrap();
    assert_eq!(pns(&out.acked), [1]);
    assert!(!out.rtt_sampled);
    assert_eq!(out.largest_acked_time_sent, Some(t0 + ms(1)));
    // The largest (1) is not newly acknowledged: no sample.
    let out = ld.ack(SpaceId::Data, [0..=1], ms(0), t0 + ms(200), &c).unwrap();
    assert_eq!(pns(&out.acked), [0]);
    assert!(!out.rtt_sampled);
    assert_eq!(out.largest_acked_time_sent, None);
    assert!(!ld.rtt().has_sample());
    assert_eq!(ld.first_rtt_sample(), None);

    ld.on_packet_sent(SpaceId::Data, 2, pkt(t0 + ms(200), 2));
    let out = ld.ack(SpaceId::Data, [0..=2], ms(5), t0 + ms(250), &c).unwrap();
    assert!(out.rtt_sampled);
    assert_eq!(ld.rtt().latest(), ms(50));
    assert_eq!(ld.first_rtt_sample(), Some(t0 + ms(250)));
}

#[test]
fn initial_space_ignores_ack_delay() {
    let t0 = epoch();
    for (space, smoothed) in [(SpaceId::Initial, us(112_500)), (SpaceId::Handshake, us(106_250))] {
        let mut ld = server();
        let c = ctx(false);
        ld.on_packet_sent(space, 0, pkt(t0, 0));
        ld.ack(space, [0..=0], ms(50), t0 + ms(100), &c).unwrap();
        ld.on_packet_sent(space, 1, pkt(t0 + ms(100), 1));
        ld.ack(space, [1..=1], ms(50), t0 + ms(300), &c).unwrap();
        // Initial: adjusted 200, smoothed (700 + 200) / 8; Handshake: adjusted 150, (700 + 150) / 8.
        assert_eq!(ld.rtt().smoothed(), smoothed, "{space:?}");
    }
}

#[test]
fn packet_threshold_loss() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    for pn in 0..5 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0, pn));
    }
    assert_eq!(ld.bytes_in_flight(), 5000);
    // latest_rtt 10 ms, so the time threshold (11.25 ms) has not passed for packets sent at t0.
    let out = ld.ack(SpaceId::Data, [3..=3], ms(0), t0 + ms(10), &c).unwrap();
    assert_eq!(pns(&out.acked), [3]);
    // RFC 9002 §6.1.1: 0 is 3 packets before 3; 1 and 2 are not.
    assert_eq!(pns(&out.lost), [0]);
    assert_eq!(out.lost[0].1.data, 0);
    assert!(!out.persistent_congestion);
    assert_eq!(ld.bytes_in_flight(), 3000);
    // The rest wait for the time threshold.
    assert_eq!(ld.timeout(&c), Some(t0 + us(11_250)));

    let out = ld.ack(SpaceId::Data, [4..=4], ms(0), t0 + ms(10), &c).unwrap();
    assert_eq!(pns(&out.acked), [4]);
    assert_eq!(pns(&out.lost), [1]);
    assert_eq!(ld.bytes_in_flight(), 1000);
    assert_eq!(ld.largest_acked(SpaceId::Data), Some(4));
}

#[test]
fn time_threshold_loss_then_timer() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(1), 1));
    // latest = smoothed = 10 ms; loss delay 11.25 ms: packet 0 is not yet lost at t0 + 11 ms.
    let out = ld.ack(SpaceId::Data, [1..=1], ms(0), t0 + ms(11), &c).unwrap();
    assert!(out.lost.is_empty());
    let loss_time = t0 + us(11_250);
    assert_eq!(ld.timeout(&c), Some(loss_time));
    // The timer is the loss time, not a PTO, and a wake-up before it does nothing.
    assert_eq!(ld.on_timeout(loss_time - us(1), &c), TimeoutOutcome::Nothing);
    match ld.on_timeout(loss_time, &c) {
        TimeoutOutcome::Lost { space, lost, .. } => {
            assert_eq!(space, SpaceId::Data);
            assert_eq!(pns(&lost), [0]);
        }
        other => panic!("expected a loss, got {other:?}"),
    }
    assert_eq!(ld.pto_count(), 0);
    assert_eq!(ld.bytes_in_flight(), 0);
    // Nothing in flight and a server: no timer.
    assert_eq!(ld.timeout(&c), None);
}

#[test]
fn pto_deadline_and_exponential_backoff() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    // RFC 9002 §6.2.1: 333 + max(4 * 166.5, 1) + max_ack_delay 25 = 1024 ms.
    assert_eq!(ld.timeout(&c), Some(t0 + ms(1024)));
    assert_eq!(ld.on_timeout(t0 + ms(1023), &c), TimeoutOutcome::Nothing);
    assert_eq!(
        ld.on_timeout(t0 + ms(1024), &c),
        TimeoutOutcome::Probe {
            space: SpaceId::Data,
            anti_deadlock: false
        }
    );
    assert_eq!(ld.pto_count(), 1);
    // A PTO declares nothing lost (RFC 9002 §6.2).
    assert_eq!(ld.bytes_in_flight(), 1000);
    assert_eq!(
        ld.oldest_unacked(SpaceId::Data)
            .map(|(pn, _)| pn)
            .collect::<Vec<_>>(),
        [0]
    );
    // Doubled, max_ack_delay included.
    assert_eq!(ld.timeout(&c), Some(t0 + ms(2048)));
    assert!(matches!(
        ld.on_timeout(t0 + ms(2048), &c),
        TimeoutOutcome::Probe { .. }
    ));
    assert_eq!(ld.pto_count(), 2);
    assert_eq!(ld.timeout(&c), Some(t0 + ms(4096)));
    // A probe restarts the PTO from its send time.
    ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(2048), 1));
    assert_eq!(ld.timeout(&c), Some(t0 + ms(2048 + 4096)));
    // An acknowledgement resets the backoff (RFC 9002 §6.2.1).
    ld.ack(SpaceId::Data, [1..=1], ms(0), t0 + ms(2148), &c).unwrap();
    assert_eq!(ld.pto_count(), 0);
}

#[test]
fn pto_picks_the_earliest_space() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.on_packet_sent(SpaceId::Handshake, 0, pkt(t0 + ms(10), 0));
    // Handshake: no max_ack_delay, 10 + 999; Data: 0 + 1024.
    assert_eq!(ld.timeout(&c), Some(t0 + ms(1009)));
    assert_eq!(
        ld.on_timeout(t0 + ms(1009), &c),
        TimeoutOutcome::Probe {
            space: SpaceId::Handshake,
            anti_deadlock: false
        }
    );
}

#[test]
fn no_data_pto_before_handshake_confirmed() {
    let t0 = epoch();
    let mut ld = server();
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    assert_eq!(ld.timeout(&ctx(false)), None);
    assert_eq!(
        ld.on_timeout(t0 + ms(10_000), &ctx(false)),
        TimeoutOutcome::Nothing
    );
    assert_eq!(ld.timeout(&ctx(true)), Some(t0 + ms(1024)));
}

#[test]
fn server_at_amplification_limit_arms_no_pto() {
    let t0 = epoch();
    let mut ld = server();
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 0));
    let blocked = RecoveryContext {
        at_anti_amplification_limit: true,
        ..ctx(false)
    };
    assert_eq!(ld.timeout(&blocked), None);
    // Once unblocked the deadline reappears, possibly in the past: fire it at once (RFC 9002 §6.2.2.1).
    assert_eq!(ld.timeout(&ctx(false)), Some(t0 + ms(999)));
}

#[test]
fn anti_deadlock_pto_for_client_with_nothing_in_flight() {
    let t0 = epoch();
    let mut ld = client();
    let no_keys = RecoveryContext {
        has_handshake_keys: false,
        ..ctx(false)
    };
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 0));
    ld.ack(SpaceId::Initial, [0..=0], ms(0), t0 + ms(50), &no_keys)
        .unwrap();
    assert!(!ld.has_ack_eliciting_in_flight());
    assert!(!ld.peer_completed_address_validation(&no_keys));
    // smoothed 50, rttvar 25: PTO 150 ms from when the timer was armed (the ACK), and it stays put.
    assert_eq!(ld.timeout(&no_keys), Some(t0 + ms(200)));
    assert_eq!(ld.timeout(&no_keys), Some(t0 + ms(200)));
    assert_eq!(ld.on_timeout(t0 + ms(199), &no_keys), TimeoutOutcome::Nothing);
    assert_eq!(
        ld.on_timeout(t0 + ms(200), &no_keys),
        TimeoutOutcome::Probe {
            space: SpaceId::Initial,
            anti_deadlock: true
        }
    );
    assert_eq!(ld.pto_count(), 1);
    // With Handshake keys the probe goes in a Handshake packet; backed off, from the last timeout.
    assert_eq!(ld.timeout(&ctx(false)), Some(t0 + ms(500)));
    assert_eq!(
        ld.on_timeout(t0 + ms(500), &ctx(false)),
        TimeoutOutcome::Probe {
            space: SpaceId::Handshake,
            anti_deadlock: true
        }
    );
    // A Handshake ACK completes address validation: backoff reset, no timer with nothing in flight.
    ld.on_packet_sent(SpaceId::Handshake, 0, pkt(t0 + ms(500), 0));
    ld.ack(SpaceId::Handshake, [0..=0], ms(0), t0 + ms(550), &ctx(false))
        .unwrap();
    assert!(ld.peer_completed_address_validation(&ctx(false)));
    assert_eq!(ld.pto_count(), 0);
    assert_eq!(ld.timeout(&ctx(false)), None);
}

/// RFC 9002 §6.2.1: the sender "SHOULD restart its PTO timer ... when Initial or Handshake keys are
/// discarded" (Appendix A.11 calls SetLossDetectionTimer, and the anti-deadlock PTO counts from then).
/// A client backed off by a lost ClientHello, whose first Handshake packet carries only an ACK (the
/// server's flight is not complete yet), discards its Initial keys; the backoff is reset with them. Its
/// anti-deadlock PTO then counted from when the Initial ACK came, a backed-off period earlier, and was
/// already due: a probe went out at once, with nothing learnt since the ACK that was just sent.
#[test]
fn discarding_keys_restarts_the_anti_deadlock_pto() {
    let t0 = epoch();
    let mut ld = client();
    let no_keys = RecoveryContext {
        has_handshake_keys: false,
        ..ctx(false)
    };
    // The ClientHello is lost: a PTO, and its probe.
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 0));
    assert!(matches!(
        ld.on_timeout(t0 + ms(999), &no_keys),
        TimeoutOutcome::Probe { .. }
    ));
    ld.on_packet_sent(SpaceId::Initial, 1, pkt(t0 + ms(999), 1));
    // The server's Initial acknowledges the probe: RTT 100 ms, PTO 300 ms, still backed off once (a
    // client keeps its backoff on an Initial ACK), with nothing in flight: the anti-deadlock PTO.
    let c = ctx(false);
    ld.ack(SpaceId::Initial, [1..=1], ms(0), t0 + ms(1099), &c)
        .unwrap();
    assert_eq!(ld.pto_count(), 1);
    assert_eq!(ld.timeout(&c), Some(t0 + ms(1099 + 600)));
    // 400 ms on, the rest of the server's flight arrives; the client acknowledges it in its first
    // Handshake packet (ACK only) and discards its Initial keys.
    let now = t0 + ms(1499);
    let _ = ld.discard_space(SpaceId::Initial, now);
    assert_eq!(ld.pto_count(), 0);
    // The anti-deadlock PTO starts again from the discard, unbacked: not due at once.
    assert_eq!(ld.timeout(&c), Some(now + ms(300)));
    assert_eq!(ld.on_timeout(now, &c), TimeoutOutcome::Nothing);
}

#[test]
fn client_initial_ack_keeps_pto_backoff() {
    let t0 = epoch();
    let mut ld = client();
    let c = RecoveryContext {
        has_handshake_keys: false,
        ..ctx(false)
    };
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 0));
    assert_eq!(
        ld.on_timeout(t0 + ms(999), &c),
        TimeoutOutcome::Probe {
            space: SpaceId::Initial,
            anti_deadlock: false
        }
    );
    ld.on_packet_sent(SpaceId::Initial, 1, pkt(t0 + ms(999), 1));
    ld.ack(SpaceId::Initial, [1..=1], ms(0), t0 + ms(1049), &c)
        .unwrap();
    // RFC 9002 §6.2.1: "a client does not reset the PTO backoff factor on receiving acknowledgments in
    // Initial packets".
    assert_eq!(ld.pto_count(), 1);
    // A server does.
    let mut ld = server();
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 0));
    let _ = ld.on_timeout(t0 + ms(999), &c);
    ld.on_packet_sent(SpaceId::Initial, 1, pkt(t0 + ms(999), 1));
    ld.ack(SpaceId::Initial, [1..=1], ms(0), t0 + ms(1049), &c)
        .unwrap();
    assert_eq!(ld.pto_count(), 0);
}

#[test]
fn discard_space_clears_bytes_in_flight() {
    let t0 = epoch();
    let mut ld = client();
    let c = ctx(false);
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 10));
    ld.on_packet_sent(SpaceId::Initial, 1, pkt(t0, 11));
    ld.on_packet_sent(SpaceId::Initial, 2, pkt(t0, 12));
    ld.on_packet_sent(SpaceId::Initial, 3, pkt(t0 + ms(1), 13));
    let small = SentPacket {
        size: 500,
        ..pkt(t0, 20)
    };
    ld.on_packet_sent(SpaceId::Handshake, 0, small);
    assert!(matches!(
        ld.on_timeout(t0 + ms(999), &c),
        TimeoutOutcome::Probe { .. }
    ));
    // Leave a loss time pending in Initial; a client keeps its backoff on an Initial ACK.
    ld.ack(SpaceId::Initial, [2..=2], ms(0), t0 + ms(1009), &c)
        .unwrap();
    assert_eq!(ld.pto_count(), 1);
    assert!(ld.spaces.get(SpaceId::Initial).unwrap().loss_time.is_some());
    assert_eq!(ld.bytes_in_flight(), 3500);

    let dropped: Vec<_> = ld.discard_space(SpaceId::Initial, t0 + ms(1009)).collect();
    assert_eq!(pns(&dropped), [0, 1, 3]);
    assert_eq!(ld.bytes_in_flight(), 500);
    assert_eq!(ld.pto_count(), 0);
    assert!(ld.spaces.get(SpaceId::Initial).unwrap().loss_time.is_none());
    // Only the Handshake PTO remains, from the RTT sample of the Initial ACK: 1009 + 4 * 504.5.
    assert_eq!(ld.timeout(&c), Some(t0 + ms(1009 + 2018)));
    assert!(!ld.has_ack_eliciting_in_flight_in(SpaceId::Initial));
}

#[test]
fn handshake_spaces_are_released_once_both_are_discarded() {
    let t0 = epoch();
    let mut ld = client();
    let c = ctx(false);
    ld.on_packet_sent(SpaceId::Initial, 0, pkt(t0, 10));
    ld.on_packet_sent(SpaceId::Handshake, 0, pkt(t0, 20));
    ld.on_packet_sent(SpaceId::Handshake, 1, pkt(t0, 21));
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 30));
    assert_eq!(
        pns(&ld.discard_space(SpaceId::Initial, t0).collect::<Vec<_>>()),
        [0]
    );
    assert!(
        !ld.handshake_spaces_released(),
        "the Handshake space is still in use"
    );
    assert_eq!(ld.bytes_in_flight(), 3000);
    ld.ack(SpaceId::Handshake, [0..=0], ms(0), t0 + ms(50), &c)
        .unwrap();
    assert_eq!(ld.largest_acked(SpaceId::Handshake), Some(0));
    assert_eq!(ld.next_packet_number(SpaceId::Handshake), 2);

    assert_eq!(
        pns(&ld
            .discard_space(SpaceId::Handshake, t0 + ms(50))
            .collect::<Vec<_>>()),
        [1]
    );
    assert!(ld.handshake_spaces_released());
    // Released spaces read as empty; the application space is untouched.
    assert_eq!(ld.bytes_in_flight(), 1000);
    assert_eq!(ld.largest_acked(SpaceId::Handshake), None);
    assert!(!ld.has_ack_eliciting_in_flight_in(SpaceId::Initial));
    assert_eq!(ld.oldest_unacked(SpaceId::Handshake).count(), 0);
    assert_eq!(
        ld.discard_space(SpaceId::Initial, t0 + ms(50)).count(),
        0,
        "discarding again is harmless"
    );
    // An ACK can still arrive in a released space; it is checked against the numbers used there.
    assert_eq!(ld.next_packet_number(SpaceId::Handshake), 2);
    assert_eq!(ld.next_packet_number(SpaceId::Initial), 1);
    let out = ld
        .ack(SpaceId::Handshake, [1..=1], ms(0), t0 + ms(60), &c)
        .unwrap();
    assert!(out.acked.is_empty() && ld.pto_count() == 0);
    assert_eq!(
        ld.ack(SpaceId::Handshake, [5..=6, 0..=1], ms(0), t0 + ms(60), &c),
        Err(AckError::UnsentPacket {
            space: SpaceId::Handshake,
            pn: 5
        })
    );
    assert_eq!(
        ld.ack(SpaceId::Initial, [0..=1], ms(0), t0 + ms(60), &c),
        Err(AckError::UnsentPacket {
            space: SpaceId::Initial,
            pn: 1
        })
    );
    // With the handshake confirmed, only the application space's PTO is armed: 50 ms of RTT sample
    // gives 50 + 4 * 25 + 25 ms of max_ack_delay.
    assert_eq!(ld.timeout(&ctx(true)), Some(t0 + ms(175)));
    let out = ld
        .ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(70), &ctx(true))
        .unwrap();
    assert_eq!(pns(&out.acked), [0]);
    assert_eq!(ld.bytes_in_flight(), 0);
}

#[test]
fn ack_of_unsent_packet_is_an_error() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    // Nothing sent yet in any space.
    assert_eq!(
        ld.ack(SpaceId::Handshake, [0..=0], ms(0), t0, &c),
        Err(AckError::UnsentPacket {
            space: SpaceId::Handshake,
            pn: 0
        })
    );
    for pn in 0..3 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0, pn));
    }
    ld.skip_packet_number(SpaceId::Data, 3);
    ld.on_packet_sent(SpaceId::Data, 4, pkt(t0, 4));
    // A gap the caller left without calling skip_packet_number is unsent too.
    ld.on_packet_sent(SpaceId::Data, 8, pkt(t0, 8));
    assert_eq!(ld.next_packet_number(SpaceId::Data), 9);
    let err = |pn| {
        Err(AckError::UnsentPacket {
            space: SpaceId::Data,
            pn,
        })
    };
    assert_eq!(ld.ack(SpaceId::Data, [9..=9], ms(0), t0, &c), err(9));
    assert_eq!(ld.ack(SpaceId::Data, [3..=3], ms(0), t0, &c), err(3));
    assert_eq!(ld.ack(SpaceId::Data, [0..=4], ms(0), t0, &c), err(3));
    assert_eq!(ld.ack(SpaceId::Data, [8..=8, 6..=6], ms(0), t0, &c), err(6));
    assert_eq!(ld.ack(SpaceId::Data, [4..=5], ms(0), t0, &c), err(5));
    // A rejected ACK changes nothing.
    assert_eq!(ld.bytes_in_flight(), 5000);
    assert_eq!(ld.largest_acked(SpaceId::Data), None);
    // The sent ones are fine.
    let out = ld
        .ack(SpaceId::Data, [8..=8, 4..=4, 0..=2], ms(0), t0 + ms(5), &c)
        .unwrap();
    assert_eq!(pns(&out.acked), [0, 1, 2, 4, 8]);
    assert_eq!(ld.bytes_in_flight(), 0);
    let te: TransportError = AckError::UnsentPacket {
        space: SpaceId::Data,
        pn: 3,
    }
    .into();
    assert_eq!(te.code, crate::wire::TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn huge_ack_range_costs_only_the_tracked_packets() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    let top = 1u64 << 40;
    // Pretend 2^40 packets went out without gaps; track a handful of them.
    for pn in [0, 1, 1 << 20, 1 << 39, top] {
        ld.spaces.data.next_pn = pn;
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0, pn));
    }
    ld.spaces.data.unsent.clear();
    let out = ld.ack(SpaceId::Data, [0..=top], ms(0), t0 + ms(30), &c).unwrap();
    assert_eq!(pns(&out.acked), [0, 1, 1 << 20, 1 << 39, top]);
    assert_eq!(ld.bytes_in_flight(), 0);
    // Twice the range again: nothing new, still quick.
    let out = ld
        .ack(SpaceId::Data, [0..=top, 0..=top], ms(0), t0 + ms(40), &c)
        .unwrap();
    assert!(out.acked.is_empty());

    // A real gap of 2^40 numbers: the check is one lookup, and the error comes back at once.
    let mut ld = server();
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.on_packet_sent(SpaceId::Data, top, pkt(t0, top));
    assert_eq!(
        ld.ack(SpaceId::Data, [0..=top], ms(0), t0, &c),
        Err(AckError::UnsentPacket {
            space: SpaceId::Data,
            pn: 1
        })
    );
}

#[test]
fn duplicate_ack_returns_nothing_new() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.on_packet_sent(SpaceId::Data, 1, pkt(t0, 1));
    let out = ld.ack(SpaceId::Data, [0..=1], ms(0), t0 + ms(20), &c).unwrap();
    assert_eq!(pns(&out.acked), [0, 1]);
    let smoothed = ld.rtt().smoothed();
    let out = ld.ack(SpaceId::Data, [0..=1], ms(0), t0 + ms(90), &c).unwrap();
    assert_eq!(out, Outcome::default());
    assert_eq!(ld.rtt().smoothed(), smoothed);
    assert_eq!(ld.rtt().latest(), ms(20));
}

#[test]
fn empty_ranges_are_ignored() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    #[allow(clippy::reversed_empty_ranges)]
    let out = ld.ack(SpaceId::Data, [5..=1], ms(0), t0, &c).unwrap();
    assert_eq!(out, Outcome::default());
    let out = ld.ack(SpaceId::Data, std::iter::empty(), ms(0), t0, &c).unwrap();
    assert_eq!(out, Outcome::default());
    assert_eq!(ld.largest_acked(SpaceId::Data), None);
}

#[test]
fn packets_not_in_flight_are_not_retained() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    let ack_only = SentPacket {
        ack_eliciting: false,
        in_flight: false,
        mtu_probe: false,
        ecn_marked: false,
        ..pkt(t0, 0)
    };
    ld.on_packet_sent(SpaceId::Data, 0, ack_only);
    assert_eq!(ld.bytes_in_flight(), 0);
    assert_eq!(ld.next_packet_number(SpaceId::Data), 1);
    // Acknowledging it is legal (it was sent) and changes nothing.
    let out = ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(5), &c).unwrap();
    assert!(out.acked.is_empty());
    assert_eq!(ld.timeout(&c), None);
}

#[test]
fn skipped_numbers_are_remembered_up_to_a_bound() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.skip_packet_number(SpaceId::Data, 1);
    ld.on_packet_sent(SpaceId::Data, 2, pkt(t0, 2));
    ld.ack(SpaceId::Data, [2..=2, 0..=0], ms(0), t0 + ms(5), &c)
        .unwrap();
    // Everything sent is acknowledged, yet a range over the skipped 1 is still a lie (it could cover
    // future packets too).
    assert!(ld.ack(SpaceId::Data, [0..=2], ms(0), t0, &c).is_err());
    // Each skip is a separate range; only the most recent MAX_UNSENT_RANGES are kept.
    for i in 0..(MAX_UNSENT_RANGES as u64 + 10) {
        let pn = ld.next_packet_number(SpaceId::Data);
        ld.skip_packet_number(SpaceId::Data, pn);
        ld.on_packet_sent(SpaceId::Data, pn + 1, pkt(t0, i));
    }
    assert_eq!(ld.spaces.data.unsent.len(), MAX_UNSENT_RANGES);
    assert!(ld.ack(SpaceId::Data, [1..=1], ms(0), t0, &c).is_ok());
    let last_skipped = ld.next_packet_number(SpaceId::Data) - 2;
    assert!(ld
        .ack(SpaceId::Data, [last_skipped..=last_skipped], ms(0), t0, &c)
        .is_err());
}

#[test]
fn persistent_congestion() {
    let t0 = epoch();
    for (ranges, expected) in [(vec![4..=4], true), (vec![4..=4, 2..=2], false)] {
        let mut ld = server();
        let c = ctx(true);
        ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
        ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
        // smoothed 100, rttvar 50: (100 + 200 + 25) * 3 = 975 ms.
        assert_eq!(ld.persistent_congestion_duration(ms(25)), ms(975));
        for (pn, at) in [(1, 200), (2, 700), (3, 1300), (4, 1400)] {
            ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(at), pn));
        }
        // 1, 2 and 3 are lost by time; 1 and 3 were sent 1100 ms apart.
        let out = ld
            .ack(SpaceId::Data, ranges.clone(), ms(0), t0 + ms(1500), &c)
            .unwrap();
        assert!(out.lost.len() >= 2);
        assert_eq!(out.persistent_congestion, expected, "{ranges:?}");
    }
}

/// RFC 9000 §14.4: a lost path MTU probe is no sign of congestion: as either end of a would-be period
/// it establishes no persistent congestion (the same losses without the probe flag do).
#[test]
fn lost_mtu_probes_do_not_establish_persistent_congestion() {
    let t0 = epoch();
    for (probe_at_end, expected) in [(false, true), (true, false)] {
        let mut ld = server();
        let c = ctx(true);
        ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
        ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
        for (pn, at) in [(1, 200), (2, 700), (3, 1300), (4, 1400)] {
            let mut p = pkt(t0 + ms(at), pn);
            // 1 and 3 would be the ends of a 1100 ms period (the threshold is 975 ms).
            p.mtu_probe = probe_at_end && pn == 3;
            ld.on_packet_sent(SpaceId::Data, pn, p);
        }
        let out = ld.ack(SpaceId::Data, [4..=4], ms(0), t0 + ms(1500), &c).unwrap();
        assert_eq!(pns(&out.lost), [1, 2, 3]);
        assert_eq!(
            out.persistent_congestion, expected,
            "probe at the end: {probe_at_end}"
        );
    }
}

/// RFC 9000 §9.4: after the peer moved (here only its port, so the RTT estimate carries over), a packet
/// sent on the old path cannot start a persistent-congestion period of the new one.
#[test]
fn packets_of_a_path_left_do_not_start_a_persistent_congestion_period() {
    let t0 = epoch();
    for (moved, expected) in [(false, true), (true, false)] {
        let mut ld = server();
        let c = ctx(true);
        ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
        ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
        // Threshold 975 ms; 1 (the old path, if the peer moved after it) and 3 are 1100 ms apart, while
        // 2 and 3, both of the new path, are 600 ms apart.
        ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(200), 1));
        if moved {
            ld.on_path_change(None);
        }
        for (pn, at) in [(2, 700), (3, 1300), (4, 1400)] {
            ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(at), pn));
        }
        let out = ld.ack(SpaceId::Data, [4..=4], ms(0), t0 + ms(1500), &c).unwrap();
        assert_eq!(pns(&out.lost), [1, 2, 3]);
        assert_eq!(out.persistent_congestion, expected, "moved: {moved}");
    }
}

#[test]
fn losses_before_the_first_rtt_sample_are_not_persistent_congestion() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    for (pn, at) in [(0, 0), (1, 2000), (2, 4000), (3, 6000)] {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(at), pn));
    }
    let out = ld.ack(SpaceId::Data, [3..=3], ms(0), t0 + ms(6100), &c).unwrap();
    assert_eq!(pns(&out.lost), [0, 1, 2]);
    assert!(!out.persistent_congestion);
}

// ---- Property: accounting stays consistent under arbitrary input ----

#[derive(Debug, Clone)]
enum Op {
    Send {
        space: usize,
        gap: u8,
        size: u16,
        ack_eliciting: bool,
        in_flight: bool,
    },
    Skip {
        space: usize,
    },
    Ack {
        space: usize,
        top_back: u8,
        ranges: Vec<(u8, u8)>,
        delay_ms: u16,
    },
    Timeout,
    Discard {
        space: usize,
    },
    Wait {
        ms: u16,
    },
    /// A change of the peer's port only.
    PortChange,
    /// A move to another IP address; the path left is saved to return to.
    IpChange,
    /// Back on the last saved path.
    Return,
    /// A change of port only from a validated path, saved to return to.
    PortChangeSaved,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, prop_oneof![8 => Just(0u8), 1 => 1..3u8], any::<u16>(), any::<bool>(), any::<bool>()).prop_map(
            |(space, gap, size, ack_eliciting, in_flight)| Op::Send {
                space,
                gap,
                size,
                ack_eliciting: ack_eliciting && in_flight,
                in_flight,
            }
        ),
        1 => (0..3usize).prop_map(|space| Op::Skip { space }),
        4 => (
            0..3usize,
            any::<u8>(),
            proptest::collection::vec((any::<u8>(), any::<u8>()), 0..5),
            any::<u16>()
        )
            .prop_map(|(space, top_back, ranges, delay_ms)| Op::Ack {
                space,
                top_back,
                ranges,
                delay_ms,
            }),
        2 => Just(Op::Timeout),
        1 => (0..3usize).prop_map(|space| Op::Discard { space }),
        3 => (0..400u16).prop_map(|ms| Op::Wait { ms }),
        1 => Just(Op::PortChange),
        1 => Just(Op::IpChange),
        1 => Just(Op::Return),
        1 => Just(Op::PortChangeSaved),
    ]
}

/// Checks the tracker's counters against its contents.
fn check_invariants(ld: &LossDetection<u64>) {
    let mut total = 0;
    for s in ld.spaces.iter() {
        let bytes: u64 = s.sent.iter().map(|(_, p)| u64::from(p.size)).sum();
        let eliciting = s.sent.iter().filter(|(_, p)| p.ack_eliciting).count() as u64;
        assert_eq!(s.bytes_in_flight, bytes);
        assert_eq!(s.ack_eliciting_in_flight, eliciting);
        assert!(s.sent.iter().all(|(_, p)| p.in_flight));
        assert_eq!(s.sent.iter().count(), s.sent.len());
        assert!(s.sent.iter().all(|(pn, _)| pn < s.next_pn));
        total += bytes;
    }
    assert_eq!(ld.bytes_in_flight(), total);
    // The window's part is the tracked packets at or above `window_first_pn`.
    let d = &ld.spaces.data;
    let window: u64 = d
        .sent
        .range(d.window_first_pn..)
        .map(|(_, p)| u64::from(p.size))
        .sum();
    assert_eq!(
        d.path_bytes_in_flight, window,
        "window_first_pn {}",
        d.window_first_pn
    );
    // Packets sent on another path while away from this one: a span of packets sent since it began.
    if let Some((from, to)) = d.foreign {
        assert!(
            d.path_first_pn <= from && from < to && to <= d.next_pn,
            "{:?}",
            d.foreign
        );
    }
}

/// Runs `ops` against a fresh tracker, checking the invariants after each step.
fn run_ops(server_side: bool, confirmed: bool, hs_keys: bool, amp: bool, ops: &[Op]) {
    let t0 = epoch();
    let side = if server_side { Side::Server } else { Side::Client };
    let mut ld = LossDetection::<u64>::new(side, INITIAL_RTT);
    let c = RecoveryContext {
        max_ack_delay: ms(25),
        handshake_confirmed: confirmed,
        has_handshake_keys: hs_keys,
        at_anti_amplification_limit: amp,
        local_delay: Duration::ZERO,
    };
    let mut now = t0;
    let mut discarded = [false; 3];
    let mut saved: Vec<PathStart> = Vec::new();
    for op in ops {
        match *op {
            Op::Send {
                space,
                gap,
                size,
                ack_eliciting,
                in_flight,
            } => {
                if discarded[space] && space != 2 {
                    continue;
                }
                let pn = ld.next_packet_number(SpaceId::ALL[space]) + u64::from(gap);
                let packet = SentPacket {
                    time_sent: now,
                    size,
                    ack_eliciting,
                    in_flight,
                    mtu_probe: false,
                    ecn_marked: false,
                    data: pn,
                };
                ld.on_packet_sent(SpaceId::ALL[space], pn, packet);
            }
            Op::Skip { space } => {
                if discarded[space] && space != 2 {
                    continue;
                }
                let pn = ld.next_packet_number(SpaceId::ALL[space]);
                ld.skip_packet_number(SpaceId::ALL[space], pn);
            }
            Op::Ack {
                space,
                top_back,
                ref ranges,
                delay_ms,
            } => {
                let next = ld.next_packet_number(SpaceId::ALL[space]);
                // Mostly valid tops, sometimes one past what was sent.
                let mut hi = (next + 1).saturating_sub(u64::from(top_back) % 8);
                let mut list = Vec::new();
                for &(gap, len) in ranges {
                    let lo = hi.saturating_sub(u64::from(len % 6));
                    list.push(lo..=hi);
                    match lo.checked_sub(u64::from(gap % 4) + 2) {
                        Some(h) => hi = h,
                        None => break,
                    }
                }
                let before = ld.bytes_in_flight();
                let res = ld.ack(SpaceId::ALL[space], list, ms(u64::from(delay_ms)), now, &c);
                match res {
                    Ok(out) => {
                        let gone: u64 = out
                            .acked
                            .iter()
                            .chain(&out.lost)
                            .map(|(_, p)| u64::from(p.size))
                            .sum();
                        assert_eq!(before - gone, ld.bytes_in_flight());
                    }
                    Err(_) => assert_eq!(before, ld.bytes_in_flight()),
                }
            }
            Op::Timeout => {
                if let Some(t) = ld.timeout(&c) {
                    now = now.max(t);
                }
                // A space's loss timer, once handled, is not due again at the same instant: it is set
                // for packets not yet lost, sent after `now - loss_delay` (no spin at one instant).
                if let TimeoutOutcome::Lost { space, .. } = ld.on_timeout(now, &c) {
                    let again = ld.on_timeout(now, &c);
                    assert!(
                        !matches!(again, TimeoutOutcome::Lost { space: s, .. } if s == space),
                        "{space:?} lost again at the same instant: {again:?}"
                    );
                }
            }
            Op::Discard { space } => {
                discarded[space] = true;
                let _ = ld.discard_space(SpaceId::ALL[space], now);
                assert!(ld
                    .spaces
                    .get(SpaceId::ALL[space])
                    .is_none_or(|s| s.bytes_in_flight == 0));
                assert_eq!(ld.spaces.released(), discarded[0] && discarded[1]);
            }
            Op::Wait { ms: d } => now += ms(u64::from(d)),
            Op::PortChange => ld.on_path_change(None),
            Op::IpChange => {
                saved.push(ld.path_start());
                ld.on_path_change(Some(RttEstimator::new(INITIAL_RTT)));
            }
            Op::PortChangeSaved => {
                saved.push(ld.path_start());
                ld.on_path_change(None);
            }
            Op::Return => {
                if let Some(start) = saved.pop() {
                    ld.return_to_path(start, RttEstimator::new(INITIAL_RTT));
                }
            }
        }
        check_invariants(&ld);
        let _ = ld.timeout(&c);
    }
}

proptest! {
    #[test]
    fn random_send_ack_sequences_keep_accounting(
        server_side in any::<bool>(),
        confirmed in any::<bool>(),
        hs_keys in any::<bool>(),
        amp in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        run_ops(server_side, confirmed, hs_keys, amp, &ops);
    }
}

/// Each newly acknowledged packet reaches the callback once, in ascending order of packet number, after
/// the RTT sample this ACK produced (the congestion controller reads that estimate), and then is gone.
#[test]
fn acknowledged_packets_reach_the_callback_after_the_rtt_sample() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    for pn in 0..6 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(pn), pn));
    }
    let mut seen = Vec::new();
    let out = ld
        .on_ack_received(
            SpaceId::Data,
            [4..=5, 0..=2],
            ms(0),
            t0 + ms(105),
            &c,
            |rtt, pn, p| {
                assert_eq!(rtt.latest(), ms(100), "the sample from packet 5, sent at 5 ms");
                seen.push((pn, p.data));
            },
        )
        .unwrap();
    // Ascending, whatever the order of the ranges.
    assert_eq!(seen, [(0, 0), (1, 1), (2, 2), (4, 4), (5, 5)]);
    assert_eq!(out.acked, 5);
    assert!(out.rtt_sampled);
    // Acknowledged again: nothing newly acknowledged, the callback is not called.
    let again = ld
        .on_ack_received(SpaceId::Data, [0..=5], ms(0), t0 + ms(110), &c, |_, pn, _| {
            assert_eq!(pn, 3, "only packet 3 was still in flight");
        })
        .unwrap();
    assert_eq!(again.acked, 1);
    assert_eq!(ld.bytes_in_flight(), 0);
}

// ---- Audit: persistent congestion and min_rtt ----

/// RFC 9002 §7.6.2: persistent congestion is two lost ack-eliciting packets more than the period apart
/// with no packet sent between them acknowledged. A packet number we deliberately skipped (RFC 9000
/// §21.4) is no packet: it must not break the run.
#[test]
fn a_skipped_packet_number_does_not_hide_persistent_congestion() {
    let t0 = epoch();
    for skip in [false, true] {
        let mut ld = server();
        let c = ctx(true);
        ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
        ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
        // Threshold 975 ms (see `persistent_congestion`); 1 and 4 are 1100 ms apart.
        ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(200), 1));
        ld.on_packet_sent(SpaceId::Data, 2, pkt(t0 + ms(700), 2));
        if skip {
            ld.skip_packet_number(SpaceId::Data, 3);
        } else {
            ld.on_packet_sent(SpaceId::Data, 3, pkt(t0 + ms(900), 3));
        }
        ld.on_packet_sent(SpaceId::Data, 4, pkt(t0 + ms(1300), 4));
        ld.on_packet_sent(SpaceId::Data, 5, pkt(t0 + ms(1400), 5));
        let out = ld.ack(SpaceId::Data, [5..=5], ms(0), t0 + ms(1500), &c).unwrap();
        assert!(out.lost.len() >= 3);
        assert!(
            out.persistent_congestion,
            "skipped packet number in the run: {skip}"
        );
    }
}

/// RFC 9002 §5.2: "Endpoints SHOULD set the min_rtt to the newest RTT sample after persistent
/// congestion is established."
#[test]
fn min_rtt_is_reset_after_persistent_congestion() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
    assert_eq!(ld.rtt().min(), ms(100));
    // The path's RTT rises to 300 ms and everything sent for two seconds is lost.
    for (pn, at) in [(1, 200), (2, 1000), (3, 2200), (4, 2300)] {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(at), pn));
    }
    let out = ld.ack(SpaceId::Data, [4..=4], ms(0), t0 + ms(2600), &c).unwrap();
    assert_eq!(pns(&out.lost), [1, 2, 3]);
    assert!(out.persistent_congestion);
    assert_eq!(ld.rtt().latest(), ms(300));
    assert_eq!(ld.rtt().min(), ms(300), "min_rtt still {:?}", ld.rtt().min());
}

/// An ACK-only packet (not in flight, so not tracked), sent at `t`.
fn ack_only(t: Instant, data: u64) -> SentPacket<u64> {
    SentPacket {
        time_sent: t,
        size: 50,
        ack_eliciting: false,
        in_flight: false,
        mtu_probe: false,
        ecn_marked: false,
        data,
    }
}

/// RFC 9002 §7.6.2: persistent congestion needs two lost ack-eliciting packets more than the period
/// apart such that "none of the packets sent between the send times of these two packets are
/// acknowledged". An ACK-only packet sent between them (a sender that also receives sends them all the
/// time) and lost as well is such a packet, unacknowledged: it must not break the run. One the peer did
/// acknowledge (in the ACK that declares the losses, in an earlier one, or even before the next
/// ack-eliciting packet was sent) breaks it.
#[test]
fn unacknowledged_ack_only_packets_do_not_hide_persistent_congestion() {
    let t0 = epoch();
    /// When the ACK-only packet 2 is acknowledged.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Acked {
        Never,
        WithTheLosses,
        Earlier,
        BeforeTheNextPacket,
    }
    for (acked, expected) in [
        (Acked::Never, true),
        (Acked::WithTheLosses, false),
        (Acked::Earlier, false),
        (Acked::BeforeTheNextPacket, false),
    ] {
        let mut ld = server();
        let c = ctx(true);
        ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
        ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
        // The last ACK below leaves smoothed_rtt 100 ms and rttvar 37.5 ms: the period is
        // (100 + 150 + 25) * 3 = 825 ms. 1 and 4 are 850 ms apart, 3 and 4 only 800.
        ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(200), 1));
        ld.on_packet_sent(SpaceId::Data, 2, ack_only(t0 + ms(201), 2));
        if acked == Acked::BeforeTheNextPacket {
            assert_eq!(
                ld.ack(SpaceId::Data, [2..=2], ms(0), t0 + ms(230), &c)
                    .unwrap()
                    .lost,
                []
            );
        }
        ld.on_packet_sent(SpaceId::Data, 3, pkt(t0 + ms(250), 3));
        if acked == Acked::Earlier {
            // Too early for 1 to be lost by time (the loss delay is 112.5 ms).
            assert_eq!(
                ld.ack(SpaceId::Data, [2..=2], ms(0), t0 + ms(300), &c)
                    .unwrap()
                    .lost,
                []
            );
        }
        ld.on_packet_sent(SpaceId::Data, 4, pkt(t0 + ms(1050), 4));
        ld.on_packet_sent(SpaceId::Data, 5, pkt(t0 + ms(1400), 5));
        let ranges = if acked == Acked::WithTheLosses {
            vec![5..=5, 2..=2]
        } else {
            vec![5..=5]
        };
        let out = ld.ack(SpaceId::Data, ranges, ms(0), t0 + ms(1500), &c).unwrap();
        assert_eq!(ld.persistent_congestion_duration(ms(25)), ms(825));
        assert_eq!(pns(&out.lost), [1, 3, 4], "{acked:?}");
        assert_eq!(out.persistent_congestion, expected, "{acked:?}");
    }
}

/// RFC 9002 §6.1, Appendix A.7: loss detection runs on every ACK that newly acknowledges a packet. A
/// packet not in flight (only ACK frames) is not tracked, but an ACK whose largest acknowledged packet
/// number is new newly acknowledges one all the same: the packets in flight below it are judged by the
/// packet threshold at once, and by the time threshold with the loss timer (not left for the PTO).
#[test]
fn an_ack_of_ack_only_packets_detects_losses() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    for pn in 1..=3 {
        ld.on_packet_sent(SpaceId::Data, pn, ack_only(t0 + ms(pn), pn));
    }
    let out = ld.ack(SpaceId::Data, [1..=3], ms(0), t0 + ms(50), &c).unwrap();
    assert_eq!(pns(&out.lost), [0], "kPacketThreshold");
    assert_eq!(ld.bytes_in_flight(), 0);

    ld.on_packet_sent(SpaceId::Data, 4, pkt(t0 + ms(60), 4));
    ld.on_packet_sent(SpaceId::Data, 5, ack_only(t0 + ms(61), 5));
    let pto = ld.timeout(&c).unwrap();
    let out = ld.ack(SpaceId::Data, [5..=5], ms(0), t0 + ms(100), &c).unwrap();
    assert_eq!(out.lost, []);
    // No RTT sample yet: the loss delay is 9/8 of the initial 333 ms.
    let loss_time = t0 + ms(60) + INITIAL_RTT * 9 / 8;
    assert!(loss_time < pto);
    assert_eq!(ld.timeout(&c), Some(loss_time));
    match ld.on_timeout(loss_time, &c) {
        TimeoutOutcome::Lost { space, lost, .. } => {
            assert_eq!(space, SpaceId::Data);
            assert_eq!(pns(&lost), [4]);
        }
        other => panic!("{other:?}"),
    }
}

/// RFC 9002 §7.6.2 and Appendix A.10: packets the loss timer declares lost are judged for persistent
/// congestion like those an ACK declares lost. Here an ACK declares packet 1 lost by time while packet 2
/// still waits for the time threshold; when the timer declares 2 lost, the two were sent more than the
/// period apart, both ack-eliciting and after the first RTT sample, with nothing between them
/// acknowledged: persistent congestion. (On time, the timer alone never finds a period: everything it
/// declares lost was sent within one loss delay, shorter than the period; the period can only span
/// the losses of the ACK and of the timer together.) Acknowledging a packet sent between them, or the
/// survivor itself, breaks the period.
#[test]
fn losses_declared_by_the_loss_timer_can_establish_persistent_congestion() {
    let t0 = epoch();
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Between {
        Nothing,
        AckOnlyAcked,
    }
    for (between, expected) in [(Between::Nothing, true), (Between::AckOnlyAcked, false)] {
        let mut ld = server();
        let c = ctx(true);
        ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
        ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
        ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(200), 1));
        ld.on_packet_sent(SpaceId::Data, 2, ack_only(t0 + ms(250), 2));
        ld.on_packet_sent(SpaceId::Data, 3, pkt(t0 + ms(1300), 3));
        ld.on_packet_sent(SpaceId::Data, 4, pkt(t0 + ms(1350), 4));
        let ranges = match between {
            Between::Nothing => vec![4..=4],
            Between::AckOnlyAcked => vec![4..=4, 2..=2],
        };
        // latest_rtt 10 ms: smoothed 88.75 ms, rttvar 60 ms, so the loss delay is 99.84375 ms and the
        // period (88.75 + 240 + 25) * 3 = 1061.25 ms; 1 and 3 were sent 1100 ms apart.
        let out = ld.ack(SpaceId::Data, ranges, ms(0), t0 + ms(1360), &c).unwrap();
        assert_eq!(pns(&out.lost), [1], "{between:?}");
        assert!(!out.persistent_congestion, "{between:?}");
        assert_eq!(ld.persistent_congestion_duration(ms(25)), us(1_061_250));
        let loss_time = ld.timeout(&c).unwrap();
        assert_eq!(loss_time, t0 + ms(1300) + Duration::from_nanos(99_843_750));
        match ld.on_timeout(loss_time, &c) {
            TimeoutOutcome::Lost {
                space,
                lost,
                persistent_congestion,
            } => {
                assert_eq!(space, SpaceId::Data);
                assert_eq!(pns(&lost), [3], "{between:?}");
                assert_eq!(persistent_congestion, expected, "{between:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// RFC 9002 §5.1: an RTT sample is taken when "the largest acknowledged packet number is newly
/// acknowledged" and "at least one of the newly acknowledged packets was ack-eliciting", from the send
/// time of the largest acknowledged packet. That packet may be one with only ACK frames, not tracked in
/// flight (a client acknowledging a response it is still receiving while its request is unacknowledged):
/// its send time is remembered for the sample. Without a newly acknowledged ack-eliciting packet there is
/// no sample, and an ACK-only packet acknowledged again is not newly acknowledged.
#[test]
fn an_ack_whose_largest_is_ack_only_gives_an_rtt_sample() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.on_packet_sent(SpaceId::Data, 1, ack_only(t0 + ms(20), 1));
    ld.on_packet_sent(SpaceId::Data, 2, ack_only(t0 + ms(40), 2));
    // The largest acknowledged (1) is an older ACK-only packet than the latest one sent (2).
    let out = ld.ack(SpaceId::Data, [0..=1], ms(5), t0 + ms(100), &c).unwrap();
    assert_eq!(pns(&out.acked), [0]);
    assert!(out.rtt_sampled);
    assert_eq!(out.largest_acked_time_sent, Some(t0 + ms(20)));
    assert_eq!(ld.rtt().latest(), ms(80));
    assert_eq!(ld.first_rtt_sample(), Some(t0 + ms(100)));

    // Only ACK-only packets newly acknowledged: no sample.
    ld.on_packet_sent(SpaceId::Data, 3, ack_only(t0 + ms(110), 3));
    let out = ld.ack(SpaceId::Data, [0..=3], ms(0), t0 + ms(150), &c).unwrap();
    assert!(!out.rtt_sampled);
    assert_eq!(ld.rtt().latest(), ms(80));
    // The largest (3) acknowledged again is not newly acknowledged, even with a new ack-eliciting one.
    ld.on_packet_sent(SpaceId::Data, 4, pkt(t0 + ms(160), 4));
    ld.on_packet_sent(SpaceId::Data, 5, ack_only(t0 + ms(170), 5));
    let out = ld.ack(SpaceId::Data, [5..=5], ms(0), t0 + ms(200), &c).unwrap();
    assert!(
        !out.rtt_sampled,
        "5 is newly acknowledged, but nothing ack-eliciting is"
    );
    let out = ld.ack(SpaceId::Data, [4..=5], ms(0), t0 + ms(300), &c).unwrap();
    assert_eq!(pns(&out.acked), [4]);
    assert!(!out.rtt_sampled, "5 is not newly acknowledged");
    assert_eq!(ld.rtt().latest(), ms(80));
}

/// RFC 9002 §6.1.1, §6.1.2: a packet declared lost and acknowledged later was reordered, not lost. The
/// ACK reports it as spurious (not as acknowledged: it was handed over as lost), and the thresholds grow
/// to what would have waited for it, within their bounds; the next packet overtaken as far is not
/// declared lost. The record of lost packets is bounded.
#[test]
fn a_spurious_loss_raises_the_thresholds() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
    assert_eq!(ld.packet_threshold(), PACKET_THRESHOLD);
    assert_eq!(ld.time_threshold_eighths(), TIME_THRESHOLD_EIGHTHS);
    for pn in 1..=5 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(100), pn));
    }
    // 1 is overtaken by 2 to 5: lost by count.
    let out = ld.ack(SpaceId::Data, [2..=5], ms(0), t0 + ms(200), &c).unwrap();
    assert_eq!(pns(&out.lost), [1]);
    assert!(out.spurious.is_empty());
    // It arrives after all, 4 packets late, and its acknowledgement 150 ms after it was sent, with that
    // of 6, sent 50 ms before.
    ld.on_packet_sent(SpaceId::Data, 6, pkt(t0 + ms(200), 6));
    let out = ld.ack(SpaceId::Data, [1..=6], ms(0), t0 + ms(250), &c).unwrap();
    assert_eq!(pns(&out.acked), [6]);
    assert_eq!(out.spurious, [1]);
    assert_eq!(ld.packet_threshold(), 5);
    // 150 ms over max(smoothed, latest) = max(93.75, 50) ms, rounded up: 13 eighths.
    assert_eq!(ld.time_threshold_eighths(), 13);
    // Acknowledged again: nothing new.
    let out = ld.ack(SpaceId::Data, [1..=6], ms(0), t0 + ms(260), &c).unwrap();
    assert!(out.spurious.is_empty());

    // Overtaken by four packets now: not lost by count.
    for pn in 7..=11 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(300), pn));
    }
    let out = ld.ack(SpaceId::Data, [8..=11], ms(0), t0 + ms(310), &c).unwrap();
    assert_eq!(out.lost, []);

    // Far-out reordering saturates at the bounds.
    let mut ld = server();
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
    for pn in 1..=400 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0 + ms(100), pn));
    }
    let out = ld
        .ack(SpaceId::Data, [100..=400], ms(0), t0 + ms(200), &c)
        .unwrap();
    assert_eq!(out.lost.len(), 99);
    assert_eq!(ld.spaces.data.lost.len(), MAX_LOST_REMEMBERED);
    // The oldest were forgotten: acknowledging them finds nothing.
    let out = ld.ack(SpaceId::Data, [1..=1], ms(0), t0 + ms(5000), &c).unwrap();
    assert!(out.spurious.is_empty());
    // 40 comes 360 packets late, and after 4.9 s.
    let out = ld
        .ack(SpaceId::Data, [40..=40], ms(0), t0 + ms(5000), &c)
        .unwrap();
    assert_eq!(out.spurious, [40]);
    assert_eq!(ld.packet_threshold(), MAX_PACKET_THRESHOLD);
    assert_eq!(ld.time_threshold_eighths(), MAX_TIME_THRESHOLD_EIGHTHS);
}

/// Thresholds raised by reordering go back to their initial values after
/// `THRESHOLD_RESET_RECOVERIES` recovery periods in a row with no loss found spurious (as RFC 8985 §6.2
/// resets RACK's reordering window); a spurious loss among them starts the count again. Before, one
/// burst of reordering left every later loss detected late for the rest of the connection.
#[test]
fn raised_thresholds_return_after_recoveries_without_spurious_losses() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.ack(SpaceId::Data, [0..=0], ms(0), t0 + ms(100), &c).unwrap();
    // Packet `first` overtaken by `n` others, declared lost, then acknowledged.
    let spurious_loss = |ld: &mut LossDetection<u64>, first: u64, n: u64, at: Instant| {
        for pn in first..=first + n {
            ld.on_packet_sent(SpaceId::Data, pn, pkt(at, pn));
        }
        let out = ld
            .ack(SpaceId::Data, [first + 1..=first + n], ms(0), at + ms(100), &c)
            .unwrap();
        assert_eq!(pns(&out.lost), [first]);
        ld.on_recovery_started(at + ms(100));
        let out = ld
            .ack(SpaceId::Data, [first..=first + n], ms(0), at + ms(150), &c)
            .unwrap();
        assert_eq!(out.spurious, [first]);
        (ld.packet_threshold(), ld.time_threshold_eighths())
    };
    let raised = spurious_loss(&mut ld, 1, 4, t0 + ms(100));
    assert!(raised.0 > PACKET_THRESHOLD && raised.1 > TIME_THRESHOLD_EIGHTHS);
    for _ in 1..THRESHOLD_RESET_RECOVERIES {
        ld.on_recovery_started(t0);
    }
    assert_eq!((ld.packet_threshold(), ld.time_threshold_eighths()), raised);
    // Another spurious loss, from further reordering: the count starts again from it.
    let raised = spurious_loss(&mut ld, 6, 10, t0 + ms(300));
    for _ in 1..THRESHOLD_RESET_RECOVERIES {
        ld.on_recovery_started(t0);
    }
    assert_eq!((ld.packet_threshold(), ld.time_threshold_eighths()), raised);
    ld.on_recovery_started(t0);
    assert_eq!(
        (ld.packet_threshold(), ld.time_threshold_eighths()),
        (PACKET_THRESHOLD, TIME_THRESHOLD_EIGHTHS)
    );
}

/// RFC 9000 §9.4: after a move to another IP address only packets sent on the new path count against
/// its window; the old path's stay tracked (and in `bytes_in_flight`) until acknowledged or lost, and
/// leave only the total when they go. A change of port only keeps the window and what it holds; a
/// return to the path left counts its packets still in flight again.
#[test]
fn bytes_in_flight_on_the_current_path_start_again_at_a_path_change() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    for pn in 0..4 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0, pn));
    }
    assert_eq!(ld.path_bytes_in_flight(), 4000);
    ld.on_path_change(None);
    assert_eq!(ld.path_bytes_in_flight(), 4000, "a new port only");
    let first_path = ld.path_start();
    ld.on_path_change(Some(RttEstimator::new(INITIAL_RTT)));
    assert_eq!((ld.bytes_in_flight(), ld.path_bytes_in_flight()), (4000, 0));
    for pn in 4..6 {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0, pn));
    }
    assert_eq!((ld.bytes_in_flight(), ld.path_bytes_in_flight()), (6000, 2000));
    // An old packet acknowledged leaves the total only; a new one both.
    ld.ack(SpaceId::Data, [1..=1], ms(0), t0 + ms(10), &c).unwrap();
    assert_eq!((ld.bytes_in_flight(), ld.path_bytes_in_flight()), (5000, 2000));
    // Acknowledging 5 makes 0 and 2 lost (packet threshold): old packets, which leave the total only.
    let out = ld.ack(SpaceId::Data, [5..=5], ms(0), t0 + ms(10), &c).unwrap();
    assert_eq!(pns(&out.lost), [0, 2]);
    assert_eq!((ld.bytes_in_flight(), ld.path_bytes_in_flight()), (2000, 1000));
    // Back on the first path: 3 and 4 are in flight (4 sent on the other path meanwhile).
    ld.return_to_path(first_path, RttEstimator::new(INITIAL_RTT));
    assert_eq!((ld.bytes_in_flight(), ld.path_bytes_in_flight()), (2000, 2000));
}

/// A clock that stepped back between a packet's send and its acknowledgement gives no RTT sample: a
/// zero-length sample makes min_rtt zero for the rest of the connection (RFC 9002 §5.2 only ever lowers
/// it), which turns off the "MUST NOT subtract the acknowledgment delay ... smaller than the min_rtt"
/// guard of §5.3 for good, and pulls smoothed_rtt and rttvar toward zero.
#[test]
fn a_clock_stepping_back_gives_no_rtt_sample() {
    let t0 = epoch() + ms(120_000);
    let mut ld = client();
    let c = ctx(true);
    ld.on_packet_sent(SpaceId::Data, 0, pkt(t0, 0));
    ld.ack(SpaceId::Data, [0..=0], Duration::ZERO, t0 + ms(50), &c)
        .unwrap();
    assert_eq!(ld.rtt().min(), ms(50));
    // Sent at t0 + 100 ms; the clock then steps back a minute before the ACK arrives.
    ld.on_packet_sent(SpaceId::Data, 1, pkt(t0 + ms(100), 1));
    ld.ack(
        SpaceId::Data,
        [1..=1],
        Duration::ZERO,
        t0 + ms(100) - ms(60_000),
        &c,
    )
    .unwrap();
    assert_eq!(
        ld.rtt().min(),
        ms(50),
        "min_rtt after a sample across a clock step"
    );
}

/// The send time reported for a new largest acknowledged packet that is not remembered (an ACK-only
/// packet older than the last four) is the earliest moment known to be at or after it: that of a packet
/// numbered above, or the start of the last recovery period if the packet was numbered below the first
/// one sent in it (RFC 9002 Appendix B.7 dates an ECN-CE increase by it, and §7.3.2 keeps a sender from
/// reentering a recovery period). Before, none was reported, and the connection dated the CE marks `now`.
#[test]
fn an_unremembered_largest_is_dated_no_later_than_known_sends() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    let ack_only = |pn: u64| SentPacket {
        ack_eliciting: false,
        in_flight: false,
        ..pkt(t0 + ms(pn), pn)
    };
    for pn in 0..=5 {
        ld.on_packet_sent(SpaceId::Data, pn, ack_only(pn));
    }
    // A recovery period began at 5.5 ms, before packet 6 was sent.
    ld.on_recovery_started(t0 + us(5_500));
    for pn in 6..=9 {
        ld.on_packet_sent(SpaceId::Data, pn, ack_only(pn));
    }
    // Packet 2 was sent before the recovery period began; 6 (at 6 ms) is the earliest remembered.
    let out = ld.ack(SpaceId::Data, [2..=2], ms(0), t0 + ms(50), &c).unwrap();
    assert_eq!(out.largest_acked_time_sent, Some(t0 + us(5_500)));
    assert!(!out.rtt_sampled);
    // Packet 7 is remembered: its own send time.
    let out = ld.ack(SpaceId::Data, [7..=7], ms(0), t0 + ms(51), &c).unwrap();
    assert_eq!(out.largest_acked_time_sent, Some(t0 + ms(7)));
}

/// An ACK frame of thousands of ranges (every other packet of a long flight) acknowledges each packet in
/// them once and declares the others lost by the packet threshold (RFC 9002 §6.1.1); the same frame again
/// acknowledges nothing and declares nothing. The work is per range and per tracked packet, never per
/// packet number of a range (see `huge_ack_range_costs_only_the_tracked_packets`).
#[test]
fn an_ack_of_thousands_of_ranges_acknowledges_each_packet_once() {
    let t0 = epoch();
    let mut ld = server();
    let c = ctx(true);
    let n = 10_000u64;
    for pn in 0..n {
        ld.on_packet_sent(SpaceId::Data, pn, pkt(t0, pn));
    }
    // 1, 3, 5, ..., n - 1: n / 2 ranges, highest first as the wire has them.
    let ranges: Vec<_> = (0..n / 2).rev().map(|i| 2 * i + 1..=2 * i + 1).collect();
    let out = ld
        .ack(SpaceId::Data, ranges.clone(), ms(0), t0 + ms(50), &c)
        .unwrap();
    assert_eq!(out.acked.len() as u64, n / 2);
    assert!(out.acked.iter().all(|(pn, _)| pn % 2 == 1));
    // Every even packet is at least three below the largest acknowledged (n - 1), but n - 2.
    assert_eq!(out.lost.len() as u64, n / 2 - 1);
    assert!(out.rtt_sampled);
    assert_eq!(ld.bytes_in_flight(), 1000);
    for _ in 0..3 {
        let out = ld
            .ack(SpaceId::Data, ranges.clone(), ms(0), t0 + ms(60), &c)
            .unwrap();
        assert!(out.acked.is_empty() && out.lost.is_empty() && !out.rtt_sampled);
    }
    assert_eq!(ld.bytes_in_flight(), 1000);
}
