//! Flattened device trees in the handover: the `kho-v1` root, sub-FDTs, validation and reading from memory.
//!
//! Properties in KHO FDTs are native-endian, unlike ordinary device trees.
//! Every blob from the previous kernel goes through [`validate_fdt`] (a
//! bounded walk that never panics) before the `fdt` crate parses it.

mod root;
mod structure;
mod writer;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

pub use root::{
    KHO_COMPATIBLE, KhoFdt, KhoFdtBuildError, KhoFdtBuilder, KhoFdtCorruption, KhoFdtError, KhoUser,
    PRESERVED_MEMORY_MAP_PROPERTY, USER_FDT_PROPERTY, USER_NAME_MAX_BYTES, is_valid_user_name, parse_kho_fdt,
};
pub use structure::{
    FDT_HEADER_SIZE_BYTES, FDT_MAGIC, FDT_MAX_DEPTH, FDT_MIN_VERSION, FdtBlock, FdtStructureError, validate_fdt,
};
pub use writer::{FdtWriteError, SubFdtNode, SubFdtWriter, native_u32, native_u64};

use crate::memory::{AccessError, PhysMemory};

/// Validate `bytes` and open it with the `fdt` crate.
///
/// After validation, the `fdt` crate's node and property walks are safe.
/// Do not call its `chosen()`, `cpus()` or `memory()`: they panic when the
/// node is missing, which is normal in a sub-FDT. Use `find_node`.
pub fn parse_fdt(bytes: &[u8]) -> Result<::fdt::Fdt<'_>, FdtStructureError> {
    let total_size_bytes = validate_fdt(bytes)?;
    let blob = bytes.get(..total_size_bytes).unwrap_or_default();
    ::fdt::Fdt::new(blob).map_err(|_| FdtStructureError::TotalSizeOutOfBounds {
        total_size_bytes: u32::try_from(total_size_bytes).unwrap_or(u32::MAX),
        available_bytes: bytes.len(),
    })
}

/// Why an FDT could not be read from physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFdtError {
    /// The memory could not be read.
    Access(AccessError),
    /// The header claims more bytes than allowed.
    TooLarge {
        /// The header's `totalsize`.
        total_size_bytes: u64,
        /// The limit given.
        max_size_bytes: u64,
    },
    /// The blob is not a well-formed FDT.
    Structure(FdtStructureError),
}

impl fmt::Display for ReadFdtError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Access(error) => write!(formatter, "reading the FDT failed: {error}"),
            Self::TooLarge { total_size_bytes, max_size_bytes } => {
                write!(formatter, "FDT of {total_size_bytes} bytes exceeds the limit of {max_size_bytes}")
            }
            Self::Structure(error) => write!(formatter, "{error}"),
        }
    }
}

impl core::error::Error for ReadFdtError {}

impl From<AccessError> for ReadFdtError {
    fn from(error: AccessError) -> Self {
        Self::Access(error)
    }
}

impl From<FdtStructureError> for ReadFdtError {
    fn from(error: FdtStructureError) -> Self {
        Self::Structure(error)
    }
}

/// Copy the FDT at `phys` out of physical memory and validate it: read the
/// header, check `totalsize <= max_size_bytes`, read the rest.
pub fn read_fdt<M: PhysMemory + ?Sized>(memory: &M, phys: u64, max_size_bytes: u64) -> Result<Vec<u8>, ReadFdtError> {
    let mut header = [0_u8; FDT_HEADER_SIZE_BYTES];
    if max_size_bytes < FDT_HEADER_SIZE_BYTES as u64 {
        return Err(ReadFdtError::TooLarge { total_size_bytes: FDT_HEADER_SIZE_BYTES as u64, max_size_bytes });
    }
    memory.read(phys, &mut header)?;
    let fields = structure::read_header(&header)?;
    let total_size_bytes = u64::from(fields.total_size_bytes);
    if total_size_bytes > max_size_bytes {
        return Err(ReadFdtError::TooLarge { total_size_bytes, max_size_bytes });
    }
    let mut blob = vec![0_u8; fields.total_size_bytes as usize];
    memory.read(phys, &mut blob)?;
    validate_fdt(&blob)?;
    Ok(blob)
}
