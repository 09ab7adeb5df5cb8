//! Congestion control (RFC 9002 §7) and pacing (RFC 9002 §7.7).
//!
//! A [`CongestionController`] owns the congestion window. The connection feeds it what the loss detector
//! ([`LossDetection`](super::recovery::LossDetection)) reports:
//!
//! - every in-flight packet sent, with the bytes in flight before it (none: the sender was idle):
//!   [`CongestionController::on_packet_sent`];
//! - every newly acknowledged in-flight packet, one call each, in the order of the ACK outcome:
//!   [`CongestionController::on_ack`] (a per-packet interface, not a batch);
//! - once per ACK (or loss timeout) that declared in-flight packets lost: the send time of the newest of
//!   them and the persistent-congestion verdict, [`CongestionController::on_congestion_event`];
//! - an increase of the peer-reported ECN-CE count: [`CongestionController::on_ecn_ce`];
//! - once per ACK frame that produced an RTT sample (RFC 9002 §5.1), after its packets:
//!   [`CongestionController::on_rtt_sample`], which HyStart++ (RFC 9406, [`hystart`]) watches in slow
//!   start.
//!
//! Two algorithms are provided: [`NewReno`](new_reno::NewReno), the controller RFC 9002 §7 and Appendix B
//! specify, and [`Cubic`](cubic::Cubic) (RFC 9438), the default. Both run their initial slow start with
//! HyStart++ (RFC 9406) unless [`TransportConfig::hystart`] turns it off.
//!
//! What stays with the caller:
//!
//! - bytes in flight: the loss detector counts them; the caller compares them with
//!   [`CongestionController::window`] before sending (RFC 9002 §7: "MUST NOT send a packet if it would
//!   cause bytes_in_flight ... to be larger than the congestion window, unless the packet is sent on a
//!   PTO timer expiration ... or when entering recovery");
//! - the application-limited verdict (RFC 9002 §7.8), passed as `app_limited` to each `on_ack`;
//! - which losses to ignore (RFC 9002 §7.4: packets that may have arrived before the peer had keys MAY be
//!   left out of the congestion event; those sent after the earliest acknowledged packet of their space
//!   MUST NOT);
//! - probe timeouts, which do not reach the controller at all (RFC 9002 §7.5: "Probe packets MUST NOT be
//!   blocked by the congestion controller"; a PTO by itself does not reduce the window);
//! - the one packet RFC 9002 Appendix B.6 allows to be sent on entering recovery (`MaybeSendOnePacket`).

// The connection wires this module up next; until then parts of the API are unused.

pub(crate) mod cubic;
pub(crate) mod hystart;
pub(crate) mod new_reno;
mod pacer;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

use super::recovery::RttEstimator;
use crate::config::TransportConfig;
use hystart::{HyStart, RoundEvent};
pub(crate) use pacer::Pacer;

/// Which congestion controller a connection uses.
// Public so the connection's transport configuration can carry it; the crate root re-exports it once the
// connection is wired up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CongestionAlgorithm {
    /// NewReno, as RFC 9002 §7 and Appendix B specify it.
    NewReno,
    /// CUBIC (RFC 9438), with NewReno's slow start and recovery period.
    #[default]
    Cubic,
}

/// A congestion controller (RFC 9002 §7). The window is in bytes (RFC 9002 §7: "The algorithm in this
/// document specifies and uses the controller's congestion window in bytes").
pub(crate) trait CongestionController: Send + fmt::Debug {
    /// An in-flight packet of `bytes` bytes was sent at `now` (RFC 9002 Appendix B.4), with
    /// `in_flight_before` bytes in flight on the path before it (zero: the sender was idle).
    fn on_packet_sent(&mut self, now: Instant, bytes: u64, in_flight_before: u64);

    /// One newly acknowledged in-flight packet (RFC 9002 Appendix B.5, `OnPacketAcked`), sent at
    /// `time_sent` and `bytes` long. Call once per packet of [`AckOutcome::acked`] that was in flight.
    ///
    /// `app_limited` is the caller's verdict that the sender is not using the window (RFC 9002 §7.8: "When
    /// bytes in flight is smaller than the congestion window and sending is not pacing limited, the
    /// congestion window is underutilized ... the congestion window SHOULD NOT be increased in either slow
    /// start or congestion avoidance").
    ///
    /// [`AckOutcome::acked`]: super::recovery::AckOutcome::acked
    fn on_ack(&mut self, now: Instant, time_sent: Instant, bytes: u64, rtt: &RttEstimator, app_limited: bool);

    /// A 1-RTT ACK frame produced an RTT sample (RFC 9002 §5.1: at most one per ACK frame): `latest_rtt`
    /// is that sample less the peer's ACK delay, as smoothed_rtt takes it (RFC 9002 §5.3).
    /// Called after [`on_ack`](Self::on_ack) for each of the frame's newly acknowledged packets, before
    /// any loss it reveals is reported. HyStart++ tracks each round's minimum with it (RFC 9406 §4.2).
    fn on_rtt_sample(&mut self, latest_rtt: Duration);

