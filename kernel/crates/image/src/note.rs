//! ELF notes, parsed strictly, and Baton's own note that names a kernel's KHO entry point.
//!
//! A note is a 12-byte header (`namesz`, `descsz`, `type`, little-endian
//! u32s), the owner's name (`namesz` bytes, NUL included) padded to the
//! region's alignment, and the descriptor (`descsz` bytes) padded likewise.
//! Regions are 4-byte aligned unless their `p_align`/`sh_addralign` is 8
//! (as for GNU property notes); like readelf, an alignment below 4 means 4
//! and anything else is refused.
//!
//! Notes are parsed here rather than with the `elf` crate's `NoteIterator`,
//! which ends silently at the first malformed note, so that a truncated or
//! corrupt region is an error instead of looking like a short valid one.
//! Strictly means: a region is an exact sequence of whole, padded notes, and
//! every non-empty name ends in NUL.
//!
//! Baton's kernel carries, in section `.note.baton`, a note with owner
//! [`BATON_NOTE_NAME`] and type [`BATON_NOTE_KHO_ENTRY`] whose descriptor is
//! the little-endian u64 virtual address where a previous Baton enters it
//! (see `boot/src/*/entry.S`).

use core::fmt;

use arrayvec::ArrayVec;

use crate::image::file_slice;
use crate::{ImageError, MAX_NOTE_REGIONS};

/// The owner name of Baton's notes (`namesz` 6 with the NUL).
pub const BATON_NOTE_NAME: &str = "Baton";

/// Baton note type: the descriptor is the u64 virtual address of the image's
/// KHO entry point.
pub const BATON_NOTE_KHO_ENTRY: u32 = 0x4b48_4f01;

const NOTE_HEADER_BYTES: usize = 12;

/// One note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'bytes> {
    /// The owner's name without its terminating NUL.
    pub name: &'bytes [u8],
    /// The note type, meaningful per owner.
    pub note_type: u32,
    /// The descriptor, without padding.
    pub descriptor: &'bytes [u8],
}

/// Why a note region is malformed. `file_offset` is where the offending note
/// starts in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteError {
    /// The region's alignment is neither at most 4 nor 8.
    UnsupportedAlignment {
        /// The `p_align` or `sh_addralign` found.
        align_bytes: u64,
    },
    /// Fewer than 12 bytes are left for a note header.
    TruncatedHeader {
        /// Where the note starts in the file.
        file_offset: u64,
    },
    /// The name, with its padding, runs past the region.
    NameOutOfBounds {
        /// Where the note starts in the file.
        file_offset: u64,
    },
    /// A non-empty name does not end in NUL.
    NameNotTerminated {
        /// Where the note starts in the file.
        file_offset: u64,
    },
    /// The descriptor, with its padding, runs past the region.
    DescriptorOutOfBounds {
        /// Where the note starts in the file.
        file_offset: u64,
    },
    /// A Baton KHO entry note whose descriptor is not one u64.
    KhoEntryDescriptorSize {
        /// The descriptor's size.
        size_bytes: usize,
    },
    /// Two Baton KHO entry notes name different addresses.
    ConflictingKhoEntries,
}

impl fmt::Display for NoteError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnsupportedAlignment { align_bytes } => {
                write!(formatter, "note alignment {align_bytes} is neither 4 nor 8")
            }
            Self::TruncatedHeader { file_offset } => {
                write!(formatter, "note at {file_offset:#x}: header truncated")
            }
            Self::NameOutOfBounds { file_offset } => {
                write!(formatter, "note at {file_offset:#x}: name past the region")
            }
            Self::NameNotTerminated { file_offset } => {
                write!(formatter, "note at {file_offset:#x}: name not NUL-terminated")
            }
            Self::DescriptorOutOfBounds { file_offset } => {
                write!(formatter, "note at {file_offset:#x}: descriptor past the region")
            }
            Self::KhoEntryDescriptorSize { size_bytes } => {
                write!(formatter, "KHO entry note descriptor of {size_bytes} bytes, expected 8")
            }
            Self::ConflictingKhoEntries => {
                write!(formatter, "KHO entry notes name different addresses")
            }
        }
    }
}

impl core::error::Error for NoteError {}

/// A `PT_NOTE` segment's or `SHT_NOTE` section's bytes, every note of which
/// parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoteRegion<'bytes> {
    data: &'bytes [u8],
    file_offset: usize,
    /// The alignment minus one: 3 or 7.
    align_mask: usize,
}

impl<'bytes> NoteRegion<'bytes> {
    /// The notes of the region in order; after an error, nothing more.
    pub(crate) fn notes(&self) -> NoteWalker<'bytes> {
        NoteWalker { region: *self, offset: 0, is_done: false }
    }

    /// Whether `[file_offset, file_offset + size_bytes)` lies inside the
    /// region.
    fn contains(&self, file_offset: usize, size_bytes: usize) -> bool {
        let (Some(end), Some(own_end)) =
            (file_offset.checked_add(size_bytes), self.file_offset.checked_add(self.data.len()))
        else {
            return false;
        };
        file_offset >= self.file_offset && end <= own_end
    }
}

