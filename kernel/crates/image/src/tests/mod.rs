//! Tests: a byte-by-byte ELF builder, one corrupted image per rule, property tests and the real kernels.

mod kernel;
mod notes;
mod parse;
mod proptests;
mod real;
mod seeds;
mod service;

use crate::{BATON_NOTE_KHO_ENTRY, BATON_NOTE_NAME, ElfImage, Machine, parse};

pub(crate) const MIB: u64 = 1 << 20;

/// The end of the user half on both machines.
pub(crate) const USER_LIMIT: u64 = 0x0000_8000_0000_0000;
pub(crate) const SERVICE_BASE: u64 = 0x40_0000;
pub(crate) const X86_64_KERNEL_BASE: u64 = 0xffff_ffff_8020_0000;
pub(crate) const AARCH64_KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Where the test kernels put their KHO entry, from the span start.
pub(crate) const KHO_ENTRY_OFFSET: u64 = 0x56;
pub(crate) const SCRATCH_BYTES: u64 = 64 * MIB;

pub(crate) const MACHINES: [Machine; 2] = [Machine::X86_64, Machine::Aarch64];

pub(crate) const PF_X: u32 = 1;
pub(crate) const PF_W: u32 = 2;
pub(crate) const PF_R: u32 = 4;
pub(crate) const PT_LOAD: u32 = 1;
pub(crate) const PT_NOTE: u32 = 4;
pub(crate) const PT_GNU_STACK: u32 = 0x6474_e551;
pub(crate) const SHT_NOTE: u32 = 7;
pub(crate) const ET_EXEC: u16 = 2;

// File header field offsets.
pub(crate) const EI_CLASS: usize = 4;
pub(crate) const EI_DATA: usize = 5;
pub(crate) const EI_VERSION: usize = 6;
pub(crate) const E_TYPE: usize = 16;
pub(crate) const E_MACHINE: usize = 18;
pub(crate) const E_VERSION: usize = 20;
pub(crate) const E_ENTRY: usize = 24;
pub(crate) const E_PHOFF: usize = 32;
pub(crate) const E_SHOFF: usize = 40;
pub(crate) const E_PHENTSIZE: usize = 54;
pub(crate) const E_PHNUM: usize = 56;
pub(crate) const E_SHENTSIZE: usize = 58;
pub(crate) const E_SHNUM: usize = 60;

pub(crate) const FILE_HEADER_BYTES: usize = 64;
pub(crate) const PROGRAM_HEADER_BYTES: usize = 56;
pub(crate) const SECTION_HEADER_BYTES: usize = 64;

// Program header field offsets.
pub(crate) const P_FLAGS: usize = 4;
pub(crate) const P_OFFSET: usize = 8;
pub(crate) const P_VADDR: usize = 16;
pub(crate) const P_FILESZ: usize = 32;
pub(crate) const P_MEMSZ: usize = 40;
pub(crate) const P_ALIGN: usize = 48;

/// One `PT_LOAD` segment the builder lays out; its file bytes are filled
/// with a pattern.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TestSegment {
    pub virt_start: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub flags: u32,
}

impl TestSegment {
    pub(crate) const fn new(virt_start: u64, memory_bytes: u64, file_bytes: u64, flags: u32) -> Self {
        Self { virt_start, memory_bytes, file_bytes, flags }
    }
}

/// Where the builder puts its notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotePlacement {
    /// A `PT_NOTE` segment and an `SHT_NOTE` section over the same bytes, as
    /// the linker does.
    SegmentAndSection,
    /// Only a `PT_NOTE` segment, no section headers.
    Segment,
    /// Only an `SHT_NOTE` section.
    Section,
}

/// Builds a little-endian ELF64 executable byte by byte.
///
/// Layout: file header, program headers (the `PT_LOAD`s in the given order,
/// then any extra ones, then the `PT_NOTE`), the notes (8-aligned), the
/// section headers (null, then the note section), then each segment's bytes
/// on its own page, at a file offset congruent to its virtual start (or
/// packed, if `is_compact`).
#[derive(Clone, Debug)]
pub(crate) struct ElfBuilder {
    pub machine: u16,
    pub elf_type: u16,
    pub entry: u64,
    pub segments: Vec<TestSegment>,
    /// Further program headers of other types, as (type, flags).
    pub extra_program_headers: Vec<(u32, u32)>,
    pub notes: Vec<u8>,
    pub note_align_bytes: u64,
    pub note_placement: NotePlacement,
    /// Segment bytes packed at 16-byte boundaries instead of one page each
    /// (for small fuzz seeds; `parse` does not need page congruence).
    pub is_compact: bool,
}

