//! Notes: finding them in segments and sections, and strict parsing of malformed ones.

use super::*;
use crate::{ImageError, Note, NoteError};

fn note_error(builder: &ElfBuilder, machine: Machine) -> NoteError {
    match parse(&builder.build(), machine) {
        Err(ImageError::Note(error)) => error,
        other => panic!("expected a note error, got {other:?}"),
    }
}

fn kernel_with_notes(notes: Vec<u8>) -> ElfBuilder {
    kernel_builder(Machine::X86_64).with_notes(notes)
}

#[test]
fn find_note_matches_name_and_type() {
    let bytes = kernel_elf(Machine::X86_64);
    let image = parse_for(&bytes, Machine::X86_64);
    let kho_entry = (X86_64_KERNEL_BASE + KHO_ENTRY_OFFSET).to_le_bytes();
    assert_eq!(image.find_note("Baton", BATON_NOTE_KHO_ENTRY), Some(&kho_entry[..]));
    assert_eq!(image.find_note("Xen", 18), Some(&0x20_0000_u64.to_le_bytes()[..]));
    assert_eq!(image.find_note("Baton", 18), None);
    assert_eq!(image.find_note("Xen", BATON_NOTE_KHO_ENTRY), None);
    assert_eq!(image.find_note("Bato", BATON_NOTE_KHO_ENTRY), None);
    assert_eq!(image.find_note("Baton\0", BATON_NOTE_KHO_ENTRY), None);
    assert_eq!(image.find_note("", BATON_NOTE_KHO_ENTRY), None);
    // The section over the PT_NOTE segment's bytes is not walked twice.
    let notes: Vec<Note<'_>> = image.notes().collect();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].name, b"Baton");
    assert_eq!(notes[1].name, b"Xen");
}

#[test]
fn notes_are_found_in_segments_and_in_sections() {
    for placement in [NotePlacement::Segment, NotePlacement::Section, NotePlacement::SegmentAndSection] {
        for machine in MACHINES {
            let mut builder = kernel_builder(machine);
            builder.note_placement = placement;
            let bytes = builder.build();
            let image = parse_for(&bytes, machine);
            assert_eq!(image.kho_entry(), Some(kernel_base(machine) + KHO_ENTRY_OFFSET), "{placement:?}");
        }
    }
}

#[test]
fn eight_byte_aligned_notes_parse() {
    // Like .note.gnu.property: "GNU\0" padded to 8, then the descriptor.
    let mut notes = note("GNU", 5, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 8);
    assert_eq!(notes.len(), 16 + 16);
    notes.extend(note("Baton", BATON_NOTE_KHO_ENTRY, &(X86_64_KERNEL_BASE + 8).to_le_bytes(), 8));
    let mut builder = kernel_with_notes(notes);
    builder.note_align_bytes = 8;
    let bytes = builder.build();
    let image = parse_for(&bytes, Machine::X86_64);
    assert_eq!(image.find_note("GNU", 5), Some(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12][..]));
    assert_eq!(image.kho_entry(), Some(X86_64_KERNEL_BASE + 8));
}

#[test]
fn alignments_up_to_four_mean_four() {
    for align in [0, 1, 2, 3, 4] {
        let mut builder = kernel_builder(Machine::Aarch64);
        builder.note_align_bytes = align;
        let bytes = builder.build();
        assert!(parse_for(&bytes, Machine::Aarch64).kho_entry().is_some(), "align {align}");
    }
}

#[test]
fn unsupported_alignment_is_refused() {
    for align_bytes in [5, 16, 4096, u64::MAX] {
        let mut builder = kernel_builder(Machine::Aarch64);
        builder.note_align_bytes = align_bytes;
        assert_eq!(note_error(&builder, Machine::Aarch64), NoteError::UnsupportedAlignment { align_bytes });
    }
}

#[test]
fn empty_names_and_descriptors_are_allowed() {
    let mut notes = note("", 7, &[], 4);
    assert_eq!(notes.len(), 12);
    notes.extend(note("Baton", 99, &[], 4));
    notes.extend(kho_entry_note(X86_64_KERNEL_BASE));
    let bytes = kernel_with_notes(notes).build();
    let image = parse_for(&bytes, Machine::X86_64);
    assert_eq!(image.find_note("", 7), Some(&[][..]));
    assert_eq!(image.find_note("Baton", 99), Some(&[][..]));
    assert_eq!(image.kho_entry(), Some(X86_64_KERNEL_BASE));
}

