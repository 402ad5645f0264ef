//! The service heap: buddy_system_allocator over a static arena, grown
//! with preservable memory from the kernel when the arena runs out. That
//! memory is part of the process: a resumed service finds its whole heap
//! where it was, a restarted one starts a new heap.

#[cfg(target_os = "none")]
use buddy_system_allocator::{Heap, LockedHeapWithRescue};
#[cfg(target_os = "none")]
use core::cell::UnsafeCell;

/// Heap bytes every service gets.
#[cfg(target_os = "none")]
const HEAP_BYTES: usize = 512 * 1024;

#[cfg(target_os = "none")]
#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; HEAP_BYTES]>);

#[cfg(target_os = "none")]
// SAFETY: the arena is handed to the heap once, in `init`, before any other
// code runs; afterwards only the heap (behind its lock) touches it.
unsafe impl Sync for Arena {}

#[cfg(target_os = "none")]
static ARENA: Arena = Arena(UnsafeCell::new([0; HEAP_BYTES]));

#[cfg(target_os = "none")]
#[global_allocator]
static HEAP: LockedHeapWithRescue<32> = LockedHeapWithRescue::new(grow);

/// The least the heap grows by at a time (256 KiB).
#[cfg(target_os = "none")]
const GROW_ORDER: u32 = 6;

/// The folio order and count that hold `bytes`, at least `GROW_ORDER`
/// and in folios of at most the largest order.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
fn growth(bytes: usize, least_order: u32) -> (u32, u64) {
    let pages = bytes.div_ceil(crate::PAGE_SIZE as usize).max(1);
    let order = pages.next_power_of_two().trailing_zeros().max(least_order);
    if order <= crate::MAX_USER_FOLIO_ORDER {
        return (order, 1);
    }
    let folio_pages = 1usize << crate::MAX_USER_FOLIO_ORDER;
    (crate::MAX_USER_FOLIO_ORDER, pages.div_ceil(folio_pages) as u64)
}

/// The arena is used up: adds preservable memory enough for `layout`
/// (the allocation then fails only when the kernel has none to give).
#[cfg(target_os = "none")]
fn grow(heap: &mut Heap<32>, layout: &core::alloc::Layout) {
    // The buddy allocator serves a request from a block of the next power
    // of two, aligned to its size: memory twice that size always holds
    // one, wherever it starts.
    let wanted = layout.size().max(layout.align()).next_power_of_two().saturating_mul(2);
    let (order, count) = growth(wanted, GROW_ORDER);
    let result = if count == 1 {
        crate::syscall::allocate_preservable(order)
    } else {
        crate::syscall::allocate_preservable_run(order, count)
    };
    if let Ok(start) = result {
        let bytes = (crate::PAGE_SIZE << order) * count;
        // SAFETY: the kernel just mapped `bytes` of zeroed memory at
        // `start`, this process's alone, until it is freed; the heap
        // never frees it.
        unsafe { heap.add_to_heap(start as usize, (start + bytes) as usize) };
    }
}

/// Gives the heap its arena. Called once at start.
#[cfg(target_os = "none")]
pub(crate) fn init() {
    // SAFETY: called once before anything allocates; the arena is a static
    // used by nothing else.
    unsafe { HEAP.lock().init(ARENA.0.get() as usize, HEAP_BYTES) };
}

#[cfg(test)]
mod tests {
    use super::growth;

    #[test]
    fn the_heap_grows_by_enough_and_at_least_the_least() {
        assert_eq!(growth(1, 6), (6, 1));
        assert_eq!(growth(256 * 1024, 6), (6, 1));
        assert_eq!(growth(256 * 1024 + 1, 6), (7, 1));
        assert_eq!(growth(4 << 20, 6), (10, 1));
        // Past the largest folio: a run of them.
        assert_eq!(growth((4 << 20) + 1, 6), (10, 2));
        assert_eq!(growth(9 << 20, 6), (10, 3));
    }
}
