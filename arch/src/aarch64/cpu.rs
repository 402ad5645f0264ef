//! The aarch64 processor: halting, interrupt masking and the generic timer's
//! counter.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTVCT_EL0, DAIF, Readable, Writeable};

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    disable_interrupts();
    loop {
        asm::wfe();
    }
}

/// Sleeps until the next interrupt, with interrupts unmasked while waiting.
pub fn wait_for_interrupt() {
    enable_interrupts();
    asm::wfi();
}

/// Traps into the kernel's scheduler from kernel code (`svc` at EL1).
pub fn yield_to_scheduler() {
    // SAFETY: an SVC at EL1 enters the kernel's vector, which saves and
    // later restores this context exactly.
    unsafe { core::arch::asm!("svc #1") };
}

/// Whether IRQs are unmasked.
pub fn interrupts_enabled() -> bool {
    !DAIF.is_set(DAIF::I)
}

/// Masks IRQs.
pub fn disable_interrupts() {
    DAIF.write(DAIF::D::Masked + DAIF::A::Masked + DAIF::I::Masked + DAIF::F::Masked);
}

/// Unmasks IRQs.
pub fn enable_interrupts() {
    DAIF.write(DAIF::D::Masked + DAIF::A::Unmasked + DAIF::I::Unmasked + DAIF::F::Masked);
}

/// The virtual counter of the generic timer.
pub fn cycle_counter() -> u64 {
    asm::barrier::isb(asm::barrier::SY);
    CNTVCT_EL0.get()
}

/// Ticks per second of [`cycle_counter`].
pub fn cycle_counter_frequency_hz() -> u64 {
    CNTFRQ_EL0.get()
}

/// Nothing to do: the generic timer states its own frequency.
pub fn set_cycle_counter_frequency_hz(_hz: u64) {}

/// The running service's thread pointer (TPIDR_EL0, which EL0 may also
/// write itself).
pub fn user_thread_pointer() -> u64 {
    aarch64_cpu::registers::TPIDR_EL0.get()
}

/// Loads a service's thread pointer before it runs. Every value is
/// harmless to the kernel (it never reads TPIDR_EL0); returns `true`.
pub fn set_user_thread_pointer(value: u64) -> bool {
    aarch64_cpu::registers::TPIDR_EL0.set(value);
    true
}
