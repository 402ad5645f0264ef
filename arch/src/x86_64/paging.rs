//! Turning the kernel's page tables on (x86_64).

use x86_64::PhysAddr;
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags, Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

/// This architecture's page-table entry format.
pub type EntryFormat = baton_mm::paging::X86_64;

/// Top-level slots from here up belong to the kernel and are shared by every
/// address space.
pub const KERNEL_TOP_LEVEL_FIRST_SLOT: usize = 256;

/// Whether the CPU supports 1 GiB pages.
pub fn has_gigabyte_pages() -> bool {
    core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// Switches to the kernel tree rooted at `root_phys`. The user half is part
/// of the same tree on x86_64, so `_empty_user_root_phys` is not needed.
///
/// # Safety
///
/// The tree must map the running kernel image, its stacks and everything the
/// kernel touches afterwards at the addresses it uses now.
pub unsafe fn activate_kernel(root_phys: u64, _empty_user_root_phys: u64) {
    // SAFETY: enabling no-execute and global pages only changes how the new
    // entries are interpreted; the caller guarantees the tree is complete.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr4::update(|flags| flags.insert(Cr4Flags::PAGE_GLOBAL));
        let frame = PhysFrame::containing_address(PhysAddr::new(root_phys));
        Cr3::write(frame, Cr3::read().1);
    }
}

/// Switches the user half to the tree rooted at `root_phys` (which shares
/// the kernel half).
///
/// # Safety
///
/// The tree must contain the kernel half copied from the kernel tree.
pub unsafe fn activate_user(root_phys: u64) {
    let frame = PhysFrame::containing_address(PhysAddr::new(root_phys));
    // SAFETY: the caller guarantees the kernel half is present, so the
    // running code stays mapped.
    unsafe { Cr3::write(frame, Cr3::read().1) };
}

/// Invalidates the TLB entry of one page.
pub fn flush_page(virt: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(virt));
}

/// Invalidates every non-global TLB entry.
pub fn flush_all() {
    x86_64::instructions::tlb::flush_all();
}
