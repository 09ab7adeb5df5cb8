//! Stateless reset (RFC 9000 §10.3): tokens derived from a static key, the packets that carry them, and
//! the rate limit on sending them.

use std::time::{Duration, Instant};

use ring::hmac;

use crate::rng::Rng;
use crate::wire::{ConnectionId, ResetToken};

/// RFC 9000 §10.3: 5 unpredictable bytes (less the two fixed bits) and the 16-byte token.
pub(crate) const MIN_RESET_SIZE: usize = 21;
/// Triggering packets longer than this get a reset of this size (RFC 9000 §10.3: up to 43 bytes, a reset
/// one byte shorter than the packet; a reset under 41 bytes may stand out to observers).
const MAX_RESET_SIZE: usize = 43;

/// Derives the stateless reset token of each connection ID with HMAC-SHA256 under a static key
/// (RFC 9000 §10.3.2), so every endpoint that shares the key makes the same tokens and can reset
/// connections it lost the state of, and nobody without the key can.
pub(crate) struct ResetKey(hmac::Key);

impl ResetKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The token of `cid`: the first 16 bytes of HMAC-SHA256(key, cid).
    pub(crate) fn token(&self, cid: &[u8]) -> ResetToken {
        let tag = hmac::sign(&self.0, cid);
        let mut token = [0u8; ResetToken::LEN];
        for (t, b) in token.iter_mut().zip(tag.as_ref()) {
            *t = *b;
        }
        ResetToken(token)
    }
}

/// A token bucket: at most `per_second` resets a second, in bursts of at most that many.
#[derive(Debug)]
pub(crate) struct RateLimit {
    per_second: u32,
    available: u32,
    last_refill: Option<Instant>,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            available: per_second,
            last_refill: None,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let mut last = *self.last_refill.get_or_insert(now);
        if crate::clock::stepped_back(now, last) {
            // A clock that stepped back far: count from `now`, or nothing is earned until it catches up
            // (a short step is waited out: see `crate::clock`).
            last = now;
            self.last_refill = Some(now);
        }
        let elapsed = now.saturating_duration_since(last);
        let interval = Duration::from_secs(1) / self.per_second;
        let earned = u32::try_from(elapsed.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u32::MAX);
        if earned > 0 {
            let full = self.available.saturating_add(earned) >= self.per_second;
            self.available = self.available.saturating_add(earned).min(self.per_second);
            // The part of an interval not yet earned counts toward the next token (dropping it slowed
            // the rate to one per interval and a call's wait); a full bucket banks nothing.
            self.last_refill = Some(if full {
                now
            } else {
                interval
                    .checked_mul(earned)
                    .and_then(|d| last.checked_add(d))
                    .unwrap_or(now)
            });
        }
        if self.available == 0 {
            return false;
        }
        self.available -= 1;
        true
    }
}

/// The size of a stateless reset answering a packet of `trigger_len` bytes: shorter than it (RFC 9000
/// §10.3.3), and `None` when that leaves less than a reset needs to look like a short-header packet.
pub(crate) fn reset_size(trigger_len: usize) -> Option<usize> {
    let size = trigger_len.checked_sub(1)?.min(MAX_RESET_SIZE);
    (size >= MIN_RESET_SIZE).then_some(size)
}

