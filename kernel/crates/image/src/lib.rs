//! ELF images that Baton loads but did not write: its user-space services and the next kernel of a self-kexec.
//!
//! [`parse`] reads an ELF file and checks the rules every Baton image meets:
//! a little-endian ELF64 static executable (`ET_EXEC`) for the machine Baton
//! runs on, at most [`MAX_LOAD_SEGMENTS`] `PT_LOAD` segments whose file bytes
//! lie inside the file and whose pages do not overlap, an entry point inside
//! an executable segment, and well-formed notes ([`note`]). On top of that,
//! [`ElfImage::validate_service`] checks a user-space service and
//! [`ElfImage::validate_kernel`] checks a next kernel and returns the
//! [`KernelPlan`] a kexec loader copies it by.
//!
//! The `elf` crate (no allocation, no `unsafe` on our side) decodes the file
//! header, program headers and section headers; this crate does the bounds
//! and overlap checks itself and parses notes itself, strictly (see
//! [`note`] for why). Nothing here allocates or panics, whatever the bytes.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]
// This crate reads bytes Baton did not write: no unwraps, no unchecked
// indexing and no unchecked arithmetic outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

mod error;
mod image;
mod kernel;
pub mod note;
mod service;
pub mod services;

#[cfg(any(test, feature = "std"))]
extern crate alloc;

pub use error::ImageError;
pub use image::{ElfImage, Machine, Segment, VirtualSpan, parse};
pub use kernel::{KERNEL_ALIGN_BYTES, KernelPlan, KernelSegment};
pub use note::{BATON_NOTE_KHO_ENTRY, BATON_NOTE_NAME, Note, NoteError};
pub use service::NULL_GUARD_BYTES;
pub use services::{BATON_NOTE_SERVICES, Fate, RestartReason, RunningService, ServiceRecord, ServiceTable};

/// The page size every Baton image is laid out for, on both machines.
pub const PAGE_SIZE_BYTES: u64 = baton_abi::PAGE_SIZE;

/// The most `PT_LOAD` segments an image may have (empty ones are not counted).
pub const MAX_LOAD_SEGMENTS: usize = 16;

/// The most program headers of any type an image may have.
pub const MAX_PROGRAM_HEADERS: u16 = 64;

/// The most note regions (`PT_NOTE` segments and `SHT_NOTE` sections not
/// inside one) an image may have.
pub const MAX_NOTE_REGIONS: usize = 16;

#[cfg(test)]
mod tests;
