//! The plain data of one process description: identity, mappings, user registers, scheduling state and mailbox.
//!
//! These types say nothing about the kernel's own structures: the outgoing
//! kernel copies its state into them field by field, the incoming kernel
//! builds its processes from them. Whatever [`crate::read_processes`]
//! returns has passed every rule listed on [`crate::ProcessErrorKind`].

use alloc::vec::Vec;

use arrayvec::{ArrayString, ArrayVec};
use baton_abi::{MAX_NAME_BYTES, Message};

use crate::device::{DeviceRecord, MAX_DEVICES};
use crate::grant::{GrantRecord, MAX_GRANTS};

/// The most processes one description blob holds.
pub const MAX_PROCESSES: usize = 64;

/// The most mappings one process has: the kernel refuses a service's
/// mapping past this limit, so every service can be described.
pub const MAX_MAPPINGS: usize = baton_abi::MAX_MAPPINGS;

/// The most physical runs behind one mapping.
pub const MAX_RUNS_PER_MAPPING: usize = 64;

/// The most messages waiting in one process's mailbox.
pub const MAX_QUEUED_MESSAGES: usize = 16;

/// The most callers one process has received a call from and not answered.
pub const MAX_ANSWERABLE_CALLERS: usize = 16;

/// Size of the binary hash (a SHA-256 or similar digest of the service
/// image, computed by the kernel).
pub const BINARY_HASH_BYTES: usize = 32;

/// Room for the general registers of the architecture with the most (31,
/// aarch64).
pub const MAX_GENERAL_REGISTERS: usize = 31;

const _: () = assert!(
    MAX_NAME_BYTES == baton_kho::fdt::USER_NAME_MAX_BYTES,
    "a service name is also a KHO user name, so both limits must agree"
);

/// The architecture a process runs on, which decides its register set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Architecture {
    /// x86_64: 15 general registers.
    X86_64,
    /// aarch64: 31 general registers.
    Aarch64,
}

/// x86_64 RFLAGS bits a user process may have set: CF, the reserved bit 1
/// (always read as one), PF, AF, ZF, SF, TF, IF, DF, OF, RF, AC and ID.
/// IOPL, NT, VM, VIF and VIP would hand it privileges or modes Baton never
/// gives, so a description carrying them is refused.
const X86_64_USER_FLAGS: u64 = 0b10_0101_0000_1111_1101_0111;

/// RFLAGS.IF: a user process always runs with interrupts enabled, or it
/// could never be preempted.
const X86_64_INTERRUPT_FLAG: u64 = 1 << 9;

/// x86_64 addresses are canonical when bits 63..47 are all equal.
const X86_64_CANONICAL_HIGH_BITS: u64 = 0xffff_8000_0000_0000;

/// SPSR_EL1 bits that must be clear when returning to a user process:
/// M[4:0] (zero is EL0 with SP_EL0, AArch64 state), the D, A, I and F
/// masks (user code never masks exceptions), IL (illegal execution state)
/// and the upper word (reserved or kernel-only).
const AARCH64_FORBIDDEN_FLAGS: u64 = 0xffff_ffff_0000_0000 | (1 << 20) | 0b11_1100_0000 | 0b1_1111;

/// The x86_64 general registers, in the order of [`UserRegisters::general`].
const X86_64_GENERAL_REGISTER_NAMES: [&str; 15] =
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/// The aarch64 general registers, in the order of [`UserRegisters::general`].
const AARCH64_GENERAL_REGISTER_NAMES: [&str; 31] = [
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17",
    "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "x30",
];

impl Architecture {
    /// Every architecture, in wire-number order.
    pub const ALL: [Architecture; 2] = [Architecture::X86_64, Architecture::Aarch64];

    /// How many entries of [`UserRegisters::general`] are meaningful.
    pub const fn general_register_count(self) -> usize {
        self.general_register_names().len()
    }

    /// The names of the general registers, in the order they are stored.
    pub const fn general_register_names(self) -> &'static [&'static str] {
        match self {
            Architecture::X86_64 => &X86_64_GENERAL_REGISTER_NAMES,
            Architecture::Aarch64 => &AARCH64_GENERAL_REGISTER_NAMES,
        }
    }

    /// The architecture's number in the `architecture` property.
    pub const fn number(self) -> u32 {
        match self {
            Architecture::X86_64 => 1,
            Architecture::Aarch64 => 2,
        }
    }

    /// The architecture with this wire number, if any.
    pub fn from_number(number: u32) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|architecture| architecture.number() == number)
    }

    /// A short, stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Aarch64 => "aarch64",
        }
    }

    /// Whether `flags` (RFLAGS or SPSR_EL1) is a state a user process may
    /// be resumed in: user mode, interrupts enabled, no I/O privilege.
    pub const fn is_user_mode_flags(self, flags: u64) -> bool {
        match self {
            Architecture::X86_64 => flags & !X86_64_USER_FLAGS == 0 && flags & X86_64_INTERRUPT_FLAG != 0,
            Architecture::Aarch64 => flags & AARCH64_FORBIDDEN_FLAGS == 0,
        }
    }

    /// Whether `address` can be loaded as the thread pointer. x86_64 needs
    /// a canonical address (loading FS_BASE with any other faults in the
    /// kernel); any value goes in TPIDR_EL0.
    pub const fn is_valid_thread_pointer(self, address: u64) -> bool {
        match self {
            Architecture::X86_64 => {
                let high_bits = address & X86_64_CANONICAL_HIGH_BITS;
                high_bits == 0 || high_bits == X86_64_CANONICAL_HIGH_BITS
            }
            Architecture::Aarch64 => true,
        }
    }
}

