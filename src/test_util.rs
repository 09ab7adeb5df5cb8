//! Helpers shared by the unit tests.

use std::sync::OnceLock;
use std::time::Instant;

/// The origin of every unit test's virtual clock: the only clock read in the crate's tests, made once;
/// tests then work with `epoch() + Duration`, so their timing is deterministic.
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}