/// Check the region `[file_offset, file_offset + size_bytes)` of `bytes`,
/// with alignment `align_bytes`, and add it to `regions` unless it is empty
/// or inside a region already there.
pub(crate) fn add_region<'bytes>(
    regions: &mut ArrayVec<NoteRegion<'bytes>, MAX_NOTE_REGIONS>,
    bytes: &'bytes [u8],
    file_offset: u64,
    size_bytes: u64,
    align_bytes: u64,
) -> Result<(), ImageError> {
    let data = file_slice(bytes, file_offset, size_bytes).ok_or(ImageError::NoteRegionOutOfBounds)?;
    // `file_slice` succeeded, so the offset fits in a usize.
    let file_offset = usize::try_from(file_offset).map_err(|_| ImageError::NoteRegionOutOfBounds)?;
    let align_mask = match align_bytes {
        0..=4 => 3,
        8 => 7,
        _ => return Err(NoteError::UnsupportedAlignment { align_bytes }.into()),
    };
    if data.is_empty() || regions.iter().any(|region| region.contains(file_offset, data.len())) {
        return Ok(());
    }
    let region = NoteRegion { data, file_offset, align_mask };
    for note in region.notes() {
        note?;
    }
    regions.try_push(region).map_err(|_| ImageError::TooManyNoteRegions)
}

/// The address of the Baton KHO entry notes, which must agree, if any.
pub(crate) fn kho_entry(regions: &[NoteRegion<'_>]) -> Result<Option<u64>, NoteError> {
    let mut kho_entry = None;
    let notes = regions.iter().flat_map(|region| region.notes().filter_map(Result::ok));
    for note in notes {
        if note.name != BATON_NOTE_NAME.as_bytes() || note.note_type != BATON_NOTE_KHO_ENTRY {
            continue;
        }
        let address = <[u8; 8]>::try_from(note.descriptor)
            .map(u64::from_le_bytes)
            .map_err(|_| NoteError::KhoEntryDescriptorSize { size_bytes: note.descriptor.len() })?;
        match kho_entry {
            Some(existing) if existing != address => {
                return Err(NoteError::ConflictingKhoEntries);
            }
            _ => kho_entry = Some(address),
        }
    }
    Ok(kho_entry)
}

/// Walks the notes of a region, yielding an error once, then stopping.
pub(crate) struct NoteWalker<'bytes> {
    region: NoteRegion<'bytes>,
    offset: usize,
    is_done: bool,
}

impl<'bytes> NoteWalker<'bytes> {
    /// `offset` rounded up to the region's alignment.
    fn align_up(&self, offset: usize) -> Option<usize> {
        offset.checked_add(self.region.align_mask).map(|offset| offset & !self.region.align_mask)
    }

    fn parse_note(&mut self) -> Result<Note<'bytes>, NoteError> {
        let data = self.region.data;
        let start = self.offset;
        let file_offset = self.region.file_offset.saturating_add(start);
        let file_offset = u64::try_from(file_offset).unwrap_or(u64::MAX);

        let name_start = start.checked_add(NOTE_HEADER_BYTES).ok_or(NoteError::TruncatedHeader { file_offset })?;
        let header: [u8; NOTE_HEADER_BYTES] = data
            .get(start..name_start)
            .and_then(|header| header.try_into().ok())
            .ok_or(NoteError::TruncatedHeader { file_offset })?;
        let [n0, n1, n2, n3, d0, d1, d2, d3, t0, t1, t2, t3] = header;
        let name_size = u32::from_le_bytes([n0, n1, n2, n3]);
        let descriptor_size = u32::from_le_bytes([d0, d1, d2, d3]);
        let note_type = u32::from_le_bytes([t0, t1, t2, t3]);

        let name_out_of_bounds = NoteError::NameOutOfBounds { file_offset };
        let name_end =
            usize::try_from(name_size).ok().and_then(|size| name_start.checked_add(size)).ok_or(name_out_of_bounds)?;
        let descriptor_start = self.align_up(name_end).filter(|&end| end <= data.len()).ok_or(name_out_of_bounds)?;
        let name = data.get(name_start..name_end).ok_or(name_out_of_bounds)?;
        let name = match name.split_last() {
            None => name,
            Some((0, name)) => name,
            Some(_) => return Err(NoteError::NameNotTerminated { file_offset }),
        };

        let descriptor_out_of_bounds = NoteError::DescriptorOutOfBounds { file_offset };
        let descriptor_end = usize::try_from(descriptor_size)
            .ok()
            .and_then(|size| descriptor_start.checked_add(size))
            .ok_or(descriptor_out_of_bounds)?;
        let next = self.align_up(descriptor_end).filter(|&end| end <= data.len()).ok_or(descriptor_out_of_bounds)?;
        let descriptor = data.get(descriptor_start..descriptor_end).ok_or(descriptor_out_of_bounds)?;

        self.offset = next;
        Ok(Note { name, note_type, descriptor })
    }
}

impl<'bytes> Iterator for NoteWalker<'bytes> {
    type Item = Result<Note<'bytes>, NoteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.is_done || self.offset >= self.region.data.len() {
            return None;
        }
        let note = self.parse_note();
        self.is_done = note.is_err();
        Some(note)
    }
}
