//! The x86_64 processor: halting, interrupts and the time-stamp counter.

use x86_64::instructions::interrupts;

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Sleeps until the next interrupt (interrupts are enabled while waiting).
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
}

/// Traps into the kernel's scheduler from kernel code (a software
/// interrupt, taken even with interrupts masked).
pub fn yield_to_scheduler() {
    // SAFETY: vector 0x81 is the kernel-yield gate; its handler saves and
    // later restores this context exactly.
    unsafe { core::arch::asm!("int 0x81") };
}

/// Whether maskable interrupts are enabled.
pub fn interrupts_enabled() -> bool {
    interrupts::are_enabled()
}

/// Masks interrupts.
pub fn disable_interrupts() {
    interrupts::disable();
}

/// Unmasks interrupts.
pub fn enable_interrupts() {
    interrupts::enable();
}

/// The time-stamp counter.
pub fn cycle_counter() -> u64 {
    // SAFETY: RDTSC only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

static FREQUENCY: spin::Once<u64> = spin::Once::new();

/// Where the cycle counter's frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrequencySource {
    /// Measured against the PIT.
    Pit,
    /// Handed over by an earlier kernel.
    Handover,
    /// The PIT did not count (a PC without one): a guess of 2 GHz until a
    /// better clock (the HPET) is found.
    Guess,
}

impl FrequencySource {
    /// How logs name it.
    pub fn name(self) -> &'static str {
        match self {
            FrequencySource::Pit => "PIT",
            FrequencySource::Handover => "previous kernel",
            FrequencySource::Guess => "initial guess",
        }
    }
}

static SOURCE: spin::Once<FrequencySource> = spin::Once::new();

/// Where [`cycle_counter_frequency_hz`] came from.
pub fn cycle_counter_frequency_source() -> FrequencySource {
    let _ = cycle_counter_frequency_hz();
    SOURCE.get().copied().unwrap_or(FrequencySource::Guess)
}

/// Replaces a guessed frequency with a measured one (`hz` from the HPET).
/// Only a guess is replaced: a measured rate stays, so the clock never
/// jumps on a machine where the PIT worked.
pub fn correct_guessed_frequency(hz: u64) -> bool {
    if cycle_counter_frequency_source() != FrequencySource::Guess || hz == 0 {
        return false;
    }
    CORRECTED.store(hz, core::sync::atomic::Ordering::Relaxed);
    true
}

static CORRECTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Ticks per second of [`cycle_counter`], measured once against the PIT
/// unless an earlier kernel handed the figure over.
pub fn cycle_counter_frequency_hz() -> u64 {
    let corrected = CORRECTED.load(core::sync::atomic::Ordering::Relaxed);
    if corrected != 0 {
        return corrected;
    }
    *FREQUENCY.call_once(|| match measure_tsc_frequency() {
        Some(hz) => {
            SOURCE.call_once(|| FrequencySource::Pit);
            hz
        }
        None => {
            SOURCE.call_once(|| FrequencySource::Guess);
            2_000_000_000
        }
    })
}

/// Uses `hz` (measured by an earlier kernel) instead of measuring.
pub fn set_cycle_counter_frequency_hz(hz: u64) {
    if hz != 0 {
        FREQUENCY.call_once(|| {
            SOURCE.call_once(|| FrequencySource::Handover);
            hz
        });
    }
}

/// Counts TSC ticks over 10 ms of PIT channel 2; `None` when the PIT
/// never finishes counting (machines without one).
fn measure_tsc_frequency() -> Option<u64> {
    use x86_64::instructions::port::Port;
    const PIT_HZ: u64 = 1_193_182;
    const WINDOW_TICKS: u64 = PIT_HZ / 100;
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT's channel 2 and the
    // speaker gate; Baton uses them for nothing else, and the speaker output
    // stays disabled.
    unsafe {
        let value = gate.read();
        gate.write((value & !0x02) | 0x01);
        command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0
        channel2.write((WINDOW_TICKS & 0xff) as u8);
        channel2.write((WINDOW_TICKS >> 8) as u8);
        let start = cycle_counter();
        let mut spins = 0u64;
        while gate.read() & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        let elapsed = cycle_counter() - start;
        (gate.read() & 0x20 != 0 && elapsed > 0).then_some(elapsed * 100)
    }
}

/// The running service's thread pointer (the FS base; services set it with
/// the `set_thread_pointer` call, the kernel never uses FS).
pub fn user_thread_pointer() -> u64 {
    x86_64::registers::model_specific::FsBase::read().as_u64()
}

/// Loads a service's thread pointer before it runs. Only user-half values
/// are taken (a non-canonical FS base would fault the write); returns
/// whether `value` was.
pub fn set_user_thread_pointer(value: u64) -> bool {
    // The end of the lower (user) half of a 48-bit address space.
    const USER_HALF_END: u64 = 1 << 47;
    if value >= USER_HALF_END {
        return false;
    }
    let Ok(address) = x86_64::VirtAddr::try_new(value) else {
        return false;
    };
    x86_64::registers::model_specific::FsBase::write(address);
    true
}
