//! The ELF file header and `PT_LOAD` segments: [`parse`] and the [`ElfImage`] it returns.

use core::fmt;

use arrayvec::ArrayVec;
use elf::abi;
use elf::endian::LittleEndian;
use elf::file::{Class, ELF64_EHDR_TAILSIZE, FileHeader, parse_ident};
use elf::parse::ParseError;
use elf::section::SectionHeaderTable;
use elf::segment::{ProgramHeader, SegmentTable};

use crate::note::{self, Note, NoteRegion};
use crate::{ImageError, MAX_LOAD_SEGMENTS, MAX_NOTE_REGIONS, MAX_PROGRAM_HEADERS, PAGE_SIZE_BYTES};

/// `e_phentsize` of an ELF64 file.
const PROGRAM_HEADER_BYTES: u16 = 56;
/// `e_shentsize` of an ELF64 file.
const SECTION_HEADER_BYTES: u16 = 64;
const PAGE_MASK: u64 = PAGE_SIZE_BYTES - 1;

/// The machine an image is built for; Baton passes the one it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86-64 (`EM_X86_64`, 62).
    X86_64,
    /// AArch64 (`EM_AARCH64`, 183).
    Aarch64,
}

impl Machine {
    /// The ELF `e_machine` value of this machine.
    pub const fn elf_machine(self) -> u16 {
        match self {
            Self::X86_64 => abi::EM_X86_64,
            Self::Aarch64 => abi::EM_AARCH64,
        }
    }
}

/// One non-empty `PT_LOAD` segment.
///
/// Segments from [`parse`] have their file bytes inside the file,
/// `file_bytes <= memory_bytes`, and an end that does not overflow even when
/// rounded up to a page. Memory past `file_bytes` is zero (bss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of the segment's first byte.
    pub virt_start: u64,
    /// Size in memory, bss included.
    pub memory_bytes: u64,
    /// Offset of the segment's bytes in the file.
    pub file_offset: u64,
    /// Number of bytes taken from the file.
    pub file_bytes: u64,
    /// `PF_W`.
    pub is_writable: bool,
    /// `PF_X`.
    pub is_executable: bool,
}

impl Segment {
    /// One past the segment's last virtual byte (saturating, which only a
    /// segment not made by [`parse`] needs).
    pub const fn virt_end(&self) -> u64 {
        self.virt_start.saturating_add(self.memory_bytes)
    }

    /// The start of the segment's first page.
    pub const fn page_start(&self) -> u64 {
        self.virt_start & !PAGE_MASK
    }

    /// The end of the segment's last page (saturating at the last page
    /// boundary, which only a segment not made by [`parse`] needs).
    pub const fn page_end(&self) -> u64 {
        match page_up(self.virt_end()) {
            Some(end) => end,
            None => !PAGE_MASK,
        }
    }

    /// Whether `address` lies inside the segment's memory.
    pub const fn contains(&self, address: u64) -> bool {
        address >= self.virt_start && address < self.virt_end()
    }
}

/// The page-aligned virtual range an image occupies: from the start of its
/// lowest segment's first page to the end of its highest segment's last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualSpan {
    /// Page-aligned start.
    pub start: u64,
    /// Page-aligned end (exclusive).
    pub end: u64,
}

impl VirtualSpan {
    /// The span's size.
    pub const fn size_bytes(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// An ELF file that passed [`parse`].
#[derive(Clone)]
pub struct ElfImage<'bytes> {
    bytes: &'bytes [u8],
    machine: Machine,
    entry: u64,
    /// Non-empty `PT_LOAD` segments in ascending virtual order.
    segments: ArrayVec<Segment, MAX_LOAD_SEGMENTS>,
    span: VirtualSpan,
    note_regions: ArrayVec<NoteRegion<'bytes>, MAX_NOTE_REGIONS>,
    kho_entry: Option<u64>,
}

/// Parse `bytes` as an executable for `machine` and check the rules every
/// Baton image meets (see the crate documentation).
///
/// Only ET_EXEC is accepted: Baton builds its kernel and services as static
/// non-PIE executables and applies no relocations. Empty `PT_LOAD` segments
/// (no memory bytes) are skipped. Section headers are read only to find
/// `SHT_NOTE` sections; a file with `e_shoff` or `e_shnum` zero has none
/// (extended section numbering is not supported).
pub fn parse(bytes: &[u8], machine: Machine) -> Result<ElfImage<'_>, ImageError> {
    let header = parse_file_header(bytes)?;
    if header.e_type != abi::ET_EXEC {
        return Err(ImageError::UnsupportedType { elf_type: header.e_type });
    }
    let expected = machine.elf_machine();
    if header.e_machine != expected {
        return Err(ImageError::WrongMachine { expected, found: header.e_machine });
    }

