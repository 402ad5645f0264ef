//! Turning the kernel's translation tables on (aarch64).

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{MAIR_EL1, TTBR0_EL1, TTBR1_EL1, Writeable};

/// This architecture's descriptor format.
pub type EntryFormat = baton_mm::paging::Aarch64;

/// The kernel lives in TTBR1; user address spaces in TTBR0 do not share
/// top-level slots with it.
pub const KERNEL_TOP_LEVEL_FIRST_SLOT: usize = 512;

/// 1 GiB blocks exist with the 4 KiB granule.
pub fn has_gigabyte_pages() -> bool {
    true
}

/// Switches the kernel half (TTBR1) to the tree rooted at `root_phys` and
/// empties the user half with `empty_user_root_phys`.
///
/// # Safety
///
/// The tree must map the running kernel image, its stacks and everything the
/// kernel touches afterwards at the addresses it uses now.
pub unsafe fn activate_kernel(root_phys: u64, empty_user_root_phys: u64) {
    // Attribute 0: device nGnRE; 1: normal write-back; 2: normal uncached.
    MAIR_EL1.set(baton_mm::paging::AARCH64_MAIR);
    barrier::isb(barrier::SY);
    TTBR1_EL1.set(root_phys);
    TTBR0_EL1.set(empty_user_root_phys);
    flush_all();
}

/// Switches the user half (TTBR0) to the tree rooted at `root_phys`.
///
/// # Safety
///
/// Nothing the kernel is using may live in the user half.
pub unsafe fn activate_user(root_phys: u64) {
    TTBR0_EL1.set(root_phys);
    flush_all();
}

/// Invalidates the TLB entries of one page.
pub fn flush_page(virt: u64) {
    let page = (virt >> 12) & 0x0000_0fff_ffff_ffff;
    // SAFETY: TLB maintenance has no effect on memory contents.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vaae1is, {0}", "dsb ish", "isb", in(reg) page, options(nostack)) };
}

/// Invalidates every TLB entry of this CPU.
pub fn flush_all() {
    // SAFETY: TLB maintenance has no effect on memory contents.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalle1", "dsb ish", "isb", options(nostack)) };
}
