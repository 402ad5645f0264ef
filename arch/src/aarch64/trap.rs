//! aarch64 traps: the exception vector table and the frame it saves.

use crate::{TrapCause, UserRegisters};
use aarch64_cpu::registers::{VBAR_EL1, Writeable};
use core::fmt;

core::arch::global_asm!(include_str!("trap_entry.S"));

/// The state saved by the vectors (layout shared with trap_entry.S).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapFrame {
    /// x0 to x30.
    pub x: [u64; 31],
    /// The user stack pointer.
    pub sp_el0: u64,
    /// The interrupted instruction.
    pub elr: u64,
    /// The interrupted processor state.
    pub spsr: u64,
    /// Exception syndrome.
    pub esr: u64,
    /// Fault address.
    pub far: u64,
    /// Which of the 16 vectors fired.
    pub vector: u64,
    padding: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 304);

/// Exception classes (ESR_EL1.EC) Baton distinguishes.
const CLASS_SVC64: u64 = 0x15;
const CLASS_INSTRUCTION_ABORT_LOWER: u64 = 0x20;
const CLASS_INSTRUCTION_ABORT_SAME: u64 = 0x21;
const CLASS_DATA_ABORT_LOWER: u64 = 0x24;
const CLASS_DATA_ABORT_SAME: u64 = 0x25;
const CLASS_BRK: u64 = 0x3c;

/// Vector numbers within the table that carry IRQs.
const VECTOR_IRQ_SAME_EL: u64 = 5;
const VECTOR_IRQ_LOWER_EL: u64 = 9;

fn class_name(class: u64) -> &'static str {
    match class {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x18 => "trapped system register access",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "unexpected exception",
    }
}

impl TrapFrame {
    /// Classifies the trap.
    pub fn cause(&self) -> TrapCause {
        if self.vector == VECTOR_IRQ_SAME_EL || self.vector == VECTOR_IRQ_LOWER_EL {
            return TrapCause::Interrupt(0);
        }
        let class = self.esr >> 26;
        match class {
            CLASS_SVC64 if self.is_from_user() => TrapCause::Syscall,
            CLASS_SVC64 => TrapCause::KernelYield,
            CLASS_BRK => TrapCause::Breakpoint,
            CLASS_DATA_ABORT_LOWER | CLASS_DATA_ABORT_SAME => {
                TrapCause::PageFault { address: self.far, is_write: self.esr & (1 << 6) != 0 }
            }
            CLASS_INSTRUCTION_ABORT_LOWER | CLASS_INSTRUCTION_ABORT_SAME => {
                TrapCause::PageFault { address: self.far, is_write: false }
            }
            _ => TrapCause::Exception(class_name(class)),
        }
    }

    /// Whether the trap interrupted EL0.
    pub fn is_from_user(&self) -> bool {
        self.spsr & 0xf == 0
    }

    /// The interrupted instruction pointer.
    pub fn instruction_pointer(&self) -> u64 {
        self.elr
    }

    /// A frame that enters EL0 at `entry` with stack `stack_top` and
    /// `argument` in x0, with IRQs unmasked.
    pub fn new_user(entry: u64, stack_top: u64, argument: u64) -> Self {
        let mut frame = Self { elr: entry, sp_el0: stack_top, spsr: 0, ..Self::default() };
        frame.x[0] = argument;
        frame
    }

    /// The interrupted user state, for a process handed to the next kernel:
    /// x0..x30, then ELR (where it resumes), SP_EL0 and SPSR.
    pub fn user_registers(&self) -> UserRegisters {
        UserRegisters { general: self.x, instruction_pointer: self.elr, stack_pointer: self.sp_el0, flags: self.spsr }
    }

    /// A frame that resumes EL0 with `registers` (from
    /// [`TrapFrame::user_registers`] in an earlier kernel). Whatever the
    /// values say, the frame can only enter EL0t with exceptions unmasked:
    /// the kernel keeps only the condition flags (N, Z, C, V) and clears
    /// every mode, mask and state bit.
    pub fn resume_user(registers: &UserRegisters) -> Self {
        const CONDITION_FLAGS: u64 = 0xf000_0000;
        let mut frame = Self::new_user(registers.instruction_pointer, registers.stack_pointer, 0);
        frame.x = registers.general;
        frame.spsr = registers.flags & CONDITION_FLAGS;
        frame
    }

    /// System-call number and arguments (x8; x0 to x5).
    pub fn syscall_arguments(&self) -> (u64, [u64; 6]) {
        (self.x[8], [self.x[0], self.x[1], self.x[2], self.x[3], self.x[4], self.x[5]])
    }

    /// Sets the value a system call returns (x0) and a second value (x1).
    pub fn set_syscall_result(&mut self, value: u64, second: u64) {
        self.x[0] = value;
        self.x[1] = second;
    }
}

impl fmt::Display for TrapFrame {
    /// The register dump printed when something faults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "register dump (vector {}, ESR {:#x}, FAR {:#018x}):", self.vector, self.esr, self.far)?;
        writeln!(f, "  elr={:#018x} spsr={:#010x} sp_el0={:#018x}", self.elr, self.spsr, self.sp_el0)?;
        for row in 0..8 {
            write!(f, " ")?;
            for column in 0..4 {
                let index = row * 4 + column;
                if index < 31 {
                    write!(f, " x{index:<2}={:#018x}", self.x[index])?;
                }
            }
            if row < 7 {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

unsafe extern "C" {
    static trap_vectors: u8;
}

/// Installs the exception vectors. Call once, early, with IRQs masked.
pub fn init() {
    let vectors = &raw const trap_vectors as u64;
    VBAR_EL1.set(vectors);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Nothing to do on aarch64: traps from EL0 use SP_EL1, which is the
/// resumed thread's kernel stack once its frame has been popped.
pub fn set_kernel_stack(_stack_top: u64) {}

unsafe extern "Rust" {
    /// The kernel's trap handler: returns the frame to resume.
    fn baton_trap(frame: &mut TrapFrame) -> *mut TrapFrame;
}

#[unsafe(no_mangle)]
extern "C" fn arch_trap_entry(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: the vector passes the frame it just reserved on the current
    // stack; nothing else refers to it while the handler runs. `baton_trap`
    // is defined exactly once by the kernel with this signature.
    unsafe { baton_trap(&mut *frame) }
}