    let program_headers = program_header_table(bytes, &header)?;
    let segments = load_segments(bytes.len(), &program_headers)?;
    let span = virtual_span(&segments)?;
    if !is_executable_address(&segments, header.e_entry) {
        return Err(ImageError::EntryNotExecutable { entry: header.e_entry });
    }

    let note_regions = note_regions(bytes, &header, &program_headers)?;
    let kho_entry = note::kho_entry(&note_regions)?;

    Ok(ElfImage { bytes, machine, entry: header.e_entry, segments, span, note_regions, kho_entry })
}

impl<'bytes> ElfImage<'bytes> {
    /// The whole file.
    pub fn bytes(&self) -> &'bytes [u8] {
        self.bytes
    }

    /// The machine the image was parsed for.
    pub fn machine(&self) -> Machine {
        self.machine
    }

    /// The ELF entry point (`e_entry`), inside an executable segment.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The non-empty `PT_LOAD` segments in ascending virtual order (not
    /// necessarily program header order).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The page-aligned virtual range the segments occupy.
    pub fn virtual_span(&self) -> VirtualSpan {
        self.span
    }

    /// The size of [`virtual_span`](Self::virtual_span): the memory a loader
    /// needs to place the image in one piece, bss and gaps included.
    pub fn memory_bytes(&self) -> u64 {
        self.span.size_bytes()
    }

    /// The file bytes of `segment`, or `None` if they are not inside the file
    /// (never for a segment of this image).
    pub fn segment_data(&self, segment: &Segment) -> Option<&'bytes [u8]> {
        file_slice(self.bytes, segment.file_offset, segment.file_bytes)
    }

    /// Whether `address` lies inside an executable segment.
    pub fn is_executable_address(&self, address: u64) -> bool {
        is_executable_address(&self.segments, address)
    }

    /// Every note of the image: those in `PT_NOTE` segments, then those in
    /// `SHT_NOTE` sections outside any `PT_NOTE` segment.
    pub fn notes(&self) -> impl Iterator<Item = Note<'bytes>> + '_ {
        // `parse` walked every region without error, so `ok()` drops nothing.
        self.note_regions.iter().flat_map(|region| region.notes().filter_map(Result::ok))
    }

    /// The descriptor of the first note with owner `name` (without its NUL)
    /// and type `note_type`.
    pub fn find_note(&self, name: &str, note_type: u32) -> Option<&'bytes [u8]> {
        self.notes()
            .find(|note| note.name == name.as_bytes() && note.note_type == note_type)
            .map(|note| note.descriptor)
    }

    /// The virtual address of the image's KHO entry point, from its
    /// [`BATON_NOTE_KHO_ENTRY`](crate::BATON_NOTE_KHO_ENTRY) note.
    pub fn kho_entry(&self) -> Option<u64> {
        self.kho_entry
    }
}

/// The file bytes are not printed.
impl fmt::Debug for ElfImage<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ElfImage")
            .field("size_bytes", &self.bytes.len())
            .field("machine", &self.machine)
            .field("entry", &format_args!("{:#x}", self.entry))
            .field("segments", &self.segments)
            .field("span", &self.span)
            .field("kho_entry", &self.kho_entry)
            .finish_non_exhaustive()
    }
}

/// `bytes[offset..offset + size_bytes]`, or `None` if that is not inside
/// `bytes` or overflows.
pub(crate) fn file_slice(bytes: &[u8], offset: u64, size_bytes: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size_bytes).ok()?)?;
    bytes.get(start..end)
}

/// `address` rounded up to a page, or `None` on overflow.
const fn page_up(address: u64) -> Option<u64> {
    match address.checked_add(PAGE_MASK) {
        Some(address) => Some(address & !PAGE_MASK),
        None => None,
    }
}

