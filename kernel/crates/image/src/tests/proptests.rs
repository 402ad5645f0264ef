//! Property tests: `parse` never panics, on arbitrary bytes and on mutations of valid images, and what it accepts keeps its promises.

use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;
use crate::{BATON_NOTE_KHO_ENTRY, KERNEL_ALIGN_BYTES, MAX_LOAD_SEGMENTS};

/// Valid images to mutate: a service and a kernel for each machine, and a
/// kernel whose notes are only in a section.
static VALID_IMAGES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut images = Vec::new();
    for machine in MACHINES {
        images.push(service_elf(machine));
        images.push(kernel_elf(machine));
        let mut builder = kernel_builder(machine);
        builder.note_placement = NotePlacement::Section;
        builder.is_compact = true;
        images.push(builder.build());
    }
    images
});

/// Offsets of the fields that steer parsing: file header, the first four
/// program headers, and the notes and section headers of the compact images.
fn field_offset() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            E_TYPE,
            E_MACHINE,
            E_VERSION,
            E_ENTRY,
            E_PHOFF,
            E_SHOFF,
            E_PHENTSIZE,
            E_PHNUM,
            E_SHENTSIZE,
            E_SHNUM
        ]),
        (0_usize..4, prop::sample::select(vec![0, P_FLAGS, P_OFFSET, P_VADDR, P_FILESZ, P_MEMSZ, P_ALIGN]))
            .prop_map(|(index, field)| program_header(index) + field),
        0_usize..512,
    ]
}

/// Values near the edges of the arithmetic.
fn field_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            4,
            8,
            12,
            56,
            64,
            0xfff,
            0x1000,
            0x10000,
            0x20_0000,
            0xffff,
            0xffff_ffff,
            0x8000_0000_0000_0000,
            0xffff_ffff_8000_0000,
            0xffff_ffff_ffff_f000,
            u64::MAX - 1,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

/// Check what `parse` promises about an image it accepted, and that the
/// validators and note lookups do not panic on it.
fn check_accepted(image: &ElfImage<'_>, bytes: &[u8]) {
    let segments = image.segments();
    let span = image.virtual_span();
    assert!(!segments.is_empty() && segments.len() <= MAX_LOAD_SEGMENTS);
    for segment in segments {
        assert!(segment.memory_bytes > 0 && segment.file_bytes <= segment.memory_bytes);
        assert_eq!(image.segment_data(segment).map(<[u8]>::len), Some(segment.file_bytes as usize));
        assert!(segment.virt_start.checked_add(segment.memory_bytes).is_some());
        assert!(span.start <= segment.page_start() && segment.page_end() <= span.end);
    }
    for pair in segments.windows(2) {
        assert!(pair[0].page_end() <= pair[1].page_start());
    }
    assert!(image.is_executable_address(image.entry()));
    assert_eq!(image.memory_bytes(), span.end - span.start);

    let kho_entry = image
        .find_note(BATON_NOTE_NAME, BATON_NOTE_KHO_ENTRY)
        .map(|descriptor| u64::from_le_bytes(descriptor.try_into().unwrap()));
    assert_eq!(kho_entry, image.kho_entry());
    let range = bytes.as_ptr_range();
    for note in image.notes() {
        assert!(range.contains(&note.descriptor.as_ptr()) || note.descriptor.is_empty());
    }

    let _ = image.validate_service(USER_LIMIT);
    if let Ok(plan) = image.validate_kernel(SCRATCH_BYTES) {
        assert!(plan.memory_bytes() <= SCRATCH_BYTES);
        assert_eq!(plan.span_start() % KERNEL_ALIGN_BYTES, 0);
        assert!(plan.entry_offset_bytes() < plan.memory_bytes());
        for segment in plan.segments() {
            assert!(segment.span_offset_bytes + segment.memory_bytes <= plan.memory_bytes());
            assert!(segment.file_data.len() as u64 <= segment.memory_bytes);
        }
    }
}

fn parse_both(bytes: &[u8]) {
    for machine in MACHINES {
        if let Ok(image) = parse(bytes, machine) {
            check_accepted(&image, bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        parse_both(&bytes);
    }

    /// A valid file header over arbitrary program headers and notes.
    #[test]
    fn parse_never_panics_behind_a_valid_header(
        image in 0..6_usize,
        program_header_count in 1_u16..8,
        tail in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut bytes = VALID_IMAGES[image][..FILE_HEADER_BYTES].to_vec();
        put_u16(&mut bytes, E_PHNUM, program_header_count);
        bytes.extend(tail);
        parse_both(&bytes);
    }

    #[test]
    fn parse_never_panics_on_mutated_bytes(
        image in 0..6_usize,
        mutations in prop::collection::vec((prop_oneof![0_usize..512, 0_usize..0x8000], any::<u8>()), 1..16),
        cut in prop::option::of(0_usize..0x8000),
    ) {
        let mut bytes = VALID_IMAGES[image].clone();
        for (position, value) in mutations {
            if let Some(byte) = bytes.get_mut(position) {
                *byte = value;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut);
        }
        parse_both(&bytes);
    }

    #[test]
    fn parse_never_panics_on_mutated_fields(
        image in 0..6_usize,
        mutations in prop::collection::vec((field_offset(), field_value(), 0_usize..4), 1..6),
    ) {
        let mut bytes = VALID_IMAGES[image].clone();
        for (offset, value, width) in mutations {
            let width = [1, 2, 4, 8][width];
            if let Some(field) = bytes.get_mut(offset..offset + width) {
                field.copy_from_slice(&value.to_le_bytes()[..width]);
            }
        }
        parse_both(&bytes);
    }
}
