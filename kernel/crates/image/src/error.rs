//! Why an ELF image was refused: one typed error for parsing and for the service and kernel checks.

use core::fmt;

use crate::note::NoteError;

/// Why [`parse`](crate::parse), [`ElfImage::validate_service`] or
/// [`ElfImage::validate_kernel`] refused an image.
///
/// `index` fields are program header indices, in file order.
///
/// [`ElfImage::validate_service`]: crate::ElfImage::validate_service
/// [`ElfImage::validate_kernel`]: crate::ElfImage::validate_kernel
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// The file is shorter than the 64-byte ELF64 file header.
    TruncatedHeader,
    /// The file does not start with `\x7fELF`.
    BadMagic,
    /// `e_ident[EI_CLASS]` is not ELFCLASS64 (2).
    UnsupportedClass {
        /// The class byte found.
        class: u8,
    },
    /// `e_ident[EI_DATA]` is not ELFDATA2LSB (1, little-endian).
    UnsupportedByteOrder {
        /// The data-encoding byte found.
        data: u8,
    },
    /// `e_ident[EI_VERSION]` or `e_version` is not EV_CURRENT (1).
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// `e_type` is not ET_EXEC: Baton applies no relocations, so it loads
    /// only static non-PIE executables (not ET_DYN).
    UnsupportedType {
        /// The `e_type` found.
        elf_type: u16,
    },
    /// `e_machine` is not the machine Baton runs on.
    WrongMachine {
        /// The `e_machine` of the running machine.
        expected: u16,
        /// The `e_machine` found.
        found: u16,
    },
    /// `e_phentsize` is not 56, the size of an ELF64 program header.
    ProgramHeaderEntrySize {
        /// The `e_phentsize` found.
        size_bytes: u16,
    },
    /// More than [`MAX_PROGRAM_HEADERS`](crate::MAX_PROGRAM_HEADERS)
    /// program headers (this includes PN_XNUM extended numbering).
    TooManyProgramHeaders {
        /// The `e_phnum` found.
        count: u16,
    },
    /// The program header table does not lie inside the file.
    ProgramHeadersOutOfBounds,
    /// No `PT_LOAD` segment with memory to load.
    NoLoadSegments,
    /// More than [`MAX_LOAD_SEGMENTS`](crate::MAX_LOAD_SEGMENTS) non-empty
    /// `PT_LOAD` segments.
    TooManyLoadSegments,
    /// A segment's file bytes do not lie inside the file.
    SegmentFileOutOfBounds {
        /// The program header.
        index: usize,
    },
    /// A segment has more file bytes than memory bytes.
    SegmentFileLargerThanMemory {
        /// The program header.
        index: usize,
    },
    /// A segment's end, rounded up to a page, does not fit in 64 bits.
    SegmentAddressOverflow {
        /// The program header.
        index: usize,
    },
    /// Two segments share a page of virtual memory.
    SegmentsOverlap {
        /// The lower segment's virtual start.
        lower_virt_start: u64,
        /// The higher segment's virtual start.
        higher_virt_start: u64,
    },
    /// The entry point does not lie inside an executable segment.
    EntryNotExecutable {
        /// The entry point's virtual address.
        entry: u64,
    },
    /// `e_shentsize` is not 64, the size of an ELF64 section header.
    SectionHeaderEntrySize {
        /// The `e_shentsize` found.
        size_bytes: u16,
    },
    /// The section header table does not lie inside the file.
    SectionHeadersOutOfBounds,
    /// A `PT_NOTE` segment's or `SHT_NOTE` section's bytes do not lie inside
    /// the file.
    NoteRegionOutOfBounds,
    /// More than [`MAX_NOTE_REGIONS`](crate::MAX_NOTE_REGIONS) note regions.
    TooManyNoteRegions,
    /// A note region is malformed.
    Note(NoteError),
    /// Service: a segment lies (partly) in the null guard or above the user
    /// limit.
    SegmentOutsideUserRange {
        /// The segment's virtual start.
        virt_start: u64,
    },
    /// Service: a segment is both writable and executable.
    WritableAndExecutable {
        /// The segment's virtual start.
        virt_start: u64,
    },
    /// Kernel: no Baton KHO entry note.
    MissingKhoEntryNote,
    /// Kernel: the KHO entry point does not lie inside an executable segment.
    KhoEntryNotExecutable {
        /// The KHO entry point's virtual address.
        kho_entry: u64,
    },
    /// Kernel: the virtual span does not start on a 2 MiB boundary.
    KernelSpanMisaligned {
        /// The virtual span's start.
        span_start: u64,
    },
    /// Kernel: the image's memory (bss included) does not fit in the scratch
    /// area.
    KernelTooLarge {
        /// The size of the image's virtual span.
        memory_bytes: u64,
        /// The size of the scratch area.
        scratch_bytes: u64,
    },
}

