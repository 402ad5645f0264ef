//! What Baton's kernel and its user-space services agree on: system call
//! numbers and registers, error numbers, IPC messages, update lifecycle
//! events and the decoding of raw system-call arguments.
//!
//! One definition, used by the kernel and by `userspace/`. The encoding is
//! documented in docs/abi.md; this crate is the source of truth.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod error;
pub mod info;
pub mod message;
pub mod start;
pub mod syscall;
pub mod version;

pub use error::Error;
pub use info::{KERNEL_INFO_BYTES, KernelInfo, UpdateSummary};
pub use message::{MESSAGE_WORDS, Message};
pub use start::{BallastStart, InitStart};
pub use syscall::{
    IRQ_LABEL, MAX_GRANTS, MAX_OPTION_KEY_BYTES, MAX_OPTION_VALUE_BYTES, PciAddress, Request, SHARE_REVOKED_LABEL,
    Syscall, UpdateEvent, UpdateFate, UpdateImage, UserBuffer,
};
pub use version::ABI_VERSION;

/// The end of the user half of every address space: user pointers must lie
/// below it.
pub const USER_ADDRESS_LIMIT: u64 = 0x0000_8000_0000_0000;

/// The page size of user mappings.
pub const PAGE_SIZE: u64 = 4096;

/// The largest folio order a service may allocate (4 MiB).
pub const MAX_USER_FOLIO_ORDER: u32 = 10;

/// The most bytes one `allocate_preservable_run` or `kho_restore_run` call
/// covers (the size of the preservable window of an address space).
pub const MAX_PRESERVABLE_RUN_BYTES: u64 = 64 << 30;

/// The most ranges one service may have mapped (image segments, stack,
/// preservable memory, the handover view): every one must fit in the
/// description a live update hands to the next kernel. One more is refused
/// with `NoMemory`.
pub const MAX_MAPPINGS: usize = 256;

/// The longest service name, in bytes: a service's name is also its KHO
/// user name, whose limit (31, the device-tree node-name limit) the kernel
/// asserts is the same.
pub const MAX_NAME_BYTES: usize = 31;

/// The longest log line a service can write in one call, in bytes.
pub const MAX_LOG_BYTES: usize = 512;

/// The largest sub-FDT a service may publish, in bytes.
pub const MAX_SUB_FDT_BYTES: usize = 64 * 1024;
