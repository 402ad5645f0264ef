//! Physical memory as the handover code sees it: word access, metadata allocation, ranges.
//!
//! The kernel implements [`PhysMemory`] through its direct map and
//! [`MetadataAllocator`] through its page allocator; host tests, benches and
//! fuzzers use `SimulatedMemory` (feature `simulated`). Nothing in this
//! crate dereferences a physical address itself, so it needs no `unsafe`.

#[cfg(any(test, feature = "simulated"))]
mod simulated;

#[cfg(any(test, feature = "simulated"))]
pub use simulated::SimulatedMemory;

use core::fmt;

/// Size of a base page, the unit of every preserved folio.
pub const PAGE_SIZE_BYTES: u64 = baton_abi::PAGE_SIZE;

/// `log2(PAGE_SIZE_BYTES)`.
pub const PAGE_SHIFT: u32 = 12;

/// Physical addresses handled by KHO are below this limit (52 bits, the
/// architectural maximum on x86_64 and aarch64). A folio must end at or
/// below it.
pub const PHYS_ADDRESS_LIMIT: u64 = 1 << 52;

/// A physical memory access that could not be performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessError {
    /// Some byte of `[phys, phys + size_bytes)` is not backed by RAM.
    OutsideRam {
        /// First physical address of the access.
        phys: u64,
        /// Length of the access.
        size_bytes: u64,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideRam { phys, size_bytes } => {
                write!(formatter, "physical access of {size_bytes} bytes at {phys:#x} is outside RAM")
            }
        }
    }
}

impl core::error::Error for AccessError {}

/// Byte access to physical memory.
///
/// `read_u64`/`write_u64` are native-endian and are the hot path of the
/// preservation bitmaps: implementations backed by a direct map should
/// override them with a single load or store.
pub trait PhysMemory {
    /// Copy `buf.len()` bytes starting at physical address `phys` into `buf`.
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), AccessError>;

    /// Copy `data` to physical memory starting at `phys`.
    fn write(&mut self, phys: u64, data: &[u8]) -> Result<(), AccessError>;

    /// Read a native-endian `u64` at `phys` (no alignment requirement).
    fn read_u64(&self, phys: u64) -> Result<u64, AccessError> {
        let mut bytes = [0_u8; 8];
        self.read(phys, &mut bytes)?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Write a native-endian `u64` at `phys` (no alignment requirement).
    fn write_u64(&mut self, phys: u64, value: u64) -> Result<(), AccessError> {
        self.write(phys, &value.to_ne_bytes())
    }
}

/// Where handover metadata (bitmaps, chunk pages, the root FDT) comes from.
///
/// The memory must be ordinary memory: not scratch, and not inside any
/// preserved folio. It is not itself preserved; the next kernel reserves it
/// while it reads the handover.
pub trait MetadataAllocator {
    /// Allocate `size_bytes` of zeroed memory aligned to `align_bytes` (a
    /// power of two) and return its physical address, or `None` when no
    /// memory is left.
    fn allocate_zeroed(&mut self, size_bytes: u64, align_bytes: u64) -> Option<u64>;

    /// Return memory obtained from [`MetadataAllocator::allocate_zeroed`] with
    /// the same size and alignment.
    fn free(&mut self, phys: u64, size_bytes: u64, align_bytes: u64);
}

/// Everything the outgoing side needs: access plus metadata allocation.
///
/// Implemented automatically for every type that implements both traits.
pub trait HandoverMemory: PhysMemory + MetadataAllocator {}

impl<T: PhysMemory + MetadataAllocator> HandoverMemory for T {}

/// A half-open physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysRange {
    /// First address inside the range.
    pub start: u64,
    /// First address after the range.
    pub end: u64,
}

impl PhysRange {
    /// The range `[start, end)`; `end < start` is normalised to an empty range.
    pub const fn new(start: u64, end: u64) -> Self {
        if end < start { Self { start, end: start } } else { Self { start, end } }
    }

    /// The range `[start, start + size_bytes)`, or `None` if it wraps.
    pub const fn from_start_size(start: u64, size_bytes: u64) -> Option<Self> {
        match start.checked_add(size_bytes) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }

    /// Number of bytes in the range.
    pub const fn size_bytes(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `phys` lies inside the range.
    pub const fn contains_address(&self, phys: u64) -> bool {
        self.start <= phys && phys < self.end
    }

    /// Whether every byte of `other` lies inside this range (an empty
    /// `other` is contained when its start is inside or at the end).
    pub const fn contains_range(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end && other.start <= other.end
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// Sort ranges and merge overlapping or touching ones; drop empty ones.
pub fn normalize_ranges(ranges: &[PhysRange]) -> alloc::vec::Vec<PhysRange> {
    let mut sorted: alloc::vec::Vec<PhysRange> = ranges.iter().copied().filter(|range| !range.is_empty()).collect();
    sorted.sort_unstable();
    let mut merged: alloc::vec::Vec<PhysRange> = alloc::vec::Vec::with_capacity(sorted.len());
    for range in sorted {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// Whether `range` lies entirely inside one of the (normalised) `ram` ranges.
pub fn range_inside_ram(ram: &[PhysRange], range: &PhysRange) -> bool {
    // `ram` is sorted and merged: the only candidate is the last range that
    // starts at or before `range.start`.
    let index = ram.partition_point(|candidate| candidate.start <= range.start);
    match index.checked_sub(1).and_then(|index| ram.get(index)) {
        Some(candidate) => candidate.contains_range(range),
        None => false,
    }
}

/// Round `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    let mask = align.wrapping_sub(1);
    match value.checked_add(mask) {
        Some(bumped) => Some(bumped & !mask),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_helpers() {
        let range = PhysRange::new(0x1000, 0x3000);
        assert_eq!(range.size_bytes(), 0x2000);
        assert!(range.contains_address(0x1000));
        assert!(range.contains_address(0x2fff));
        assert!(!range.contains_address(0x3000));
        assert!(range.contains_range(&PhysRange::new(0x1000, 0x3000)));
        assert!(!range.contains_range(&PhysRange::new(0x1000, 0x3001)));
        assert!(range.overlaps(&PhysRange::new(0x2fff, 0x4000)));
        assert!(!range.overlaps(&PhysRange::new(0x3000, 0x4000)));
        assert!(!range.overlaps(&PhysRange::new(0x2000, 0x2000)));
        assert!(PhysRange::new(5, 1).is_empty());
        assert_eq!(PhysRange::from_start_size(u64::MAX, 2), None);
    }

    #[test]
    fn normalize_merges_touching_and_overlapping() {
        let merged = normalize_ranges(&[
            PhysRange::new(0x5000, 0x6000),
            PhysRange::new(0x1000, 0x2000),
            PhysRange::new(0x2000, 0x3000),
            PhysRange::new(0x2800, 0x2900),
            PhysRange::new(0x9000, 0x9000),
        ]);
        assert_eq!(merged, [PhysRange::new(0x1000, 0x3000), PhysRange::new(0x5000, 0x6000)]);
        assert!(range_inside_ram(&merged, &PhysRange::new(0x1800, 0x3000)));
        assert!(!range_inside_ram(&merged, &PhysRange::new(0x2800, 0x5800)));
        assert!(!range_inside_ram(&merged, &PhysRange::new(0x0, 0x800)));
        assert!(range_inside_ram(&merged, &PhysRange::new(0x5000, 0x6000)));
    }

    #[test]
    fn align_up_checks_overflow() {
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(4096, 4096), Some(4096));
        assert_eq!(align_up(0, 4096), Some(0));
        assert_eq!(align_up(u64::MAX, 4096), None);
    }
}
