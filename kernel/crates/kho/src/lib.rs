//! Kexec HandOver (KHO) for Baton: the formats and state that carry preserved memory across a kexec.
//!
//! Baton boots through KHO. The outgoing kernel records which folios must
//! survive ([`tracker`]), serialises that record into a chunk list
//! ([`serial`]) and publishes it, together with one sub-FDT per KHO user,
//! in a `kho-v1` root FDT ([`fdt`]); [`outgoing`] ties these together as a
//! state machine with finalisation and abort. The incoming kernel parses
//! the root FDT and walks the chunk list, treating every byte as hostile,
//! into [`serial::IncomingPreservations`]. [`scratch`] and [`cmdline`]
//! size the scratch regions from `kho_scratch=` and read `kho=`.
//!
//! Physical memory is reached only through the [`memory::PhysMemory`] and
//! [`memory::MetadataAllocator`] traits, so this crate has no `unsafe` and
//! runs unchanged on the host, where `memory::SimulatedMemory` (feature
//! `simulated`) stands in for RAM.
//!
//! The wire format is described byte by byte in `docs/handover.md`.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]
// Parser and bitmap code must not panic on any input: no unwraps and no
// unchecked indexing outside tests. (Modules that read hostile bytes also
// deny `clippy::arithmetic_side_effects`.)
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

extern crate alloc;

pub mod bitmap;
pub mod cmdline;
pub mod fdt;
pub mod memory;
pub mod outgoing;
pub mod scratch;
pub mod serial;
pub mod tracker;

pub use bitmap::{BITMAP_SIZE_BYTES, Folio, FolioRun, MAX_ORDER, ORDER_COUNT};
pub use fdt::{KhoFdt, KhoFdtBuilder, KhoFdtError, SubFdtWriter, parse_kho_fdt, validate_fdt};
pub use memory::{AccessError, HandoverMemory, MetadataAllocator, PhysMemory, PhysRange};
pub use outgoing::{FinalizeSummary, OutgoingError, OutgoingHandover};
pub use serial::{ChunkListError, IncomingPreservations, RestoreError, SerializedChunks};
pub use tracker::{PreservationTracker, TrackerError};

#[cfg(any(test, feature = "simulated"))]
pub use memory::SimulatedMemory;

#[cfg(test)]
mod tests;
