//! `parse`: valid services and kernels, and one hand-corrupted file per rule.

use super::*;
use crate::{ImageError, MAX_LOAD_SEGMENTS, Segment, VirtualSpan};

fn parse_error(bytes: &[u8], machine: Machine) -> ImageError {
    parse(bytes, machine).expect_err("corrupted image parsed")
}

#[test]
fn service_parses_for_both_machines() {
    for machine in MACHINES {
        let bytes = service_elf(machine);
        let image = parse_for(&bytes, machine);
        assert_eq!(image.machine(), machine);
        assert_eq!(image.entry(), SERVICE_BASE + 0x100);
        assert_eq!(image.bytes().len(), bytes.len());
        let segments = image.segments();
        assert_eq!(segments.len(), 3);
        assert_eq!(
            segments[0],
            Segment {
                virt_start: SERVICE_BASE,
                memory_bytes: 0x2000,
                file_offset: segments[0].file_offset,
                file_bytes: 0x2000,
                is_writable: false,
                is_executable: true,
            }
        );
        assert!(!segments[1].is_writable && !segments[1].is_executable);
        assert!(segments[2].is_writable && !segments[2].is_executable);
        assert_eq!((segments[2].file_bytes, segments[2].memory_bytes), (0x400, 0x3000));
        assert_eq!(image.virtual_span(), VirtualSpan { start: SERVICE_BASE, end: SERVICE_BASE + 0x6000 });
        assert_eq!(image.memory_bytes(), 0x6000);
        let text = image.segment_data(&segments[0]).unwrap();
        assert_eq!(text.len(), 0x2000);
        assert!(text.iter().all(|&byte| byte == 0xa1));
        assert_eq!(image.kho_entry(), None);
        assert_eq!(image.find_note("GNU", 3), Some(&[0x5a; 20][..]));
        assert_eq!(image.validate_service(USER_LIMIT), Ok(()));
    }
}

#[test]
fn kernel_parses_for_both_machines() {
    for machine in MACHINES {
        let bytes = kernel_elf(machine);
        let image = parse_for(&bytes, machine);
        let base = kernel_base(machine);
        assert_eq!(image.entry(), base + 0x1bd4);
        assert_eq!(image.kho_entry(), Some(base + KHO_ENTRY_OFFSET));
        assert_eq!(image.virtual_span().start, base);
        assert_eq!(image.memory_bytes(), 0x5_c000);
        assert!(image.is_executable_address(base));
        assert!(!image.is_executable_address(base + 0x3000));
    }
}

#[test]
fn segments_are_sorted_by_virtual_address() {
    let mut builder = service_builder(Machine::X86_64);
    builder.segments.reverse();
    let bytes = builder.build();
    let image = parse_for(&bytes, Machine::X86_64);
    let starts: Vec<u64> = image.segments().iter().map(|segment| segment.virt_start).collect();
    assert_eq!(starts, [SERVICE_BASE, SERVICE_BASE + 0x2000, SERVICE_BASE + 0x3000]);
}

#[test]
fn empty_load_segments_are_skipped() {
    let mut builder = service_builder(Machine::Aarch64);
    // Empty and at the same address as the text: neither counted nor overlapping.
    builder.segments.push(TestSegment::new(SERVICE_BASE, 0, 0, PF_R));
    let bytes = builder.build();
    assert_eq!(parse_for(&bytes, Machine::Aarch64).segments().len(), 3);

    let only_empty = ElfBuilder::new(Machine::Aarch64, 0, &[TestSegment::new(0x1_0000, 0, 0, PF_R | PF_X)]);
    assert_eq!(parse_error(&only_empty.build(), Machine::Aarch64), ImageError::NoLoadSegments);
}

#[test]
fn bad_magic_is_refused() {
    for position in 0..4 {
        let mut bytes = service_elf(Machine::X86_64);
        bytes[position] ^= 0x20;
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::BadMagic);
    }
    assert_eq!(parse_error(&[0_u8; 128], Machine::X86_64), ImageError::BadMagic);
}

