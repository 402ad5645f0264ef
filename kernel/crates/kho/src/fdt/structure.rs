//! A bounded walk over a flattened device tree that proves it well formed before anything else reads it.
//!
//! The `fdt` crate (0.1.5) indexes, unwraps and asserts freely: a block
//! offset past the buffer, a property longer than the structure block, a
//! name offset past the strings block, a non-UTF-8 name, a node nested 64
//! deep, or an `FDT_NOP` between properties and child nodes makes it panic.
//! Nothing reaches it until this walk has accepted the blob, and the walk
//! accepts only the strict grammar the crate handles:
//!
//! ```text
//! blob      = BEGIN_NODE "" property* node* END_NODE END
//! node      = BEGIN_NODE name property* node* END_NODE
//! property  = PROP len nameoff value[len] padding
//! ```
//!
//! `FDT_NOP` is refused (Baton's writers never emit it), nesting is limited
//! to [`FDT_MAX_DEPTH`], and every name must be NUL-terminated UTF-8 inside
//! its block. Every step advances at least four bytes through a block of at
//! most 4 GiB, so the walk is bounded.
#![deny(clippy::arithmetic_side_effects)]

use core::fmt;

/// FDT header magic (big-endian in the blob).
pub const FDT_MAGIC: u32 = 0xd00d_feed;

/// Size of the version-17 FDT header.
pub const FDT_HEADER_SIZE_BYTES: usize = 40;

/// Deepest node nesting accepted (the root is depth 1).
pub const FDT_MAX_DEPTH: usize = 32;

/// Oldest header version accepted (the first with `size_dt_struct`).
pub const FDT_MIN_VERSION: u32 = 17;

const TOKEN_BEGIN_NODE: u32 = 1;
const TOKEN_END_NODE: u32 = 2;
const TOKEN_PROP: u32 = 3;
const TOKEN_END: u32 = 9;

/// One of the three blocks an FDT header points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtBlock {
    /// The memory reservation block.
    MemoryReservations,
    /// The structure block.
    Structure,
    /// The strings block.
    Strings,
}

/// Why a blob is not a well-formed FDT. Offsets are from the blob start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtStructureError {
    /// Fewer than 40 bytes: no room for a header.
    HeaderTruncated {
        /// Bytes available.
        available_bytes: usize,
    },
    /// The magic number is not `0xd00dfeed`.
    BadMagic {
        /// The value found.
        magic: u32,
    },
    /// `totalsize` is smaller than the header or larger than the buffer.
    TotalSizeOutOfBounds {
        /// The header's `totalsize`.
        total_size_bytes: u32,
        /// Bytes available.
        available_bytes: usize,
    },
    /// The header version is older than 17 or not backwards compatible with 17.
    UnsupportedVersion {
        /// The header's `version`.
        version: u32,
        /// The header's `last_comp_version`.
        last_compatible_version: u32,
    },
    /// A block overlaps the header or extends past `totalsize`.
    BlockOutOfBounds {
        /// Which block.
        block: FdtBlock,
    },
    /// A block is not aligned as the format requires (8 for memory
    /// reservations, 4 for the structure block and its size).
    MisalignedBlock {
        /// Which block.
        block: FdtBlock,
    },
    /// The memory reservation list has no terminating entry.
    UnterminatedMemoryReservations,
    /// A token, name or property runs past the end of its block.
    Truncated {
        /// Where the item starts.
        offset: usize,
    },
    /// A token that is not allowed here (including `FDT_NOP`).
    UnexpectedToken {
        /// Where the token is.
        offset: usize,
        /// The token value.
        token: u32,
    },
    /// A node or property name without a terminating NUL inside its block.
    UnterminatedName {
        /// Where the name starts.
        offset: usize,
    },
    /// A node or property name that is not UTF-8, or is empty where a name
    /// is required.
    InvalidName {
        /// Where the name starts.
        offset: usize,
    },
    /// The root node has a non-empty name.
    RootNameNotEmpty,
    /// A property name offset beyond the strings block.
    NameOffsetOutOfBounds {
        /// Where the property is.
        offset: usize,
    },
    /// A property after a child node of the same node.
    PropertyAfterChild {
        /// Where the property is.
        offset: usize,
    },
    /// Nodes nested deeper than [`FDT_MAX_DEPTH`].
    TooDeep {
        /// Where the node starts.
        offset: usize,
    },
    /// The structure block ends before `FDT_END`.
    MissingEnd,
    /// Bytes follow `FDT_END` inside the structure block.
    TrailingData {
        /// Where the extra bytes start.
        offset: usize,
    },
}

