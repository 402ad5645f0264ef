//! The service heap: buddy_system_allocator over a static arena.

#[cfg(target_os = "none")]
use buddy_system_allocator::LockedHeap;
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
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Gives the heap its arena. Called once at start.
#[cfg(target_os = "none")]
pub(crate) fn init() {
    // SAFETY: called once before anything allocates; the arena is a static
    // used by nothing else.
    unsafe { HEAP.lock().init(ARENA.0.get() as usize, HEAP_BYTES) };
}