fn is_executable_address(segments: &[Segment], address: u64) -> bool {
    segments.iter().any(|segment| segment.is_executable && segment.contains(address))
}

/// Check the identification bytes and decode the ELF64 file header.
fn parse_file_header(bytes: &[u8]) -> Result<FileHeader<LittleEndian>, ImageError> {
    let ident = bytes.get(..abi::EI_NIDENT).ok_or(ImageError::TruncatedHeader)?;
    // Checks, in this order: magic, EI_VERSION, EI_CLASS, EI_DATA.
    let ident = parse_ident::<LittleEndian>(ident).map_err(|error| match error {
        ParseError::BadMagic(_) => ImageError::BadMagic,
        ParseError::UnsupportedVersion((version, _)) => {
            ImageError::UnsupportedVersion { version: u32::try_from(version).unwrap_or(u32::MAX) }
        }
        ParseError::UnsupportedElfClass(class) => ImageError::UnsupportedClass { class },
        ParseError::UnsupportedElfEndianness(data) => ImageError::UnsupportedByteOrder { data },
        _ => ImageError::TruncatedHeader,
    })?;
    if ident.1 != Class::ELF64 {
        return Err(ImageError::UnsupportedClass { class: abi::ELFCLASS32 });
    }
    let tail = abi::EI_NIDENT
        .checked_add(ELF64_EHDR_TAILSIZE)
        .and_then(|end| bytes.get(abi::EI_NIDENT..end))
        .ok_or(ImageError::TruncatedHeader)?;
    // The tail is exactly the size `parse_tail` reads, so it cannot fail.
    let header = FileHeader::parse_tail(ident, tail).map_err(|_| ImageError::TruncatedHeader)?;
    if header.version != u32::from(abi::EV_CURRENT) {
        return Err(ImageError::UnsupportedVersion { version: header.version });
    }
    Ok(header)
}

fn program_header_table<'bytes>(
    bytes: &'bytes [u8],
    header: &FileHeader<LittleEndian>,
) -> Result<SegmentTable<'bytes, LittleEndian>, ImageError> {
    if header.e_phnum == 0 {
        return Err(ImageError::NoLoadSegments);
    }
    if header.e_phnum > MAX_PROGRAM_HEADERS {
        return Err(ImageError::TooManyProgramHeaders { count: header.e_phnum });
    }
    if header.e_phentsize != PROGRAM_HEADER_BYTES {
        return Err(ImageError::ProgramHeaderEntrySize { size_bytes: header.e_phentsize });
    }
    let table = u64::from(header.e_phnum)
        .checked_mul(u64::from(PROGRAM_HEADER_BYTES))
        .and_then(|table_bytes| file_slice(bytes, header.e_phoff, table_bytes))
        .ok_or(ImageError::ProgramHeadersOutOfBounds)?;
    Ok(SegmentTable::new(LittleEndian, Class::ELF64, table))
}

/// Every program header with its index. The table holds exactly `len()`
/// whole entries, so `get` cannot fail.
fn program_headers<'table>(
    table: &'table SegmentTable<'_, LittleEndian>,
) -> impl Iterator<Item = Result<(usize, ProgramHeader), ImageError>> + 'table {
    (0..table.len()).map(|index| {
        table
            .get(index)
            .map(|program_header| (index, program_header))
            .map_err(|_| ImageError::ProgramHeadersOutOfBounds)
    })
}

/// The non-empty `PT_LOAD` segments, checked one by one and against each
/// other, sorted by virtual start.
fn load_segments(
    file_size_bytes: usize,
    table: &SegmentTable<'_, LittleEndian>,
) -> Result<ArrayVec<Segment, MAX_LOAD_SEGMENTS>, ImageError> {
    let mut segments = ArrayVec::new();
    for entry in program_headers(table) {
        let (index, program_header) = entry?;
        if program_header.p_type != abi::PT_LOAD {
            continue;
        }
        let segment = load_segment(file_size_bytes, index, &program_header)?;
        if segment.memory_bytes == 0 {
            continue;
        }
        segments.try_push(segment).map_err(|_| ImageError::TooManyLoadSegments)?;
    }
    segments.sort_unstable_by_key(|segment| segment.virt_start);
    for pair in segments.windows(2) {
        if let [lower, higher] = pair
            && lower.page_end() > higher.page_start()
        {
            return Err(ImageError::SegmentsOverlap {
                lower_virt_start: lower.virt_start,
                higher_virt_start: higher.virt_start,
            });
        }
    }
    Ok(segments)
}

