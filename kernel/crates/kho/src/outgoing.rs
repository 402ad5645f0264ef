//! The outgoing handover: collecting preservations and sub-FDTs, then finalising, aborting or jumping.
//!
//! ```text
//!            preserve / unpreserve / add / remove sub-FDT
//!           ┌──────┐
//!           ▼      │
//!         Open ────┘ ──finalize──▶ Finalized ──(kexec)──▶
//!           ▲                        │ every change: Busy
//!           └─────────abort──────────┘
//! ```
//!
//! Finalisation checks that every sub-FDT is a well-formed FDT lying in
//! preserved memory, writes the chunk list, builds the `kho-v1` root and
//! copies it into metadata memory. A failure leaves the handover open and
//! frees what was allocated. `abort` frees the chunks and the root copy
//! (the bitmaps belong to the tracker and stay) and reopens the handover.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::bitmap::FolioRun;
use crate::fdt::{KhoFdtBuildError, KhoFdtBuilder, ReadFdtError, is_valid_user_name, read_fdt};
use crate::memory::{AccessError, HandoverMemory, MetadataAllocator, PAGE_SIZE_BYTES, PhysRange, align_up};
use crate::serial::{SerializeError, SerializedChunks, serialize};
use crate::tracker::{PreservationTracker, TrackerError};

/// Why an outgoing-handover operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingError {
    /// The handover is finalised: no change until it is aborted.
    Busy,
    /// `finalize` on a finalised handover.
    AlreadyFinalized,
    /// `abort` on a handover that is not finalised.
    NotFinalized,
    /// A preservation change was refused.
    Tracker(TrackerError),
    /// A sub-FDT name breaks [`crate::fdt::is_valid_user_name`].
    InvalidUserName,
    /// A sub-FDT with that name is registered already.
    DuplicateUserName,
    /// No sub-FDT with that name is registered.
    UnknownUser,
    /// A sub-FDT of zero bytes, or one that wraps around.
    InvalidSubFdtRange {
        /// Its address.
        phys: u64,
    },
    /// Part of a sub-FDT is not in preserved memory.
    SubFdtNotPreserved {
        /// Its address.
        phys: u64,
    },
    /// A sub-FDT is not a well-formed FDT within its registered size.
    InvalidSubFdt {
        /// Its address.
        phys: u64,
        /// What is wrong with it.
        error: ReadFdtError,
    },
    /// The metadata allocator ran out during finalisation.
    OutOfMetadataMemory,
    /// Writing the chunk list or the root failed.
    Access(AccessError),
    /// The root FDT could not be built.
    FdtBuild(KhoFdtBuildError),
}

impl fmt::Display for OutgoingError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy => write!(formatter, "KHO is finalised; abort first"),
            Self::AlreadyFinalized => write!(formatter, "KHO is already finalised"),
            Self::NotFinalized => write!(formatter, "KHO is not finalised"),
            Self::Tracker(error) => write!(formatter, "{error}"),
            Self::InvalidUserName => write!(formatter, "invalid KHO user name"),
            Self::DuplicateUserName => write!(formatter, "KHO user name already registered"),
            Self::UnknownUser => write!(formatter, "no such KHO user"),
            Self::InvalidSubFdtRange { phys } => {
                write!(formatter, "sub-FDT at {phys:#x} has an invalid size")
            }
            Self::SubFdtNotPreserved { phys } => {
                write!(formatter, "sub-FDT at {phys:#x} is not in preserved memory")
            }
            Self::InvalidSubFdt { phys, error } => {
                write!(formatter, "sub-FDT at {phys:#x}: {error}")
            }
            Self::OutOfMetadataMemory => write!(formatter, "out of memory for KHO metadata"),
            Self::Access(error) => write!(formatter, "{error}"),
            Self::FdtBuild(error) => write!(formatter, "{error}"),
        }
    }
}

impl core::error::Error for OutgoingError {}

impl From<TrackerError> for OutgoingError {
    fn from(error: TrackerError) -> Self {
        Self::Tracker(error)
    }
}

impl From<SerializeError> for OutgoingError {
    fn from(error: SerializeError) -> Self {
        match error {
            SerializeError::OutOfMetadataMemory => Self::OutOfMetadataMemory,
            SerializeError::Access(error) => Self::Access(error),
        }
    }
}

