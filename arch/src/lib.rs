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
//! | `trap::{init, TrapFrame, set_kernel_stack, enter}` | exception vectors; every trap reaches the kernel's `baton_trap`; `enter` resumes a saved frame |
//! | `interrupts::{init, start_timer, stop_timer, claim, complete}` | the interrupt controller and the periodic timer |
//! | `paging::{EntryFormat, activate_kernel, activate_user, flush_page, flush_all}` | page tables |
//! | `mmio::MmioRegion` (portable) | device registers through memory, bounds-checked volatile access |
//!
//! Traps: the vectors save the interrupted state as a [`TrapFrame`] on the
//! current kernel stack and call `baton_trap(&mut TrapFrame) -> *mut TrapFrame`,
//! which the kernel defines; the frame it returns is the one resumed, which is
//! how the scheduler switches threads.

#![no_std]

/// Everything the kexec trampoline is handed (all physical addresses), in
/// the registers its assembly expects; see each architecture's
/// `kexec::jump`.
#[derive(Debug, Clone, Copy)]
pub struct JumpPlan {
    /// Page tables that identity-map all RAM and share the kernel half.
    pub identity_root: u64,
    /// The control page holding the trampoline.
    pub control_phys: u64,
    /// The copy list (destination, source, length triples).
    pub copy_list_phys: u64,
    /// Entries in the copy list.
    pub copy_count: u64,
    /// The next kernel's entry.
    pub entry_phys: u64,
    /// The KHO root FDT.
    pub handover_phys: u64,
    /// Baton's boot description.
    pub boot_description_phys: u64,
    /// Where the trampoline stores its two cycle-counter readings (0: none).
    pub stamps_phys: u64,
}

/// One copy the kexec trampoline performs: `length` bytes from `source`
/// (0: zeroes) to `destination`, all physical. The trampolines step through
/// a list of these with the offsets and size below, given to their
/// assembly as constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CopyEntry {
    /// Where to write.
    pub destination: u64,
    /// Where to read, or 0 to fill with zeroes.
    pub source: u64,
    /// How many bytes.
    pub length: u64,
}

impl CopyEntry {
    /// Size of an entry in the list.
    pub const SIZE_BYTES: usize = 24;
    /// Offset of `source`.
    pub const SOURCE_OFFSET: usize = core::mem::offset_of!(CopyEntry, source);
    /// Offset of `length`.
    pub const LENGTH_OFFSET: usize = core::mem::offset_of!(CopyEntry, length);

    /// The entry as the trampoline reads it (native-endian words).
    pub fn to_bytes(&self) -> [u8; Self::SIZE_BYTES] {
        let mut bytes = [0; Self::SIZE_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip([self.destination, self.source, self.length]) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        bytes
    }
}

const _: () = assert!(core::mem::size_of::<CopyEntry>() == CopyEntry::SIZE_BYTES);
const _: () = assert!(core::mem::offset_of!(CopyEntry, destination) == 0);
const _: () = assert!(CopyEntry::SOURCE_OFFSET == 8 && CopyEntry::LENGTH_OFFSET == 16);

/// The trampoline stores its two cycle-counter readings in adjacent words
/// at `JumpPlan::stamps_phys`: the second this many bytes after the first
/// (the boot description's `TIMELINE_COPY_START` and `TIMELINE_COPY_END`,
/// whose adjacency `baton-boot` asserts).
pub const SECOND_STAMP_OFFSET_BYTES: usize = 8;

/// QEMU exit status of a run that ended well (all in-kernel tests passed,
/// or the demo finished with nothing lost): a status a crash or a hang
/// cannot produce.
pub const EXIT_SUCCESS: u8 = 33;
/// QEMU exit status of a run that failed (a failed test, a panic, a fault,
/// or a demo that lost state).
pub const EXIT_FAILURE: u8 = 35;

/// A service's user-mode state as one kernel hands it to the next (see
/// `trap::TrapFrame::user_registers` and `trap::TrapFrame::resume_user`):
/// never the bytes of a trap frame, which differ between kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserRegisters {
    /// The general registers in the architecture's documented order
    /// (x86_64: rax, rbx, rcx, rdx, rsi, rdi, rbp, r8..r15, then zeroes;
    /// aarch64: x0..x30).
    pub general: [u64; 31],
    /// Where it resumes (rip, ELR_EL1).
    pub instruction_pointer: u64,
    /// Its stack pointer (rsp, SP_EL0).
    pub stack_pointer: u64,
    /// Its flags (rflags, SPSR_EL1).
    pub flags: u64,
}

/// Prepares what the rest of the layer needs before the console exists.
/// `direct_map_offset` is where physical memory is mapped at entry.
pub fn early_init(direct_map_offset: u64) {
    #[cfg(target_arch = "aarch64")]
    aarch64::device_window::install(direct_map_offset);
    #[cfg(target_arch = "x86_64")]
    let _ = direct_map_offset;
}

pub mod mmio;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

/// An interrupt the kernel handles, as the architecture identified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Irq {
    /// The periodic timer tick.
    Timer,
    /// A spurious interrupt (nothing to do, nothing to acknowledge).
    Spurious,
    /// A message-signalled interrupt (MSI-X) the kernel routed, by slot
    /// (see `interrupts::message_target`).
    Message(u32),
    /// Anything else, by its number.
    Other(u32),
}

/// Why interrupt setup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptError {
    /// The CPU lacks what Baton needs.
    Unsupported(&'static str),
    /// The firmware did not describe an interrupt controller.
    NoController,
    /// The controller's registers could not be mapped.
    CannotMap,
}

impl core::fmt::Display for InterruptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InterruptError::Unsupported(what) => write!(f, "unsupported CPU: {what}"),
            InterruptError::NoController => f.write_str("no interrupt controller described by firmware"),
            InterruptError::CannotMap => f.write_str("cannot map the interrupt controller"),
        }
    }
}

/// Nanoseconds since the cycle counter started (monotonic).
pub fn nanoseconds() -> u64 {
    let frequency = cpu::cycle_counter_frequency_hz().max(1);
    (u128::from(cpu::cycle_counter()) * 1_000_000_000 / u128::from(frequency)) as u64
}

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
    /// The kernel's main thread giving the CPU to the scheduler
    /// (`cpu::yield_to_scheduler`).
    KernelYield,
    /// A hardware interrupt (the vector on x86_64; 0 on aarch64, where the
    /// interrupt controller says which).
    Interrupt(u8),
    /// Any other exception, with its name.
    Exception(&'static str),
}