impl fmt::Display for FdtStructureError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderTruncated { available_bytes } => {
                write!(formatter, "{available_bytes} bytes cannot hold an FDT header")
            }
            Self::BadMagic { magic } => write!(formatter, "bad FDT magic {magic:#x}"),
            Self::TotalSizeOutOfBounds { total_size_bytes, available_bytes } => {
                write!(formatter, "FDT totalsize {total_size_bytes} does not fit in {available_bytes} bytes")
            }
            Self::UnsupportedVersion { version, last_compatible_version } => {
                write!(formatter, "FDT version {version} (compatible with {last_compatible_version}) is not supported")
            }
            Self::BlockOutOfBounds { block } => {
                write!(formatter, "FDT {block:?} block out of bounds")
            }
            Self::MisalignedBlock { block } => write!(formatter, "FDT {block:?} block misaligned"),
            Self::UnterminatedMemoryReservations => {
                write!(formatter, "FDT memory reservations are not terminated")
            }
            Self::Truncated { offset } => write!(formatter, "FDT item at {offset:#x} is truncated"),
            Self::UnexpectedToken { offset, token } => {
                write!(formatter, "unexpected FDT token {token:#x} at {offset:#x}")
            }
            Self::UnterminatedName { offset } => {
                write!(formatter, "FDT name at {offset:#x} is not terminated")
            }
            Self::InvalidName { offset } => write!(formatter, "FDT name at {offset:#x} is invalid"),
            Self::RootNameNotEmpty => write!(formatter, "FDT root node has a name"),
            Self::NameOffsetOutOfBounds { offset } => {
                write!(formatter, "FDT property at {offset:#x} names a string out of bounds")
            }
            Self::PropertyAfterChild { offset } => {
                write!(formatter, "FDT property at {offset:#x} follows a child node")
            }
            Self::TooDeep { offset } => {
                write!(formatter, "FDT node at {offset:#x} is nested too deep")
            }
            Self::MissingEnd => write!(formatter, "FDT structure block has no end token"),
            Self::TrailingData { offset } => {
                write!(formatter, "FDT structure block has data after its end at {offset:#x}")
            }
        }
    }
}

impl core::error::Error for FdtStructureError {}

/// Big-endian `u32` at `offset` of `bytes`.
fn be_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let slice = bytes.get(offset..offset.checked_add(4)?)?;
    let mut word = [0_u8; 4];
    word.copy_from_slice(slice);
    Some(u32::from_be_bytes(word))
}

fn be_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let slice = bytes.get(offset..offset.checked_add(8)?)?;
    let mut word = [0_u8; 8];
    word.copy_from_slice(slice);
    Some(u64::from_be_bytes(word))
}

fn align4(value: usize) -> Option<usize> {
    Some(value.checked_add(3)? & !3)
}

/// The header fields this crate uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdtHeader {
    pub total_size_bytes: u32,
    pub structure_offset: u32,
    pub strings_offset: u32,
    pub memory_reservations_offset: u32,
    pub version: u32,
    pub last_compatible_version: u32,
    pub strings_size_bytes: u32,
    pub structure_size_bytes: u32,
}

/// Read the header fields and check the magic (but nothing else).
pub(crate) fn read_header(bytes: &[u8]) -> Result<FdtHeader, FdtStructureError> {
    let truncated = FdtStructureError::HeaderTruncated { available_bytes: bytes.len() };
    let field = |index: usize| -> Result<u32, FdtStructureError> {
        index.checked_mul(4).and_then(|offset| be_u32(bytes, offset)).ok_or(truncated)
    };
    if bytes.len() < FDT_HEADER_SIZE_BYTES {
        return Err(truncated);
    }
    let magic = field(0)?;
    if magic != FDT_MAGIC {
        return Err(FdtStructureError::BadMagic { magic });
    }
    Ok(FdtHeader {
        total_size_bytes: field(1)?,
        structure_offset: field(2)?,
        strings_offset: field(3)?,
        memory_reservations_offset: field(4)?,
        version: field(5)?,
        last_compatible_version: field(6)?,
        strings_size_bytes: field(8)?,
        structure_size_bytes: field(9)?,
    })
}

/// `[offset, offset + size)` as a range inside `[40, total)`, or the block error.
fn block_range(
    offset: u32,
    size: u32,
    total: usize,
    block: FdtBlock,
) -> Result<core::ops::Range<usize>, FdtStructureError> {
    let start = offset as usize;
    let end = start.checked_add(size as usize);
    match end {
        Some(end) if start >= FDT_HEADER_SIZE_BYTES && end <= total => Ok(start..end),
        _ => Err(FdtStructureError::BlockOutOfBounds { block }),
    }
}

/// Validate a flattened device tree: header, the three blocks and the
/// structure grammar (see the module documentation). Returns its total
/// size in bytes; `bytes` may be longer.
pub fn validate_fdt(bytes: &[u8]) -> Result<usize, FdtStructureError> {
    let header = read_header(bytes)?;
    let total = header.total_size_bytes as usize;
    if total < FDT_HEADER_SIZE_BYTES || total > bytes.len() {
        return Err(FdtStructureError::TotalSizeOutOfBounds {
            total_size_bytes: header.total_size_bytes,
            available_bytes: bytes.len(),
        });
    }
    if header.version < FDT_MIN_VERSION || header.last_compatible_version > FDT_MIN_VERSION {
        return Err(FdtStructureError::UnsupportedVersion {
            version: header.version,
            last_compatible_version: header.last_compatible_version,
        });
    }
    let blob = bytes.get(..total).unwrap_or_default();
    check_memory_reservations(blob, header.memory_reservations_offset)?;
    if header.structure_offset % 4 != 0 || header.structure_size_bytes % 4 != 0 {
        return Err(FdtStructureError::MisalignedBlock { block: FdtBlock::Structure });
    }
    let structure_range =
        block_range(header.structure_offset, header.structure_size_bytes, total, FdtBlock::Structure)?;
    let strings_range = block_range(header.strings_offset, header.strings_size_bytes, total, FdtBlock::Strings)?;
    let structure_start = structure_range.start;
    let structure = blob.get(structure_range).unwrap_or_default();
    let strings = blob.get(strings_range).unwrap_or_default();
    walk_structure(structure, strings, structure_start)?;
    Ok(total)
}