/// A stateless reset answering a packet of `trigger_len` bytes for connection ID `cid`, or `None` when
/// the packet is too small to answer with a smaller one (RFC 9000 §10.3.3: every reset is smaller than
/// the packet that triggered it, so two endpoints can never keep resetting each other).
pub(crate) fn stateless_reset(
    key: &ResetKey,
    rng: &mut Rng,
    cid: &ConnectionId,
    trigger_len: usize,
) -> Option<Vec<u8>> {
    let size = reset_size(trigger_len)?;
    let mut packet = vec![0u8; size];
    let (random, token) = packet.split_at_mut(size - ResetToken::LEN);
    rng.fill(random);
    // A short header's first byte: header form 0, fixed bit 1, the rest random (RFC 9000 §10.3).
    if let Some(first) = random.first_mut() {
        *first = (*first & 0x3f) | 0x40;
    }
    token.copy_from_slice(&key.token(cid).0);
    Some(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_key_and_cid_only() {
        let a = ResetKey::new(&[1; 32]);
        let b = ResetKey::new(&[1; 32]);
        let c = ResetKey::new(&[2; 32]);
        assert_eq!(a.token(b"abcdefgh"), b.token(b"abcdefgh"));
        assert_ne!(a.token(b"abcdefgh"), a.token(b"abcdefgi"));
        assert_ne!(a.token(b"abcdefgh"), c.token(b"abcdefgh"));
    }

    #[test]
    fn a_reset_is_always_smaller_than_its_trigger() {
        let key = ResetKey::new(&[7; 32]);
        let mut rng = Rng::from_seed(1);
        let cid = ConnectionId::new(&[9; 8]).unwrap_or_default();
        for trigger in 0..1500 {
            match stateless_reset(&key, &mut rng, &cid, trigger) {
                Some(p) => {
                    assert!(p.len() < trigger, "{} for {trigger}", p.len());
                    assert!(p.len() >= MIN_RESET_SIZE);
                    assert_eq!(p[0] & 0xc0, 0x40, "a short header");
                    assert!(key.token(&cid).ct_eq(&p[p.len() - 16..]));
                }
                None => assert!(trigger <= MIN_RESET_SIZE),
            }
        }
        // A loop of resets between two endpoints shrinks by at least a byte each time, then stops.
        let mut len = 1500;
        let mut rounds = 0;
        while let Some(p) = stateless_reset(&key, &mut rng, &cid, len) {
            len = p.len();
            rounds += 1;
        }
        assert!(rounds <= MAX_RESET_SIZE - MIN_RESET_SIZE + 1);
    }

    #[test]
    fn the_rate_limit_refills_with_time() {
        let t0 = crate::test_util::epoch();
        let mut limit = RateLimit::new(10);
        let allowed = (0..100).filter(|_| limit.allow(t0)).count();
        assert_eq!(allowed, 10);
        assert!(!limit.allow(t0 + Duration::from_millis(50)));
        assert!(limit.allow(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| limit.allow(later)).count(), 10);
        assert_eq!((0..100).filter(|_| RateLimit::new(0).allow(later)).count(), 0);
    }

    /// Asked more often than it refills, the limit gives its full rate: at 10 a second, asked every
    /// 60 ms for 60 s, 10 + 600 (510 before, when each refill dropped the 20 ms past its interval).
    #[test]
    fn the_rate_limit_keeps_the_part_of_an_interval_not_yet_earned() {
        let t0 = crate::test_util::epoch();
        let mut limit = RateLimit::new(10);
        let allowed = (0..=1000u64)
            .filter(|k| limit.allow(t0 + Duration::from_millis(60 * k)))
            .count();
        assert_eq!(allowed, 10 + 600);
    }

    /// A clock that stepped back must not withhold every reset until it has caught up with the last
    /// refill: one second after the step, a second's worth goes out again.
    #[test]
    fn the_rate_limit_refills_after_the_clock_steps_back() {
        let t0 = crate::test_util::epoch() + Duration::from_secs(120);
        let mut limit = RateLimit::new(10);
        assert_eq!((0..100).filter(|_| limit.allow(t0)).count(), 10);
        let back = t0 - Duration::from_secs(60);
        assert!(!limit.allow(back));
        let second_later = back + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| limit.allow(second_later)).count(), 10);
    }

    /// A clock that jitters back does not let the limit earn the stepped-over time again and again: at
    /// 10 a second, one second of real time allows at most 10 more than the first burst (509 when every
    /// step back restarted the count; found in review).
    #[test]
    fn a_jittering_clock_does_not_raise_the_rate() {
        let t0 = crate::test_util::epoch() + Duration::from_secs(120);
        let mut limit = RateLimit::new(10);
        let mut allowed = (0..100).filter(|_| limit.allow(t0)).count();
        assert_eq!(allowed, 10);
        // One unroutable packet a millisecond for a second; every other clock read is 150 ms behind.
        for k in 1..=1000u64 {
            let real = t0 + Duration::from_millis(k);
            let now = if k % 2 == 0 {
                real - Duration::from_millis(150)
            } else {
                real
            };
            allowed += usize::from(limit.allow(now));
        }
        assert!(
            allowed <= 10 + 10 + 1,
            "{allowed} resets allowed in a second at 10 a second"
        );
    }
}
