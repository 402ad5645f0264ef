//! x86_64 traps: the GDT and TSS, the IDT, and the frame the vectors save.
//!
//! The IDT is a plain table of gate descriptors rather than the `x86_64`
//! crate's typed `InterruptDescriptorTable`: every vector shares one assembly
//! entry path (the crate's typed handlers need the nightly `x86-interrupt`
//! ABI), so all 256 gates are set the same way from one stub table.

use crate::{TrapCause, UserRegisters};
use core::cell::UnsafeCell;
use core::fmt;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::registers::control::Cr2;
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

core::arch::global_asm!(include_str!("trap_entry.S"), options(att_syntax));

/// The state saved by the trap vectors, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number.
    pub vector: u64,
    /// Error code pushed by the CPU, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The vector user programs use for system calls (`int 0x80`).
pub const SYSCALL_VECTOR: u8 = 0x80;
/// The vector the kernel uses to give the CPU to the scheduler.
pub const KERNEL_YIELD_VECTOR: u8 = 0x81;
/// First vector used for hardware interrupts.
pub const FIRST_INTERRUPT_VECTOR: u8 = 32;

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "non-maskable interrupt",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 floating-point exception",
    "alignment check",
    "machine check",
    "SIMD floating-point exception",
    "virtualization exception",
    "control protection exception",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection exception",
    "VMM communication exception",
    "security exception",
    "reserved",
];

impl TrapFrame {
    /// Classifies the trap.
    pub fn cause(&self) -> TrapCause {
        match self.vector {
            3 => TrapCause::Breakpoint,
            14 => TrapCause::PageFault { address: Cr2::read_raw(), is_write: self.error_code & 2 != 0 },
            vector if vector == u64::from(SYSCALL_VECTOR) => TrapCause::Syscall,
            vector if vector == u64::from(KERNEL_YIELD_VECTOR) => TrapCause::KernelYield,
            vector if vector < 32 => TrapCause::Exception(EXCEPTION_NAMES[vector as usize]),
            vector => TrapCause::Interrupt(vector as u8),
        }
    }

    /// Whether the trap interrupted user mode.
    pub fn is_from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// The interrupted instruction pointer.
    pub fn instruction_pointer(&self) -> u64 {
        self.rip
    }

    /// A frame that enters user mode at `entry` with stack `stack_top` and
    /// `argument` in the first argument register, with interrupts enabled.
    pub fn new_user(entry: u64, stack_top: u64, argument: u64) -> Self {
        let selectors = selectors();
        Self {
            rip: entry,
            cs: u64::from(selectors.user_code.0),
            rflags: 0x202,
            rsp: stack_top,
            ss: u64::from(selectors.user_data.0),
            rdi: argument,
            ..Self::default()
        }
    }

    /// The interrupted user state, for a process handed to the next kernel:
    /// the general registers in the order rax, rbx, rcx, rdx, rsi, rdi,
    /// rbp, r8..r15 (the rest zero), then rip, rsp and rflags.
    pub fn user_registers(&self) -> UserRegisters {
        let mut general = [0; 31];
        general[..15].copy_from_slice(&[
            self.rax, self.rbx, self.rcx, self.rdx, self.rsi, self.rdi, self.rbp, self.r8, self.r9, self.r10, self.r11,
            self.r12, self.r13, self.r14, self.r15,
        ]);
        UserRegisters { general, instruction_pointer: self.rip, stack_pointer: self.rsp, flags: self.rflags }
    }

    /// A frame that resumes user mode with `registers` (from
    /// [`TrapFrame::user_registers`] in an earlier kernel). Whatever the
    /// values say, the frame can only enter user mode: the kernel sets the
    /// user code and stack selectors itself, keeps only the arithmetic,
    /// direction, trap, alignment-check and ID flags, and sets IF.
    pub fn resume_user(registers: &UserRegisters) -> Self {
        /// CF, bit 1, PF, AF, ZF, SF, TF, DF, OF, AC, ID: never IOPL, NT, RF,
        /// VM, VIF or VIP.
        const KEPT_FLAGS: u64 = 0x0024_0dd7;
        let mut frame = Self::new_user(registers.instruction_pointer, registers.stack_pointer, 0);
        let g = &registers.general;
        [frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp] =
            [g[0], g[1], g[2], g[3], g[4], g[5], g[6]];
        [frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15] =
            [g[7], g[8], g[9], g[10], g[11], g[12], g[13], g[14]];
        frame.rflags = (registers.flags & KEPT_FLAGS) | 0x202;
        frame
    }

    /// System-call number and arguments (rax; rdi, rsi, rdx, r10, r8, r9).
    pub fn syscall_arguments(&self) -> (u64, [u64; 6]) {
        (self.rax, [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9])
    }

    /// Sets the value a system call returns (rax) and a second value (rdx).
    pub fn set_syscall_result(&mut self, value: u64, second: u64) {
        self.rax = value;
        self.rdx = second;
    }
}

impl fmt::Display for TrapFrame {
    /// The register dump printed when something faults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "register dump (vector {}, error code {:#x}):", self.vector, self.error_code)?;
        writeln!(f, "  rip={:#018x} cs={:#06x} rflags={:#010x}", self.rip, self.cs, self.rflags)?;
        writeln!(f, "  rsp={:#018x} ss={:#06x}", self.rsp, self.ss)?;
        writeln!(f, "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", self.rax, self.rbx, self.rcx, self.rdx)?;
        writeln!(f, "  rsi={:#018x} rdi={:#018x} rbp={:#018x}", self.rsi, self.rdi, self.rbp)?;
        writeln!(f, "  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}", self.r8, self.r9, self.r10, self.r11)?;
        write!(f, "  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}", self.r12, self.r13, self.r14, self.r15)
    }
}

