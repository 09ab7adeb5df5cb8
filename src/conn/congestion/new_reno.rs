//! NewReno congestion control, as RFC 9002 §7 and Appendix B specify it.

use std::time::{Duration, Instant};

use super::{hystart, CongestionAlgorithm, CongestionController, WindowState};
use crate::conn::recovery::RttEstimator;

/// The NewReno controller of RFC 9002 §7: slow start, congestion avoidance with one datagram per window
/// acknowledged, a recovery period of one reduction per round trip, and persistent congestion.
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    /// Window, threshold, recovery period and datagram size.
    state: WindowState,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth (the byte counting of
    /// RFC 3465 §2.1, which RFC 9002 Appendix B.5 suggests for integer windows).
    bytes_acked: u64,
}

impl NewReno {
    /// A controller in slow start with the initial window for `max_datagram_size` (RFC 9002 §7.2), with
    /// HyStart++ (RFC 9406) if `hystart`.
    pub(crate) fn new(max_datagram_size: u16, hystart: bool) -> Self {
        Self {
            state: WindowState::new(max_datagram_size, hystart),
            bytes_acked: 0,
        }
    }
}

impl CongestionController for NewReno {
    fn on_packet_sent(&mut self, _now: Instant, _bytes: u64, _in_flight_before: u64) {
        // Bytes in flight are the loss detector's (RFC 9002 Appendix B.4); NewReno needs nothing else.
    }

    fn on_ack(
        &mut self,
        now: Instant,
        time_sent: Instant,
        bytes: u64,
        _rtt: &RttEstimator,
        app_limited: bool,
    ) {
        self.state.pristine = false;
        self.state.on_ack_round(now, time_sent);
        // RFC 9002 Appendix B.5: "Do not increase congestion_window if application limited or flow control
        // limited" (§7.8).
        if app_limited {
            return;
        }
        // RFC 9002 Appendix B.5: "Do not increase congestion window in recovery period" (§7.3.2).
        if self.state.in_recovery(time_sent) {
            return;
        }
        if self.state.in_slow_start() {
            // RFC 9002 §7.3.1: "the congestion window increases by the number of bytes acknowledged" (a
            // quarter of them in HyStart++'s Conservative Slow Start, RFC 9406 §4.2).
            self.state.slow_start(bytes);
            return;
        }
        // RFC 9002 §7.3.3: the increase is limited "to at most one maximum datagram size for each congestion
        // window that is acknowledged". Appendix B.5 writes it as `cwnd += mds * acked / cwnd`; counting
        // acknowledged bytes until a whole window has been acknowledged gives the same growth without losing
        // the fractions an integer division would drop.
        self.bytes_acked = self.bytes_acked.saturating_add(bytes);
        if self.bytes_acked >= self.state.cwnd {
            self.bytes_acked -= self.state.cwnd;
            self.state.cwnd = self.state.cwnd.saturating_add(self.state.mds());
        }
    }

    fn on_rtt_sample(&mut self, latest_rtt: Duration) {
        self.state.hystart.on_rtt_sample(latest_rtt);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        time_sent_of_latest_lost: Instant,
        persistent_congestion: bool,
    ) {
        self.state.pristine = false;
        self.state.on_congestion();
        // RFC 9002 Appendix B.6: "No reaction if already in a recovery period."
        if !self.state.in_recovery(time_sent_of_latest_lost) {
            // RFC 9002 §7.3.2: "On entering a recovery period, a sender MUST set the slow start threshold to
            // half the value of the congestion window when loss is detected" (kLossReductionFactor 0.5); the
            // window is reduced at once (Appendix B.6), not below kMinimumWindow.
            self.state.recovery_start = Some(now);
            self.state.ssthresh = self.state.cwnd / 2;
            self.state.cwnd = self.state.ssthresh.max(self.state.minimum_window());
            self.bytes_acked = 0;
        }
        if persistent_congestion {
            // RFC 9002 §7.6.2: "the sender's congestion window MUST be reduced to the minimum congestion
            // window"; Appendix B.8 also ends the recovery period (congestion_recovery_start_time = 0).
            self.state.cwnd = self.state.minimum_window();
            self.state.recovery_start = None;
            self.bytes_acked = 0;
        }
    }

    fn window(&self) -> u64 {
        self.state.cwnd
    }

    fn ssthresh(&self) -> u64 {
        self.state.ssthresh
    }

    fn in_recovery(&self, time_sent: Instant) -> bool {
        self.state.in_recovery(time_sent)
    }

    fn max_datagram_size(&self) -> u16 {
        self.state.max_datagram_size
    }

    fn set_max_datagram_size(&mut self, size: u16) {
        self.state.set_max_datagram_size(size);
    }

    fn hystart_phase(&self) -> hystart::Phase {
        self.state.hystart.phase()
    }

    fn algorithm(&self) -> CongestionAlgorithm {
        CongestionAlgorithm::NewReno
    }

    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}
