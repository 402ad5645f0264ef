//! The kernel heap: buddy_system_allocator's heap, bootstrapped from scratch
//! and grown from the page allocator.

use buddy_system_allocator::{Heap, LockedHeapWithRescue};
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, Ordering};

/// Orders of the heap's buddy lists (blocks up to 2^31 bytes).
const HEAP_ORDER: usize = 32;

/// Grow the heap by at least this much at a time.
const GROWTH_BYTES: u64 = 1 << 20;

#[global_allocator]
static HEAP: LockedHeapWithRescue<HEAP_ORDER> = LockedHeapWithRescue::new(grow);

static GROWN_BYTES: AtomicU64 = AtomicU64::new(0);

/// Hands the heap its first memory (the bootstrap heap, from scratch).
pub fn init(start_phys: u64, size_bytes: u64) {
    let start = super::direct_map::to_virtual(start_phys) as usize;
    // SAFETY: the range was just allocated for the heap, is mapped by the
    // direct map and is used by nothing else.
    unsafe { HEAP.lock().init(start, size_bytes as usize) };
}

#[cfg(feature = "testing")]
/// Bytes the heap has obtained after the bootstrap.
pub fn grown_bytes() -> u64 {
    GROWN_BYTES.load(Ordering::Relaxed)
}

/// Called by the heap when it cannot satisfy `layout`: adds a contiguous run
/// of pages from the page allocator (or, while the page allocator is busy
/// because it is itself allocating, from the scratch pool).
fn grow(heap: &mut Heap<HEAP_ORDER>, layout: &Layout) {
    let wanted = (layout.size() as u64 + layout.align() as u64).max(GROWTH_BYTES).next_power_of_two();
    let Some(phys) = super::allocate_for_heap(wanted) else {
        return;
    };
    let start = super::direct_map::to_virtual(phys) as usize;
    // SAFETY: the pages were just allocated for the heap, are RAM mapped by
    // the direct map, and nothing else uses them.
    unsafe { heap.add_to_heap(start, start + wanted as usize) };
    GROWN_BYTES.fetch_add(wanted, Ordering::Relaxed);
}