/// Segment selectors of Baton's GDT.
#[derive(Debug, Clone, Copy)]
struct Selectors {
    kernel_code: SegmentSelector,
    kernel_data: SegmentSelector,
    user_code: SegmentSelector,
    user_data: SegmentSelector,
    tss: SegmentSelector,
}

/// The task-state segment: the kernel stack for traps from user mode and
/// the emergency stack for double faults. Written only with interrupts off
/// on this single CPU.
struct TaskState(UnsafeCell<TaskStateSegment>);

// SAFETY: Baton runs on one CPU and changes the TSS only with interrupts
// disabled (see `set_kernel_stack`), so no two accesses race.
unsafe impl Sync for TaskState {}

static TASK_STATE: TaskState = TaskState(UnsafeCell::new(TaskStateSegment::new()));

const DOUBLE_FAULT_STACK_BYTES: usize = 16 * 1024;
#[repr(align(16))]
struct EmergencyStack(#[allow(dead_code)] [u8; DOUBLE_FAULT_STACK_BYTES]);
static DOUBLE_FAULT_STACK: EmergencyStack = EmergencyStack([0; DOUBLE_FAULT_STACK_BYTES]);

static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

fn selectors() -> Selectors {
    GDT.get().expect("trap::init runs before any user frame is made").1
}

/// One 16-byte interrupt gate.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Gate(u128);

impl Gate {
    fn interrupt(handler: u64, selector: u16, user_callable: bool, stack_index: u8) -> Self {
        let present = 1u128 << 47;
        let privilege = if user_callable { 3u128 << 45 } else { 0 };
        let kind = 0xeu128 << 40; // 64-bit interrupt gate: interrupts off on entry
        let value = (handler as u128 & 0xffff)
            | (u128::from(selector) << 16)
            | (u128::from(stack_index) << 32)
            | kind
            | privilege
            | present
            | (((handler as u128 >> 16) & 0xffff) << 48)
            | ((handler as u128 >> 32) << 64);
        Gate(value)
    }
}

#[repr(C, align(16))]
struct InterruptTable([Gate; 256]);

static IDT: Once<InterruptTable> = Once::new();

unsafe extern "C" {
    static trap_vectors: u8;
}

/// Loads Baton's GDT, TSS and IDT. Call once, early, with interrupts off.
pub fn init() {
    let (gdt, selectors) = GDT.call_once(|| {
        // SAFETY: the emergency stack is only ever used by the CPU as the
        // double-fault stack; the pointer is taken once here.
        let stack_top = VirtAddr::from_ptr(&raw const DOUBLE_FAULT_STACK) + DOUBLE_FAULT_STACK_BYTES as u64;
        // SAFETY: interrupts are off and nothing else holds a reference to
        // the TSS yet.
        unsafe { (*TASK_STATE.0.get()).interrupt_stack_table[0] = stack_top };
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        // SAFETY: the TSS is a static that lives forever; the CPU reads it
        // when switching stacks and Baton writes it only with interrupts off.
        let tss = gdt.append(Descriptor::tss_segment(unsafe { &*TASK_STATE.0.get() }));
        (gdt, Selectors { kernel_code, kernel_data, user_code, user_data, tss })
    });
    gdt.load();
    // SAFETY: the selectors come from the GDT just loaded and describe flat
    // 64-bit segments, so reloading them does not change any address.
    unsafe {
        CS::set_reg(selectors.kernel_code);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        SS::set_reg(selectors.kernel_data);
        load_tss(selectors.tss);
    }

    let table = IDT.call_once(|| {
        let stubs = &raw const trap_vectors as u64;
        let mut gates = [Gate(0); 256];
        for (vector, gate) in gates.iter_mut().enumerate() {
            let stack_index = if vector == 8 { 1 } else { 0 };
            let user_callable = vector == usize::from(SYSCALL_VECTOR) || vector == 3;
            *gate = Gate::interrupt(stubs + 16 * vector as u64, selectors.kernel_code.0, user_callable, stack_index);
        }
        InterruptTable(gates)
    });
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<InterruptTable>() - 1) as u16,
        base: VirtAddr::from_ptr(table),
    };
    // SAFETY: the IDT is a static that lives forever and every gate points
    // at a valid stub in `trap_vectors`.
    unsafe { lidt(&pointer) };
}

/// Sets the stack the CPU switches to when a trap arrives from user mode.
pub fn set_kernel_stack(stack_top: u64) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off on this single CPU, so nothing else
        // reads or writes the TSS while it is updated.
        unsafe { (*TASK_STATE.0.get()).privilege_stack_table[0] = VirtAddr::new(stack_top) };
    });
}

unsafe extern "Rust" {
    /// The kernel's trap handler: returns the frame to resume.
    fn baton_trap(frame: &mut TrapFrame) -> *mut TrapFrame;
}

#[unsafe(no_mangle)]
extern "C" fn arch_trap_entry(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: the vector stub passes the frame it just pushed on the current
    // stack; nothing else refers to it while the handler runs. `baton_trap`
    // is defined exactly once by the kernel with this signature.
    unsafe { baton_trap(&mut *frame) }
}
