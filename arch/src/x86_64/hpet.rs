//! The HPET (High Precision Event Timer), which every PC since the
//! mid-2000s has and ACPI describes: a fixed-rate counter used here to
//! measure the time-stamp counter when there is no PIT to measure it with.

use core::ptr::read_volatile;
use core::ptr::write_volatile;

const CAPABILITIES: u64 = 0x00;
const CONFIGURATION: u64 = 0x10;
const MAIN_COUNTER: u64 = 0xf0;
const ENABLE: u64 = 1;
/// The longest tick the specification allows: 100 ns, in femtoseconds.
const MAX_PERIOD_FS: u64 = 100_000_000;

/// An HPET's registers.
#[derive(Debug)]
pub struct Hpet {
    base: u64,
    period_fs: u64,
}

impl Hpet {
    /// The HPET whose registers are mapped (uncached) at `base`; `None`
    /// when its capabilities register gives no valid tick period.
    ///
    /// # Safety
    ///
    /// `base` must map the HPET's 1 KiB register block for as long as the
    /// returned value lives, and nothing else may program the HPET.
    pub unsafe fn new(base: u64) -> Option<Self> {
        let hpet = Self { base, period_fs: 0 };
        let period_fs = hpet.read(CAPABILITIES) >> 32;
        (1..=MAX_PERIOD_FS).contains(&period_fs).then_some(Self { base, period_fs })
    }

    fn read(&self, offset: u64) -> u64 {
        // SAFETY: `new`'s contract: `base` maps the register block, and
        // every offset used here lies inside it.
        unsafe { read_volatile((self.base + offset) as *const u64) }
    }

    fn write(&self, offset: u64, value: u64) {
        // SAFETY: as for `read`; only the configuration register is written.
        unsafe { write_volatile((self.base + offset) as *mut u64, value) }
    }

    /// The counter's rate in Hz.
    pub fn frequency_hz(&self) -> u64 {
        1_000_000_000_000_000 / self.period_fs
    }

    /// Counts time-stamp-counter ticks over 10 ms of the HPET; `None` when
    /// the HPET does not count.
    pub fn measure_cycle_counter_hz(&self) -> Option<u64> {
        self.write(CONFIGURATION, self.read(CONFIGURATION) | ENABLE);
        let window_ticks = self.frequency_hz() / 100;
        let start = self.read(MAIN_COUNTER);
        let tsc_start = super::cpu::cycle_counter();
        let mut spins = 0u64;
        let mut now = start;
        while now.wrapping_sub(start) < window_ticks && spins < 100_000_000 {
            now = self.read(MAIN_COUNTER);
            spins += 1;
        }
        let tsc_elapsed = super::cpu::cycle_counter() - tsc_start;
        let ticks = now.wrapping_sub(start);
        if ticks < window_ticks {
            return None;
        }
        let hz = u128::from(tsc_elapsed) * u128::from(self.frequency_hz()) / u128::from(ticks);
        u64::try_from(hz).ok()
    }
}
