//! Leaving this kernel for the next one (x86_64).

use core::arch::global_asm;

global_asm!(
    include_str!("kexec_trampoline.S"),
    source_offset = const crate::CopyEntry::SOURCE_OFFSET,
    length_offset = const crate::CopyEntry::LENGTH_OFFSET,
    entry_bytes = const crate::CopyEntry::SIZE_BYTES,
    second_stamp_offset = const crate::SECOND_STAMP_OFFSET_BYTES, options(att_syntax)
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

/// Nothing to clean: x86 caches are coherent with memory and DMA.
pub fn clean_data_cache(_virt: u64, _size_bytes: u64) {}

/// Quiesces this CPU and jumps into the trampoline, which stores two
/// cycle-counter readings (before and after its copy) at `stamps_phys`
/// unless it is 0.
///
/// # Safety
///
/// `identity_root` must identity-map all RAM (including the control page,
/// the copy list, the sources and the destinations) and map the running
/// kernel's half as the kernel's own tables do; `control_phys` must hold the
/// trampoline code; the copy list must describe the next kernel's image and
/// never overlap the control page, the list, or the sources.
pub unsafe fn jump(plan: &crate::JumpPlan) -> ! {
    super::cpu::disable_interrupts();
    super::interrupts::stop_timer();
    // SAFETY: the caller guarantees the tables map this code (kernel half)
    // and the control page (identity); the trampoline never returns.
    unsafe {
        core::arch::asm!(
            "mov cr3, {root}",
            "jmp {target}",
            root = in(reg) plan.identity_root,
            target = in(reg) plan.control_phys,
            in("rdi") plan.copy_list_phys,
            in("rsi") plan.copy_count,
            in("rdx") plan.entry_phys,
            in("rcx") plan.handover_phys,
            in("r8") plan.boot_description_phys,
            in("r14") plan.stamps_phys,
            options(noreturn),
        )
    }
}
