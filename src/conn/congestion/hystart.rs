//! HyStart++ (RFC 9406): slow start that watches the round trip time and leaves early when it rises,
//! before the bottleneck's queue overflows.
//!
//! Slow start doubles the window every round trip until a loss, so it usually ends by overflowing the
//! queue with up to a window's worth of packets. HyStart++ compares the smallest RTT of each round with
//! that of the round before; a rise of at least `RttThresh` (an eighth of the previous minimum, within 4
//! and 16 ms) means a queue is building, and the sender goes on in Conservative Slow Start (CSS), which
//! grows the window a quarter as fast. If the RTT falls back below the level that triggered CSS, the exit
//! was spurious and slow start resumes; after `CSS_ROUNDS` rounds of CSS the sender enters congestion
//! avoidance with the window it has (RFC 9406 §4.2).
//!
//! Rounds are told apart by send time, which is what the controller sees of a packet: a round ends when a
//! packet sent since it began is acknowledged, the equivalent of RFC 9406's `windowEnd = SND.NXT`. A
//! packet sent at the very instant a round began counts as sent in it (an instant is all the controller
//! knows): the flight an ACK releases goes at the instant the ACK is handled (always so under a
//! simulator's clock), and counting it in the round before would make every round two round trips long.
//! The price is a round that may end one packet early, on one sent at that instant just before the ACK.
//! No round ends at the very instant it began, though: a round trip below the caller's clock resolution
//! would otherwise end a round with every packet of one ACK frame.
//!
//! quicsand always paces (RFC 9002 §7.7, [`Pacer`](super::Pacer)), so there is no limit `L` on the bytes
//! one acknowledgement adds to the window (RFC 9406 §4.3: "A paced TCP implementation SHOULD use
//! L = infinity").

use std::time::{Duration, Instant};

/// N_RTT_SAMPLE: RTT samples a round needs before its minimum is compared (RFC 9406 §4.3).
pub(crate) const N_RTT_SAMPLE: u32 = 8;

/// MIN_RTT_THRESH: the smallest RTT rise that ends slow start (RFC 9406 §4.3).
pub(crate) const MIN_RTT_THRESH: Duration = Duration::from_millis(4);

/// MAX_RTT_THRESH: the largest RTT rise needed to end slow start (RFC 9406 §4.3).
pub(crate) const MAX_RTT_THRESH: Duration = Duration::from_millis(16);

/// MIN_RTT_DIVISOR: the rise needed is the last round's minimum RTT over this, within
/// [`MIN_RTT_THRESH`] and [`MAX_RTT_THRESH`] (RFC 9406 §4.3).
pub(crate) const MIN_RTT_DIVISOR: u32 = 8;

/// CSS_GROWTH_DIVISOR: Conservative Slow Start grows the window by the bytes acknowledged over this
/// (RFC 9406 §4.3: "The minimum value of CSS_GROWTH_DIVISOR MUST be at least 2").
pub(crate) const CSS_GROWTH_DIVISOR: u64 = 4;

/// CSS_ROUNDS: the most rounds Conservative Slow Start lasts, the partial round it began in included
/// (RFC 9406 §4.3).
pub(crate) const CSS_ROUNDS: u32 = 5;

/// Where HyStart++ stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Standard slow start, watching each round's minimum RTT for a rise.
    SlowStart,
    /// Conservative Slow Start, entered when a round's minimum RTT rose to `baseline` (RFC 9406
    /// `cssBaselineMinRtt`); `rounds` counts the CSS rounds begun, the one it was entered in included.
    Css {
        /// The round minimum that ended slow start.
        baseline: Duration,
        /// CSS rounds begun, at most [`CSS_ROUNDS`].
        rounds: u32,
    },
    /// HyStart++ does not act: it is turned off, or the first slow start is over (a loss, an ECN-CE mark,
    /// or the end of CSS). Any later slow start (after persistent congestion) is the standard one.
    Off,
}

/// What an acknowledgement did to HyStart++'s rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoundEvent {
    /// Nothing the window must follow.
    None,
    /// The last round of Conservative Slow Start ended: the sender enters congestion avoidance by
    /// setting ssthresh to the window (RFC 9406 §4.2).
    CssDone,
}

/// The state of HyStart++ for one controller (RFC 9406 §4.2).
#[derive(Debug, Clone)]
pub(crate) struct HyStart {
    /// Where it stands.
    phase: Phase,
    /// When the current round began: a packet sent at or after this instant, once acknowledged, ends it.
    /// `None` until the first acknowledgement starts the first round.
    round_start: Option<Instant>,
    /// lastRoundMinRTT; `None` stands for infinity.
    last_round_min: Option<Duration>,
    /// currentRoundMinRTT; `None` stands for infinity.
    current_round_min: Option<Duration>,
    /// rttSampleCount: samples taken in the current round.
    samples: u32,
    /// Bytes acknowledged in CSS not yet turned into growth (fewer than [`CSS_GROWTH_DIVISOR`]).
    css_remainder: u64,
}