    /// In-flight packets were declared lost; the newest of them was sent at `time_sent_of_latest_lost`
    /// (RFC 9002 Appendix B.8, `OnPacketsLost`).
    ///
    /// A recovery period starts only if that packet was sent after the current one started (RFC 9002
    /// §7.3.2: "during a recovery period, the congestion window does not change in response to new
    /// losses"). `persistent_congestion` collapses the window to the minimum and ends the recovery period
    /// (RFC 9002 §7.6.2, Appendix B.8), whether or not a new recovery period started.
    fn on_congestion_event(
        &mut self,
        now: Instant,
        time_sent_of_latest_lost: Instant,
        persistent_congestion: bool,
    );

    /// The peer-reported ECN-CE count increased in an ACK whose largest acknowledged packet was sent at
    /// `largest_acked_time_sent` (RFC 9002 Appendix B.7, `ProcessECN`): a congestion event like a loss.
    fn on_ecn_ce(&mut self, now: Instant, largest_acked_time_sent: Instant) {
        self.on_congestion_event(now, largest_acked_time_sent, false);
    }

    /// The congestion window in bytes: the most bytes in flight allowed.
    fn window(&self) -> u64;

    /// The slow start threshold in bytes; `u64::MAX` stands for "infinite" (RFC 9002 Appendix B.3).
    fn ssthresh(&self) -> u64;

    /// Whether a packet sent at `time_sent` was sent during the current recovery period (RFC 9002
    /// Appendix B.5, `InCongestionRecovery`: `sent_time <= congestion_recovery_start_time`).
    fn in_recovery(&self, time_sent: Instant) -> bool;

    /// The maximum datagram size the windows are computed with.
    fn max_datagram_size(&self) -> u16;

    /// Changes the maximum datagram size and recomputes the initial and minimum windows (RFC 9002 §7.2).
    fn set_max_datagram_size(&mut self, size: u16);

    /// The initial window for the current maximum datagram size (RFC 9002 §7.2).
    #[allow(dead_code)] // read by tests
    fn initial_window(&self) -> u64 {
        initial_window(self.max_datagram_size())
    }

    /// The minimum window for the current maximum datagram size (RFC 9002 §7.2).
    #[allow(dead_code)] // read by tests
    fn minimum_window(&self) -> u64 {
        minimum_window(self.max_datagram_size())
    }

    /// Which algorithm this is.
    #[allow(dead_code)] // read by tests
    fn algorithm(&self) -> CongestionAlgorithm;

    /// Where HyStart++ stands (RFC 9406).
    #[allow(dead_code)] // read by tests
    fn hystart_phase(&self) -> hystart::Phase;

    /// A copy of this controller in its current state.
    fn clone_box(&self) -> Box<dyn CongestionController>;

    /// A copy saved by [`clone_box`](Self::clone_box) before a congestion event that proved spurious
    /// takes over again at `now`, as the acknowledgement that proved it arrives. It missed what the
    /// sender did since it was saved: busy, not idle (CUBIC, RFC 9438 §5.8).
    fn on_restored(&mut self, now: Instant) {
        let _ = now;
    }

    /// When the current congestion avoidance stage began (CUBIC's t_epoch), if the algorithm has one.
    #[cfg(test)]
    fn stage_start(&self) -> Option<Instant> {
        None
    }
}

impl Clone for Box<dyn CongestionController> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// The controller as it was just before a congestion event, kept until the event proves spurious or
/// another event (or persistent congestion) replaces it (RFC 9002 §6.1.1 and §6.1.2 allow adapting to
/// reordering; undoing the response to a loss that was not one follows Linux's TCP undo and RACK).
#[derive(Debug)]
pub(crate) struct SpuriousUndo {
    /// The controller before the event.
    pub(crate) saved: Box<dyn CongestionController>,
    /// The smallest packet number the event's losses (and those of its recovery period) may have:
    /// losses of packets below it belong to earlier events.
    pub(crate) first_pn: u64,
    /// The event's lost packets (the first one's and those of its recovery period) not yet
    /// acknowledged after all. At zero, every loss the event stood for was spurious.
    pub(crate) outstanding: u64,
}

/// A fresh controller of the algorithm `config` chooses (with HyStart++ if it says so), in slow start with
/// the initial window for `max_datagram_size`.
pub(crate) fn new_controller(
    config: &TransportConfig,
    max_datagram_size: u16,
) -> Box<dyn CongestionController> {
    controller(config.congestion, config.hystart, max_datagram_size)
}

/// A fresh controller of `algo`, in slow start with the initial window for `max_datagram_size`, with
/// HyStart++ (RFC 9406) if `hystart`.
pub(crate) fn controller(
    algo: CongestionAlgorithm,
    hystart: bool,
    max_datagram_size: u16,
) -> Box<dyn CongestionController> {
    match algo {
        CongestionAlgorithm::NewReno => Box::new(new_reno::NewReno::new(max_datagram_size, hystart)),
        CongestionAlgorithm::Cubic => Box::new(cubic::Cubic::new(max_datagram_size, hystart)),
    }
}

