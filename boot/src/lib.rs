//! Baton's entry paths and the boot description they produce.
//!
//! Only this crate knows about PVH, the arm64 `Image` header and Limine. Each
//! entry is a thin adapter that turns what it was given into one
//! [`info::BootInfo`] and calls the common kernel through [`baton_main`].
//! The parsers are portable and tested on the host; the entry code and the
//! Limine requests exist only on the kernel targets.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod dtb;
#[cfg(target_os = "none")]
pub mod entry;
pub mod handover;
pub mod info;
#[cfg(target_os = "none")]
mod limine;
pub mod options;
pub mod phys;
pub mod pvh;
pub mod srat;

pub use info::{BootInfo, BootPath};
