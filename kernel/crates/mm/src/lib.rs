//! Physical memory arithmetic for Baton: region sets, scratch placement and
//! the early allocator that serves every allocation until the page allocator
//! is up.
//!
//! Everything here works on plain numbers (physical addresses), without
//! touching memory, so it is tested on the host.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod early;
pub mod paging;
pub mod region;
pub mod scratch;

pub use region::{Range, RegionSet};

/// The page size Baton manages memory in.
pub use baton_abi::PAGE_SIZE;

/// The order of the smallest naturally aligned block of pages that holds
/// `size_bytes` (at least one page).
pub const fn order_for_bytes(size_bytes: u64) -> u32 {
    let pages = size_bytes.div_ceil(PAGE_SIZE);
    let pages = if pages == 0 { 1 } else { pages };
    pages.next_power_of_two().trailing_zeros()
}

/// Rounds `value` up to a multiple of `alignment` (a power of two), or `None`
/// on overflow.
pub fn align_up(value: u64, alignment: u64) -> Option<u64> {
    debug_assert!(alignment.is_power_of_two());
    Some(value.checked_add(alignment - 1)? & !(alignment - 1))
}

/// Rounds `value` down to a multiple of `alignment` (a power of two).
pub fn align_down(value: u64, alignment: u64) -> u64 {
    debug_assert!(alignment.is_power_of_two());
    value & !(alignment - 1)
}

/// The naturally aligned power-of-two blocks of pages that tile `range`
/// (shrunk to whole pages), in address order, each as large as its
/// alignment and the bytes left allow: (physical address, order in pages).
/// A buddy allocator takes and frees memory in exactly these blocks.
pub fn aligned_blocks(range: Range) -> impl Iterator<Item = (u64, u32)> {
    let end = align_down(range.end, PAGE_SIZE);
    let mut cursor = align_up(range.start, PAGE_SIZE).unwrap_or(end);
    core::iter::from_fn(move || {
        if cursor >= end {
            return None;
        }
        let alignment_order = (cursor / PAGE_SIZE).trailing_zeros();
        let size_order = ((end - cursor) / PAGE_SIZE).ilog2();
        let order = alignment_order.min(size_order);
        let block = (cursor, order);
        cursor += PAGE_SIZE << order;
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_for_bytes_rounds_up_to_a_power_of_two_of_pages() {
        assert_eq!(order_for_bytes(0), 0);
        assert_eq!(order_for_bytes(1), 0);
        assert_eq!(order_for_bytes(PAGE_SIZE), 0);
        assert_eq!(order_for_bytes(PAGE_SIZE + 1), 1);
        assert_eq!(order_for_bytes(3 * PAGE_SIZE), 2);
        assert_eq!(order_for_bytes(2 << 20), 9);
        assert_eq!(order_for_bytes((2 << 20) + 1), 10);
    }

    #[test]
    fn aligned_blocks_tile_a_range_with_the_fewest_natural_blocks() {
        let blocks: Vec<(u64, u32)> = aligned_blocks(Range::new(0x3000, 0x20_0000 + 0x2000)).collect();
        assert_eq!(blocks.first(), Some(&(0x3000, 0)));
        assert_eq!(blocks.last(), Some(&(0x20_0000, 1)));
        let mut cursor = 0x3000;
        for &(phys, order) in &blocks {
            assert_eq!(phys, cursor, "blocks are contiguous");
            assert_eq!(phys % (PAGE_SIZE << order), 0, "each block is naturally aligned");
            cursor += PAGE_SIZE << order;
        }
        assert_eq!(cursor, 0x20_2000);
        assert!(blocks.len() <= 2 * 10, "at most two blocks per order");
        assert_eq!(aligned_blocks(Range::new(1 << 30, 2 << 30)).collect::<Vec<_>>(), [(1 << 30, 18)]);
        assert_eq!(aligned_blocks(Range::new(0x1800, 0x2800)).count(), 0, "no whole page");
    }
}
