//! CUBIC congestion control (RFC 9438), on top of the slow start, recovery period and persistent
//! congestion of RFC 9002 §7.
//!
//! Windows are kept in bytes; the cubic function is evaluated in bytes as `C * mds * (t - K)^3 + W_max`,
//! which is RFC 9438's function in segments multiplied by the segment size (max_datagram_size). `K` is in
//! seconds. Floating point is used only here, for the cube root and the cubic; the window itself stays an
//! integer.

use std::time::{Duration, Instant};

use super::{hystart, CongestionAlgorithm, CongestionController, WindowState};
use crate::conn::recovery::RttEstimator;

/// β_cubic, the multiplicative decrease factor (RFC 9438 §4.6: "β_cubic SHOULD be set to 0.7").
pub(crate) const BETA: f64 = 0.7;

/// C, the scaling constant of the cubic function, in segments per second cubed (RFC 9438 §5: "C SHOULD be
/// set to 0.4").
pub(crate) const C: f64 = 0.4;

/// α_cubic while W_est is below cwnd_prior: `3 * (1 - β_cubic) / (1 + β_cubic)` (RFC 9438 §4.3), which
/// makes the Reno-friendly estimate as fast, on average, as Reno with its β of 0.5.
pub(crate) const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// The state of one congestion avoidance stage (RFC 9438 §4.2: "t is the elapsed time ... since the
/// beginning of the current congestion avoidance stage").
#[derive(Debug, Clone, Copy)]
struct Epoch {
    /// t_epoch: when the stage began. Moved forward by the time the sender spent application limited
    /// (RFC 9438 §5.8).
    start: Instant,
    /// K, in seconds: when the cubic function reaches W_max again (RFC 9438 §4.2, Figure 2).
    k: f64,
    /// W_est, the Reno-friendly estimate of the window, in bytes (RFC 9438 §4.3).
    w_est: f64,
}

/// The CUBIC controller (RFC 9438): NewReno's slow start and recovery period, β = 0.7 on a congestion
/// event, and in congestion avoidance the larger of the cubic function and a Reno-friendly estimate.
#[derive(Debug, Clone)]
pub(crate) struct Cubic {
    /// Window, threshold, recovery period and datagram size.
    state: WindowState,
    /// W_max in bytes: the window just before the last reduction, lowered by fast convergence (RFC 9438
    /// §4.7). Zero when unknown (before the first congestion event and after persistent congestion).
    w_max: f64,
    /// cwnd_prior in bytes: the window just before the last reduction (RFC 9438 §4.6), where α_cubic
    /// switches to 1 (RFC 9438 §4.3).
    cwnd_prior: f64,
    /// The current congestion avoidance stage; `None` in slow start, in recovery, and after a congestion
    /// event until the first acknowledgement that ends recovery.
    epoch: Option<Epoch>,
    /// When the sender became application limited in congestion avoidance, if it still is.
    app_limited_since: Option<Instant>,
    /// When the sender was last busy (the latest acknowledgement or in-flight packet sent): where an
    /// idle period (nothing in flight) begins.
    last_busy: Option<Instant>,
    /// Fraction of a byte of window growth not yet added (the window is an integer).
    carry: f64,
}

impl Cubic {
    /// A controller in slow start with the initial window for `max_datagram_size` (RFC 9002 §7.2), with
    /// HyStart++ (RFC 9406) if `hystart`.
    pub(crate) fn new(max_datagram_size: u16, hystart: bool) -> Self {
        Self {
            state: WindowState::new(max_datagram_size, hystart),
            w_max: 0.0,
            cwnd_prior: 0.0,
            epoch: None,
            app_limited_since: None,
            last_busy: None,
            carry: 0.0,
        }
    }

    /// W_max in bytes (zero before any congestion event).
    #[cfg(test)]
    pub(crate) fn w_max(&self) -> f64 {
        self.w_max
    }

    /// K in seconds, once a congestion avoidance stage has begun.
    #[cfg(test)]
    pub(crate) fn k(&self) -> Option<f64> {
        self.epoch.map(|e| e.k)
    }

    /// W_est in bytes, once a congestion avoidance stage has begun.
    #[cfg(test)]
    pub(crate) fn w_est(&self) -> Option<f64> {
        self.epoch.map(|e| e.w_est)
    }

    /// When the current congestion avoidance stage began (t_epoch), if one has.
    #[cfg(test)]
    pub(crate) fn epoch_start(&self) -> Option<Instant> {
        self.epoch.map(|e| e.start)
    }

