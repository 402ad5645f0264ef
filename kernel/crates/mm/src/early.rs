//! The early allocator: every allocation before the page allocator is up
//! comes from here, and here only hands out scratch memory.
//!
//! It is a bump allocator over the scratch regions minus what is already in
//! use inside them (on a KHO boot the kernel image itself sits in scratch).
//! It records every allocation so a test can check that none came from
//! outside scratch.

use crate::region::{Range, RegionSet};
use arrayvec::ArrayVec;
use core::fmt;

/// What an early allocation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Kernel page tables.
    PageTable,
    /// The bootstrap kernel heap.
    BootstrapHeap,
    /// Tracking structures (tables of preserved folios and the like).
    Tracking,
}

/// The most allocations recorded individually (the rest are only counted).
pub const MAX_RECORDED: usize = 512;

/// An early allocation request could not be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchExhausted {
    /// Bytes asked for.
    pub size_bytes: u64,
}

impl fmt::Display for ScratchExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scratch exhausted: cannot allocate {} bytes early", self.size_bytes)
    }
}

/// Bump allocation over scratch.
#[derive(Debug, Clone)]
pub struct EarlyAllocator {
    scratch: RegionSet<16>,
    available: RegionSet<32>,
    /// Used only when nothing else fits (the low scratch region, kept for
    /// the next kernel image).
    last_resort: Option<Range>,
    recorded: ArrayVec<(Range, Purpose), MAX_RECORDED>,
    count: u64,
    allocated_bytes: u64,
}

impl EarlyAllocator {
    /// An allocator over `scratch`, minus `in_use` (memory inside scratch that
    /// already holds something, such as the running kernel image).
    pub fn new(scratch: &RegionSet<16>, in_use: &[Range]) -> Self {
        let mut available = RegionSet::new();
        for range in scratch.ranges() {
            let _ = available.add(*range);
        }
        for range in in_use {
            let _ = available.remove(*range);
        }
        Self {
            scratch: scratch.clone(),
            available,
            last_resort: None,
            recorded: ArrayVec::new(),
            count: 0,
            allocated_bytes: 0,
        }
    }

    /// Serves allocations from `range` only when the rest of scratch is
    /// full. Baton keeps the low region for kernel images this way, so the
    /// next image never lands on this kernel's page tables.
    pub fn with_last_resort(mut self, range: Range) -> Self {
        self.last_resort = Some(range);
        self
    }

    /// Allocates `size_bytes` aligned to `alignment` (a power of two), lowest
    /// address first.
    pub fn allocate(&mut self, size_bytes: u64, alignment: u64, purpose: Purpose) -> Result<u64, ScratchExhausted> {
        let error = ScratchExhausted { size_bytes };
        let fits = |range: &Range| {
            let start = crate::align_up(range.start, alignment)?;
            let end = start.checked_add(size_bytes)?;
            (end <= range.end).then_some(Range::new(start, end))
        };
        let is_last_resort = |range: &Range| self.last_resort.is_some_and(|last| last.overlaps(range));
        let preferred = self.available.ranges().iter().filter(|range| !is_last_resort(range)).find_map(fits);
        let found =
            preferred.or_else(|| self.available.ranges().iter().filter(|range| is_last_resort(range)).find_map(fits));
        let range = found.ok_or(error)?;
        self.available.remove(range).map_err(|_| error)?;
        self.count += 1;
        self.allocated_bytes += size_bytes;
        let _ = self.recorded.try_push((range, purpose));
        Ok(range.start)
    }

    /// How many allocations were made.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes allocated so far.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_bytes
    }

    /// Allocations made, as recorded (the first [`MAX_RECORDED`]).
    pub fn recorded(&self) -> &[(Range, Purpose)] {
        &self.recorded
    }

    /// How many recorded allocations lie outside scratch (always zero unless
    /// the allocator is broken; tests assert it).
    pub fn allocations_outside_scratch(&self) -> usize {
        self.recorded.iter().filter(|(range, _)| !self.scratch.contains(range)).count()
    }

    /// Scratch memory not yet handed out.
    pub fn remaining(&self) -> &RegionSet<32> {
        &self.available
    }

    /// The scratch regions this allocator serves.
    pub fn scratch(&self) -> &RegionSet<16> {
        &self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(ranges: &[(u64, u64)]) -> RegionSet<16> {
        let mut set = RegionSet::new();
        for &(start, end) in ranges {
            set.add(Range::new(start, end)).unwrap();
        }
        set
    }

    #[test]
    fn allocations_stay_inside_scratch_and_skip_what_is_in_use() {
        let scratch = scratch(&[(0x20_0000, 0x60_0000)]);
        // The kernel image occupies the first 1 MiB of scratch.
        let mut early = EarlyAllocator::new(&scratch, &[Range::new(0x20_0000, 0x30_0000)]);
        let page = early.allocate(0x1000, 0x1000, Purpose::PageTable).unwrap();
        assert_eq!(page, 0x30_0000);
        let heap = early.allocate(0x10_0000, 0x10_0000, Purpose::BootstrapHeap).unwrap();
        assert_eq!(heap, 0x40_0000, "aligned past the page table");
        let second_page = early.allocate(0x1000, 0x1000, Purpose::PageTable).unwrap();
        assert_eq!(second_page, 0x30_1000, "the gap left by alignment is reused");
        assert_eq!(early.count(), 3);
        assert_eq!(early.allocations_outside_scratch(), 0);
        assert_eq!(early.allocated_bytes(), 0x10_2000);
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrong_address() {
        let scratch = scratch(&[(0x1000, 0x3000)]);
        let mut early = EarlyAllocator::new(&scratch, &[]);
        early.allocate(0x2000, 0x1000, Purpose::Tracking).unwrap();
        assert_eq!(early.allocate(0x1000, 0x1000, Purpose::Tracking), Err(ScratchExhausted { size_bytes: 0x1000 }));
    }

    #[test]
    fn the_last_resort_region_is_used_only_when_the_rest_is_full() {
        let scratch = scratch(&[(0x10_0000, 0x10_2000), (0x20_0000, 0x20_1000)]);
        let mut early = EarlyAllocator::new(&scratch, &[]).with_last_resort(Range::new(0x10_0000, 0x10_2000));
        assert_eq!(early.allocate(0x1000, 0x1000, Purpose::PageTable), Ok(0x20_0000));
        assert_eq!(early.allocate(0x1000, 0x1000, Purpose::PageTable), Ok(0x10_0000), "the rest is full");
    }

    #[test]
    fn allocations_spread_across_several_regions() {
        let scratch = scratch(&[(0x1000, 0x2000), (0x10_0000, 0x10_4000)]);
        let mut early = EarlyAllocator::new(&scratch, &[]);
        assert_eq!(early.allocate(0x1000, 0x1000, Purpose::PageTable), Ok(0x1000));
        assert_eq!(early.allocate(0x1000, 0x1000, Purpose::PageTable), Ok(0x10_0000));
        assert_eq!(early.allocations_outside_scratch(), 0);
    }
}
