//! x86_64 interrupts: the local APIC and its timer.
//!
//! The legacy PICs are masked. The local APIC is driven through MSRs in
//! x2APIC mode when the CPU has it, and otherwise (Intel before Nehalem,
//! AMD before Zen 2) through its memory-mapped xAPIC registers, which the
//! kernel maps uncached and hands over with [`use_xapic`]. The timer is
//! calibrated against the time-stamp counter.

use crate::{InterruptError, Irq};
use baton_boot::BootInfo;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

/// Vector of the timer tick.
pub const TIMER_VECTOR: u8 = 32;
/// Vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The vector of message-interrupt slot 0; slot `n` is this plus `n`.
const FIRST_MESSAGE_VECTOR: u8 = 0x40;
/// How many message interrupts the kernel can route at a time.
pub const MESSAGE_SLOTS: u32 = 32;
/// The local APIC's ID register.
const APIC_ID: u32 = 0x20;

const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE: the APIC is enabled / in x2APIC mode.
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
const APIC_X2APIC_MODE: u64 = 1 << 10;
/// Register offsets in the xAPIC page; the x2APIC MSR of each is
/// `0x800 + offset / 16`.
const SPURIOUS: u32 = 0xf0;
const EOI: u32 = 0xb0;
const LVT_TIMER: u32 = 0x320;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;

const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

static TIMER_TICKS_PER_SECOND: AtomicU32 = AtomicU32::new(0);
/// Kernel address of the xAPIC register page; 0 in x2APIC mode.
static XAPIC_REGISTERS: AtomicU64 = AtomicU64::new(0);

/// Whether the CPU can run its local APIC in x2APIC mode.
pub fn has_x2apic() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0
}

/// Physical address of this CPU's local APIC registers (xAPIC mode).
pub fn apic_base_phys() -> u64 {
    // SAFETY: reading IA32_APIC_BASE has no side effects.
    unsafe { Msr::new(IA32_APIC_BASE).read() & 0x000f_ffff_ffff_f000 }
}

/// Drives the local APIC through its memory-mapped registers at `virt`
/// (xAPIC mode) from now on; needed when [`has_x2apic`] is false.
///
/// # Safety
///
/// `virt` must map the 4 KiB page at [`apic_base_phys`] uncached, for as
/// long as the kernel runs.
pub unsafe fn use_xapic(virt: u64) {
    XAPIC_REGISTERS.store(virt, Ordering::Relaxed);
}

fn write_register(offset: u32, value: u32) {
    match XAPIC_REGISTERS.load(Ordering::Relaxed) {
        // SAFETY: the local APIC registers written here only configure
        // interrupt delivery to this CPU; callers pass valid values.
        0 => unsafe { Msr::new(0x800 + offset / 16).write(u64::from(value)) },
        // SAFETY: `use_xapic`'s contract: the page is mapped uncached, and
        // every offset used here is a register inside it.
        registers => unsafe { core::ptr::write_volatile((registers + u64::from(offset)) as *mut u32, value) },
    }
}

fn read_register(offset: u32) -> u32 {
    match XAPIC_REGISTERS.load(Ordering::Relaxed) {
        // SAFETY: reading a local APIC register has no side effects. The
        // registers read here are 32 bits wide.
        0 => unsafe { Msr::new(0x800 + offset / 16).read() as u32 },
        // SAFETY: as in `write_register`.
        registers => unsafe { core::ptr::read_volatile((registers + u64::from(offset)) as *const u32) },
    }
}

