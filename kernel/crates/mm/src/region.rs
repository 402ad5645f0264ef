//! Sets of physical address ranges, kept sorted and disjoint, with the
//! operations boot-time memory management needs: add, remove, find a fit.
//!
//! The set has a fixed capacity and never allocates, because it is used
//! before any heap exists.

use arrayvec::ArrayVec;
use core::fmt;

/// A half-open physical range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the ranges share a byte.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` is entirely inside `self`.
    pub fn contains(&self, other: &Range) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The common part, if any.
    pub fn intersection(&self, other: &Range) -> Option<Range> {
        let range = Range::new(self.start.max(other.start), self.end.min(other.end));
        (!range.is_empty()).then_some(range)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}-{:#x})", self.start, self.end)
    }
}

/// The set is full: the operation would need more ranges than it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityExceeded;

impl fmt::Display for CapacityExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many memory ranges")
    }
}

/// A set of disjoint, non-adjacent, sorted ranges with room for `N` ranges.
#[derive(Debug, Clone, Default)]
pub struct RegionSet<const N: usize = 256> {
    ranges: ArrayVec<Range, N>,
}

impl<const N: usize> RegionSet<N> {
    /// An empty set.
    pub fn new() -> Self {
        Self { ranges: ArrayVec::new() }
    }

    /// The ranges, sorted by address.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Total bytes covered.
    pub fn total_bytes(&self) -> u64 {
        self.ranges.iter().map(Range::size_bytes).sum()
    }

    /// Whether `range` is entirely covered by the set.
    pub fn contains(&self, range: &Range) -> bool {
        range.is_empty() || self.ranges.iter().any(|member| member.contains(range))
    }

    /// Whether any byte of `range` is in the set.
    pub fn overlaps(&self, range: &Range) -> bool {
        self.ranges.iter().any(|member| member.overlaps(range))
    }