#[test]
fn note_sizes_are_checked() {
    let good = kho_entry_note(X86_64_KERNEL_BASE);
    let notes_offset = kernel_with_notes(good.clone()).notes_offset() as u64;

    // namesz past the region (and absurdly large).
    for name_size in [64_u32, 0xffff_ffff] {
        let mut notes = good.clone();
        notes[..4].copy_from_slice(&name_size.to_le_bytes());
        assert_eq!(
            note_error(&kernel_with_notes(notes), Machine::X86_64),
            NoteError::NameOutOfBounds { file_offset: notes_offset },
            "namesz {name_size}"
        );
    }
    // descsz past the region (and absurdly large).
    for descriptor_size in [9_u32, 16, 0xffff_ffff] {
        let mut notes = good.clone();
        notes[4..8].copy_from_slice(&descriptor_size.to_le_bytes());
        assert_eq!(
            note_error(&kernel_with_notes(notes), Machine::X86_64),
            NoteError::DescriptorOutOfBounds { file_offset: notes_offset },
            "descsz {descriptor_size}"
        );
    }
    // A region that ends inside the second note's header.
    let mut notes = good.clone();
    notes.extend_from_slice(&[6, 0, 0, 0, 8, 0, 0, 0]);
    assert_eq!(
        note_error(&kernel_with_notes(notes), Machine::X86_64),
        NoteError::TruncatedHeader { file_offset: notes_offset + good.len() as u64 }
    );
    // A descriptor of 5 bytes whose padding is missing: the region must be
    // whole padded notes.
    let mut notes = note("Odd", 1, &[1, 2, 3, 4, 5], 4);
    notes.truncate(notes.len() - 3);
    notes.splice(0..0, good.iter().copied());
    assert_eq!(
        note_error(&kernel_with_notes(notes), Machine::X86_64),
        NoteError::DescriptorOutOfBounds { file_offset: notes_offset + good.len() as u64 }
    );
    // A name whose padding is missing (and nothing after it).
    let notes = vec![2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'A', 0];
    assert_eq!(
        note_error(&kernel_with_notes(notes), Machine::X86_64),
        NoteError::NameOutOfBounds { file_offset: notes_offset }
    );
}

#[test]
fn names_must_end_in_nul() {
    let mut notes = kho_entry_note(X86_64_KERNEL_BASE);
    notes[12 + 5] = b'!';
    let builder = kernel_with_notes(notes);
    let file_offset = builder.notes_offset() as u64;
    assert_eq!(note_error(&builder, Machine::X86_64), NoteError::NameNotTerminated { file_offset });
}

#[test]
fn kho_entry_descriptor_must_be_eight_bytes() {
    for size_bytes in [0, 4, 12, 16] {
        let notes = note("Baton", BATON_NOTE_KHO_ENTRY, &vec![0x11; size_bytes], 4);
        assert_eq!(
            note_error(&kernel_with_notes(notes), Machine::X86_64),
            NoteError::KhoEntryDescriptorSize { size_bytes }
        );
    }
}

#[test]
fn kho_entry_notes_must_agree() {
    let mut notes = kho_entry_note(X86_64_KERNEL_BASE);
    notes.extend(kho_entry_note(X86_64_KERNEL_BASE));
    let bytes = kernel_with_notes(notes).build();
    assert_eq!(parse_for(&bytes, Machine::X86_64).kho_entry(), Some(X86_64_KERNEL_BASE));

    let mut notes = kho_entry_note(X86_64_KERNEL_BASE);
    notes.extend(kho_entry_note(X86_64_KERNEL_BASE + 4));
    assert_eq!(note_error(&kernel_with_notes(notes), Machine::X86_64), NoteError::ConflictingKhoEntries);
}

#[test]
fn note_region_must_lie_inside_the_file() {
    let builder = kernel_builder(Machine::X86_64);
    let note_segment = program_header(builder.program_header_count() - 1);
    let valid = builder.build();
    for (offset, size_bytes) in [(valid.len() as u64, 4), (valid.len() as u64 - 8, 16), (u64::MAX, 1), (8, u64::MAX)] {
        let mut bytes = valid.clone();
        put_u64(&mut bytes, note_segment + P_OFFSET, offset);
        put_u64(&mut bytes, note_segment + P_FILESZ, size_bytes);
        assert_eq!(
            parse(&bytes, Machine::X86_64).unwrap_err(),
            ImageError::NoteRegionOutOfBounds,
            "offset {offset:#x}, {size_bytes:#x} bytes"
        );
    }
}

#[test]
fn note_regions_are_limited() {
    // Seventeen one-note regions: sixteen PT_NOTEs of one note each, then the
    // builder's PT_NOTE over all of them.
    let notes: Vec<u8> = (0..17).flat_map(|index| note("", index, &[], 4)).collect();
    let mut builder = kernel_with_notes(notes);
    builder.note_placement = NotePlacement::Segment;
    builder.extra_program_headers = vec![(PT_NOTE, PF_R); 16];
    let notes_offset = builder.notes_offset() as u64;
    let mut bytes = builder.build();
    for index in 0..16 {
        let at = program_header(3 + index);
        put_u64(&mut bytes, at + P_OFFSET, notes_offset + 12 * index as u64);
        put_u64(&mut bytes, at + P_FILESZ, 12);
        put_u64(&mut bytes, at + P_ALIGN, 4);
    }
    assert_eq!(parse(&bytes, Machine::X86_64).unwrap_err(), ImageError::TooManyNoteRegions);
    // Without the covering PT_NOTE there are sixteen, which is fine.
    put_u16(&mut bytes, E_PHNUM, 3 + 16);
    let image = parse_for(&bytes, Machine::X86_64);
    assert_eq!(image.notes().count(), 16);
    assert_eq!(image.kho_entry(), None);
}
