use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use proptest::prelude::*;

use super::RangeSet;

thread_local! {
    /// Ranges handed out by [`RangeSet::iter`] and [`RangeSet::overlapping`] on this thread: what a
    /// caller's walk cost, for tests of work bounds.
    pub(crate) static VISITED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Ranges handed out on this thread since the last call.
pub(crate) fn take_visited() -> u64 {
    VISITED.with(|v| v.replace(0))
}

fn ranges(set: &RangeSet) -> Vec<RangeInclusive<u64>> {
    set.iter().collect()
}

/// Checks the representation invariant: sorted, non-empty, disjoint and non-adjacent ranges.
fn check_invariant(set: &RangeSet) {
    let v = ranges(set);
    for r in &v {
        assert!(r.start() <= r.end(), "empty range in {v:?}");
    }
    for w in v.windows(2) {
        assert!(
            w[0].end().saturating_add(1) < *w[1].start(),
            "touching ranges in {v:?}"
        );
    }
    assert!(set.len() <= set.max_ranges());
}

#[test]
fn insert_merges_neighbours_and_overlaps() {
    let mut s = RangeSet::new();
    assert!(s.insert(10..=12));
    assert!(s.insert(20..=22));
    assert_eq!(ranges(&s), [10..=12, 20..=22]);
    // Adjacent on the left and right.
    assert!(s.insert_one(13));
    assert!(s.insert_one(9));
    assert_eq!(ranges(&s), [9..=13, 20..=22]);
    // Bridging the gap exactly merges everything.
    assert!(s.insert(14..=19));
    assert_eq!(ranges(&s), [9..=22]);
    // Covered: nothing new.
    assert!(!s.insert(10..=20));
    assert!(!s.insert_one(22));
    // Overlapping on both sides and swallowing several ranges.
    assert!(s.insert(30..=31));
    assert!(s.insert(40..=41));
    assert!(s.insert(5..=35));
    assert_eq!(ranges(&s), [5..=35, 40..=41]);
    // Empty range.
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 3..=2;
    assert!(!s.insert(empty));
    check_invariant(&s);
    assert_eq!(s.len(), 2);
    assert_eq!(s.min(), Some(5));
    assert_eq!(s.max(), Some(41));
}

#[test]
fn insert_at_the_extremes() {
    let mut s = RangeSet::new();
    assert!(s.insert(u64::MAX - 1..=u64::MAX));
    assert!(s.insert_one(0));
    assert!(s.insert_one(u64::MAX - 2));
    assert_eq!(ranges(&s), [0..=0, u64::MAX - 2..=u64::MAX]);
    assert!(s.insert(0..=u64::MAX));
    assert_eq!(ranges(&s), [0..=u64::MAX]);
    assert!(s.contains(u64::MAX));
    assert!(s.remove(u64::MAX..=u64::MAX));
    assert!(s.remove(0..=0));
    assert_eq!(ranges(&s), [1..=u64::MAX - 1]);
}

#[test]
fn contains_and_range_containing() {
    let mut s = RangeSet::new();
    s.insert(3..=5);
    s.insert(9..=9);
    for (v, want) in [
        (2, false),
        (3, true),
        (5, true),
        (6, false),
        (9, true),
        (10, false),
    ] {
        assert_eq!(s.contains(v), want, "{v}");
    }
    assert_eq!(s.range_containing(4), Some(3..=5));
    assert_eq!(s.range_containing(7), None);
}

#[test]
fn remove_splits_and_trims() {
    let mut s = RangeSet::new();
    s.insert(0..=20);
    s.insert(30..=40);
    assert!(s.remove(5..=7));
    assert_eq!(ranges(&s), [0..=4, 8..=20, 30..=40]);
    assert!(s.remove(15..=35));
    assert_eq!(ranges(&s), [0..=4, 8..=14, 36..=40]);
    assert!(!s.remove(21..=29));
    assert!(s.remove(0..=100));
    assert!(s.is_empty());
    check_invariant(&s);
}

#[test]
fn remove_below_trims_the_straddling_range() {
    let mut s = RangeSet::new();
    s.insert(1..=3);
    s.insert(6..=10);
    s.insert(20..=25);
    s.remove_below(8);
    assert_eq!(ranges(&s), [8..=10, 20..=25]);
    s.remove_below(11);
    assert_eq!(ranges(&s), [20..=25]);
    s.remove_below(20);
    assert_eq!(ranges(&s), [20..=25]);
    s.remove_below(100);
    assert!(s.is_empty());
    assert_eq!(s.min(), None);
    assert_eq!(s.max(), None);
}

#[test]
fn iterates_both_ways() {
    let mut s = RangeSet::new();
    for v in [7, 1, 2, 9, 4] {
        s.insert_one(v);
    }
    assert_eq!(s.iter().collect::<Vec<_>>(), [1..=2, 4..=4, 7..=7, 9..=9]);
    assert_eq!(s.iter_rev().collect::<Vec<_>>(), [9..=9, 7..=7, 4..=4, 1..=2]);
    assert_eq!(s.iter_rev().len(), 4);
    assert_eq!(s.pop_min(), Some(1..=2));
    assert_eq!(s.len(), 3);
    s.clear();
    assert!(s.is_empty());
}

#[test]
fn cap_drops_the_lowest_range() {
    let mut s = RangeSet::with_max_ranges(3);
    for v in [10, 20, 30] {
        assert_eq!(s.insert_evicting(v..=v), (true, None));
    }
    // A fourth range above drops the lowest.
    assert_eq!(s.insert_evicting(40..=40), (true, Some(10..=10)));
    assert_eq!(ranges(&s), [20..=20, 30..=30, 40..=40]);
    // A fourth range below is itself the lowest: dropped at once, nothing new kept.
    assert_eq!(s.insert_evicting(5..=6), (false, Some(5..=6)));
    assert!(!s.insert_one(1));
    assert_eq!(ranges(&s), [20..=20, 30..=30, 40..=40]);
    // Merging does not grow the count, so nothing is dropped.
    assert_eq!(s.insert_evicting(21..=29), (true, None));
    assert_eq!(ranges(&s), [20..=30, 40..=40]);
    assert_eq!(RangeSet::with_max_ranges(0).max_ranges(), 1);
}

#[test]
fn many_in_order_inserts_stay_one_range() {
    let mut s = RangeSet::with_max_ranges(4);
    for v in 0..100_000 {
        assert!(s.insert_one(v));
    }
    assert_eq!(ranges(&s), [0..=99_999]);
}

// ---------------------------------------------------------------------------------------------------
// Property test against a naive model.

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u64),
    Remove(u64, u64),
    RemoveBelow(u64),
    PopMin,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..64u64, 0..8u64).prop_map(|(lo, len)| Op::Insert(lo, lo + len)),
        1 => (0..64u64, 0..8u64).prop_map(|(lo, len)| Op::Remove(lo, lo + len)),
        1 => (0..70u64).prop_map(Op::RemoveBelow),
        1 => Just(Op::PopMin),
    ]
}

