//! Baton's architecture layer: everything that names `x86_64::` or
//! `aarch64_cpu::`.
//!
//! Each architecture is a module with the same items, re-exported here as
//! `baton_arch::*`, so portable kernel code never names an architecture:
//!
//! | item | what it does |
//! |---|---|
//! | `NAME` | `"x86_64"` or `"aarch64"` |
//! | `serial::Uart` | the boot console UART (16550 / PL011) |
//! | `cpu::{halt_forever, wait_for_interrupt, interrupts_enabled, disable_interrupts, enable_interrupts, cycle_counter, cycle_counter_frequency_hz}` | the processor |
//! | `debug_exit::exit(code)` | leave QEMU with a status (isa-debug-exit / semihosting) |
//! | `trap::{init, TrapFrame}` | exception vectors; every trap reaches the kernel's `baton_trap` |
//!
//! Traps: the vectors save the interrupted state as a [`TrapFrame`] on the
//! current kernel stack and call `baton_trap(&mut TrapFrame) -> *mut TrapFrame`,
//! which the kernel defines; the frame it returns is the one resumed, which is
//! how the scheduler switches threads.

#![no_std]

/// Prepares what the rest of the layer needs before the console exists.
/// `direct_map_offset` is where physical memory is mapped at entry.
pub fn early_init(direct_map_offset: u64) {
    #[cfg(target_arch = "aarch64")]
    aarch64::device_window::install(direct_map_offset);
    #[cfg(target_arch = "x86_64")]
    let _ = direct_map_offset;
}

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

/// What caused a trap, in the kernel's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapCause {
    /// A page fault (translation or permission) at `address`.
    PageFault {
        /// The faulting address.
        address: u64,
        /// Whether the access was a write.
        is_write: bool,
    },
    /// A breakpoint instruction.
    Breakpoint,
    /// A system call from user mode.
    Syscall,
    /// A hardware interrupt (the vector on x86_64; 0 on aarch64, where the
    /// interrupt controller says which).
    Interrupt(u8),
    /// Any other exception, with its name.
    Exception(&'static str),
}
