//! Leaving QEMU with a status through Arm semihosting (`-semihosting`).
//!
//! `SYS_EXIT` with reason `ADP_Stopped_ApplicationExit` and a subcode makes
//! QEMU exit with that subcode as its status. PSCI `SYSTEM_OFF` cannot report
//! failure (it always exits 0), so it is not used for tests.

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Exits QEMU with `status`, or halts when semihosting is not enabled.
pub fn exit(status: u8) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    // SAFETY: the semihosting call reads the two-word parameter block, which
    // lives on this stack; without a semihosting host the HLT traps and the
    // kernel's trap handler stops the CPU.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    super::cpu::halt_forever()
}