fn load_segment(file_size_bytes: usize, index: usize, program_header: &ProgramHeader) -> Result<Segment, ImageError> {
    let file_end = program_header
        .p_offset
        .checked_add(program_header.p_filesz)
        .ok_or(ImageError::SegmentFileOutOfBounds { index })?;
    if file_end > u64::try_from(file_size_bytes).unwrap_or(u64::MAX) {
        return Err(ImageError::SegmentFileOutOfBounds { index });
    }
    if program_header.p_filesz > program_header.p_memsz {
        return Err(ImageError::SegmentFileLargerThanMemory { index });
    }
    program_header
        .p_vaddr
        .checked_add(program_header.p_memsz)
        .and_then(page_up)
        .ok_or(ImageError::SegmentAddressOverflow { index })?;
    Ok(Segment {
        virt_start: program_header.p_vaddr,
        memory_bytes: program_header.p_memsz,
        file_offset: program_header.p_offset,
        file_bytes: program_header.p_filesz,
        is_writable: program_header.p_flags & abi::PF_W != 0,
        is_executable: program_header.p_flags & abi::PF_X != 0,
    })
}

/// The span of sorted, non-overlapping segments.
fn virtual_span(segments: &[Segment]) -> Result<VirtualSpan, ImageError> {
    let first = segments.first().ok_or(ImageError::NoLoadSegments)?;
    let end = segments.iter().map(Segment::page_end).max().ok_or(ImageError::NoLoadSegments)?;
    Ok(VirtualSpan { start: first.page_start(), end })
}

/// The note regions: `PT_NOTE` segments first, then `SHT_NOTE` sections
/// (a section inside a region already found is the same notes again).
fn note_regions<'bytes>(
    bytes: &'bytes [u8],
    header: &FileHeader<LittleEndian>,
    program_header_table: &SegmentTable<'bytes, LittleEndian>,
) -> Result<ArrayVec<NoteRegion<'bytes>, MAX_NOTE_REGIONS>, ImageError> {
    let mut regions = ArrayVec::new();
    for entry in program_headers(program_header_table) {
        let (_, program_header) = entry?;
        if program_header.p_type == abi::PT_NOTE {
            note::add_region(
                &mut regions,
                bytes,
                program_header.p_offset,
                program_header.p_filesz,
                program_header.p_align,
            )?;
        }
    }
    let Some(section_headers) = section_header_table(bytes, header)? else {
        return Ok(regions);
    };
    for index in 0..section_headers.len() {
        // The table holds exactly `len()` whole entries.
        let section_header = section_headers.get(index).map_err(|_| ImageError::SectionHeadersOutOfBounds)?;
        if section_header.sh_type == abi::SHT_NOTE {
            note::add_region(
                &mut regions,
                bytes,
                section_header.sh_offset,
                section_header.sh_size,
                section_header.sh_addralign,
            )?;
        }
    }
    Ok(regions)
}

fn section_header_table<'bytes>(
    bytes: &'bytes [u8],
    header: &FileHeader<LittleEndian>,
) -> Result<Option<SectionHeaderTable<'bytes, LittleEndian>>, ImageError> {
    if header.e_shoff == 0 || header.e_shnum == 0 {
        return Ok(None);
    }
    if header.e_shentsize != SECTION_HEADER_BYTES {
        return Err(ImageError::SectionHeaderEntrySize { size_bytes: header.e_shentsize });
    }
    let table = u64::from(header.e_shnum)
        .checked_mul(u64::from(SECTION_HEADER_BYTES))
        .and_then(|table_bytes| file_slice(bytes, header.e_shoff, table_bytes))
        .ok_or(ImageError::SectionHeadersOutOfBounds)?;
    Ok(Some(SectionHeaderTable::new(LittleEndian, Class::ELF64, table)))
}
