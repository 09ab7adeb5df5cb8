//! Pacing (RFC 9002 §7.7): a token bucket that spreads a congestion window over a round trip.

use std::time::{Duration, Instant};

/// N in `rate = N * congestion_window / smoothed_rtt`, as the fraction `PACING_NUM / PACING_DEN` (RFC
/// 9002 §7.7: "Using a value for N that is small, but at least 1 (for example, 1.25) ensures that
/// variations in RTT do not result in underutilization of the congestion window").
const PACING_NUM: u128 = 5;
/// See [`PACING_NUM`].
const PACING_DEN: u128 = 4;

/// At high rates the bucket also holds what the rate delivers in this long, so that a caller whose timers
/// fire this late (a millisecond-granular timer wheel) still reaches the full rate. It only exceeds the
/// initial window's burst above ~10 datagrams per 2 ms (about 48 Mbit/s with 1200-byte datagrams); RFC
/// 9002 §7.7 allows a higher limit for a path that "can absorb larger bursts".
pub(crate) const TIMER_SLACK: Duration = Duration::from_millis(2);

/// A token bucket pacer (RFC 9002 §7.7: "One possible implementation strategy for pacing uses a leaky
/// bucket algorithm, where the capacity of the 'bucket' is limited to the maximum burst size and the rate
/// the 'bucket' fills is determined by the above function").
///
/// Tokens are bytes. The bucket refills at `1.25 * window / smoothed_rtt` and holds at most the initial
/// window (more at high rates, see [`TIMER_SLACK`]), never more than the window and
/// never less than one datagram. All arithmetic is integer; a zero RTT or a zero window disables pacing
/// (the congestion window still limits sending) rather than dividing by zero.
///
/// Packets carrying only ACK frames should not be paced (RFC 9002 §7.7); the caller neither asks
/// [`Pacer::delay`] for them nor reports them to [`Pacer::on_sent`].
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Bytes that may be sent now.
    tokens: u64,
    /// When the bucket was last refilled.
    last_refill: Instant,
    /// The window the rate was last computed from (for refills in [`Pacer::on_sent`]).
    window: u64,
    /// The smoothed RTT the rate was last computed from.
    rtt: Duration,
    /// The datagram size the capacity was last computed from.
    mtu: u16,
    /// `capacity(window, mtu, rtt)`, computed again only when one of them changes (a 128-bit division,
    /// once per acknowledgement rather than twice per packet).
    capacity: u64,
}

impl Pacer {
    /// A pacer with a full bucket for `window` and datagrams of `mtu` bytes, at `now`.
    pub(crate) fn new(now: Instant, window: u64, mtu: u16, smoothed_rtt: Duration) -> Self {
        let capacity = capacity(window, mtu, smoothed_rtt);
        Self {
            tokens: capacity,
            last_refill: now,
            window,
            rtt: smoothed_rtt,
            mtu,
            capacity,
        }
    }

    /// Follows the current window, datagram size and RTT from `now` on (the caller has just refilled
    /// at the old rate).
    fn set_params(&mut self, now: Instant, window: u64, mtu: u16, smoothed_rtt: Duration) {
        if (window, mtu, smoothed_rtt) != (self.window, self.mtu, self.rtt) {
            self.window = window;
            self.mtu = mtu;
            self.rtt = smoothed_rtt;
            self.capacity = capacity(window, mtu, smoothed_rtt);
            // The fraction of a byte the old rate earned since the last refill is dropped: counted at a
            // faster new rate from the last refill, it made `delay` name an instant before `now`.
            self.last_refill = self.last_refill.max(now);
        }
    }

    /// When a packet of `bytes_to_send` bytes may be sent: `None` for now, or the instant the bucket holds
    /// enough tokens. `window` is the congestion window, `mtu` the datagram size, `smoothed_rtt` the RTT
    /// estimate; the rate follows them from this call on.
    pub(crate) fn delay(
        &mut self,
        now: Instant,
        bytes_to_send: u64,
        mtu: u16,
        window: u64,
        smoothed_rtt: Duration,
    ) -> Option<Instant> {
        // The time since the last refill was paced at the old rate and earns at it: the new window, RTT
        // and datagram size apply from now on. Credited at a higher new rate, a pause before a window
        // that grew (an undone congestion event, a first RTT sample far below the initial 333 ms)
        // filled the bucket at once.
        let capacity = self.capacity;
        self.refill(now, capacity);
        self.set_params(now, window, mtu, smoothed_rtt);
        let capacity = self.capacity;
        self.tokens = self.tokens.min(capacity);
        // A packet larger than the bucket can ever hold waits for a full bucket, not forever.
        let needed = bytes_to_send.min(capacity);
        if self.tokens >= needed {
            return None;
        }
        let (num, den) = rate(window, smoothed_rtt)?;
        // The time, rounded up, at which `needed - tokens` bytes have refilled: then `refill` (which rounds
        // down) adds at least that many, so the packet is allowed at the instant returned.
        let missing = u128::from(needed - self.tokens);
        let nanos = (missing * den).div_ceil(num);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Some(self.last_refill.checked_add(wait).unwrap_or(self.last_refill))
    }