/// The maximal runs of consecutive values of `model`, ascending.
fn model_ranges(model: &BTreeSet<u64>) -> Vec<RangeInclusive<u64>> {
    let mut out: Vec<RangeInclusive<u64>> = Vec::new();
    for &v in model {
        match out.last_mut() {
            Some(r) if *r.end() + 1 == v => *r = *r.start()..=v,
            _ => out.push(v..=v),
        }
    }
    out
}

/// Runs `ops` on a set capped at `cap` ranges and on the model, comparing after every step.
fn check_against_model(ops: &[Op], cap: usize) {
    let mut set = RangeSet::with_max_ranges(cap);
    let mut model = BTreeSet::new();
    for op in ops {
        match *op {
            Op::Insert(lo, hi) => {
                let before = model.clone();
                model.extend(lo..=hi);
                let mut runs = model_ranges(&model);
                let mut evicted = None;
                if runs.len() > cap {
                    let lowest = runs.remove(0);
                    for v in lowest.clone() {
                        model.remove(&v);
                    }
                    evicted = Some(lowest);
                }
                let gained = model.difference(&before).next().is_some();
                assert_eq!(set.insert_evicting(lo..=hi), (gained, evicted), "{op:?}");
            }
            Op::Remove(lo, hi) => {
                let had = (lo..=hi).any(|v| model.contains(&v));
                for v in lo..=hi {
                    model.remove(&v);
                }
                if let Some(lowest) = model_ranges(&model)
                    .first()
                    .filter(|_| model_ranges(&model).len() > cap)
                {
                    for v in lowest.clone() {
                        model.remove(&v);
                    }
                }
                assert_eq!(set.remove(lo..=hi), had, "{op:?}");
            }
            Op::RemoveBelow(floor) => {
                model.retain(|&v| v >= floor);
                set.remove_below(floor);
            }
            Op::PopMin => {
                let want = model_ranges(&model).first().cloned();
                if let Some(r) = &want {
                    for v in r.clone() {
                        model.remove(&v);
                    }
                }
                assert_eq!(set.pop_min(), want);
            }
        }
        check_invariant(&set);
        let want = model_ranges(&model);
        assert_eq!(ranges(&set), want);
        assert_eq!(
            set.iter_rev().collect::<Vec<_>>(),
            want.iter().rev().cloned().collect::<Vec<_>>()
        );
        assert_eq!(set.len(), want.len());
        assert_eq!(set.min(), model.first().copied());
        assert_eq!(set.max(), model.last().copied());
        for v in 0..80 {
            assert_eq!(set.contains(v), model.contains(&v), "contains({v})");
        }
    }
}

proptest! {
    #[test]
    fn matches_a_naive_model(ops in prop::collection::vec(op(), 0..60)) {
        check_against_model(&ops, usize::MAX);
    }

    #[test]
    fn matches_a_naive_model_with_a_cap(ops in prop::collection::vec(op(), 0..60), cap in 1..5usize) {
        check_against_model(&ops, cap);
    }
}

proptest! {
    /// `overlapping` returns exactly the ranges holding a value of `lo..=hi`.
    #[test]
    fn overlapping_is_the_ranges_meeting_the_interval(
        values in proptest::collection::vec(0u64..300, 0..120),
        lo in 0u64..320,
        len in 0u64..80,
        reversed in any::<bool>(),
    ) {
        let mut set = RangeSet::new();
        for v in values {
            set.insert_one(v);
        }
        let hi = if reversed { lo.saturating_sub(len + 1) } else { lo + len };
        let expected: Vec<_> = set
            .iter()
            .filter(|r| lo <= hi && *r.start() <= hi && *r.end() >= lo)
            .collect();
        let got: Vec<_> = set.overlapping(lo, hi).collect();
        prop_assert_eq!(got, expected);
    }
}