    /// W_cubic(t) in bytes, `t` in seconds since the start of the current stage (RFC 9438 §4.2, Equation
    /// 1: `W_cubic(t) = C * (t - K)^3 + W_max`), once a stage has begun.
    #[cfg(test)]
    pub(crate) fn w_cubic(&self, t: f64) -> Option<f64> {
        self.epoch.map(|e| self.cubic_at(e.k, t))
    }

    /// Equation 1 in bytes for a given K.
    fn cubic_at(&self, k: f64, t: f64) -> f64 {
        let d = t - k;
        C * self.state.mds() as f64 * d * d * d + self.w_max
    }

    /// Begins a congestion avoidance stage at `now` with the current window as cwnd_epoch (RFC 9438 §4.2:
    /// `K = cubic_root((W_max - cwnd_epoch) / C)`, in segments).
    ///
    /// Without a W_max above the window (no congestion event yet, or persistent congestion since), W_max is
    /// the window and K is 0 (RFC 9438 §4.8: "K is set to 0, and W_max is set to the congestion window size
    /// at the beginning of the current congestion avoidance stage").
    fn start_epoch(&mut self, now: Instant) -> Epoch {
        let cwnd = self.state.cwnd as f64;
        let k = if self.w_max > cwnd {
            ((self.w_max - cwnd) / self.state.mds() as f64 / C).cbrt()
        } else {
            self.w_max = cwnd;
            0.0
        };
        let epoch = Epoch {
            start: now,
            k,
            // RFC 9438 §4.3: "W_est is set equal to cwnd_epoch at the start of the congestion avoidance
            // stage".
            w_est: cwnd,
        };
        self.epoch = Some(epoch);
        self.carry = 0.0;
        epoch
    }

    /// Congestion avoidance for `bytes` newly acknowledged at `now` (RFC 9438 §4.3 to §4.5).
    fn congestion_avoidance(&mut self, now: Instant, bytes: u64, rtt: Duration) {
        let mut epoch = match self.epoch {
            Some(e) => e,
            None => self.start_epoch(now),
        };
        let cwnd = self.state.cwnd as f64;
        let mds = self.state.mds() as f64;
        let t = now.saturating_duration_since(epoch.start).as_secs_f64();

        // RFC 9438 §4.3: `W_est = W_est + α_cubic * segments_acked / cwnd` (segments), with α_cubic = 1 once
        // "W_est >= cwnd_prior".
        let alpha = if epoch.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA
        };
        epoch.w_est += alpha * bytes as f64 / cwnd * mds;
        self.epoch = Some(epoch);

        let w_cubic = self.cubic_at(epoch.k, t);
        if w_cubic < epoch.w_est {
            // RFC 9438 §4.3: "If W_cubic(t) is less than W_est, then CUBIC is in the Reno-friendly region and
            // cwnd SHOULD be set to W_est at each reception of a new ACK."
            let w_est = epoch.w_est as u64;
            if w_est > self.state.cwnd {
                self.state.cwnd = w_est;
                self.carry = 0.0;
            }
            return;
        }
        // RFC 9438 §4.2: the target is W_cubic(t + RTT), bounded to [cwnd, 1.5 * cwnd] (Equation 4); RTT is
        // the smoothed RTT.
        let target = self
            .cubic_at(epoch.k, t + rtt.as_secs_f64())
            .clamp(cwnd, 1.5 * cwnd);
        // RFC 9438 §4.4, §4.5: "cwnd MUST be incremented by (target - cwnd) / cwnd for each received new
        // ACK", per segment acknowledged; in bytes, `(target - cwnd) / cwnd * bytes_acked`.
        let grow = (target - cwnd) / cwnd * bytes as f64 + self.carry;
        let whole = grow.floor();
        self.carry = grow - whole;
        self.state.cwnd = self.state.cwnd.saturating_add(whole as u64);
    }
}