impl ElfBuilder {
    pub(crate) fn new(machine: Machine, entry: u64, segments: &[TestSegment]) -> Self {
        Self {
            machine: machine.elf_machine(),
            elf_type: ET_EXEC,
            entry,
            segments: segments.to_vec(),
            extra_program_headers: Vec::new(),
            notes: Vec::new(),
            note_align_bytes: 4,
            note_placement: NotePlacement::SegmentAndSection,
            is_compact: false,
        }
    }

    pub(crate) fn with_notes(mut self, notes: Vec<u8>) -> Self {
        self.notes = notes;
        self
    }

    /// The number of program headers `build` writes.
    pub(crate) fn program_header_count(&self) -> usize {
        let has_note_segment = !self.notes.is_empty() && self.note_placement != NotePlacement::Section;
        self.segments.len() + self.extra_program_headers.len() + usize::from(has_note_segment)
    }

    /// The file offset of the notes.
    pub(crate) fn notes_offset(&self) -> usize {
        align_up(FILE_HEADER_BYTES + self.program_header_count() * PROGRAM_HEADER_BYTES, 8)
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let program_header_count = self.program_header_count();
        let notes_offset = self.notes_offset();
        let has_section = !self.notes.is_empty() && self.note_placement != NotePlacement::Segment;
        let section_headers_offset = align_up(notes_offset + self.notes.len(), 8);
        let mut data_offset = section_headers_offset;
        if has_section {
            data_offset += 2 * SECTION_HEADER_BYTES;
        }

        let mut bytes = vec![0_u8; data_offset];
        // File header.
        bytes[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        put_u16(&mut bytes, E_TYPE, self.elf_type);
        put_u16(&mut bytes, E_MACHINE, self.machine);
        put_u32(&mut bytes, E_VERSION, 1);
        put_u64(&mut bytes, E_ENTRY, self.entry);
        put_u64(&mut bytes, E_PHOFF, FILE_HEADER_BYTES as u64);
        put_u16(&mut bytes, 52, FILE_HEADER_BYTES as u16);
        put_u16(&mut bytes, E_PHENTSIZE, PROGRAM_HEADER_BYTES as u16);
        put_u16(&mut bytes, E_PHNUM, program_header_count as u16);
        put_u16(&mut bytes, E_SHENTSIZE, SECTION_HEADER_BYTES as u16);
        if has_section {
            put_u64(&mut bytes, E_SHOFF, section_headers_offset as u64);
            put_u16(&mut bytes, E_SHNUM, 2);
        }

        // Segment bytes, each on its own page.
        let mut program_headers = Vec::new();
        for (index, segment) in self.segments.iter().enumerate() {
            let file_offset = if self.is_compact {
                align_up(bytes.len(), 16)
            } else {
                align_up(bytes.len(), 4096) + (segment.virt_start % 4096) as usize
            };
            bytes.resize(file_offset, 0);
            let fill = (index as u8).wrapping_add(0xa1);
            bytes.resize(file_offset + segment.file_bytes as usize, fill);
            program_headers.push(ProgramHeaderFields {
                program_type: PT_LOAD,
                flags: segment.flags,
                offset: file_offset as u64,
                virt_start: segment.virt_start,
                file_bytes: segment.file_bytes,
                memory_bytes: segment.memory_bytes,
                align_bytes: 4096,
            });
        }
        for &(program_type, flags) in &self.extra_program_headers {
            program_headers.push(ProgramHeaderFields {
                program_type,
                flags,
                offset: 0,
                virt_start: 0,
                file_bytes: 0,
                memory_bytes: 0,
                align_bytes: 16,
            });
        }
        if !self.notes.is_empty() && self.note_placement != NotePlacement::Section {
            program_headers.push(ProgramHeaderFields {
                program_type: PT_NOTE,
                flags: PF_R,
                offset: notes_offset as u64,
                virt_start: 0,
                file_bytes: self.notes.len() as u64,
                memory_bytes: self.notes.len() as u64,
                align_bytes: self.note_align_bytes,
            });
        }
        for (index, fields) in program_headers.iter().enumerate() {
            fields.write(&mut bytes, FILE_HEADER_BYTES + index * PROGRAM_HEADER_BYTES);
        }

        bytes[notes_offset..notes_offset + self.notes.len()].copy_from_slice(&self.notes);
        if has_section {
            // Entry 0 is the null section; entry 1 the notes.
            let note_section = section_headers_offset + SECTION_HEADER_BYTES;
            put_u32(&mut bytes, note_section + 4, SHT_NOTE);
            put_u64(&mut bytes, note_section + 8, 2); // SHF_ALLOC
            put_u64(&mut bytes, note_section + 24, notes_offset as u64);
            put_u64(&mut bytes, note_section + 32, self.notes.len() as u64);
            put_u64(&mut bytes, note_section + 48, self.note_align_bytes);
        }
        bytes
    }
}

struct ProgramHeaderFields {
    program_type: u32,
    flags: u32,
    offset: u64,
    virt_start: u64,
    file_bytes: u64,
    memory_bytes: u64,
    align_bytes: u64,
}

impl ProgramHeaderFields {
    fn write(&self, bytes: &mut [u8], at: usize) {
        put_u32(bytes, at, self.program_type);
        put_u32(bytes, at + P_FLAGS, self.flags);
        put_u64(bytes, at + P_OFFSET, self.offset);
        put_u64(bytes, at + P_VADDR, self.virt_start);
        put_u64(bytes, at + 24, self.virt_start); // p_paddr
        put_u64(bytes, at + P_FILESZ, self.file_bytes);
        put_u64(bytes, at + P_MEMSZ, self.memory_bytes);
        put_u64(bytes, at + P_ALIGN, self.align_bytes);
    }
}

pub(crate) fn align_up(value: usize, align: usize) -> usize {
    value.div_ceil(align) * align
}

pub(crate) fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The file offset of program header `index`.
pub(crate) const fn program_header(index: usize) -> usize {
    FILE_HEADER_BYTES + index * PROGRAM_HEADER_BYTES
}

/// One note: header, name with NUL and padding, descriptor and padding.
pub(crate) fn note(name: &str, note_type: u32, descriptor: &[u8], align: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let name_size = if name.is_empty() { 0 } else { name.len() + 1 };
    bytes.extend_from_slice(&(name_size as u32).to_le_bytes());
    bytes.extend_from_slice(&(descriptor.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&note_type.to_le_bytes());
    bytes.extend_from_slice(name.as_bytes());
    if name_size != 0 {
        bytes.push(0);
    }
    bytes.resize(align_up(bytes.len(), align), 0);
    bytes.extend_from_slice(descriptor);
    bytes.resize(align_up(bytes.len(), align), 0);
    bytes
}

/// The Baton KHO entry note naming `address`.
pub(crate) fn kho_entry_note(address: u64) -> Vec<u8> {
    note(BATON_NOTE_NAME, BATON_NOTE_KHO_ENTRY, &address.to_le_bytes(), 4)
}

/// A service: text (RX), read-only data (R), data with bss (RW), a
/// `PT_GNU_STACK`, and a GNU build-id note.
pub(crate) fn service_builder(machine: Machine) -> ElfBuilder {
    let mut builder = ElfBuilder::new(
        machine,
        SERVICE_BASE + 0x100,
        &[
            TestSegment::new(SERVICE_BASE, 0x2000, 0x2000, PF_R | PF_X),
            TestSegment::new(SERVICE_BASE + 0x2000, 0x800, 0x800, PF_R),
            TestSegment::new(SERVICE_BASE + 0x3000, 0x3000, 0x400, PF_R | PF_W),
        ],
    )
    .with_notes(note("GNU", 3, &[0x5a; 20], 4));
    builder.extra_program_headers.push((PT_GNU_STACK, PF_R | PF_W));
    builder
}

pub(crate) fn service_elf(machine: Machine) -> Vec<u8> {
    service_builder(machine).build()
}

pub(crate) const fn kernel_base(machine: Machine) -> u64 {
    match machine {
        Machine::X86_64 => X86_64_KERNEL_BASE,
        Machine::Aarch64 => AARCH64_KERNEL_BASE,
    }
}

/// A kernel laid out like Baton's: text (RX), read-only data (R), data with
/// a large bss (RW), the Baton KHO entry note and, on x86-64, a Xen PVH note.
pub(crate) fn kernel_builder(machine: Machine) -> ElfBuilder {
    let base = kernel_base(machine);
    let mut notes = kho_entry_note(base + KHO_ENTRY_OFFSET);
    if machine == Machine::X86_64 {
        notes.extend(note("Xen", 18, &0x20_0000_u64.to_le_bytes(), 4));
    }
    ElfBuilder::new(
        machine,
        base + 0x1bd4,
        &[
            TestSegment::new(base, 0x3000, 0x3000, PF_R | PF_X),
            TestSegment::new(base + 0x3000, 0x1000, 0x1000, PF_R),
            TestSegment::new(base + 0x4000, 0x5_8000, 0x1250, PF_R | PF_W),
        ],
    )
    .with_notes(notes)
}

pub(crate) fn kernel_elf(machine: Machine) -> Vec<u8> {
    kernel_builder(machine).build()
}

/// Parse for the machine the bytes were built for.
pub(crate) fn parse_for(bytes: &[u8], machine: Machine) -> ElfImage<'_> {
    parse(bytes, machine).unwrap_or_else(|error| panic!("{machine:?}: {error}"))
}
