//! Round-trip time estimation (RFC 9002 §5).

use std::time::Duration;

/// The RTT assumed before any sample (RFC 9002 §6.2.2: "the initial RTT SHOULD be set to 333
/// milliseconds").
pub(crate) const INITIAL_RTT: Duration = Duration::from_millis(333);

/// The timer granularity, kGranularity (RFC 9002 §6.1.2: "The RECOMMENDED value of the timer granularity
/// (kGranularity) is 1 millisecond").
pub(crate) const GRANULARITY: Duration = Duration::from_millis(1);

/// An estimate of the path's round-trip time: latest_rtt, min_rtt, smoothed_rtt and rttvar (RFC 9002 §5).
///
/// All arithmetic saturates: a peer-reported ACK delay of any size cannot overflow it.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// latest_rtt: the most recent sample, ack delay not subtracted.
    latest: Duration,
    /// The most recent sample with the ack delay subtracted as for smoothed_rtt (RFC 9002 §5.3).
    latest_adjusted: Duration,
    /// smoothed_rtt.
    smoothed: Duration,
    /// rttvar.
    rttvar: Duration,
    /// min_rtt, ack delay not subtracted.
    min: Duration,
    /// Whether a sample has been taken since initialisation.
    has_sample: bool,
}

impl RttEstimator {
    /// An estimator before any sample (RFC 9002 §5.3: `smoothed_rtt = kInitialRtt`, `rttvar = kInitialRtt /
    /// 2`). `latest` and `min` report `initial_rtt` until the first sample replaces them.
    pub(crate) fn new(initial_rtt: Duration) -> Self {
        Self {
            latest: initial_rtt,
            latest_adjusted: initial_rtt,
            smoothed: initial_rtt,
            rttvar: initial_rtt / 2,
            min: initial_rtt,
            has_sample: false,
        }
    }

    /// Folds in one RTT sample (RFC 9002 §5.2, §5.3).
    ///
    /// `latest_rtt` is the time from sending the largest newly acknowledged packet to receiving its
    /// acknowledgement; the caller takes a sample only under the two conditions of RFC 9002 §5.1.
    /// `ack_delay` is the decoded ACK Delay field; acknowledgements in the Initial space go through
    /// [`update_initial`](Self::update_initial) instead, which does not subtract it. `max_ack_delay` is
    /// the peer's transport parameter, applied only once `handshake_confirmed`.
    ///
    /// Returns whether the sample was taken. Before the handshake is confirmed, a sample of which the
    /// peer's ACK delay is more than half is ignored when that delay cannot be subtracted from it: on the
    /// first sample (min_rtt would be the sample itself) or where the difference would be below min_rtt
    /// (RFC 9002 §5.3: "prior to handshake confirmation, an endpoint MAY ignore RTT samples if adjusting
    /// the RTT sample for acknowledgment delay causes the sample to be less than the min_rtt"). Such a
    /// sample measures mostly how long the peer held its acknowledgement: a Handshake ACK sent again
    /// with a lost Finished at the peer's PTO, seconds on after a blackout backed that off. Taken whole,
    /// it set the smoothed RTT of a 100 ms path to 4 s, and with it every PTO, idle and draining period
    /// of the connection for many samples after (tests/soak.rs seeds 19785 and 35419); an endpoint that
    /// mostly receives, and so takes few samples, kept it to the end.
    pub(crate) fn update(
        &mut self,
        latest_rtt: Duration,
        ack_delay: Duration,
        max_ack_delay: Duration,
        handshake_confirmed: bool,
    ) -> bool {
        self.sample(
            latest_rtt,
            ack_delay,
            ack_delay,
            max_ack_delay,
            handshake_confirmed,
        )
    }

    /// As [`update`](Self::update), for an acknowledgement in the Initial space: its ACK delay is not
    /// subtracted (RFC 9002 §5.3: an endpoint "MAY ignore the acknowledgment delay for Initial
    /// packets", which are acknowledged at once), but a sample that is mostly that delay is ignored all
    /// the same. One is: the ACK of a ClientHello that comes in the server's PTO probe when its first
    /// flight was lost, reporting the second it waited; taken whole, it made the client's smoothed RTT a
    /// second on a 40 ms path, and its PTO, backed off once, passed the idle timeout of a server
    /// blocked by its amplification limit (tests/soak.rs seed 225325).
    pub(crate) fn update_initial(
        &mut self,
        latest_rtt: Duration,
        ack_delay: Duration,
        max_ack_delay: Duration,
        handshake_confirmed: bool,
    ) -> bool {
        self.sample(
            latest_rtt,
            ack_delay,
            Duration::ZERO,
            max_ack_delay,
            handshake_confirmed,
        )
    }

