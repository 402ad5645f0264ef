//! x86_64 interrupts: the local APIC in x2APIC mode and its timer.
//!
//! The legacy PICs are masked; the local APIC is driven through MSRs
//! (x2APIC), so it needs no MMIO mapping. The timer is calibrated against the
//! time-stamp counter, itself measured against the PIT.

use crate::{InterruptError, Irq};
use baton_boot::BootInfo;
use core::sync::atomic::{AtomicU32, Ordering};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

/// Vector of the timer tick.
pub const TIMER_VECTOR: u8 = 32;
/// Vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_SPURIOUS: u32 = 0x80f;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_TIMER_INITIAL: u32 = 0x838;
const X2APIC_TIMER_CURRENT: u32 = 0x839;
const X2APIC_TIMER_DIVIDE: u32 = 0x83e;

const LVT_MASKED: u64 = 1 << 16;
const LVT_PERIODIC: u64 = 1 << 17;

static TIMER_TICKS_PER_SECOND: AtomicU32 = AtomicU32::new(0);

fn write_msr(register: u32, value: u64) {
    // SAFETY: the x2APIC registers written here only configure interrupt
    // delivery to this CPU; callers pass valid values.
    unsafe { Msr::new(register).write(value) }
}

fn read_msr(register: u32) -> u64 {
    // SAFETY: reading an x2APIC register has no side effects.
    unsafe { Msr::new(register).read() }
}

/// Masks the legacy PICs and enables the local APIC in x2APIC mode.
pub fn init(_info: &BootInfo) -> Result<(), InterruptError> {
    let has_x2apic = core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0;
    if !has_x2apic {
        return Err(InterruptError::Unsupported("no x2APIC"));
    }
    // SAFETY: writing 0xff to the PICs' data ports masks every legacy
    // interrupt line; Baton does not use the 8259s.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    let base = read_msr(IA32_APIC_BASE);
    write_msr(IA32_APIC_BASE, base | (1 << 11) | (1 << 10));
    write_msr(X2APIC_SPURIOUS, 0x100 | u64::from(SPURIOUS_VECTOR));
    write_msr(X2APIC_LVT_TIMER, LVT_MASKED | u64::from(TIMER_VECTOR));
    Ok(())
}

/// Measures the APIC timer's rate against the TSC over 10 ms.
fn calibrate() -> u32 {
    write_msr(X2APIC_TIMER_DIVIDE, 0b1011); // divide by 1
    write_msr(X2APIC_LVT_TIMER, LVT_MASKED | u64::from(TIMER_VECTOR));
    write_msr(X2APIC_TIMER_INITIAL, u64::from(u32::MAX));
    let tsc_hz = super::cpu::cycle_counter_frequency_hz();
    let start = super::cpu::cycle_counter();
    while super::cpu::cycle_counter() - start < tsc_hz / 100 {
        core::hint::spin_loop();
    }
    let elapsed = u64::from(u32::MAX) - read_msr(X2APIC_TIMER_CURRENT);
    write_msr(X2APIC_TIMER_INITIAL, 0);
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
    write_msr(X2APIC_TIMER_DIVIDE, 0b1011);
    write_msr(X2APIC_LVT_TIMER, LVT_PERIODIC | u64::from(TIMER_VECTOR));
    write_msr(X2APIC_TIMER_INITIAL, u64::from((rate / hz.max(1)).max(1)));
}

/// Stops the timer (before handing the machine to another kernel).
pub fn stop_timer() {
    write_msr(X2APIC_LVT_TIMER, LVT_MASKED | u64::from(TIMER_VECTOR));
    write_msr(X2APIC_TIMER_INITIAL, 0);
}

/// Identifies the interrupt that caused `frame`.
pub fn claim(frame: &super::trap::TrapFrame) -> Irq {
    match frame.vector {
        vector if vector == u64::from(TIMER_VECTOR) => Irq::Timer,
        vector if vector == u64::from(SPURIOUS_VECTOR) => Irq::Spurious,
        vector => Irq::Other(vector as u32),
    }
}

/// Signals the end of handling `irq`.
pub fn complete(irq: Irq) {
    if irq != Irq::Spurious {
        write_msr(X2APIC_EOI, 0);
    }
}
