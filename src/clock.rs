//! The caller's clock seen going backwards.
//!
//! Time comes only from the `now` the caller passes. `Instant` is monotonic, but a caller that makes
//! its instants from the wall clock, or a simulation, can pass a `now` earlier than one before it. A
//! rate limiter that remembers when it last earned would then earn nothing until the clock caught up
//! again; one that simply restarted from the earlier time would earn the same stretch twice each time a
//! jittering clock stepped back and forth. So small steps back are waited out, and only a step back of
//! more than [`STEP_BACK`] restarts the count.

use std::time::{Duration, Instant};

/// A step back of more than this restarts a rate limiter's count; a shorter one holds it at most this
/// long.
pub(crate) const STEP_BACK: Duration = Duration::from_secs(1);

/// Whether `now` is more than [`STEP_BACK`] before `last`, the instant a count was kept from; the usual
/// answer costs one comparison.
#[inline]
pub(crate) fn stepped_back(now: Instant, last: Instant) -> bool {
    now < last && now.checked_add(STEP_BACK).is_some_and(|t| t < last)
}