    /// One sample: `reported` (the ACK Delay field) decides whether it is ignored, `ack_delay` is what
    /// is subtracted from it.
    fn sample(
        &mut self,
        latest_rtt: Duration,
        reported: Duration,
        ack_delay: Duration,
        max_ack_delay: Duration,
        handshake_confirmed: bool,
    ) -> bool {
        if self.ignores_held(latest_rtt, reported, handshake_confirmed) {
            return false;
        }
        self.latest = latest_rtt;
        self.latest_adjusted = latest_rtt;
        if !self.has_sample {
            // RFC 9002 §5.2: "min_rtt MUST be set to the latest_rtt on the first RTT sample". §5.3: on the
            // first sample, smoothed_rtt = latest_rtt and rttvar = latest_rtt / 2.
            self.has_sample = true;
            self.min = latest_rtt;
            self.smoothed = latest_rtt;
            self.rttvar = latest_rtt / 2;
            return true;
        }
        // RFC 9002 §5.2: "min_rtt MUST be set to the lesser of min_rtt and latest_rtt" (ack delay ignored).
        self.min = self.min.min(latest_rtt);
        // RFC 9002 §5.3: "SHOULD ignore the peer's max_ack_delay until the handshake is confirmed"; "MUST
        // use the lesser of the acknowledgment delay and the peer's max_ack_delay after the handshake is
        // confirmed".
        let ack_delay = if handshake_confirmed {
            ack_delay.min(max_ack_delay)
        } else {
            ack_delay
        };
        // RFC 9002 §5.3: "MUST NOT subtract the acknowledgment delay from the RTT sample if the resulting
        // value is smaller than the min_rtt."
        let adjusted = if latest_rtt >= self.min.saturating_add(ack_delay) {
            latest_rtt.saturating_sub(ack_delay)
        } else {
            latest_rtt
        };
        self.latest_adjusted = adjusted;
        // RFC 9002 Appendix A.7 (and RFC 6298 §2.3): rttvar is updated with the smoothed_rtt from *before*
        // this sample. (The prose pseudocode of §5.3 lists the smoothed_rtt line first; Appendix A.7 and
        // RFC 6298 use the old value, which is what we do.)
        let rttvar_sample = abs_diff(self.smoothed, adjusted);
        self.rttvar = (self.rttvar.saturating_mul(3).saturating_add(rttvar_sample)) / 4;
        self.smoothed = (self.smoothed.saturating_mul(7).saturating_add(adjusted)) / 8;
        true
    }

    /// Whether a sample is ignored for being mostly the peer's ACK delay (see [`update`](Self::update)).
    /// min_rtt, which is local time alone (§5.2: "the lesser of min_rtt and latest_rtt"), still takes it.
    fn ignores_held(&mut self, latest_rtt: Duration, ack_delay: Duration, handshake_confirmed: bool) -> bool {
        let ignored = !handshake_confirmed
            && ack_delay.saturating_mul(2) > latest_rtt
            && (!self.has_sample || latest_rtt < self.min.saturating_add(ack_delay));
        if ignored && self.has_sample {
            self.min = self.min.min(latest_rtt);
        }
        ignored
    }

    /// RFC 9002 §5.2: "Endpoints SHOULD set the min_rtt to the newest RTT sample after persistent
    /// congestion is established", since the path may have changed (a route now longer than before).
    pub(crate) fn on_persistent_congestion(&mut self) {
        if self.has_sample() {
            self.min = self.latest;
        }
    }

    /// latest_rtt: the most recent sample (the initial RTT before any sample).
    pub(crate) fn latest(&self) -> Duration {
        self.latest
    }

    /// The most recent sample less the peer's acknowledgement delay, adjusted as smoothed_rtt takes it
    /// (RFC 9002 §5.3: the delay capped by max_ack_delay once the handshake is confirmed, and not
    /// subtracted where that would go below min_rtt); latest_rtt itself on the first sample.
    pub(crate) fn latest_adjusted(&self) -> Duration {
        self.latest_adjusted
    }

    /// smoothed_rtt.
    pub(crate) fn smoothed(&self) -> Duration {
        self.smoothed
    }

    /// rttvar.
    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// min_rtt (the initial RTT before any sample).
    pub(crate) fn min(&self) -> Duration {
        self.min
    }

    /// Whether at least one sample has been taken.
    pub(crate) fn has_sample(&self) -> bool {
        self.has_sample
    }

    /// The PTO period without max_ack_delay and backoff: `smoothed_rtt + max(4*rttvar, kGranularity)`
    /// (RFC 9002 §6.2.1). It is at least kGranularity, as §6.2.1 requires.
    pub(crate) fn pto_base(&self) -> Duration {
        self.smoothed
            .saturating_add(self.rttvar.saturating_mul(4).max(GRANULARITY))
    }

    /// The time threshold for loss detection: `max(kTimeThreshold * max(smoothed_rtt, latest_rtt),
    /// kGranularity)` with kTimeThreshold = 9/8 (RFC 9002 §6.1.2).
    #[cfg(test)]
    pub(crate) fn loss_delay(&self) -> Duration {
        self.loss_delay_eighths(super::TIME_THRESHOLD_EIGHTHS)
    }

    /// The time threshold with kTimeThreshold = `eighths / 8`: `max(eighths / 8 * max(smoothed_rtt,
    /// latest_rtt), kGranularity)` (RFC 9002 §6.1.2 allows a larger threshold than 9/8).
    pub(crate) fn loss_delay_eighths(&self, eighths: u32) -> Duration {
        (self.loss_delay_base().saturating_mul(eighths) / 8).max(GRANULARITY)
    }

    /// max(smoothed_rtt, latest_rtt), the base of the time threshold.
    pub(crate) fn loss_delay_base(&self) -> Duration {
        self.smoothed.max(self.latest)
    }
}

/// `|a - b|` for durations.
fn abs_diff(a: Duration, b: Duration) -> Duration {
    if a >= b {
        a - b
    } else {
        b - a
    }
}
