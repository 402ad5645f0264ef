//! Fuzz target: `parse` and everything done with what it accepts, on arbitrary bytes.
//!
//! Beyond "no panic", it checks the promises `parse` makes about an accepted
//! image and those `validate_kernel` makes about its plan. Seeds:
//! `corpus/elf_parse/seed-*`, written by the ignored unit test
//! `write_fuzz_seeds`.
#![no_main]

use baton_image::{
    BATON_NOTE_KHO_ENTRY, BATON_NOTE_NAME, ElfImage, KERNEL_ALIGN_BYTES, MAX_LOAD_SEGMENTS,
    Machine, parse,
};
use libfuzzer_sys::fuzz_target;

const USER_LIMIT: u64 = 0x0000_8000_0000_0000;
const SCRATCH_BYTES: u64 = 64 << 20;

fn check_accepted(image: &ElfImage<'_>, bytes: &[u8]) {
    let segments = image.segments();
    let span = image.virtual_span();
    assert!(!segments.is_empty() && segments.len() <= MAX_LOAD_SEGMENTS);
    for segment in segments {
        assert!(segment.memory_bytes > 0 && segment.file_bytes <= segment.memory_bytes);
        let data = image
            .segment_data(segment)
            .expect("segment bytes inside the file");
        assert_eq!(data.len() as u64, segment.file_bytes);
        assert!(span.start <= segment.page_start() && segment.page_end() <= span.end);
    }
    for pair in segments.windows(2) {
        assert!(pair[0].page_end() <= pair[1].page_start());
    }
    assert!(image.is_executable_address(image.entry()));
    assert_eq!(image.memory_bytes(), span.end - span.start);
    assert_eq!(image.bytes().len(), bytes.len());

    let kho_entry = image
        .find_note(BATON_NOTE_NAME, BATON_NOTE_KHO_ENTRY)
        .map(|descriptor| u64::from_le_bytes(descriptor.try_into().expect("8-byte descriptor")));
    assert_eq!(kho_entry, image.kho_entry());
    for note in image.notes() {
        let _ = (note.name, note.note_type, note.descriptor.len());
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

fuzz_target!(|data: &[u8]| {
    for machine in [Machine::X86_64, Machine::Aarch64] {
        if let Ok(image) = parse(data, machine) {
            check_accepted(&image, data);
        }
    }
});