fn check_memory_reservations(blob: &[u8], offset: u32) -> Result<(), FdtStructureError> {
    let block = FdtBlock::MemoryReservations;
    let mut position = offset as usize;
    if !position.is_multiple_of(8) {
        return Err(FdtStructureError::MisalignedBlock { block });
    }
    if position < FDT_HEADER_SIZE_BYTES || position >= blob.len() {
        return Err(FdtStructureError::BlockOutOfBounds { block });
    }
    loop {
        let address = be_u64(blob, position);
        let size = position.checked_add(8).and_then(|next| be_u64(blob, next));
        match (address, size) {
            (Some(0), Some(0)) => return Ok(()),
            (Some(_), Some(_)) => {
                position = position.checked_add(16).ok_or(FdtStructureError::UnterminatedMemoryReservations)?;
            }
            _ => return Err(FdtStructureError::UnterminatedMemoryReservations),
        }
    }
}

/// The NUL-terminated UTF-8 string starting at `start` of `block`.
fn name_at(block: &[u8], start: usize, report_offset: usize) -> Result<&str, FdtStructureError> {
    let tail = block.get(start..).ok_or(FdtStructureError::UnterminatedName { offset: report_offset })?;
    let length =
        tail.iter().position(|byte| *byte == 0).ok_or(FdtStructureError::UnterminatedName { offset: report_offset })?;
    let name = tail.get(..length).unwrap_or_default();
    core::str::from_utf8(name).map_err(|_| FdtStructureError::InvalidName { offset: report_offset })
}

fn walk_structure(structure: &[u8], strings: &[u8], base: usize) -> Result<(), FdtStructureError> {
    // Offsets inside the structure block are reported from the blob start.
    let at = |position: usize| base.saturating_add(position);
    let mut position = 0_usize;
    let mut depth = 0_usize;
    let mut is_root_closed = false;
    let mut are_properties_allowed = false;
    loop {
        let token = be_u32(structure, position).ok_or(FdtStructureError::MissingEnd)?;
        let after_token = position.checked_add(4).ok_or(FdtStructureError::MissingEnd)?;
        match token {
            TOKEN_BEGIN_NODE if !is_root_closed => {
                let name = name_at(structure, after_token, at(after_token))?;
                if depth == 0 {
                    if !name.is_empty() {
                        return Err(FdtStructureError::RootNameNotEmpty);
                    }
                } else if name.is_empty() {
                    return Err(FdtStructureError::InvalidName { offset: at(after_token) });
                }
                depth = depth.saturating_add(1);
                if depth > FDT_MAX_DEPTH {
                    return Err(FdtStructureError::TooDeep { offset: at(position) });
                }
                are_properties_allowed = true;
                position = after_token
                    .checked_add(name.len())
                    .and_then(|end| end.checked_add(1))
                    .and_then(align4)
                    .ok_or(FdtStructureError::Truncated { offset: at(position) })?;
            }
            TOKEN_END_NODE if depth > 0 => {
                depth = depth.saturating_sub(1);
                are_properties_allowed = false;
                is_root_closed = depth == 0;
                position = after_token;
            }
            TOKEN_PROP if depth > 0 => {
                if !are_properties_allowed {
                    return Err(FdtStructureError::PropertyAfterChild { offset: at(position) });
                }
                let truncated = FdtStructureError::Truncated { offset: at(position) };
                let length = be_u32(structure, after_token).ok_or(truncated)? as usize;
                let name_offset =
                    after_token.checked_add(4).and_then(|offset| be_u32(structure, offset)).ok_or(truncated)? as usize;
                let value_start = after_token.checked_add(8).ok_or(truncated)?;
                let value_end = value_start.checked_add(length).ok_or(truncated)?;
                if value_end > structure.len() {
                    return Err(truncated);
                }
                if name_offset >= strings.len() {
                    return Err(FdtStructureError::NameOffsetOutOfBounds { offset: at(position) });
                }
                let name = name_at(strings, name_offset, at(position))?;
                if name.is_empty() {
                    return Err(FdtStructureError::InvalidName { offset: at(position) });
                }
                position = align4(value_end).ok_or(truncated)?;
            }
            TOKEN_END if is_root_closed => {
                if after_token != structure.len() {
                    return Err(FdtStructureError::TrailingData { offset: at(after_token) });
                }
                return Ok(());
            }
            _ => {
                return Err(FdtStructureError::UnexpectedToken { offset: at(position), token });
            }
        }
    }
}