    /// A paced packet of `bytes` bytes was sent at `now`.
    pub(crate) fn on_sent(&mut self, now: Instant, bytes: u64) {
        let capacity = self.capacity;
        self.refill(now, capacity);
        self.tokens = self.tokens.saturating_sub(bytes);
    }

    /// Adds the tokens earned since the last refill, up to `capacity`.
    fn refill(&mut self, now: Instant, capacity: u64) {
        if now < self.last_refill {
            self.clock_went_back(now);
        }
        let Some((num, den)) = rate(self.window, self.rtt) else {
            // No rate to pace at: keep the bucket full.
            self.tokens = capacity;
            self.last_refill = now;
            return;
        };
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        if elapsed == 0 {
            // Nothing earned (packets of one burst share an instant): no division.
            self.tokens = self.tokens.min(capacity);
            return;
        }
        let earned = elapsed.saturating_mul(num) / den;
        if earned == 0 && self.tokens <= capacity {
            // Less than a byte has accrued: keep `last_refill`, so the fraction is not lost.
            return;
        }
        let tokens = u64::try_from(earned).map_or(u64::MAX, |e| self.tokens.saturating_add(e));
        if tokens >= capacity {
            // A full bucket earns nothing more: count from now.
            self.tokens = capacity;
            self.last_refill = self.last_refill.max(now);
        } else {
            // Only the time the whole bytes took is used up (rounded up: never faster than the rate, and
            // at most `elapsed`, as `earned * den <= elapsed * num`): the fraction of a byte left over
            // counts towards the next refill. Dropped at every refill, it slowed a pacer asked often (for
            // every datagram received) by up to half.
            let used = (earned * den).div_ceil(num);
            let used = Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
            self.tokens = tokens;
            self.last_refill = self.last_refill.checked_add(used).map_or(now, |t| t.min(now));
        }
    }

    /// A clock that stepped back far: count from `now`, or nothing would be earned (and `delay` would
    /// name an instant ahead by the step) until the clock caught up with the last refill. A short step
    /// is waited out, so that a jittering clock does not earn the same time twice. Out of line: the
    /// per-packet path only compares.
    #[cold]
    fn clock_went_back(&mut self, now: Instant) {
        if crate::clock::stepped_back(now, self.last_refill) {
            self.last_refill = now;
        }
    }
}

/// The refill rate as bytes per nanosecond `num / den`: `1.25 * window / smoothed_rtt` (RFC 9002 §7.7:
/// `rate = N * congestion_window / smoothed_rtt`). `None` when the window or the RTT is zero.
fn rate(window: u64, smoothed_rtt: Duration) -> Option<(u128, u128)> {
    let rtt = smoothed_rtt.as_nanos();
    if window == 0 || rtt == 0 {
        return None;
    }
    Some((PACING_NUM * u128::from(window), PACING_DEN * rtt))
}

/// The bucket size: the initial window for this datagram size (RFC 9002 §7.7: "Senders SHOULD limit
/// bursts to the initial congestion window"; ten datagrams up to 1,472 bytes, fewer above: §7.2), or the
/// bytes the rate delivers in [`TIMER_SLACK`] if that is more, but no more than the window and at least
/// one datagram.
fn capacity(window: u64, mtu: u16, smoothed_rtt: Duration) -> u64 {
    let burst = super::initial_window(mtu);
    let mtu = u64::from(mtu);
    let slack = match rate(window, smoothed_rtt) {
        Some((num, den)) => {
            u64::try_from(TIMER_SLACK.as_nanos().saturating_mul(num) / den).unwrap_or(u64::MAX)
        }
        None => 0,
    };
    burst.max(slack).min(window).max(mtu)
}
