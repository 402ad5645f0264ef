//! Kernel tests of the boot path and of fault reporting.

use crate::{check, check_eq, kernel_test};

kernel_test! {
    /// The boot description reaches the kernel with RAM and the image in it.
    fn boot_description_is_complete() -> TestResult {
        let info = crate::boot_info();
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