impl HyStart {
    /// HyStart++ at the start of a connection, in slow start when `enabled`, otherwise off for good.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            phase: if enabled { Phase::SlowStart } else { Phase::Off },
            round_start: None,
            // RFC 9406 §4.2: "lastRoundMinRTT = infinity, currentRoundMinRTT = infinity".
            last_round_min: None,
            current_round_min: None,
            samples: 0,
            css_remainder: 0,
        }
    }

    /// Where HyStart++ stands.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// An in-flight packet sent at `time_sent` was acknowledged at `now` (whether or not the window may
    /// grow from it). Ends the current round if the packet was sent since the round began (RFC 9406
    /// §4.2: "When windowEnd is ACKed, the current round ends and windowEnd is set to SND.NXT").
    pub(crate) fn on_ack(&mut self, now: Instant, time_sent: Instant) -> RoundEvent {
        if self.phase == Phase::Off {
            return RoundEvent::None;
        }
        match self.round_start {
            // A round never ends at the instant it began: acknowledgements at the instant their
            // packets were sent (a round trip below the caller's clock resolution) would otherwise end
            // one round per packet, and all of Conservative Slow Start within one ACK frame.
            Some(start) if time_sent < start || now <= start => return RoundEvent::None,
            _ => {}
        }
        self.round_start = Some(now);
        // RFC 9406 §4.2: at the start of each round of slow start and CSS, "lastRoundMinRTT =
        // currentRoundMinRTT, currentRoundMinRTT = infinity, rttSampleCount = 0".
        self.last_round_min = self.current_round_min;
        self.current_round_min = None;
        self.samples = 0;
        if let Phase::Css { baseline, rounds } = self.phase {
            // RFC 9406 §4.2: "CSS lasts at most CSS_ROUNDS rounds. If the transition into CSS happens in
            // the middle of a round, that partial round counts towards the limit."
            if rounds >= CSS_ROUNDS {
                self.phase = Phase::Off;
                return RoundEvent::CssDone;
            }
            self.phase = Phase::Css {
                baseline,
                rounds: rounds + 1,
            };
        }
        RoundEvent::None
    }

    /// The window growth in slow start for `bytes` newly acknowledged: all of them in standard slow start,
    /// a quarter in CSS (RFC 9406 §4.2: "cwnd = cwnd + (min(N, L*SMSS) / CSS_GROWTH_DIVISOR)", with L
    /// infinite for a paced sender). Fractions of a byte are carried to the next acknowledgement.
    pub(crate) fn growth(&mut self, bytes: u64) -> u64 {
        if !matches!(self.phase, Phase::Css { .. }) {
            return bytes;
        }
        let total = self.css_remainder.saturating_add(bytes);
        self.css_remainder = total % CSS_GROWTH_DIVISOR;
        total / CSS_GROWTH_DIVISOR
    }

    /// One RTT sample, `latest_rtt` (RFC 9002 §5.1: at most one per ACK frame; the caller passes 1-RTT
    /// samples less the peer's ACK delay): tracks the round's minimum, and once the round has
    /// [`N_RTT_SAMPLE`] samples, leaves slow start for CSS on a rise of the minimum, or goes back to slow
    /// start from CSS on a fall below the baseline (RFC 9406 §4.2).
    pub(crate) fn on_rtt_sample(&mut self, latest_rtt: Duration) {
        if self.phase == Phase::Off {
            return;
        }
        // RFC 9406 §4.2: "currentRoundMinRTT = min(currentRoundMinRTT, currRTT); rttSampleCount += 1".
        let current = self.current_round_min.map_or(latest_rtt, |m| m.min(latest_rtt));
        self.current_round_min = Some(current);
        self.samples = self.samples.saturating_add(1);
        if self.samples < N_RTT_SAMPLE {
            return;
        }
        match self.phase {
            Phase::SlowStart => {
                let Some(last) = self.last_round_min else {
                    return;
                };
                // RFC 9406 §4.2: "RttThresh = max(MIN_RTT_THRESH, min(lastRoundMinRTT / MIN_RTT_DIVISOR,
                // MAX_RTT_THRESH))"; "if (currentRoundMinRTT >= (lastRoundMinRTT + RttThresh))" the
                // sender sets "cssBaselineMinRtt = currentRoundMinRTT" and enters CSS.
                let threshold = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
                if current >= last.saturating_add(threshold) {
                    self.phase = Phase::Css {
                        baseline: current,
                        rounds: 1,
                    };
                    self.css_remainder = 0;
                }
            }
            Phase::Css { baseline, .. } => {
                // RFC 9406 §4.2: a round minimum below cssBaselineMinRtt shows the exit was spurious:
                // "resume slow start including HyStart++". The rounds of CSS start again from zero the
                // next time.
                if current < baseline {
                    self.phase = Phase::SlowStart;
                }
            }
            Phase::Off => {}
        }
    }

    /// A loss or an ECN-CE mark: slow start (standard or conservative) is over, and the controller's own
    /// response sets ssthresh below the window, so congestion avoidance follows (RFC 9406 §4.2). HyStart++
    /// is for the initial slow start only (RFC 9406 §4.2: later slow starts use standard slow start, the
    /// slow start threshold already known), so it stays off.
    pub(crate) fn on_congestion(&mut self) {
        self.phase = Phase::Off;
    }
}