/// kInitialWindow (RFC 9002 §7.2: "Endpoints SHOULD use an initial congestion window of ten times the
/// maximum datagram size (max_datagram_size), while limiting the window to the larger of 14,720 bytes or
/// twice the maximum datagram size").
pub(crate) fn initial_window(max_datagram_size: u16) -> u64 {
    let mds = u64::from(max_datagram_size);
    (10 * mds).min((2 * mds).max(14_720))
}

/// kMinimumWindow (RFC 9002 §7.2: "The RECOMMENDED value is 2 * max_datagram_size").
pub(crate) fn minimum_window(max_datagram_size: u16) -> u64 {
    2 * u64::from(max_datagram_size)
}

/// The state both algorithms share: the window, the slow start threshold, the recovery period and the
/// datagram size (RFC 9002 Appendix B.2), and slow start's HyStart++ (RFC 9406).
#[derive(Debug, Clone)]
struct WindowState {
    /// max_datagram_size, at least 1 so that divisions by it are safe.
    max_datagram_size: u16,
    /// congestion_window in bytes.
    cwnd: u64,
    /// ssthresh in bytes; `u64::MAX` is infinite.
    ssthresh: u64,
    /// congestion_recovery_start_time; `None` before the first congestion event and after persistent
    /// congestion (Appendix B.8 resets it to 0).
    recovery_start: Option<Instant>,
    /// Whether no acknowledgement or congestion event has reached the controller yet, so the window is
    /// still the initial one.
    pristine: bool,
    /// HyStart++ in the initial slow start (RFC 9406).
    hystart: HyStart,
}

impl WindowState {
    /// Slow start with the initial window (RFC 9002 Appendix B.3: `congestion_window = kInitialWindow`,
    /// `ssthresh = infinite`, `congestion_recovery_start_time = 0`), with HyStart++ if `hystart`.
    fn new(max_datagram_size: u16, hystart: bool) -> Self {
        let max_datagram_size = max_datagram_size.max(1);
        Self {
            max_datagram_size,
            cwnd: initial_window(max_datagram_size),
            ssthresh: u64::MAX,
            recovery_start: None,
            pristine: true,
            hystart: HyStart::new(hystart),
        }
    }

    /// HyStart++'s round bookkeeping for an in-flight packet sent at `time_sent` and acknowledged at
    /// `now`, before the window reacts to it. At the end of Conservative Slow Start, enters congestion
    /// avoidance (RFC 9406 §4.2: "enter congestion avoidance by setting the ssthresh to the current
    /// cwnd").
    fn on_ack_round(&mut self, now: Instant, time_sent: Instant) {
        if self.hystart.on_ack(now, time_sent) == RoundEvent::CssDone {
            self.ssthresh = self.cwnd;
        }
    }

    /// Slow start's growth for `bytes` newly acknowledged (RFC 9002 §7.3.1: "the congestion window
    /// increases by the number of bytes acknowledged"), a quarter of that in HyStart++'s Conservative Slow
    /// Start (RFC 9406 §4.2).
    fn slow_start(&mut self, bytes: u64) {
        self.cwnd = self.cwnd.saturating_add(self.hystart.growth(bytes));
    }

    /// A congestion event (loss or ECN-CE) ends HyStart++ (RFC 9406 §4.2); the caller reduces the window
    /// and the threshold.
    fn on_congestion(&mut self) {
        self.hystart.on_congestion();
    }

    /// `max_datagram_size` as a `u64`.
    fn mds(&self) -> u64 {
        u64::from(self.max_datagram_size)
    }

    /// kMinimumWindow for the current datagram size.
    fn minimum_window(&self) -> u64 {
        minimum_window(self.max_datagram_size)
    }

    /// InCongestionRecovery (RFC 9002 Appendix B.5): `sent_time <= congestion_recovery_start_time`.
    fn in_recovery(&self, time_sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| time_sent <= start)
    }

    /// Whether the window is in slow start (RFC 9002 §7.3.1: "in slow start any time the congestion
    /// window is below the slow start threshold").
    fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// RFC 9002 §7.2: "If the maximum datagram size changes during the connection, the initial congestion
    /// window SHOULD be recalculated with the new size. If the maximum datagram size is decreased in order
    /// to complete the handshake, the congestion window SHOULD be set to the new initial congestion
    /// window."
    ///
    /// A window still at its initial value follows the new initial window either way. Otherwise a decrease
    /// resets the window to the new initial window if that is smaller, never below the new minimum; an
    /// increase leaves the window's bytes as they are, even below the new minimum, since RFC 8899 §3 says
    /// "An update to the PLPMTU (or MPS) MUST NOT increase the congestion window measured in bytes".
    fn set_max_datagram_size(&mut self, size: u16) {
        let size = size.max(1);
        let old = self.max_datagram_size;
        self.max_datagram_size = size;
        if self.pristine {
            self.cwnd = initial_window(size);
        } else if size < old {
            self.cwnd = self.cwnd.min(initial_window(size)).max(self.minimum_window());
        }
    }
}