    /// Adds `range`, merging with neighbours it overlaps or touches.
    pub fn add(&mut self, range: Range) -> Result<(), CapacityExceeded> {
        if range.is_empty() {
            return Ok(());
        }
        let mut merged = range;
        // First member that ends at or after the new start (could merge).
        let first = self.ranges.partition_point(|member| member.end < range.start);
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].start <= merged.end {
            merged.start = merged.start.min(self.ranges[last].start);
            merged.end = merged.end.max(self.ranges[last].end);
            last += 1;
        }
        if first == last {
            if self.ranges.is_full() {
                return Err(CapacityExceeded);
            }
            self.ranges.insert(first, merged);
        } else {
            self.ranges[first] = merged;
            self.ranges.drain(first + 1..last);
        }
        Ok(())
    }

    /// Removes every byte of `range` from the set.
    pub fn remove(&mut self, range: Range) -> Result<(), CapacityExceeded> {
        if range.is_empty() {
            return Ok(());
        }
        let mut index = self.ranges.partition_point(|member| member.end <= range.start);
        while index < self.ranges.len() && self.ranges[index].start < range.end {
            let member = self.ranges[index];
            let before = Range::new(member.start, range.start.min(member.end));
            let after = Range::new(range.end.max(member.start), member.end);
            match (before.is_empty(), after.is_empty()) {
                (true, true) => {
                    self.ranges.remove(index);
                }
                (false, true) => {
                    self.ranges[index] = before;
                    index += 1;
                }
                (true, false) => {
                    self.ranges[index] = after;
                    index += 1;
                }
                (false, false) => {
                    if self.ranges.is_full() {
                        return Err(CapacityExceeded);
                    }
                    self.ranges[index] = before;
                    self.ranges.insert(index + 1, after);
                    index += 2;
                }
            }
        }
        Ok(())
    }

    /// Removes every range of `other`.
    pub fn remove_all<const M: usize>(&mut self, other: &RegionSet<M>) -> Result<(), CapacityExceeded> {
        for range in other.ranges() {
            self.remove(*range)?;
        }
        Ok(())
    }

    /// Keeps only the parts inside `window`.
    pub fn clip(&mut self, window: Range) {
        self.ranges.retain(|member| member.overlaps(&window));
        for member in self.ranges.iter_mut() {
            member.start = member.start.max(window.start);
            member.end = member.end.min(window.end);
        }
    }

    /// The highest `size_bytes`-sized, `alignment`-aligned range that lies
    /// inside the set and inside `window` (top-down, as Linux's memblock
    /// allocates), or `None` when nothing fits.
    pub fn find_fit_top_down(&self, size_bytes: u64, alignment: u64, window: Range) -> Option<Range> {
        if size_bytes == 0 {
            return None;
        }
        self.ranges.iter().rev().find_map(|member| {
            let usable = member.intersection(&window)?;
            let start = crate::align_down(usable.end.checked_sub(size_bytes)?, alignment);
            (start >= usable.start).then(|| Range::new(start, start + size_bytes))
        })
    }

    /// The largest `alignment`-aligned range inside the set and `window`,
    /// rounded down to a multiple of `alignment`.
    pub fn largest_aligned(&self, alignment: u64, window: Range) -> Option<Range> {
        self.ranges
            .iter()
            .filter_map(|member| {
                let usable = member.intersection(&window)?;
                let start = crate::align_up(usable.start, alignment)?;
                let end = crate::align_down(usable.end, alignment);
                (end > start).then(|| Range::new(start, end))
            })
            .max_by_key(Range::size_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ranges: &[(u64, u64)]) -> RegionSet<16> {
        let mut set = RegionSet::new();
        for &(start, end) in ranges {
            set.add(Range::new(start, end)).unwrap();
        }
        set
    }

    fn pairs(set: &RegionSet<16>) -> Vec<(u64, u64)> {
        set.ranges().iter().map(|range| (range.start, range.end)).collect()
    }

    #[test]
    fn add_merges_overlapping_and_touching_ranges() {
        let set = set(&[(0x3000, 0x4000), (0x1000, 0x2000), (0x2000, 0x2800), (0x3800, 0x5000), (0x9000, 0x9000)]);
        assert_eq!(pairs(&set), [(0x1000, 0x2800), (0x3000, 0x5000)]);
        assert_eq!(set.total_bytes(), 0x1800 + 0x2000);
    }

    #[test]
    fn add_bridging_range_swallows_several_members() {
        let mut set = set(&[(0, 10), (20, 30), (40, 50), (60, 70)]);
        set.add(Range::new(5, 45)).unwrap();
        assert_eq!(pairs(&set), [(0, 50), (60, 70)]);
    }

    #[test]
    fn remove_splits_trims_and_deletes() {
        let mut set = set(&[(0, 100), (200, 300)]);
        set.remove(Range::new(10, 20)).unwrap();
        assert_eq!(pairs(&set), [(0, 10), (20, 100), (200, 300)]);
        set.remove(Range::new(90, 250)).unwrap();
        assert_eq!(pairs(&set), [(0, 10), (20, 90), (250, 300)]);
        set.remove(Range::new(0, 1000)).unwrap();
        assert!(set.ranges().is_empty());
    }

    #[test]
    fn capacity_is_reported_not_overflowed() {
        let mut set: RegionSet<2> = RegionSet::new();
        set.add(Range::new(0, 10)).unwrap();
        set.add(Range::new(20, 30)).unwrap();
        assert_eq!(set.add(Range::new(40, 50)), Err(CapacityExceeded));
        assert_eq!(set.remove(Range::new(2, 4)), Err(CapacityExceeded));
        // A failed operation changes nothing.
        assert_eq!(set.ranges(), [Range::new(0, 10), Range::new(20, 30)]);
    }

    #[test]
    fn top_down_fit_respects_alignment_and_window() {
        let set = set(&[(0x10_0000, 0x80_0000), (0x1_0000_0000, 0x1_1000_0000)]);
        let below_4g = Range::new(0, 0x1_0000_0000);
        assert_eq!(set.find_fit_top_down(0x20_0000, 0x20_0000, below_4g), Some(Range::new(0x60_0000, 0x80_0000)));
        assert_eq!(
            set.find_fit_top_down(0x20_0000, 0x20_0000, Range::new(0, u64::MAX)),
            Some(Range::new(0x1_0fe0_0000, 0x1_1000_0000))
        );
        // Too big for the low range, and the window excludes the high one.
        assert_eq!(set.find_fit_top_down(0x80_0000, 0x20_0000, below_4g), None);
        assert_eq!(set.largest_aligned(0x20_0000, below_4g), Some(Range::new(0x20_0000, 0x80_0000)));
    }

    #[test]
    fn clip_keeps_only_the_window() {
        let mut set = set(&[(0, 100), (200, 300)]);
        set.clip(Range::new(50, 250));
        assert_eq!(pairs(&set), [(50, 100), (200, 250)]);
    }

    proptest! {
        /// Adding and removing ranges gives exactly the bytes a simple bitmap
        /// model gives, and the set stays sorted, disjoint and non-adjacent.
        #[test]
        fn matches_a_bitmap_model(operations in proptest::collection::vec((any::<bool>(), 0u64..256, 0u64..64), 1..40)) {
            let mut set: RegionSet<256> = RegionSet::new();
            let mut model = [false; 320];
            for (is_add, start, length) in operations {
                let range = Range::new(start, start + length);
                if is_add { set.add(range).unwrap(); } else { set.remove(range).unwrap(); }
                for byte in start..start + length { model[byte as usize] = is_add; }
            }
            for (byte, &expected) in model.iter().enumerate() {
                let byte = byte as u64;
                prop_assert_eq!(set.contains(&Range::new(byte, byte + 1)), expected);
            }
            for pair in set.ranges().windows(2) {
                prop_assert!(pair[0].end < pair[1].start);
            }
            prop_assert!(set.ranges().iter().all(|range| !range.is_empty()));
        }
    }
}
