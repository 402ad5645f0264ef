//! Everything KHO: the outgoing handover this kernel builds for the next
//! one, the incoming handover the previous kernel left, the boot
//! description the kernel publishes as its own KHO user, and the update
//! report. It knows nothing of tasks or updates: callers pass the owner's
//! name and address space (the system-call layer and the updater bring the
//! two together).
//!
//! Imports run one way inside: `incoming` may use `outgoing`, never the
//! reverse; `boot_desc` and `incoming` use `report`.

#![deny(unsafe_code)]

pub mod boot_desc;
pub mod incoming;
pub mod memory;
pub mod outgoing;
pub mod report;

use crate::mm::user::SpaceError;

// A service's name is its KHO user name: the two limits are one.
const _: () = assert!(baton_abi::MAX_NAME_BYTES == baton_kho::fdt::USER_NAME_MAX_BYTES);
use baton_kho::OutgoingError;

/// Why a handover operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverError {
    /// Reading or mapping the caller's memory failed.
    Space(SpaceError),
    /// The address lies in memory that is not preservable.
    NotPreservable,
    /// Nothing is mapped at the address.
    NotMapped,
    /// The memory belongs to another owner.
    NotOwner,
    /// The range does not consist of whole folios.
    NotFolioAligned,
    /// The owner would hold more preservable memory than it may.
    LimitReached,
    /// Out of memory.
    OutOfMemory,
    /// A size computation overflowed.
    Overflow,
    /// The handover is frozen for an update.
    Frozen,
    /// The memory is still preserved (unpreserve it first).
    StillPreserved,
    /// The outgoing handover does not exist yet.
    NotReady,
    /// The KHO bookkeeping refused the change.
    Kho(OutgoingError),
    /// The published blob is not a valid FDT.
    InvalidSubFdt,
    /// There is no incoming handover (or it was released, or has nothing
    /// for this owner).
    NoHandover,
    /// The folios were preserved with another order.
    WrongOrder,
    /// The memory was not preserved (or was already taken back).
    NotPreserved,
}

impl From<SpaceError> for HandoverError {
    fn from(error: SpaceError) -> Self {
        HandoverError::Space(error)
    }
}

impl From<OutgoingError> for HandoverError {
    fn from(error: OutgoingError) -> Self {
        HandoverError::Kho(error)
    }
}

impl core::fmt::Display for HandoverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandoverError::Space(error) => write!(f, "address space: {error:?}"),
            HandoverError::NotPreservable => f.write_str("not preservable memory"),
            HandoverError::NotMapped => f.write_str("nothing is mapped there"),
            HandoverError::NotOwner => f.write_str("the memory belongs to another owner"),
            HandoverError::NotFolioAligned => f.write_str("not whole folios"),
            HandoverError::LimitReached => f.write_str("the owner's preservable-memory limit is reached"),
            HandoverError::OutOfMemory => f.write_str("out of memory"),
            HandoverError::Overflow => f.write_str("size overflow"),
            HandoverError::Frozen => f.write_str("the handover is frozen"),
            HandoverError::StillPreserved => f.write_str("the memory is still preserved"),
            HandoverError::NotReady => f.write_str("the outgoing handover is not set up"),
            HandoverError::Kho(error) => write!(f, "{error}"),
            HandoverError::InvalidSubFdt => f.write_str("not a valid FDT"),
            HandoverError::NoHandover => f.write_str("no incoming handover for this owner"),
            HandoverError::WrongOrder => f.write_str("preserved with another folio order"),
            HandoverError::NotPreserved => f.write_str("not preserved"),
        }
    }
}
