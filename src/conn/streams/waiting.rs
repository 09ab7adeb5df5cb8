//! Streams waiting for the peer's connection credit (RFC 9000 §4.1: MAX_DATA).
//!
//! A stream whose new data the connection limit holds back is listed once, under its priority, in the
//! order streams were found blocked. When credit comes, streams are woken from the highest priority
//! down, in that order, only while the credit covers what the woken ones have to send (up to about a
//! packet each): a peer raising MAX_DATA a byte at a time wakes one stream per raise, not every stream
//! that waits (each of which would be visited by the scheduler only to be found blocked again). The
//! work is in proportion to the credit granted, that is to the data it lets go.
//!
//! A stream forgotten while listed (reset and acknowledged, say), or whose sending half is reset while
//! listed (it sends nothing more, though it stays while the peer's half is open), is not searched for:
//! its entry is passed over when reached, and the lists are compacted once such entries outnumber the
//! live ones, so that the work stays in proportion to the streams listed.

use std::collections::{BTreeMap, VecDeque};

use crate::wire::frame::StreamId;

/// Stale entries tolerated beyond the live ones before compacting.
const STALE_SLACK: usize = 16;

/// The streams waiting for connection credit.
#[derive(Debug, Default)]
pub(super) struct CreditWaiters {
    /// Per priority (highest last), in the order the streams were listed.
    by_priority: BTreeMap<i32, VecDeque<StreamId>>,
    /// Entries in `by_priority`, live or stale.
    entries: usize,
    /// Entries of streams still listed (not forgotten).
    live: usize,
}

impl CreditWaiters {
    /// Lists stream `id` at `priority`; the caller lists a stream at most once until it is woken.
    pub(super) fn push(&mut self, priority: i32, id: StreamId) {
        self.by_priority.entry(priority).or_default().push_back(id);
        self.entries += 1;
        self.live += 1;
    }

    /// The next stream to wake: the first listed of the highest priority (perhaps a stale entry, which
    /// the caller does not find among its streams).
    pub(super) fn pop(&mut self) -> Option<StreamId> {
        let mut last = self.by_priority.last_entry()?;
        let id = last.get_mut().pop_front();
        if last.get().is_empty() {
            last.remove();
        }
        let id = id?;
        self.entries -= 1;
        visit();
        Some(id)
    }

    /// A live stream popped by [`pop`](Self::pop) was found and woken.
    pub(super) fn woken(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// A listed stream was forgotten, or reset: its entry becomes stale. `exists` tells which streams
    /// are still listed, for compacting.
    pub(super) fn forgotten(&mut self, exists: impl Fn(StreamId) -> bool) {
        self.live = self.live.saturating_sub(1);
        if self.entries - self.live > self.live + STALE_SLACK {
            self.by_priority.retain(|_, queue| {
                queue.retain(|&id| {
                    visit();
                    exists(id)
                });
                !queue.is_empty()
            });
            self.entries = self.by_priority.values().map(VecDeque::len).sum();
        }
    }

    /// Moves listed stream `id` from `old` to `new` priority, at the back (the application changed the
    /// stream's priority: linear in the streams listed at `old`).
    pub(super) fn reprioritize(&mut self, id: StreamId, old: i32, new: i32) {
        let Some(queue) = self.by_priority.get_mut(&old) else {
            return;
        };
        let before = queue.len();
        queue.retain(|&listed| listed != id);
        let removed = before - queue.len();
        if queue.is_empty() {
            self.by_priority.remove(&old);
        }
        if removed > 0 {
            self.by_priority.entry(new).or_default().push_back(id);
        }
    }

    /// Streams listed and not woken since.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Entries kept, stale ones included.
    #[cfg(test)]
    pub(super) fn entries(&self) -> usize {
        self.entries
    }

    /// The entries, highest priority first (stale ones included).
    pub(super) fn iter(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.by_priority.values().rev().flatten().copied()
    }
}

#[cfg(test)]
thread_local! {
    /// Streams (or their entries) visited by the walks that a peer's frames can repeat, on this thread:
    /// for tests of work bounds.
    static VISITED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one stream visited (in tests; nothing otherwise).
#[inline(always)]
pub(super) fn visit() {
    #[cfg(test)]
    VISITED.with(|v| v.set(v.get() + 1));
}

/// Streams visited on this thread since the last call.
#[cfg(test)]
pub(super) fn take_visited() -> u64 {
    VISITED.with(|v| v.replace(0))
}
