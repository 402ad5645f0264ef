//! x86_64: 16550 serial, GDT/IDT/TSS, traps, and QEMU's isa-debug-exit.

pub mod cpu;
pub mod debug_exit;
pub mod hpet;
pub mod interrupts;
pub mod kexec;
pub mod paging;
pub mod serial;
pub mod trap;

/// The architecture's name, as printed in the banner.
pub const NAME: &str = "x86_64";