impl From<NoteError> for ImageError {
    fn from(error: NoteError) -> Self {
        Self::Note(error)
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TruncatedHeader => write!(formatter, "file shorter than the ELF64 header"),
            Self::BadMagic => write!(formatter, "not an ELF file (bad magic)"),
            Self::UnsupportedClass { class } => {
                write!(formatter, "ELF class {class} is not ELFCLASS64")
            }
            Self::UnsupportedByteOrder { data } => {
                write!(formatter, "ELF data encoding {data} is not little-endian")
            }
            Self::UnsupportedVersion { version } => {
                write!(formatter, "ELF version {version} is not EV_CURRENT")
            }
            Self::UnsupportedType { elf_type } => {
                write!(formatter, "ELF type {elf_type} is not ET_EXEC")
            }
            Self::WrongMachine { expected, found } => {
                write!(formatter, "ELF machine {found}, expected {expected}")
            }
            Self::ProgramHeaderEntrySize { size_bytes } => {
                write!(formatter, "program header entry size {size_bytes}, expected 56")
            }
            Self::TooManyProgramHeaders { count } => {
                write!(formatter, "{count} program headers, too many")
            }
            Self::ProgramHeadersOutOfBounds => {
                write!(formatter, "program header table outside the file")
            }
            Self::NoLoadSegments => write!(formatter, "no PT_LOAD segment"),
            Self::TooManyLoadSegments => write!(formatter, "too many PT_LOAD segments"),
            Self::SegmentFileOutOfBounds { index } => {
                write!(formatter, "segment {index}: file bytes outside the file")
            }
            Self::SegmentFileLargerThanMemory { index } => {
                write!(formatter, "segment {index}: more file bytes than memory bytes")
            }
            Self::SegmentAddressOverflow { index } => {
                write!(formatter, "segment {index}: end address overflows")
            }
            Self::SegmentsOverlap { lower_virt_start, higher_virt_start } => {
                write!(formatter, "segments at {lower_virt_start:#x} and {higher_virt_start:#x} share a page")
            }
            Self::EntryNotExecutable { entry } => {
                write!(formatter, "entry {entry:#x} not in an executable segment")
            }
            Self::SectionHeaderEntrySize { size_bytes } => {
                write!(formatter, "section header entry size {size_bytes}, expected 64")
            }
            Self::SectionHeadersOutOfBounds => {
                write!(formatter, "section header table outside the file")
            }
            Self::NoteRegionOutOfBounds => write!(formatter, "note region outside the file"),
            Self::TooManyNoteRegions => write!(formatter, "too many note regions"),
            Self::Note(error) => write!(formatter, "malformed note: {error}"),
            Self::SegmentOutsideUserRange { virt_start } => {
                write!(formatter, "segment at {virt_start:#x} outside the user range")
            }
            Self::WritableAndExecutable { virt_start } => {
                write!(formatter, "segment at {virt_start:#x} is writable and executable")
            }
            Self::MissingKhoEntryNote => write!(formatter, "no Baton KHO entry note"),
            Self::KhoEntryNotExecutable { kho_entry } => {
                write!(formatter, "KHO entry {kho_entry:#x} not in an executable segment")
            }
            Self::KernelSpanMisaligned { span_start } => {
                write!(formatter, "kernel span start {span_start:#x} not 2 MiB aligned")
            }
            Self::KernelTooLarge { memory_bytes, scratch_bytes } => {
                write!(formatter, "kernel needs {memory_bytes} bytes, scratch has {scratch_bytes}")
            }
        }
    }
}

impl core::error::Error for ImageError {}
