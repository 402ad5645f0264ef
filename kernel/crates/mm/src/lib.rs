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
pub const PAGE_SIZE: u64 = 4096;

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