/// A registered sub-FDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubFdtRegistration {
    /// Physical address of the blob.
    pub phys: u64,
    /// Bytes reserved for it (at least its `totalsize`).
    pub size_bytes: u64,
}

/// What finalisation produced: everything the kexec path and the logs need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizeSummary {
    /// Physical address of the root FDT copy (page-aligned).
    pub root_fdt_phys: u64,
    /// Size of the root FDT blob.
    pub root_fdt_size_bytes: u64,
    /// Head of the chunk list (`preserved-memory-map`), 0 if nothing is preserved.
    pub chunk_list_head_phys: u64,
    /// Chunk pages written.
    pub chunk_count: u64,
    /// Bitmaps referenced by the chunks.
    pub bitmap_count: u64,
    /// Folios preserved.
    pub folio_count: u64,
    /// Bytes preserved.
    pub preserved_bytes: u64,
    /// `(user name, sub-FDT address)`, by name.
    pub users: Vec<(String, u64)>,
}

#[derive(Debug, Clone)]
struct Finalized {
    chunks: SerializedChunks,
    root_fdt_allocation_bytes: u64,
    summary: FinalizeSummary,
}

/// The outgoing side of KHO. Generic over memory only through its methods,
/// so one value serves the kernel and the tests.
#[derive(Debug, Clone, Default)]
pub struct OutgoingHandover {
    tracker: PreservationTracker,
    sub_fdts: BTreeMap<String, SubFdtRegistration>,
    finalized: Option<Finalized>,
}

impl OutgoingHandover {
    /// An open handover with nothing preserved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the handover is finalised (frozen).
    pub fn is_finalized(&self) -> bool {
        self.finalized.is_some()
    }

    /// The summary of the current finalisation.
    pub fn summary(&self) -> Option<&FinalizeSummary> {
        self.finalized.as_ref().map(|finalized| &finalized.summary)
    }

    /// The preservations so far.
    pub fn tracker(&self) -> &PreservationTracker {
        &self.tracker
    }

