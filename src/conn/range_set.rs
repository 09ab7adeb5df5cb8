//! A set of `u64` values kept as disjoint inclusive ranges.
//!
//! Used for received packet numbers (RFC 9000 §13.2.3) and, later, for stream reassembly bookkeeping.
//! The representation is a `BTreeMap` from range start to range end: every operation is `O(log n)` in
//! the number of ranges (plus the ranges it merges or removes, each of which was inserted once), and no
//! operation walks the values inside a range.

// The connection wires these up next; until then some items have no caller outside the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// A set of `u64` values stored as disjoint, non-adjacent inclusive ranges.
///
/// Optionally capped at a number of ranges: an insertion that would exceed the cap drops the lowest
/// range (RFC 9000 §13.2.3: "If it does not \[fit\], then older ranges (those with the smallest packet
/// numbers) are omitted").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// Range start to range end (inclusive). Invariant: for consecutive entries `(s1, e1)`, `(s2, e2)`,
    /// `s1 <= e1` and `e1 + 1 < s2` (disjoint and not adjacent).
    map: BTreeMap<u64, u64>,
    /// The most ranges kept, at least 1.
    max_ranges: usize,
}

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeSet {
    /// An empty set without a cap on the number of ranges.
    pub(crate) const fn new() -> Self {
        Self {
            map: BTreeMap::new(),
            max_ranges: usize::MAX,
        }
    }

    /// An empty set keeping at most `max_ranges` ranges (a cap of 0 is treated as 1); inserting beyond
    /// the cap drops the lowest range.
    pub(crate) const fn with_max_ranges(max_ranges: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            max_ranges: if max_ranges == 0 { 1 } else { max_ranges },
        }
    }

    /// The cap on the number of ranges (`usize::MAX` when uncapped).
    pub(crate) fn max_ranges(&self) -> usize {
        self.max_ranges
    }

    /// The number of ranges (not of values).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set holds no value.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The smallest value in the set.
    pub(crate) fn min(&self) -> Option<u64> {
        self.map.first_key_value().map(|(&start, _)| start)
    }

    /// The largest value in the set.
    pub(crate) fn max(&self) -> Option<u64> {
        self.map.last_key_value().map(|(_, &end)| end)
    }

    /// Whether `value` is in the set.
    pub(crate) fn contains(&self, value: u64) -> bool {
        self.range_containing(value).is_some()
    }

    /// The range of the set that contains `value`, if any.
    pub(crate) fn range_containing(&self, value: u64) -> Option<RangeInclusive<u64>> {
        // Fast path for what nearly every query is (a new packet number, a retransmission check): at or
        // above the highest range, answered from it without a range search.
        let (&last_start, &last_end) = self.map.last_key_value()?;
        if value > last_end {
            return None;
        }
        if value >= last_start {
            return Some(last_start..=last_end);
        }
        let (&start, &end) = self.map.range(..=value).next_back()?;
        (end >= value).then_some(start..=end)
    }

    /// Adds `value`; returns whether it was new (and kept: see [`RangeSet::insert`]).
    pub(crate) fn insert_one(&mut self, value: u64) -> bool {
        self.insert(value..=value)
    }

    /// Adds every value of `range`, merging with overlapping and adjacent ranges.
    ///
    /// Returns whether the set gained a value that it kept: `false` when `range` is empty, was already
    /// covered, or was itself dropped at once by the range cap as the lowest range.
    pub(crate) fn insert(&mut self, range: RangeInclusive<u64>) -> bool {
        self.insert_evicting(range).0
    }

    /// Like [`RangeSet::insert`], also returning the range the cap dropped, if any (which may be
    /// `range` itself when it became the lowest of too many ranges).
    pub(crate) fn insert_evicting(
        &mut self,
        range: RangeInclusive<u64>,
    ) -> (bool, Option<RangeInclusive<u64>>) {
        let (mut lo, mut hi) = (*range.start(), *range.end());
        if lo > hi {
            return (false, None);
        }
        // Fast paths for what nearly every insert is (packet numbers, acknowledged data): at or after the
        // highest range, one lookup instead of the general walk below.
        if let Some(mut last) = self.map.last_entry() {
            let (start, end) = (*last.key(), *last.get());
            if lo >= start && lo <= end.saturating_add(1) {
                // Overlapping or extending the highest range.
                if hi <= end {
                    return (false, None);
                }
                *last.get_mut() = hi;
                return (true, None);
            }
            if lo > end.saturating_add(1) {
                // Above every range, not adjacent: a new highest range.
                self.map.insert(lo, hi);
                return self.evict_over_cap(lo);
            }
        }
        // Already covered by one range? Ranges are not adjacent, so a range spanning two of them also
        // covers a value in the gap between them: only a single covering range means nothing is new.
        if self
            .map
            .range(..=lo)
            .next_back()
            .is_some_and(|(_, &end)| end >= hi)
        {
            return (false, None);
        }
        // Absorb every range that overlaps or touches `lo..=hi`: those with start <= hi + 1 and
        // end + 1 >= lo. Sorted disjoint ranges have sorted ends, so they are consecutive, found from the
        // highest start downwards. In-order inserts touch at most the last range.
        while let Some((&start, &end)) = self.map.range(..=hi.saturating_add(1)).next_back() {
            if end.saturating_add(1) < lo {
                break;
            }
            self.map.remove(&start);
            lo = lo.min(start);
            hi = hi.max(end);
        }
        self.map.insert(lo, hi);
        self.evict_over_cap(lo)
    }

    /// After inserting a range starting at `lo`: drops the lowest range if over the cap, and says whether
    /// the inserted range was kept and what was dropped.
    fn evict_over_cap(&mut self, lo: u64) -> (bool, Option<RangeInclusive<u64>>) {
        if self.map.len() > self.max_ranges {
            // RFC 9000 §13.2.3: drop the oldest (lowest) range.
            if let Some((start, end)) = self.map.pop_first() {
                return (start != lo, Some(start..=end));
            }
        }
        (true, None)
    }

    /// Removes every value of `range`; returns whether anything was removed.
    ///
    /// Removing from the middle of a range splits it; should that exceed the range cap, the lowest
    /// range is dropped as on insertion.
    pub(crate) fn remove(&mut self, range: RangeInclusive<u64>) -> bool {
        let (lo, hi) = (*range.start(), *range.end());
        if lo > hi {
            return false;
        }
        let mut removed = false;
        // Ranges overlapping `lo..=hi` have start <= hi and end >= lo; walk them from the highest start.
        while let Some((&start, &end)) = self.map.range(..=hi).next_back() {
            if end < lo {
                break;
            }
            removed = true;
            self.map.remove(&start);
            if end > hi {
                // `end > hi` so `hi + 1` does not overflow.
                self.map.insert(hi + 1, end);
            }
            if start < lo {
                // The left remainder ends below `lo`, so the next turn of the loop stops on it.
                self.map.insert(start, lo - 1);
            }
        }
        if self.map.len() > self.max_ranges {
            // Only a split adds a range, and only one.
            self.map.pop_first();
        }
        removed
    }

    /// Removes every value below `floor`.
    pub(crate) fn remove_below(&mut self, floor: u64) {
        // From the front, without `split_off`, which allocates a new tree each call (this runs for every
        // ACK of an ACK, and usually removes one or two ranges).
        while let Some(first) = self.map.first_entry() {
            let (start, end) = (*first.key(), *first.get());
            if start >= floor {
                break;
            }
            first.remove();
            if end >= floor {
                self.map.insert(floor, end);
                break;
            }
        }
    }

    /// Removes and returns the lowest range.
    pub(crate) fn pop_min(&mut self) -> Option<RangeInclusive<u64>> {
        self.map.pop_first().map(|(start, end)| start..=end)
    }

    /// Removes every value.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    /// The ranges that hold a value in `lo..=hi`, in ascending order (none when `lo > hi`): `O(log n)`
    /// plus the ranges returned, where [`iter`](Self::iter) from the lowest would pass every range below.
    pub(crate) fn overlapping(&self, lo: u64, hi: u64) -> impl Iterator<Item = RangeInclusive<u64>> + '_ {
        let ranges = (lo <= hi).then(|| {
            // The range starting below `lo` may reach into it; the others start inside.
            let first = self.map.range(..lo).next_back().filter(|&(_, &end)| end >= lo);
            first.into_iter().chain(self.map.range(lo..=hi))
        });
        ranges.into_iter().flatten().map(|(&start, &end)| {
            #[cfg(test)]
            tests::VISITED.with(|v| v.set(v.get() + 1));
            start..=end
        })
    }

    /// The ranges in ascending order.
    pub(crate) fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = RangeInclusive<u64>> + ExactSizeIterator + Clone + '_ {
        self.map.iter().map(|(&start, &end)| {
            #[cfg(test)]
            tests::VISITED.with(|v| v.set(v.get() + 1));
            start..=end
        })
    }

    /// The ranges from the highest to the lowest.
    pub(crate) fn iter_rev(
        &self,
    ) -> impl DoubleEndedIterator<Item = RangeInclusive<u64>> + ExactSizeIterator + Clone + '_ {
        self.iter().rev()
    }
}

#[cfg(test)]
pub(crate) mod tests;