/// Masks the legacy PICs and enables the local APIC: in x2APIC mode, or in
/// xAPIC mode once the kernel has mapped its registers ([`use_xapic`]).
pub fn init(_info: &BootInfo) -> Result<(), InterruptError> {
    let xapic = XAPIC_REGISTERS.load(Ordering::Relaxed) != 0;
    if !xapic && !has_x2apic() {
        return Err(InterruptError::Unsupported("no x2APIC, and the xAPIC registers are not mapped"));
    }
    // SAFETY: writing 0xff to the PICs' data ports masks every legacy
    // interrupt line; Baton does not use the 8259s.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: reading IA32_APIC_BASE has no side effects.
    let value = unsafe { base.read() };
    let mode = if xapic { APIC_GLOBAL_ENABLE } else { APIC_GLOBAL_ENABLE | APIC_X2APIC_MODE };
    if value & mode != mode {
        // SAFETY: enabling the local APIC (and its x2APIC mode when chosen)
        // keeps its base address; an APIC already in x2APIC mode is left
        // so (leaving it needs a reset).
        unsafe { base.write(value | mode) };
    }
    write_register(SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
    write_register(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    Ok(())
}

/// Measures the APIC timer's rate against the TSC over 10 ms.
fn calibrate() -> u32 {
    write_register(TIMER_DIVIDE, 0b1011); // divide by 1
    write_register(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write_register(TIMER_INITIAL, u32::MAX);
    let tsc_hz = super::cpu::cycle_counter_frequency_hz();
    let start = super::cpu::cycle_counter();
    while super::cpu::cycle_counter() - start < tsc_hz / 100 {
        core::hint::spin_loop();
    }
    let elapsed = u64::from(u32::MAX - read_register(TIMER_CURRENT));
    write_register(TIMER_INITIAL, 0);
    (elapsed * 100).min(u64::from(u32::MAX)) as u32
}

/// The APIC timer's measured rate (0 until measured).
pub fn timer_rate() -> u64 {
    u64::from(TIMER_TICKS_PER_SECOND.load(Ordering::Relaxed))
}

/// Uses a rate an earlier kernel measured instead of measuring.
pub fn set_timer_rate(ticks_per_second: u64) {
    if ticks_per_second != 0 {
        TIMER_TICKS_PER_SECOND.store(ticks_per_second.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    }
}

/// Starts the periodic timer at `hz` ticks per second.
pub fn start_timer(hz: u32) {
    let mut rate = TIMER_TICKS_PER_SECOND.load(Ordering::Relaxed);
    if rate == 0 {
        rate = calibrate().max(1);
        TIMER_TICKS_PER_SECOND.store(rate, Ordering::Relaxed);
    }
    write_register(TIMER_DIVIDE, 0b1011);
    write_register(LVT_TIMER, LVT_PERIODIC | u32::from(TIMER_VECTOR));
    write_register(TIMER_INITIAL, (rate / hz.max(1)).max(1));
}

/// Stops the timer (before handing the machine to another kernel).
pub fn stop_timer() {
    write_register(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write_register(TIMER_INITIAL, 0);
}

/// Identifies the interrupt that caused `frame`.
pub fn claim(frame: &super::trap::TrapFrame) -> Irq {
    let first_message = u64::from(FIRST_MESSAGE_VECTOR);
    match frame.vector {
        vector if vector == u64::from(TIMER_VECTOR) => Irq::Timer,
        vector if vector == u64::from(SPURIOUS_VECTOR) => Irq::Spurious,
        vector if (first_message..first_message + u64::from(MESSAGE_SLOTS)).contains(&vector) => {
            Irq::Message((vector - first_message) as u32)
        }
        vector => Irq::Other(vector as u32),
    }
}

/// Where a device writes, and what, to raise message-interrupt `slot` on
/// this CPU: the local APIC's MSI address with this CPU's APIC ID, and the
/// slot's vector (fixed delivery, edge). `None` past the last slot, or for
/// an APIC ID an MSI address cannot carry (above 255, which needs
/// interrupt remapping).
pub fn message_target(slot: u32) -> Option<(u64, u32)> {
    if slot >= MESSAGE_SLOTS {
        return None;
    }
    let id = match XAPIC_REGISTERS.load(Ordering::Relaxed) {
        0 => read_register(APIC_ID),
        _ => read_register(APIC_ID) >> 24,
    };
    let id = u8::try_from(id).ok()?;
    Some((0xfee0_0000 | (u64::from(id) << 12), u32::from(FIRST_MESSAGE_VECTOR) + slot))
}

/// Lets message-interrupt `slot` through (the local APIC takes every
/// vector it is sent: nothing to do).
pub fn enable_message(slot: u32) -> bool {
    slot < MESSAGE_SLOTS
}

/// Signals the end of handling `irq`.
pub fn complete(irq: Irq) {
    if irq != Irq::Spurious {
        write_register(EOI, 0);
    }
}