/// The user registers of a process as it will resume.
///
/// `general` holds the architecture's general registers in a fixed order
/// (see [`Architecture::general_register_names`]); entries past
/// [`Architecture::general_register_count`] are zero.
///
/// | field | x86_64 | aarch64 |
/// | --- | --- | --- |
/// | `general[0..15]` | rax, rbx, rcx, rdx, rsi, rdi, rbp, r8..r15 | x0..x14 |
/// | `general[15..31]` | zero | x15..x30 |
/// | `instruction_pointer` | rip | pc (ELR_EL1) |
/// | `stack_pointer` | rsp | sp (SP_EL0) |
/// | `flags` | rflags | pstate (SPSR_EL1) |
/// | `thread_pointer` | fs_base | TPIDR_EL0 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserRegisters {
    /// The general registers, in the architecture's documented order.
    pub general: [u64; MAX_GENERAL_REGISTERS],
    /// Where the process resumes.
    pub instruction_pointer: u64,
    /// Its stack pointer.
    pub stack_pointer: u64,
    /// Its flags or processor state.
    pub flags: u64,
    /// Its thread pointer.
    pub thread_pointer: u64,
}

impl UserRegisters {
    /// The meaningful general registers for `architecture`.
    pub fn general_for(&self, architecture: Architecture) -> &[u64] {
        self.general.get(..architecture.general_register_count()).unwrap_or(&self.general)
    }
}

/// What a mapping holds, which tells the kernel how to rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MappingKind {
    /// A segment of the service's image.
    Image,
    /// The user stack.
    Stack,
    /// Ordinary anonymous memory.
    Heap,
    /// Preservable memory from `allocate_preservable` or
    /// `allocate_preservable_run`, in folios of [`Mapping::folio_order`].
    Preservable,
    /// The read-only view of the sub-FDT from `kho_fetch`.
    HandoverFdt,
    /// Registers of a device the process drives (`device_map`): its runs
    /// are CPU addresses inside a memory BAR of one of its
    /// [`ProcessDescription::devices`], not memory.
    Device,
    /// Another service's memory granted to this one (`share_map`): one
    /// run, which a grant record of the owner must name (see
    /// [`crate::grant`]); not this process's memory.
    Shared,
}

impl MappingKind {
    /// Every kind, in wire-number order.
    pub const ALL: [MappingKind; 7] = [
        MappingKind::Image,
        MappingKind::Stack,
        MappingKind::Heap,
        MappingKind::Preservable,
        MappingKind::HandoverFdt,
        MappingKind::Device,
        MappingKind::Shared,
    ];

    /// The kind's number in the `kind` property.
    pub const fn number(self) -> u32 {
        match self {
            MappingKind::Image => 1,
            MappingKind::Stack => 2,
            MappingKind::Heap => 3,
            MappingKind::Preservable => 4,
            MappingKind::HandoverFdt => 5,
            MappingKind::Device => 6,
            MappingKind::Shared => 7,
        }
    }

    /// The kind with this wire number, if any.
    pub fn from_number(number: u32) -> Option<MappingKind> {
        MappingKind::ALL.into_iter().find(|kind| kind.number() == number)
    }
}

/// Physically contiguous memory behind part of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysicalRun {
    /// First physical address.
    pub phys_start: u64,
    /// Length in bytes.
    pub size_bytes: u64,
}

/// One virtual range of a process and the physical runs backing it, in
/// order: the first run backs the first bytes of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First virtual address (page aligned).
    pub virtual_start: u64,
    /// Length in bytes (page aligned, not zero).
    pub size_bytes: u64,
    /// What the mapping holds.
    pub kind: MappingKind,
    /// User code may write it.
    pub is_writable: bool,
    /// User code may execute it (never together with `is_writable`).
    pub is_executable: bool,
    /// The folio order of a [`MappingKind::Preservable`] mapping; zero for
    /// every other kind.
    pub folio_order: u32,
    /// The grant a [`MappingKind::Shared`] mapping comes from (its owner's
    /// id for it, not zero); zero for every other kind.
    pub grant_id: u64,
    /// The physical runs, in virtual order, summing to `size_bytes`.
    pub runs: Vec<PhysicalRun>,
}

