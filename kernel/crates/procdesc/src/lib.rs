//! Process descriptions for live update: the `baton,processes-v1` sub-FDT in which the outgoing kernel describes every process the incoming kernel resumes.
//!
//! Before an update, the old kernel fills one [`ProcessDescription`] per
//! process that will be resumed (identity, mappings and the physical runs
//! behind them, user registers, scheduling state, mailbox) and publishes
//! the blob from [`write_processes`] as a KHO user's sub-FDT. After the
//! jump, the new kernel hands that blob to [`read_processes`], which treats
//! every byte as hostile: a blob that is not a `processes-v1` FDT at all is
//! refused as a whole ([`DescriptionError`]), and each process is checked
//! on its own, so one broken description ([`ProcessError`]) costs only that
//! service a restart.
//!
//! What this crate cannot check is left to the kernel and said so where it
//! matters: above all that every run from
//! [`ProcessDescription::physical_runs`] lies in memory the previous kernel
//! preserved for that very process, and that the ABI version is one the
//! new kernel supports.
//!
//! # Format
//!
//! Properties are native-endian, like every KHO FDT, and written field by
//! field (never the bytes of a kernel structure). Numbers and names are in
//! [`wire`]; every property must be present exactly once unless the table
//! says otherwise, and nothing else may appear.
//!
//! ```text
//! / {
//!     compatible = "baton,processes-v1";
//!     format-version = <u32 1>;
//!     process@<service id, lowercase hex> {       // at most 64
//!         service-id, name, binary-hash, abi-version, service-flags,
//!         architecture, general-registers, instruction-pointer,
//!         stack-pointer, flags-register, thread-pointer,
//!         scheduling-state, [message-buffer], [call-target],
//!         [sleep-until-ns], [pending-result-status, pending-result-value],
//!         answerable;
//!         mapping@<position, hex> {               // at most 256
//!             virtual-start, size-bytes, kind, access-flags,
//!             folio-order, physical-runs;
//!         };
//!         message@<position, hex> {               // at most 16
//!             label, sender, words;
//!         };
//!         device@<position, hex> {                // at most 4
//!             pci-address, pci-ids, bars;
//!         };
//!         grant@<position, hex> {                 // at most 8
//!             grant-id, peer, range, [peer-mapping];
//!         };
//!     };
//! };
//! ```

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod coalesce;
pub mod description;
pub mod device;
pub mod error;
pub mod grant;
mod parser;
pub mod roster;
mod rules;
pub mod wire;
mod writer;

pub use coalesce::{MappedRange, coalesce, mapping_count};
pub use description::{
    Architecture, BINARY_HASH_BYTES, MAX_ANSWERABLE_CALLERS, MAX_GENERAL_REGISTERS, MAX_MAPPINGS, MAX_PROCESSES,
    MAX_QUEUED_MESSAGES, MAX_RUNS_PER_MAPPING, Mapping, MappingKind, PendingResult, PhysicalRun, ProcessDescription,
    SchedulingState, UserRegisters,
};
pub use device::{DeviceBar, DeviceBarKind, DeviceRecord, MAX_BARS, MAX_DEVICES};
pub use error::{DescriptionError, Part, ProcessError, ProcessErrorKind, WriteError};
pub use grant::{GrantRecord, MAX_GRANTS};
pub use parser::read_processes;
pub use wire::{FORMAT_VERSION, PROCESSES_COMPATIBLE, Property};
pub use writer::write_processes;

#[cfg(test)]
mod tests;