#[test]
fn class_other_than_64_bit_is_refused() {
    for class in [0, 1, 3, 0xff] {
        let mut bytes = service_elf(Machine::X86_64);
        bytes[EI_CLASS] = class;
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::UnsupportedClass { class }, "class {class}");
    }
}

#[test]
fn big_endian_is_refused() {
    for data in [0, 2, 3] {
        let mut bytes = kernel_elf(Machine::Aarch64);
        bytes[EI_DATA] = data;
        assert_eq!(parse_error(&bytes, Machine::Aarch64), ImageError::UnsupportedByteOrder { data });
    }
}

#[test]
fn version_other_than_current_is_refused() {
    let mut bytes = service_elf(Machine::X86_64);
    bytes[EI_VERSION] = 0;
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::UnsupportedVersion { version: 0 });
    let mut bytes = service_elf(Machine::X86_64);
    put_u32(&mut bytes, E_VERSION, 2);
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::UnsupportedVersion { version: 2 });
}

#[test]
fn only_static_executables_are_accepted() {
    // ET_NONE, ET_REL, ET_DYN (PIE), ET_CORE.
    for elf_type in [0, 1, 3, 4] {
        let mut builder = service_builder(Machine::X86_64);
        builder.elf_type = elf_type;
        assert_eq!(parse_error(&builder.build(), Machine::X86_64), ImageError::UnsupportedType { elf_type });
    }
}

#[test]
fn wrong_machine_is_refused() {
    let bytes = service_elf(Machine::X86_64);
    assert_eq!(parse_error(&bytes, Machine::Aarch64), ImageError::WrongMachine { expected: 183, found: 62 });
    let mut bytes = kernel_elf(Machine::Aarch64);
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::WrongMachine { expected: 62, found: 183 });
    put_u16(&mut bytes, E_MACHINE, 40); // EM_ARM
    assert!(matches!(parse_error(&bytes, Machine::Aarch64), ImageError::WrongMachine { found: 40, .. }));
}

#[test]
fn truncated_header_is_refused() {
    let bytes = service_elf(Machine::X86_64);
    for size_bytes in [0, 1, 4, 15, 16, 40, 63] {
        assert_eq!(
            parse_error(&bytes[..size_bytes], Machine::X86_64),
            ImageError::TruncatedHeader,
            "{size_bytes} bytes"
        );
    }
}

#[test]
fn program_header_entry_size_must_be_56() {
    for size_bytes in [0, 32, 55, 57, 64] {
        let mut bytes = service_elf(Machine::X86_64);
        put_u16(&mut bytes, E_PHENTSIZE, size_bytes);
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::ProgramHeaderEntrySize { size_bytes });
    }
}

#[test]
fn program_headers_out_of_bounds_are_refused() {
    let valid = service_elf(Machine::X86_64);
    let size_bytes = valid.len() as u64;
    for phoff in [size_bytes, size_bytes - 56 + 1, u64::MAX, u64::MAX - 55] {
        let mut bytes = valid.clone();
        put_u64(&mut bytes, E_PHOFF, phoff);
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::ProgramHeadersOutOfBounds, "phoff {phoff:#x}");
    }
    // The table cut short by the end of the file.
    let cut = program_header(2) + 10;
    assert_eq!(parse_error(&valid[..cut], Machine::X86_64), ImageError::ProgramHeadersOutOfBounds);
}

#[test]
fn program_header_count_is_limited() {
    for count in [65, 0xffff] {
        let mut bytes = service_elf(Machine::X86_64);
        put_u16(&mut bytes, E_PHNUM, count);
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::TooManyProgramHeaders { count });
    }
    let mut bytes = service_elf(Machine::X86_64);
    put_u16(&mut bytes, E_PHNUM, 0);
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::NoLoadSegments);
}

#[test]
fn image_without_load_segments_is_refused() {
    let builder = ElfBuilder::new(Machine::X86_64, SERVICE_BASE, &[]).with_notes(kho_entry_note(0));
    assert_eq!(parse_error(&builder.build(), Machine::X86_64), ImageError::NoLoadSegments);
}