    /// The registered sub-FDTs, by name.
    pub fn sub_fdts(&self) -> impl Iterator<Item = (&str, SubFdtRegistration)> + '_ {
        self.sub_fdts.iter().map(|(name, registration)| (name.as_str(), *registration))
    }

    fn ensure_open(&self) -> Result<(), OutgoingError> {
        if self.finalized.is_some() { Err(OutgoingError::Busy) } else { Ok(()) }
    }

    /// See [`PreservationTracker::preserve_folio`].
    pub fn preserve_folio<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        order: u32,
    ) -> Result<(), OutgoingError> {
        self.ensure_open()?;
        Ok(self.tracker.preserve_folio(memory, phys, order)?)
    }

    /// See [`PreservationTracker::preserve_folio_run`].
    pub fn preserve_folio_run<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        run: FolioRun,
    ) -> Result<(), OutgoingError> {
        self.ensure_open()?;
        Ok(self.tracker.preserve_folio_run(memory, run)?)
    }

    /// See [`PreservationTracker::unpreserve_folio`].
    pub fn unpreserve_folio<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        order: u32,
    ) -> Result<(), OutgoingError> {
        self.ensure_open()?;
        Ok(self.tracker.unpreserve_folio(memory, phys, order)?)
    }

    /// See [`PreservationTracker::preserve_range`].
    pub fn preserve_range<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<(), OutgoingError> {
        self.ensure_open()?;
        Ok(self.tracker.preserve_range(memory, phys, size_bytes)?)
    }

    /// See [`PreservationTracker::unpreserve_range`].
    pub fn unpreserve_range<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<(), OutgoingError> {
        self.ensure_open()?;
        Ok(self.tracker.unpreserve_range(memory, phys, size_bytes)?)
    }

    /// Unpreserve every folio entirely inside `[phys, phys + size_bytes)`
    /// (see [`PreservationTracker::unpreserve_inside`]); returns the bytes.
    pub fn unpreserve_inside<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<u64, OutgoingError> {
        self.ensure_open()?;
        Ok(self.tracker.unpreserve_inside(memory, phys, size_bytes)?)
    }

    /// Register the sub-FDT of user `name`: `size_bytes` at `phys`. The
    /// memory must be preserved (by the user) before finalisation.
    pub fn add_sub_fdt(&mut self, name: &str, phys: u64, size_bytes: u64) -> Result<(), OutgoingError> {
        self.ensure_open()?;
        if !is_valid_user_name(name) {
            return Err(OutgoingError::InvalidUserName);
        }
        if size_bytes == 0 || phys.checked_add(size_bytes).is_none() {
            return Err(OutgoingError::InvalidSubFdtRange { phys });
        }
        if self.sub_fdts.contains_key(name) {
            return Err(OutgoingError::DuplicateUserName);
        }
        self.sub_fdts.insert(String::from(name), SubFdtRegistration { phys, size_bytes });
        Ok(())
    }

    /// Withdraw the sub-FDT of user `name` and return its registration.
    pub fn remove_sub_fdt(&mut self, name: &str) -> Result<SubFdtRegistration, OutgoingError> {
        self.ensure_open()?;
        self.sub_fdts.remove(name).ok_or(OutgoingError::UnknownUser)
    }

    /// Serialise, build the root FDT, copy it to metadata memory and freeze.
    pub fn finalize<M: HandoverMemory + ?Sized>(&mut self, memory: &mut M) -> Result<FinalizeSummary, OutgoingError> {
        if self.finalized.is_some() {
            return Err(OutgoingError::AlreadyFinalized);
        }
        for registration in self.sub_fdts.values() {
            let phys = registration.phys;
            let pages = PhysRange::new(
                phys & !(PAGE_SIZE_BYTES - 1),
                align_up(phys + registration.size_bytes, PAGE_SIZE_BYTES)
                    .ok_or(OutgoingError::InvalidSubFdtRange { phys })?,
            );
            if !self.tracker.is_range_preserved(memory, pages).map_err(OutgoingError::Access)? {
                return Err(OutgoingError::SubFdtNotPreserved { phys });
            }
            read_fdt(memory, phys, registration.size_bytes)
                .map_err(|error| OutgoingError::InvalidSubFdt { phys, error })?;
        }

        let chunks = serialize(&self.tracker, memory)?;
        let mut builder = KhoFdtBuilder::new(chunks.head_phys());
        for (name, registration) in &self.sub_fdts {
            if let Err(error) = builder.add_user(name, registration.phys) {
                chunks.free(memory);
                return Err(OutgoingError::FdtBuild(error));
            }
        }
        let blob = match builder.build() {
            Ok(blob) => blob,
            Err(error) => {
                chunks.free(memory);
                return Err(OutgoingError::FdtBuild(error));
            }
        };
        let root_fdt_size_bytes = blob.len() as u64;
        let root_fdt_allocation_bytes = align_up(root_fdt_size_bytes, PAGE_SIZE_BYTES).unwrap_or(PAGE_SIZE_BYTES);
        let Some(root_fdt_phys) = memory.allocate_zeroed(root_fdt_allocation_bytes, PAGE_SIZE_BYTES) else {
            chunks.free(memory);
            return Err(OutgoingError::OutOfMetadataMemory);
        };
        if let Err(error) = memory.write(root_fdt_phys, &blob) {
            memory.free(root_fdt_phys, root_fdt_allocation_bytes, PAGE_SIZE_BYTES);
            chunks.free(memory);
            return Err(OutgoingError::Access(error));
        }

        let summary = FinalizeSummary {
            root_fdt_phys,
            root_fdt_size_bytes,
            chunk_list_head_phys: chunks.head_phys(),
            chunk_count: chunks.chunk_count(),
            bitmap_count: chunks.bitmap_count(),
            folio_count: self.tracker.total_folio_count(),
            preserved_bytes: self.tracker.preserved_bytes(),
            users: self.sub_fdts.iter().map(|(name, registration)| (name.clone(), registration.phys)).collect(),
        };
        self.finalized = Some(Finalized { chunks, root_fdt_allocation_bytes, summary: summary.clone() });
        Ok(summary)
    }

    /// Undo finalisation: free the chunk pages and the root FDT copy and
    /// accept changes again.
    pub fn abort<M: MetadataAllocator + ?Sized>(&mut self, memory: &mut M) -> Result<(), OutgoingError> {
        let finalized = self.finalized.take().ok_or(OutgoingError::NotFinalized)?;
        memory.free(finalized.summary.root_fdt_phys, finalized.root_fdt_allocation_bytes, PAGE_SIZE_BYTES);
        finalized.chunks.free(memory);
        Ok(())
    }
}
