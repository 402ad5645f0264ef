//! A window of device-memory mappings for MMIO, usable from the first
//! instruction of Rust.
//!
//! The direct map covers RAM as normal cacheable memory, which is wrong for
//! device registers. Devices are reached instead through 2 MiB device blocks
//! at the top of the kernel's address space, held in one static level-2 table
//! that is hooked into whatever translation tables are live (the entry
//! code's, Limine's, and later the kernel's own).

use aarch64_cpu::registers::{PAR_EL1, Readable, TTBR1_EL1};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Virtual address of the window (level-1 slot 511 of the top 512 GiB).
pub const WINDOW_START: u64 = 0xffff_ffff_c000_0000;
const BLOCK_BYTES: u64 = 2 << 20;
const DESCRIPTOR_TABLE: u64 = 0b11;
/// Block descriptor: valid, AttrIndx 0 (device nGnRE), access flag, never
/// executable at EL1 or EL0.
const DESCRIPTOR_DEVICE_BLOCK: u64 = 0b01 | (1 << 10) | (1 << 53) | (1 << 54);
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; 512]>);

// SAFETY: the table is written only under `LOCK`; the MMU reads it.
unsafe impl Sync for Table {}

static WINDOW_TABLE: Table = Table(UnsafeCell::new([0; 512]));
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
static DIRECT_MAP_OFFSET: AtomicU64 = AtomicU64::new(0);
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Physical address of a kernel virtual address, by asking the MMU.
pub fn translate(virt: u64) -> Option<u64> {
    // SAFETY: AT only performs a translation and writes PAR_EL1.
    unsafe { core::arch::asm!("at s1e1r, {0}", "isb", in(reg) virt, options(nostack)) };
    let par = PAR_EL1.get();
    if par & 1 != 0 {
        return None;
    }
    Some((par & ADDRESS_MASK) | (virt & 0xfff))
}

/// Physical address of the window's level-2 table (for the kernel's own
/// translation tables to link it in).
pub fn table_phys() -> u64 {
    translate(WINDOW_TABLE.0.get() as u64).unwrap_or(0)
}

/// Hooks the window into the live TTBR1 tables. `direct_map_offset` is where
/// physical memory is mapped right now.
pub fn install(direct_map_offset: u64) {
    let _guard = LOCK.lock();
    DIRECT_MAP_OFFSET.store(direct_map_offset, Ordering::Relaxed);
    let level0 = TTBR1_EL1.get() & ADDRESS_MASK;
    let level0_entry = (direct_map_offset + level0 + 511 * 8) as *const u64;
    // SAFETY: TTBR1 points at the live level-0 table, which lies in RAM mapped
    // by the direct map; entry 511 is inside it.
    let level0_descriptor = unsafe { level0_entry.read_volatile() };
    if level0_descriptor & DESCRIPTOR_TABLE != DESCRIPTOR_TABLE {
        return;
    }
    let level1_entry = (direct_map_offset + (level0_descriptor & ADDRESS_MASK) + 511 * 8) as *mut u64;
    // SAFETY: the level-1 table covering the kernel's top 512 GiB is live and
    // mapped by the direct map; slot 511 (the top GiB) is reserved for this
    // window by Baton's layout and unused by Limine's.
    unsafe { level1_entry.write_volatile(table_phys() | DESCRIPTOR_TABLE) };
    flush_tlb();
}

fn flush_tlb() {
    // SAFETY: barriers and a local TLB invalidation have no memory effects
    // beyond making the new mappings visible.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalle1", "dsb ish", "isb", options(nostack)) };
}

/// Maps `size_bytes` of device registers at physical `phys` and returns the
/// virtual address of `phys`, or `None` when the window is full.
pub fn map(phys: u64, size_bytes: u64) -> Option<u64> {
    let _guard = LOCK.lock();
    let first_block = phys & !(BLOCK_BYTES - 1);
    let last_block = (phys + size_bytes.max(1) - 1) & !(BLOCK_BYTES - 1);
    let blocks = ((last_block - first_block) / BLOCK_BYTES + 1) as usize;
    let table = WINDOW_TABLE.0.get();
    // Reuse an existing mapping of the same blocks.
    for slot in 0..NEXT_SLOT.load(Ordering::Relaxed) {
        // SAFETY: `slot` is below NEXT_SLOT <= 512, inside the table; the
        // lock is held.
        let descriptor = unsafe { (*table)[slot] };
        if descriptor & ADDRESS_MASK == first_block && slot + blocks <= 512 {
            return Some(WINDOW_START + slot as u64 * BLOCK_BYTES + (phys - first_block));
        }
    }
    let slot = NEXT_SLOT.load(Ordering::Relaxed);
    if slot + blocks > 512 {
        return None;
    }
    for index in 0..blocks {
        // SAFETY: `slot + index < 512`; the lock is held and the slots are
        // unused, so no live mapping changes.
        unsafe { (*table)[slot + index] = (first_block + index as u64 * BLOCK_BYTES) | DESCRIPTOR_DEVICE_BLOCK };
    }
    NEXT_SLOT.store(slot + blocks, Ordering::Relaxed);
    flush_tlb();
    Some(WINDOW_START + slot as u64 * BLOCK_BYTES + (phys - first_block))
}