#[test]
fn at_most_sixteen_load_segments() {
    let segments = |count: u64| -> Vec<TestSegment> {
        (0..count).map(|index| TestSegment::new(SERVICE_BASE + index * 0x1000, 0x10, 0x10, PF_R | PF_X)).collect()
    };
    let most = MAX_LOAD_SEGMENTS as u64;
    let bytes = ElfBuilder::new(Machine::X86_64, SERVICE_BASE, &segments(most)).build();
    assert_eq!(parse_for(&bytes, Machine::X86_64).segments().len(), MAX_LOAD_SEGMENTS);
    let bytes = ElfBuilder::new(Machine::X86_64, SERVICE_BASE, &segments(most + 1)).build();
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::TooManyLoadSegments);
}

#[test]
fn segment_file_range_must_lie_inside_the_file() {
    let valid = service_elf(Machine::X86_64);
    let size_bytes = valid.len() as u64;
    let data = program_header(2);
    let file_offset = u64::from_le_bytes(valid[data + P_OFFSET..data + P_OFFSET + 8].try_into().unwrap());
    let cases = [
        (size_bytes, 1),                           // starts at the end
        (file_offset, size_bytes),                 // runs past the end
        (u64::MAX, 0x400),                         // offset + size overflows
        (file_offset, u64::MAX - file_offset + 1), // overflows to exactly zero
    ];
    for (offset, file_bytes) in cases {
        let mut bytes = valid.clone();
        put_u64(&mut bytes, data + P_OFFSET, offset);
        put_u64(&mut bytes, data + P_FILESZ, file_bytes);
        put_u64(&mut bytes, data + P_MEMSZ, file_bytes.max(0x3000));
        assert_eq!(
            parse_error(&bytes, Machine::X86_64),
            ImageError::SegmentFileOutOfBounds { index: 2 },
            "offset {offset:#x}, {file_bytes:#x} bytes"
        );
    }
    // The last segment cut short by the end of the file.
    assert_eq!(
        parse_error(&valid[..valid.len() - 1], Machine::X86_64),
        ImageError::SegmentFileOutOfBounds { index: 2 }
    );
}

#[test]
fn file_bytes_must_not_exceed_memory_bytes() {
    let mut builder = service_builder(Machine::Aarch64);
    builder.segments[1].memory_bytes = builder.segments[1].file_bytes - 1;
    assert_eq!(parse_error(&builder.build(), Machine::Aarch64), ImageError::SegmentFileLargerThanMemory { index: 1 });
}

#[test]
fn segment_end_must_not_overflow() {
    for (virt_start, memory_bytes) in [
        (u64::MAX - 0x10, 0x20),
        (0, u64::MAX),
        // Fits in 64 bits, but not once rounded up to a page.
        (0xffff_ffff_ffff_f000, 0x101),
        (0xffff_ffff_ffff_d000, 0x2fff),
    ] {
        let mut bytes = service_elf(Machine::X86_64);
        put_u64(&mut bytes, program_header(2) + P_VADDR, virt_start);
        put_u64(&mut bytes, program_header(2) + P_MEMSZ, memory_bytes);
        put_u64(&mut bytes, program_header(2) + P_FILESZ, 0);
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::SegmentAddressOverflow { index: 2 });
    }
    // Up to the last page is fine; that page itself is not, as its end
    // (2^64) does not fit in 64 bits.
    let mut bytes = service_elf(Machine::X86_64);
    put_u64(&mut bytes, program_header(2) + P_VADDR, 0xffff_ffff_ffff_d000);
    put_u64(&mut bytes, program_header(2) + P_MEMSZ, 0x2000);
    assert_eq!(parse_for(&bytes, Machine::X86_64).virtual_span().end, 0xffff_ffff_ffff_f000);
}

