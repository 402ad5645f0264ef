//! Leaving this kernel for the next one (aarch64).

use core::arch::global_asm;

global_asm!(
    include_str!("kexec_trampoline.S"),
    length_offset = const crate::CopyEntry::LENGTH_OFFSET,
    entry_bytes = const crate::CopyEntry::SIZE_BYTES,
    second_stamp_offset = const crate::SECOND_STAMP_OFFSET_BYTES
);

unsafe extern "C" {
    static kexec_trampoline_start: u8;
    static kexec_trampoline_end: u8;
}

/// The trampoline's position-independent code, to copy into a control page.
pub fn trampoline_code() -> &'static [u8] {
    let start = &raw const kexec_trampoline_start;
    let end = &raw const kexec_trampoline_end;
    // SAFETY: the two symbols delimit the trampoline in read-only data.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// Cleans and invalidates the data cache to the point of coherency over
/// `[virt, virt + size_bytes)`, so the trampoline (running with caches off)
/// and the next kernel see what this kernel wrote, and no stale line is
/// written back over what the trampoline copies.
pub fn clean_data_cache(virt: u64, size_bytes: u64) {
    const LINE_BYTES: u64 = 64;
    let mut line = virt & !(LINE_BYTES - 1);
    while line < virt + size_bytes {
        // SAFETY: cache maintenance by VA on mapped memory has no effect on
        // its contents.
        unsafe { core::arch::asm!("dc civac, {0}", in(reg) line, options(nostack)) };
        line += LINE_BYTES;
    }
    // SAFETY: a barrier only orders the maintenance above.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
}

/// Quiesces this CPU and jumps into the trampoline, which stores two
/// cycle-counter readings (before and after its copy) at `stamps_phys`
/// unless it is 0.
///
/// # Safety
///
/// `identity_root` must identity-map all RAM executable at EL1 (including
/// the control page, the copy list, the sources and the destinations);
/// `control_phys` must hold the trampoline code; every range the trampoline
/// touches must have been cleaned with [`clean_data_cache`]; the copy list
/// must never overlap the control page, the list, or the sources.
pub unsafe fn jump(plan: &crate::JumpPlan) -> ! {
    super::cpu::disable_interrupts();
    super::interrupts::stop_timer();
    // SAFETY: TTBR0 gets the identity tables (the kernel keeps running from
    // TTBR1); the branch lands on the trampoline at its identity address,
    // which turns the MMU off and never returns.
    unsafe {
        core::arch::asm!(
            "msr ttbr0_el1, {root}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "ic iallu",
            "dsb nsh",
            "isb",
            "br {target}",
            root = in(reg) plan.identity_root,
            target = in(reg) plan.control_phys,
            in("x0") plan.copy_list_phys,
            in("x1") plan.copy_count,
            in("x2") plan.entry_phys,
            in("x3") plan.handover_phys,
            in("x4") plan.boot_description_phys,
            in("x5") plan.stamps_phys,
            options(noreturn),
        )
    }
}
