//! Kernel tests of the boot path and of fault reporting.

use crate::{check, check_eq, kernel_test};

kernel_test! {
    /// The boot description reaches the kernel with RAM and the image in it.
    fn boot_description_is_complete() -> TestResult {
        let info = crate::options::boot_info();
        check!(info.total_ram_bytes() >= 64 << 20, "only {} bytes of RAM", info.total_ram_bytes());
        check!(!info.kernel.phys.is_empty());
        let image_in_ram = info.memory_map.iter().any(|region| {
            region.kind.is_ram() && region.range.contains_range(&info.kernel.phys)
        });
        check!(image_in_ram, "kernel image {} is not inside RAM", info.kernel.phys);
        Ok(())
    }
}

kernel_test! {
    /// A breakpoint traps into the kernel and execution continues after it.
    fn breakpoint_returns() -> TestResult {
        let before = crate::trap::breakpoints_seen();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: int3 traps to the kernel's handler, which resumes after it.
        unsafe { core::arch::asm!("int3") };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: brk traps to the kernel's handler, which skips it.
        unsafe { core::arch::asm!("brk #1") };
        check_eq!(crate::trap::breakpoints_seen(), before + 1);
        Ok(())
    }
}

kernel_test! {
    /// A kernel page fault prints a register dump and the faulting address,
    /// then fails the run (the xtask checks all three).
    scenario fn kernel_page_fault() -> TestResult {
        // In the kernel half, in a top-level slot Baton never maps.
        let address = 0xffff_fe00_dead_0000_u64 as *const u64;
        // SAFETY: not safe at all: this reads unmapped memory on purpose to
        // exercise the fault path.
        let value = unsafe { address.read_volatile() };
        crate::println!("read {value:#x} from unmapped memory?");
        Err(crate::ktest::Failed)
    }
}

#[cfg(target_arch = "x86_64")]
kernel_test! {
    /// ACPI describes the machine: the MADT lists a processor, the local
    /// APIC and an I/O APIC; QEMU's q35 has an HPET, and its measure of the
    /// time-stamp counter agrees with the clock the kernel runs on.
    fn acpi_describes_the_platform() -> TestResult {
        let Some(platform) = crate::acpi::platform() else {
            check!(false, "no ACPI tables were read");
            return Ok(());
        };
        check!(platform.processors >= 1);
        check_eq!(platform.local_apic, 0xfee0_0000);
        check!(platform.io_apics >= 1);
        check!(platform.first_io_apic.is_some_and(|(address, _)| address != 0));
        check!(platform.hpet.is_some(), "q35 has an HPET");
        let by_hpet = platform.tsc_hz_by_hpet.unwrap_or(0);
        let clock = baton_arch::cpu::cycle_counter_frequency_hz();
        // Generous: under emulation a 10 ms window can be stretched by the
        // host, but a wrong unit or period would be off by orders.
        check!(by_hpet.abs_diff(clock) < clock / 4, "HPET says {by_hpet} Hz, the clock runs at {clock} Hz");
        Ok(())
    }
}

kernel_test! {
    /// While the screen is paused (an update's blackout) nothing is drawn
    /// on it, and resuming (an aborted update) draws what was logged
    /// meanwhile. Direct boots have no screen: there it checks only that
    /// pausing and resuming leave the console working.
    fn a_paused_screen_draws_nothing_until_resumed() -> TestResult {
        let before = crate::console::screen_lines();
        crate::console::pause_screen();
        log::info!(target: "ktest", "logged while the screen is paused");
        check_eq!(crate::console::screen_lines(), before);
        crate::console::resume_screen();
        if crate::console::has_screen() {
            check!(crate::console::screen_lines() > before, "the held line was not drawn");
        }
        log::info!(target: "ktest", "logged after the screen resumed");
        Ok(())
    }
}