#[test]
fn overlapping_segments_are_refused() {
    // Text covers [+0x100, +0x1f00): pages [+0, +0x2000).
    let text = TestSegment::new(SERVICE_BASE + 0x100, 0x1e00, 0x1e00, PF_R | PF_X);
    let entry = text.virt_start;
    let cases = [
        // Same start.
        TestSegment::new(SERVICE_BASE + 0x100, 0x1000, 0x1000, PF_R),
        // Byte overlap.
        TestSegment::new(SERVICE_BASE + 0x1800, 0x1000, 0x100, PF_R),
        // Inside.
        TestSegment::new(SERVICE_BASE + 0x1000, 0x10, 0x10, PF_R),
        // No byte overlap, but the text's last page.
        TestSegment::new(SERVICE_BASE + 0x1f80, 0x10, 0x10, PF_R),
        // No byte overlap, but the text's first page.
        TestSegment::new(SERVICE_BASE, 0x80, 0x80, PF_R),
    ];
    for other in cases {
        for segments in [[text, other], [other, text]] {
            let bytes = ElfBuilder::new(Machine::X86_64, entry, &segments).build();
            let (lower, higher) = if other.virt_start < text.virt_start {
                (other.virt_start, text.virt_start)
            } else {
                (text.virt_start, other.virt_start)
            };
            assert_eq!(
                parse_error(&bytes, Machine::X86_64),
                ImageError::SegmentsOverlap { lower_virt_start: lower, higher_virt_start: higher },
                "{other:?}"
            );
        }
    }
    // Neighbouring pages are fine.
    let above = TestSegment::new(SERVICE_BASE + 0x2000, 0x10, 0x10, PF_R);
    let below = TestSegment::new(SERVICE_BASE - 0x1000, 0x1000, 0x1000, PF_R);
    let bytes = ElfBuilder::new(Machine::X86_64, entry, &[above, text, below]).build();
    assert_eq!(parse_for(&bytes, Machine::X86_64).segments().len(), 3);
}

#[test]
fn entry_must_lie_inside_an_executable_segment() {
    for entry in [
        0,
        SERVICE_BASE - 1,
        SERVICE_BASE + 0x2000,   // one past the text, in read-only data
        SERVICE_BASE + 0x3000,   // data
        SERVICE_BASE + 0x5fff,   // bss
        SERVICE_BASE + 0x1_0000, // past everything
        u64::MAX,
    ] {
        let mut bytes = service_elf(Machine::Aarch64);
        put_u64(&mut bytes, E_ENTRY, entry);
        assert_eq!(parse_error(&bytes, Machine::Aarch64), ImageError::EntryNotExecutable { entry }, "entry {entry:#x}");
    }
    let mut bytes = service_elf(Machine::Aarch64);
    put_u64(&mut bytes, E_ENTRY, SERVICE_BASE + 0x1fff);
    assert_eq!(parse_for(&bytes, Machine::Aarch64).entry(), SERVICE_BASE + 0x1fff);
}

#[test]
fn section_header_table_is_checked() {
    let valid = kernel_elf(Machine::X86_64);
    let mut bytes = valid.clone();
    put_u16(&mut bytes, E_SHENTSIZE, 40);
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::SectionHeaderEntrySize { size_bytes: 40 });
    for shoff in [valid.len() as u64, u64::MAX - 8] {
        let mut bytes = valid.clone();
        put_u64(&mut bytes, E_SHOFF, shoff);
        assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::SectionHeadersOutOfBounds);
    }
    let mut bytes = valid.clone();
    put_u16(&mut bytes, E_SHNUM, 0xfeff);
    assert_eq!(parse_error(&bytes, Machine::X86_64), ImageError::SectionHeadersOutOfBounds);
    // No section headers at all is fine.
    let mut bytes = valid;
    put_u64(&mut bytes, E_SHOFF, 0);
    assert!(parse(&bytes, Machine::X86_64).is_ok());
}

#[test]
fn errors_display_without_panicking() {
    let errors = [
        ImageError::TruncatedHeader,
        ImageError::WrongMachine { expected: 62, found: 183 },
        ImageError::SegmentsOverlap { lower_virt_start: 0x1000, higher_virt_start: 0x1800 },
        ImageError::Note(crate::NoteError::ConflictingKhoEntries),
        ImageError::KernelTooLarge { memory_bytes: 2, scratch_bytes: 1 },
    ];
    for error in errors {
        assert!(!error.to_string().is_empty());
    }
    assert_eq!(
        ImageError::KernelSpanMisaligned { span_start: 0x1000 }.to_string(),
        "kernel span start 0x1000 not 2 MiB aligned"
    );
}
