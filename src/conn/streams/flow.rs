//! Receive-side flow-control credit with window auto-tuning, shared by streams and the connection.
//!
//! # Policy (RFC 9000 §4.2 leaves it to the implementation)
//!
//! A receiver keeps a *window*: the limit it advertises is the number of bytes the application has
//! consumed plus the window. A new limit is sent once the credit left to the peer (limit minus consumed)
//! falls below half the window, so updates go out about twice per window and the peer is not blocked
//! while they travel (RFC 9000 §4.2: "send ... before the sender is blocked"). The connection's window
//! also renews when the peer runs short of credit, whatever was consumed (see
//! [`RecvWindow::wants_update_received`]): data held unread on some streams must not stop the others.
//!
//! Auto-tuning: when a new limit is issued less than two round trips after the previous one, the peer
//! consumed half a window within 2 RTTs, so the window limits throughput; the window then doubles, up
//! to the configured maximum. The window never shrinks, and an advertised limit never decreases
//! (RFC 9000 §4.1: "A receiver MUST NOT renege on an advertisement").

use std::time::{Duration, Instant};

/// The credit a receiver grants for one stream or for the whole connection.
#[derive(Debug, Clone)]
pub(super) struct RecvWindow {
    /// The limit advertised last: the peer may send bytes below this offset (or this total).
    max: u64,
    /// How far past the consumed count a new limit reaches.
    window: u64,
    /// The largest the window may grow to.
    max_window: u64,
    /// Bytes consumed: read by the application, or discarded (stopped or reset streams).
    consumed: u64,
    /// When the limit was last raised for consumption (the updates auto-tuning looks at).
    last_update: Option<Instant>,
    /// Whether the limit was ever raised.
    raised: bool,
}

impl RecvWindow {
    /// A window of `window` bytes (also the initial limit) growing up to `max_window`.
    pub(super) fn new(window: u64, max_window: u64) -> Self {
        Self {
            max: window,
            window,
            max_window: max_window.max(window),
            consumed: 0,
            last_update: None,
            raised: false,
        }
    }

    /// The limit advertised last.
    pub(super) fn max(&self) -> u64 {
        self.max
    }

    /// Whether the limit was never raised: the peer has it from the transport parameters only.
    pub(super) fn never_raised(&self) -> bool {
        !self.raised
    }

    /// The current window size.
    #[cfg(test)]
    pub(super) fn window(&self) -> u64 {
        self.window
    }

    /// Bytes consumed so far.
    #[cfg(test)]
    pub(super) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Records `n` more bytes consumed.
    pub(super) fn consume(&mut self, n: u64) {
        self.consumed = self.consumed.saturating_add(n);
    }

    /// Whether the credit left to the peer fell below half the window, so a new limit should be sent.
    /// Half is rounded up, so that a window of one byte is renewed too.
    pub(super) fn wants_update(&self) -> bool {
        self.max.saturating_sub(self.consumed) < self.window.div_ceil(2)
    }

    /// [`wants_update`](Self::wants_update) for the connection's window, which also sees `received`, the
    /// bytes the peer has sent in all. While a quarter of the window or more has arrived unread, a new
    /// limit is also due when the peer is short of credit (less than half the window left) and what was
    /// consumed since the last limit allows a raise of an eighth of the window, or any raise once the
    /// peer has used all of its credit. Without this, data that arrived on streams the application does
    /// not read yet holds credit the first rule waits for: with half of the window held so, reading the
    /// other streams can never consume enough, and the connection stalls for good (RFC 9000 §4.2:
    /// updates go before the sender is blocked). An application that reads as data comes never gets
    /// there, and its updates stay those of the first rule, which auto-tuning follows.
    pub(super) fn wants_update_received(&self, received: u64) -> bool {
        if self.wants_update() {
            return true;
        }
        let unread = received.saturating_sub(self.consumed);
        let raise = self.consumed.saturating_add(self.window).saturating_sub(self.max);
        unread >= self.window / 4
            && raise > 0
            && self.max.saturating_sub(received) < self.window.div_ceil(2)
            && (raise >= self.window / 8 || received >= self.max)
    }

    /// Raises the limit to consumed + window (after auto-tuning the window, see the module docs) and
    /// returns the new limit. Never lowers the limit.
    pub(super) fn update(&mut self, now: Instant, rtt: Duration) -> u64 {
        if let Some(last) = self.last_update {
            if now.saturating_duration_since(last) < rtt.saturating_mul(2) {
                self.window = self.window.saturating_mul(2).min(self.max_window);
            }
        }
        self.last_update = Some(now);
        self.raise()
    }

    /// [`update`](Self::update) when due by [`wants_update`](Self::wants_update), or else (the peer short of
    /// credit while data waits unread, [`wants_update_received`](Self::wants_update_received)) a raise
    /// without auto-tuning: such updates do not mean the application consumed half a window in two
    /// round trips, and a few small reads while the peer is blocked must not double the window each.
    pub(super) fn update_received(&mut self, now: Instant, rtt: Duration) -> u64 {
        if self.wants_update() {
            self.update(now, rtt)
        } else {
            self.raise()
        }
    }

    /// Raises the limit to consumed + window.
    fn raise(&mut self) -> u64 {
        self.raised = true;
        // RFC 9000 §19.9/§19.10: limits are below 2^62.
        let target = self
            .consumed
            .saturating_add(self.window)
            .min(crate::wire::VarInt::MAX.into_inner());
        self.max = self.max.max(target);
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_at_half_window_and_growth_capped() {
        let now = crate::test_util::epoch();
        let rtt = Duration::from_millis(10);
        let mut w = RecvWindow::new(100, 400);
        w.consume(40);
        assert!(!w.wants_update());
        w.consume(20);
        assert!(w.wants_update());
        assert_eq!(w.update(now, rtt), 160);
        // Slow consumption: no growth.
        w.consume(60);
        assert_eq!(w.update(now + Duration::from_secs(1), rtt), 220);
        assert_eq!(w.window(), 100);
        // Fast consumption: doubling up to the cap.
        let t = now + Duration::from_secs(1);
        for i in 1..10 {
            w.consume(w.window());
            w.update(t + Duration::from_millis(i), rtt);
        }
        assert_eq!(w.window(), 400);
        assert_eq!(w.max(), w.consumed() + 400);
    }
}