/// Where a process stood when the old kernel stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulingState {
    /// Runnable.
    Ready,
    /// Blocked in `receive`, which will write a message to `message_buffer`.
    Receiving {
        /// User address of the 64-byte message buffer.
        message_buffer: u64,
    },
    /// Blocked in `call` to `target`, whose reply overwrites `message_buffer`.
    Calling {
        /// The service called.
        target: u64,
        /// User address of the 64-byte message buffer.
        message_buffer: u64,
    },
    /// Sleeping until the monotonic clock (which continues across updates)
    /// reads `until_ns`.
    Sleeping {
        /// Wake-up time in nanoseconds since boot of the first kernel.
        until_ns: u64,
    },
}

impl SchedulingState {
    /// The state's number in the `scheduling-state` property.
    pub const fn number(&self) -> u32 {
        match self {
            SchedulingState::Ready => 1,
            SchedulingState::Receiving { .. } => 2,
            SchedulingState::Calling { .. } => 3,
            SchedulingState::Sleeping { .. } => 4,
        }
    }

    /// The message buffer of a blocked `receive` or `call`.
    pub const fn message_buffer(&self) -> Option<u64> {
        match self {
            SchedulingState::Receiving { message_buffer } | SchedulingState::Calling { message_buffer, .. } => {
                Some(*message_buffer)
            }
            SchedulingState::Ready | SchedulingState::Sleeping { .. } => None,
        }
    }
}

/// A system-call result the process has not yet seen: the kernel writes
/// it into the result registers when the process resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingResult {
    /// 0 for success, otherwise a [`baton_abi::Error`] number.
    pub status: u64,
    /// The value returned.
    pub value: u64,
}

/// Everything the new kernel needs to resume one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessDescription {
    /// The service id, which the process keeps.
    pub service_id: u64,
    /// The service's name (a valid KHO user name).
    pub name: ArrayString<MAX_NAME_BYTES>,
    /// Digest of the service's image, to match it against the image the new
    /// kernel would start.
    pub binary_hash: [u8; BINARY_HASH_BYTES],
    /// The [`baton_abi::ABI_VERSION`] the service was built for. The new
    /// kernel resumes it only if it supports that version.
    pub abi_version: u32,
    /// Subscribed to update lifecycle events.
    pub is_subscribed: bool,
    /// May use the privileged calls (`spawn`, `update`, `shutdown`).
    pub is_privileged: bool,
    /// The architecture of `registers`.
    pub architecture: Architecture,
    /// The user registers.
    pub registers: UserRegisters,
    /// The mappings, at most [`MAX_MAPPINGS`], none overlapping another.
    pub mappings: Vec<Mapping>,
    /// Where it stood.
    pub scheduling: SchedulingState,
    /// A result to deliver when it resumes.
    pub pending_result: Option<PendingResult>,
    /// Messages waiting in its mailbox, oldest first. `sender` is kept as
    /// the kernel filled it in.
    pub queued_messages: ArrayVec<Message, MAX_QUEUED_MESSAGES>,
    /// Callers whose call it has received and not answered: each may be
    /// the target of its next `reply`. Unique.
    pub answerable: ArrayVec<u64, MAX_ANSWERABLE_CALLERS>,
    /// The PCI functions it drives, each at most once; its
    /// [`MappingKind::Device`] mappings lie inside their memory BARs.
    pub devices: ArrayVec<DeviceRecord, MAX_DEVICES>,
    /// The regions of its preservable memory it granted to other services.
    pub grants: ArrayVec<GrantRecord, MAX_GRANTS>,
}

impl ProcessDescription {
    /// Every physical run of memory behind its mappings, mapping by
    /// mapping ([`MappingKind::Device`] runs are device registers, not
    /// memory, and are left out: this crate checks that they lie inside
    /// the process's recorded BARs; [`MappingKind::Shared`] runs are the
    /// owner's memory, left out too: the kernel matches them against the
    /// owner's grants).
    ///
    /// This crate checks that runs are page aligned, do not wrap and add up
    /// to their mapping; it cannot know physical memory. Before mapping any
    /// run, the caller must check that it lies entirely in memory the
    /// previous kernel preserved, that it belongs to this process and to no
    /// other, and that no two runs overlap.
    pub fn physical_runs(&self) -> impl Iterator<Item = PhysicalRun> + '_ {
        self.mappings
            .iter()
            .filter(|mapping| !matches!(mapping.kind, MappingKind::Device | MappingKind::Shared))
            .flat_map(|mapping| mapping.runs.iter().copied())
    }

    /// Where `grant` (one of its [`Self::grants`]) starts in physical
    /// memory: inside one run of one of its preservable mappings, which a
    /// description that read back always has.
    pub fn grant_physical_start(&self, grant: &GrantRecord) -> Option<u64> {
        crate::rules::grant_physical_start(grant, &self.mappings)
    }
}