impl CongestionController for Cubic {
    fn on_packet_sent(&mut self, now: Instant, _bytes: u64, in_flight_before: u64) {
        // Application-limited periods are recognised from `app_limited` on acknowledgements. An idle
        // period needs none: with nothing in flight since the last acknowledgement the window was not
        // used, and RFC 9438 §5.8 says CUBIC "MUST NOT use the period of time when the flow was
        // application limited when computing cwnd". If no acknowledgement marked its start (one ACK took
        // the whole flight of a full window, or the connection came back to a path it had left), the
        // stage's clock skips it here (as Linux's CUBIC does on restarting after idle). A flight sent at
        // the instant the last one was acknowledged skips nothing. The idle period begins at the last
        // packet sent if that came later: one sent alone while idle (a path MTU probe) and lost without
        // a congestion event leaves nothing in flight again, and the time before it was skipped already.
        let idle_from = self.last_busy;
        self.last_busy = Some(idle_from.map_or(now, |t| t.max(now)));
        if in_flight_before > 0 || self.app_limited_since.is_some() {
            return;
        }
        if let (Some(epoch), Some(idle_from)) = (&mut self.epoch, idle_from) {
            let idle = now.saturating_duration_since(idle_from);
            epoch.start = epoch.start.checked_add(idle).map_or(now, |s| s.min(now));
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        time_sent: Instant,
        bytes: u64,
        rtt: &RttEstimator,
        app_limited: bool,
    ) {
        self.state.pristine = false;
        self.last_busy = Some(self.last_busy.map_or(now, |t| t.max(now)));
        self.state.on_ack_round(now, time_sent);
        // RFC 9002 Appendix B.5: no growth in a recovery period (§7.3.2).
        if self.state.in_recovery(time_sent) {
            return;
        }
        if app_limited {
            // RFC 9002 §7.8: no growth while the window is underutilized. RFC 9438 §5.8: CUBIC "MUST NOT use
            // the period of time when the flow was application limited when computing cwnd": remember when
            // it began, so the stage's clock can skip it.
            if self.epoch.is_some() && self.app_limited_since.is_none() {
                self.app_limited_since = Some(now);
            }
            return;
        }
        if let Some(since) = self.app_limited_since.take() {
            if let Some(epoch) = &mut self.epoch {
                let idle = now.saturating_duration_since(since);
                // Never past `now` (a clock that stepped back since the stage began), as for idle time.
                epoch.start = epoch.start.checked_add(idle).map_or(now, |s| s.min(now));
            }
        }
        if self.state.in_slow_start() {
            // RFC 9438 §4.10 / RFC 9002 §7.3.1: slow start grows by the bytes acknowledged (RFC 9438 §4.10:
            // "CUBIC MAY use HyStart++"; in its Conservative Slow Start, by a quarter of them).
            self.state.slow_start(bytes);
            return;
        }
        // Never divide by a zero window (the window is at least kMinimumWindow unless the datagram size is
        // absurdly small, and at least 2 bytes even then).
        if self.state.cwnd == 0 {
            self.state.cwnd = self.state.minimum_window();
        }
        self.congestion_avoidance(now, bytes, rtt.smoothed());
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
        // RFC 9002 §7.3.2: "A sender that is already in a recovery period stays in it and does not reenter
        // it."
        if !self.state.in_recovery(time_sent_of_latest_lost) {
            self.state.recovery_start = Some(now);
            let cwnd = self.state.cwnd as f64;
            // RFC 9438 §4.7 (fast convergence): "if cwnd < W_max and fast convergence enabled, further
            // reduce W_max: W_max = cwnd * (1 + β_cubic) / 2", otherwise "W_max = cwnd".
            self.w_max = if cwnd < self.w_max {
                cwnd * (1.0 + BETA) / 2.0
            } else {
                cwnd
            };
            // RFC 9438 §4.6: `ssthresh = cwnd * β_cubic` (RFC 9002 reduces from the congestion window rather
            // than the flight size), `cwnd_prior = cwnd`, and the threshold and the window are at least the
            // minimum window (RFC 9002 §7.2).
            self.cwnd_prior = cwnd;
            // In 128 bits: `cwnd * 7` saturating in 64 would leave a fifth of a window above u64::MAX / 7.
            let reduced = u64::try_from(u128::from(self.state.cwnd) * 7 / 10).unwrap_or(u64::MAX);
            self.state.ssthresh = reduced.max(self.state.minimum_window());
            self.state.cwnd = self.state.ssthresh;
            // The next congestion avoidance stage begins when recovery ends (RFC 9002 §7.3.2, RFC 9438 §4.2).
            self.epoch = None;
            self.app_limited_since = None;
            self.carry = 0.0;
        }
        if persistent_congestion {
            // RFC 9002 §7.6.2: collapse to the minimum window, and end the recovery period (Appendix B.8).
            // RFC 9438 §4.8: after a timeout the next stage starts with K = 0 and W_max = cwnd_epoch, so the
            // old maximum is forgotten.
            self.state.cwnd = self.state.minimum_window();
            self.state.recovery_start = None;
            self.w_max = 0.0;
            self.cwnd_prior = 0.0;
            self.epoch = None;
            self.app_limited_since = None;
            self.carry = 0.0;
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
        CongestionAlgorithm::Cubic
    }

    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }

    fn on_restored(&mut self, now: Instant) {
        // Saved at a congestion event, it last saw the sender busy then; the sender stayed busy until
        // this acknowledgement, so an idle period that follows begins here, not at the event.
        self.last_busy = Some(self.last_busy.map_or(now, |t| t.max(now)));
    }

    #[cfg(test)]
    fn stage_start(&self) -> Option<Instant> {
        self.epoch_start()
    }
}
